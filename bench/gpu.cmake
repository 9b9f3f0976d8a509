# bench_gpu (nvcc): Kiln's CUDA kernels against the card's copy bandwidth and cuBLAS bf16 GEMM rate, run by
# bench/gpu_check.sh on a GPU machine; built wherever nvcc exists, so CI compiles it.
if(KILN_HAVE_CUDA)
  add_executable(bench_gpu bench_gpu.cu)
  target_link_libraries(bench_gpu PRIVATE kiln_cuda_headers CUDA::cublas benchmark::benchmark)
  if(TARGET kiln_cudnn)  # gpu/attention_cudnn
    target_link_libraries(bench_gpu PRIVATE kiln_cudnn)
  endif()
endif()

# bench_gpu_step (nvcc): whole training steps of recipes/ablation_1b.hpp and recipes/smollm3_3b.hpp on one GPU.
if(KILN_HAVE_CUDA)
  add_executable(bench_gpu_step bench_gpu_step.cu)
  target_link_libraries(bench_gpu_step PRIVATE kiln_cuda_headers CUDA::cublasLt benchmark::benchmark)
  target_compile_options(bench_gpu_step PRIVATE -Xcompiler=-Wno-aggressive-loop-optimizations)
  if(TARGET kiln_cudnn)
    target_link_libraries(bench_gpu_step PRIVATE kiln_cudnn)
  endif()
endif()
