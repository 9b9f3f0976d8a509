# tests/io.cmake: kiln::io beyond the safetensors reader: HF config.json, sharded safetensors, TensorBoard events,
# JSONL, checkpoints; libFuzzer targets for the two parsers that read untrusted files.
kiln_add_test(test_hf_config test_hf_config.cpp)
kiln_add_test(test_tensorboard test_tensorboard.cpp)
kiln_add_test(test_safetensors_sharded test_safetensors_sharded.cpp)
kiln_add_test(test_checkpoint test_checkpoint.cpp)

# ---- libFuzzer targets (clang++ -fsanitize=fuzzer,address), built as part of ALL; ctest runs each for 10 s over its
# committed seed corpus (tests/fuzz/corpus/<name>/; new inputs the fuzzer finds go to a scratch copy, not the tree).
# They need clang and its libFuzzer runtime (Debian: clang, libclang-rt-14-dev); without them they are skipped with
# a message. Built apart from kiln::kiln (no OpenMP/BLAS, no -march=native): the parsers need neither.
find_program(KILN_FUZZ_CXX NAMES clang++ clang++-18 clang++-17 clang++-16 clang++-15 clang++-14)
set(kiln_fuzz_ok FALSE)
if(KILN_FUZZ_CXX)
  set(probe ${CMAKE_CURRENT_BINARY_DIR}/kiln_fuzz_probe.cpp)
  file(WRITE ${probe} "#include <cstdint>\n#include <cstddef>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
  execute_process(COMMAND ${KILN_FUZZ_CXX} -fsanitize=fuzzer,address ${probe} -o ${CMAKE_CURRENT_BINARY_DIR}/kiln_fuzz_probe
                  RESULT_VARIABLE probe_rc OUTPUT_QUIET ERROR_QUIET)
  if(probe_rc EQUAL 0)
    set(kiln_fuzz_ok TRUE)
  endif()
endif()
if(NOT kiln_fuzz_ok)
  message(WARNING "Kiln: no clang++ with libFuzzer (-fsanitize=fuzzer,address) found: fuzz targets and the fuzz.* tests "
                  "are skipped. On Debian: apt-get install clang libclang-rt-14-dev")
else()
  foreach(fz safetensors hf_config)
    set(src ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_${fz}.cpp)
    set(bin ${CMAKE_CURRENT_BINARY_DIR}/fuzz/fuzz_${fz})  # not the target name: ninja would see two rules
    add_custom_command(OUTPUT ${bin}
      COMMAND ${KILN_FUZZ_CXX} -std=c++20 -g -O1 -fsanitize=fuzzer,address -I${PROJECT_SOURCE_DIR}/include
              -I${PROJECT_SOURCE_DIR} ${src} -o ${bin}
      DEPENDS ${src} ${CMAKE_CURRENT_SOURCE_DIR}/../include/kiln/io/safetensors.hpp
              ${CMAKE_CURRENT_SOURCE_DIR}/../include/kiln/io/hf_config_core.hpp
              ${CMAKE_CURRENT_SOURCE_DIR}/../include/kiln/core/file.hpp
              ${CMAKE_CURRENT_SOURCE_DIR}/../include/kiln/core/error.hpp
      COMMENT "libFuzzer target fuzz_${fz}"
      VERBATIM)
    add_custom_target(fuzz_${fz} ALL DEPENDS ${bin})
    # Fuzz into a scratch corpus seeded from the committed one, so a test run never writes into the source tree.
    set(work ${CMAKE_CURRENT_BINARY_DIR}/fuzz_${fz}_corpus)
    add_test(NAME fuzz.${fz}
             COMMAND sh -c "rm -rf '${work}' && mkdir -p '${work}' && exec '${bin}' -max_total_time=10 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix='${CMAKE_CURRENT_BINARY_DIR}/fuzz_${fz}_crash_' '${work}' '${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/${fz}'")
    set_tests_properties(fuzz.${fz} PROPERTIES LABELS cpu TIMEOUT 120)
  endforeach()
endif()
