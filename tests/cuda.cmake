# CUDA tests, built when nvcc exists (KILN_HAVE_CUDA). CI compiles them on machines without a GPU; there the `gpu`
# tests say "skipped: no CUDA device" and ctest counts them as skipped.
if(KILN_HAVE_CUDA)
  add_executable(test_kernels_gpu gpu/test_kernels_gpu.cu)
  target_link_libraries(test_kernels_gpu PRIVATE kiln_cuda_headers)
  if(TARGET kiln_cudnn)  # cuDNN's attention against the CPU reference
    target_link_libraries(test_kernels_gpu PRIVATE kiln_cudnn)
  endif()
  # nvcc's host pass runs g++ at -O3, where GCC 12 warns about the CPU reference's tail loop (kernels/adamw.hpp's
  # sum_squares) assuming a wrap-around it cannot reach; the g++ -O2 builds of the same code do not.
  target_compile_options(test_kernels_gpu PRIVATE -Xcompiler=-Wno-aggressive-loop-optimizations)
  add_test(NAME test_kernels_gpu COMMAND test_kernels_gpu)
  set_tests_properties(test_kernels_gpu PROPERTIES LABELS gpu SKIP_REGULAR_EXPRESSION "skipped: no CUDA device")

  # The CUDA backend's step on the GPU against PyTorch's fixture (the same cases as test_cuda_backend_simt).
  add_executable(test_cuda_backend_gpu gpu/test_cuda_backend_gpu.cu)
  target_link_libraries(test_cuda_backend_gpu PRIVATE kiln_cuda_headers CUDA::cublasLt)
  if(TARGET kiln_cudnn)
    target_link_libraries(test_cuda_backend_gpu PRIVATE kiln_cudnn)
  endif()
  target_include_directories(test_cuda_backend_gpu PRIVATE ${KILN_XXHASH_INCLUDE})
  target_compile_definitions(test_cuda_backend_gpu PRIVATE KILN_TEST_FIXTURES="${KILN_TEST_FIXTURES}")
  target_compile_options(test_cuda_backend_gpu PRIVATE -Xcompiler=-Wno-aggressive-loop-optimizations)
  add_test(NAME test_cuda_backend_gpu COMMAND test_cuda_backend_gpu)
  set_tests_properties(test_cuda_backend_gpu PROPERTIES LABELS gpu SKIP_REGULAR_EXPRESSION "skipped: no CUDA device")

  # NCCL's device collectives on one rank (src/parallel/nccl.cpp; NCCL loaded at run time)
  if(TARGET kiln_nccl)
    kiln_add_test(test_nccl_gpu gpu/test_nccl_gpu.cpp LABELS gpu)
    target_link_libraries(test_nccl_gpu PRIVATE kiln_nccl)
    set_tests_properties(test_nccl_gpu PROPERTIES SKIP_REGULAR_EXPRESSION "skipped: no CUDA device")
  endif()

  # The tensor-parallel demo's CUDA trainer (Trainer<demo_tp2, Cuda>: its groups' NCCL communicators, the executor
  # of tp_local's programs) compiled by nvcc; it runs on 2 GPUs (`mpirun -np 2`), which no machine here has: CPU CI
  # runs the same code in the SIMT build (parallel.cuda_simt).
  kiln_add_trainer(train_demo_tp2_cuda RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/demo_tp2.hpp BACKEND cuda)

  # ptxas -v on the hot kernels at SmolLM3's shapes: a register spill fails the test (it names the kernel).
  add_test(NAME cuda.no_spills
           COMMAND ${CMAKE_CUDA_COMPILER} -std=c++20 --expt-relaxed-constexpr -arch=sm_${KILN_CUDA_ARCHITECTURES}
                   -Xptxas -v -I${PROJECT_SOURCE_DIR}/include -I${PROJECT_SOURCE_DIR} -c
                   ${CMAKE_CURRENT_SOURCE_DIR}/gpu/ptxas_kernels.cu -o ${CMAKE_CURRENT_BINARY_DIR}/ptxas_kernels.o)
  set_tests_properties(cuda.no_spills PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "0 bytes spill stores"
                       FAIL_REGULAR_EXPRESSION "[1-9][0-9]* bytes spill (stores|loads)")
endif()

# The CUDA backend's op program as the plan printer shows it (no nvcc needed: the printer compiles no kernel).
add_test(NAME plan.cuda_program COMMAND plan_demo --backend cuda)
set_tests_properties(plan.cuda_program PROPERTIES LABELS cpu
                     PASS_REGULAR_EXPRESSION "cuBLASLt workspace +0 B +32.00 MiB.*storage bf16, compute f32.*cuBLASLt bf16 TN.*attention_forward<4,2,48>.*d.attention_delta"
                     FAIL_REGULAR_EXPRESSION "scores")

# cuDNN's attention graphs validated for sm_90 without a GPU (cmake/KilnCudnn.cmake builds kiln_cudnn).
if(TARGET kiln_cudnn)
  kiln_add_test(test_sdpa_graphs test_sdpa_graphs.cpp)
  target_link_libraries(test_sdpa_graphs PRIVATE kiln_cudnn)
  add_test(NAME plan.check_attention COMMAND plan_demo --check-attention)
  set_tests_properties(plan.check_attention PROPERTIES LABELS cpu
                       PASS_REGULAR_EXPRESSION "forward and backward valid with 1, 8 and 2048 documents")
endif()
