# Data: shards (datatrove layout), Megatron .bin/.idx, text sources, the mixture loader; and the shard fuzzer.
kiln_add_test(test_shards test_shards.cpp)
kiln_add_test(test_loader test_loader.cpp)

# ---- fuzz.shards: libFuzzer + ASan over the shard / Megatron parsers, 15 s from a committed seed corpus ----------
# Built with clang++ (libFuzzer is clang's; Debian: clang, libclang-rt-14-dev) by a custom command, since the rest of
# the tree is built with g++. New inputs go to a corpus in the build dir; tests/fuzz/corpus/shards/ stays read-only.
find_program(KILN_CLANGXX NAMES clang++ clang++-14)
if(KILN_CLANGXX)
  set(kiln_fuzz_shards ${CMAKE_CURRENT_BINARY_DIR}/fuzz/fuzz_shards)
  add_custom_command(
    OUTPUT ${kiln_fuzz_shards}
    COMMAND ${KILN_CLANGXX} -std=c++20 -O1 -g -fsanitize=fuzzer,address -fno-omit-frame-pointer
            -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR}
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_shards.cpp -o ${kiln_fuzz_shards}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_shards.cpp ${PROJECT_SOURCE_DIR}/include/kiln/data/shards.hpp
            ${PROJECT_SOURCE_DIR}/include/kiln/data/megatron.hpp ${PROJECT_SOURCE_DIR}/include/kiln/core/error.hpp
    COMMENT "Building the shard fuzzer (clang++ -fsanitize=fuzzer,address)"
    VERBATIM)
  add_custom_target(fuzz_shards ALL DEPENDS ${kiln_fuzz_shards})
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz ${CMAKE_CURRENT_BINARY_DIR}/fuzz_shards_corpus ${CMAKE_CURRENT_BINARY_DIR}/fuzz_shards_artifacts)
  add_test(NAME fuzz.shards
           COMMAND ${kiln_fuzz_shards} -max_total_time=15 -rss_limit_mb=2048 -max_len=4096
                   -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz_shards_artifacts/
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz_shards_corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/shards)
  set_tests_properties(fuzz.shards PROPERTIES LABELS cpu TIMEOUT 90)
else()
  message(STATUS "clang++ not found: the shard fuzzer (fuzz.shards) is not built; tools/kiln setup installs clang")
endif()

# ---- the data programs as a user runs them ---------------------------------------------------------------------------
set(kiln_tok_fixture ${PROJECT_SOURCE_DIR}/tests/fixtures/tokenizer/hf_llama3_pairs.json)
set(kiln_tok_text ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tokenizer/train_corpus.txt)
add_test(NAME tokenize.split_lines
         COMMAND kiln_tokenize ${kiln_tok_text} --split-lines --tokenizer ${kiln_tok_fixture} --seed 5 --threads 2
                 --max-shard-tokens 4000 --output ${CMAKE_CURRENT_BINARY_DIR}/tokenize_test/corpus)
set_tests_properties(tokenize.split_lines PROPERTIES LABELS cpu
                     PASS_REGULAR_EXPRESSION "wrote [0-9]+ shards: [0-9]+ documents, [0-9]+ tokens, u16 tokens")
add_test(NAME tokenize.bad_input COMMAND kiln_tokenize /nonexistent/text --tokenizer ${kiln_tok_fixture} -o x)
set_tests_properties(tokenize.bad_input PROPERTIES LABELS cpu
                     PASS_REGULAR_EXPRESSION "input '/nonexistent/text' is not a readable file or directory")
add_test(NAME tokenize.needs_tokenizer COMMAND kiln_tokenize ${kiln_tok_text} -o x)
set_tests_properties(tokenize.needs_tokenizer PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "text inputs need --tokenizer")
add_test(NAME tokstats.table COMMAND kiln_tokstats -t ${kiln_tok_fixture} --split-lines ${kiln_tok_text})
set_tests_properties(tokstats.table PROPERTIES LABELS cpu
                     PASS_REGULAR_EXPRESSION "tokenizer +vocab +words +tokens +fertility +continued %.*hf_llama3_pairs.json")
