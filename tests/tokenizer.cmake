# tests/tokenizer.cmake: the byte-level BPE tokenizer (kiln/data/tokenizer.hpp): its test and its libFuzzer target.

# (PCRE2 itself is found and linked to kiln::kiln in the top-level CMakeLists.txt.)

kiln_add_test(test_tokenizer test_tokenizer.cpp)

# ---- fuzz.tokenizer_json: libFuzzer + ASan over Tokenizer::from_json (then encode/decode), 20 s from a seed corpus ---
# Built by clang++ directly (the tree is built with g++). A missing clang / libFuzzer is a failing test that says what
# to install (tools/kiln setup installs clang and libclang-rt-14-dev), not a silent skip.
find_program(KILN_CLANGXX NAMES clang++ clang++-14)
set(kiln_fuzz_tok_ok FALSE)
if(KILN_CLANGXX)
  set(probe_dir ${CMAKE_CURRENT_BINARY_DIR}/fuzz_probe)
  file(WRITE ${probe_dir}/probe.cpp
       "#include <cstdint>\n#include <cstddef>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(COMMAND ${KILN_CLANGXX} -fsanitize=fuzzer,address ${probe_dir}/probe.cpp -o ${probe_dir}/probe
                  RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(probe_rc EQUAL 0)
    set(kiln_fuzz_tok_ok TRUE)
  endif()
endif()
if(kiln_fuzz_tok_ok)
  get_target_property(kiln_json_inc nlohmann_json::nlohmann_json INTERFACE_INCLUDE_DIRECTORIES)
  set(kiln_fuzz_tok_inc -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR} -I${KILN_PCRE2_INCLUDE})
  foreach(d IN LISTS kiln_json_inc)
    list(APPEND kiln_fuzz_tok_inc -I${d})
  endforeach()
  # (in fuzz/: an output named like its custom target in the same directory would clash in Ninja)
  set(kiln_fuzz_tok ${CMAKE_CURRENT_BINARY_DIR}/fuzz/fuzz_tokenizer_json)
  add_custom_command(
    OUTPUT ${kiln_fuzz_tok}
    COMMAND ${KILN_CLANGXX} -std=c++20 -O1 -g -fsanitize=fuzzer,address -fno-omit-frame-pointer ${kiln_fuzz_tok_inc}
            ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_tokenizer_json.cpp -o ${kiln_fuzz_tok} ${KILN_PCRE2}
    DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_tokenizer_json.cpp ${PROJECT_SOURCE_DIR}/include/kiln/data/tokenizer.hpp
            ${PROJECT_SOURCE_DIR}/include/kiln/core/error.hpp
    COMMENT "Building the tokenizer.json fuzzer (clang++ -fsanitize=fuzzer,address)"
    VERBATIM)
  add_custom_target(fuzz_tokenizer_json ALL DEPENDS ${kiln_fuzz_tok})
  file(MAKE_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR}/fuzz ${CMAKE_CURRENT_BINARY_DIR}/fuzz_tokenizer_json_corpus ${CMAKE_CURRENT_BINARY_DIR}/fuzz_tokenizer_json_artifacts)
  # New inputs go to the build-dir corpus; the committed seeds (tests/fuzz/corpus/tokenizer_json/) stay read-only.
  add_test(NAME fuzz.tokenizer_json
           COMMAND ${kiln_fuzz_tok} -max_total_time=20 -rss_limit_mb=2048 -max_len=8192 -timeout=10
                   -artifact_prefix=${CMAKE_CURRENT_BINARY_DIR}/fuzz_tokenizer_json_artifacts/
                   ${CMAKE_CURRENT_BINARY_DIR}/fuzz_tokenizer_json_corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/tokenizer_json)
  set_tests_properties(fuzz.tokenizer_json PROPERTIES LABELS cpu TIMEOUT 60)
else()
  message(STATUS "clang++ with libFuzzer not found: fuzz.tokenizer_json will fail saying so (install clang libclang-rt-14-dev)")
  add_test(NAME fuzz.tokenizer_json
           COMMAND ${CMAKE_COMMAND} -E echo "FAILED: clang++ with libFuzzer not found; install Debian's clang and libclang-rt-14-dev (tools/kiln setup does), then reconfigure")
  set_tests_properties(fuzz.tokenizer_json PROPERTIES LABELS cpu WILL_FAIL ON)
endif()

# kiln_tokenizer train (tools/tokenizer.cpp): the command reproduces the committed kiln_bpe.json byte for byte from
# its corpus (the same training test_tokenizer.cpp checks), and refuses bad limits before reading any input.
set(kiln_tok_fx ${CMAKE_CURRENT_SOURCE_DIR}/fixtures/tokenizer)
set(kiln_tok_out ${CMAKE_CURRENT_BINARY_DIR}/kiln_tokenizer_test.json)
add_test(NAME tokenizer.train_command
         COMMAND sh -c "rm -f '${kiln_tok_out}' && '$<TARGET_FILE:kiln_tokenizer>' train '${kiln_tok_fx}/train_corpus.txt' --split-lines --vocab 1024 --special '<|endoftext|>' --special '<|im_start|>' --special '<|im_end|>' --out '${kiln_tok_out}' && cmp '${kiln_tok_out}' '${kiln_tok_fx}/kiln_bpe.json' && echo SAME")
set_tests_properties(tokenizer.train_command PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "wrote .*SAME")
add_test(NAME tokenizer.train_command_limits
         COMMAND $<TARGET_FILE:kiln_tokenizer> train /nonexistent/texts --vocab 200 --out ${kiln_tok_out})
set_tests_properties(tokenizer.train_command_limits PROPERTIES LABELS cpu
                     PASS_REGULAR_EXPRESSION "--vocab 200: must be at least 256 \\(the bytes\\) \\+ 1")
add_test(NAME tokenizer.train_command_exists
         COMMAND $<TARGET_FILE:kiln_tokenizer> train ${kiln_tok_fx}/train_corpus.txt --vocab 300 --out ${kiln_tok_fx}/kiln_bpe.json)
set_tests_properties(tokenizer.train_command_exists PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "exists; add --force")
