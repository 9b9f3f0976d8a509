# The SIMT execution layer (kiln/simt): CUDA kernels as host code. test_simt checks CUDA's semantics in both modes;
# simt_race is built with ThreadSanitizer (its own sources, so the instrumented build does not need kiln_runtime):
# a kernel with its barrier must run clean, the same kernel without it must be reported as a data race.
kiln_add_test(test_simt test_simt.cpp)

add_executable(simt_race simt_race.cpp ${PROJECT_SOURCE_DIR}/src/simt/simt.cpp ${PROJECT_SOURCE_DIR}/src/simt/fiber.cpp)
target_include_directories(simt_race PRIVATE ${PROJECT_SOURCE_DIR}/include ${PROJECT_SOURCE_DIR})
target_compile_options(simt_race PRIVATE -fsanitize=thread -O1 -g)
target_link_options(simt_race PRIVATE -fsanitize=thread)
target_compile_features(simt_race PRIVATE cxx_std_20)
add_test(NAME simt.tsan_clean COMMAND simt_race ok)
add_test(NAME simt.tsan_missing_barrier COMMAND simt_race race)
# TSan's exit code for a report is 66; halt_on_error keeps the log to the first report.
set_tests_properties(simt.tsan_clean PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "simt_race: ok done"
                     FAIL_REGULAR_EXPRESSION "ThreadSanitizer")
set_tests_properties(simt.tsan_missing_barrier PROPERTIES LABELS cpu ENVIRONMENT "TSAN_OPTIONS=halt_on_error=1"
                     PASS_REGULAR_EXPRESSION "WARNING: ThreadSanitizer: data race.*neighbour")

# Kiln's CUDA kernels run here as host code, against the CPU kernels.
kiln_add_test(test_kernels_simt test_kernels_simt.cpp)

# The CUDA backend's executor and state, run in the SIMT layer against PyTorch's fixture and the CPU's AdamW.
kiln_add_test(test_cuda_backend_simt test_cuda_backend_simt.cpp)

# The demo's pretraining trainer (demo_pretrain) with the CUDA backend, compiled by g++ over the SIMT layer: the whole
# trainer (data, guards, schedule, metrics) on the CUDA backend's code, against the CPU trainer's losses.
kiln_add_trainer(train_demo_simt RECIPE ${PROJECT_SOURCE_DIR}/recipes/demo_pretrain.hpp BACKEND simt)
add_test(NAME trainer.cuda_simt COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cuda_simt_trainer_test.sh $<TARGET_FILE:train_demo_pretrain>
                                        $<TARGET_FILE:train_demo_simt> ${CMAKE_CURRENT_BINARY_DIR}/cuda_simt_trainer)
set_tests_properties(trainer.cuda_simt PROPERTIES LABELS cpu ENVIRONMENT "OMP_WAIT_POLICY=passive"
                     PASS_REGULAR_EXPRESSION "within 1.5% of the CPU's")

# The CUDA backend's parallel layouts in the SIMT build under mpirun: DP 2 and TP 2 (the demo with its layers cut
# between 2 ranks) against one process, ZeRO-1 against DP 2, and checkpoints of TP and ZeRO-1 resumed in one process.
if(KILN_MPIRUN AND MPI_CXX_FOUND)
  kiln_add_trainer(train_demo_tp2_simt RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/demo_tp2.hpp BACKEND simt)
  kiln_add_trainer(train_demo_zero1_simt RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/demo_zero1.hpp BACKEND simt)
  add_test(NAME parallel.cuda_simt COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cuda_parallel_simt_test.sh
                                           $<TARGET_FILE:train_demo_simt> $<TARGET_FILE:train_demo_tp2_simt>
                                           $<TARGET_FILE:train_demo_zero1_simt>
                                           ${CMAKE_CURRENT_BINARY_DIR}/cuda_parallel_simt ${KILN_MPIRUN})
  set_tests_properties(parallel.cuda_simt PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: "
                       FAIL_REGULAR_EXPRESSION "FAIL: " TIMEOUT 900)
endif()
