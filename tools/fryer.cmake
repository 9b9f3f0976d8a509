# kiln_fryer (tools/kiln fryer): the GPU burn-in. Built where nvcc exists (CI compiles it); needs a GPU to run.
if(KILN_HAVE_CUDA)
  find_package(Threads REQUIRED)
  add_executable(kiln_fryer ${CMAKE_CURRENT_LIST_DIR}/fryer.cu)
  target_link_libraries(kiln_fryer PRIVATE kiln_cuda_headers CUDA::cublas CLI11::CLI11 Threads::Threads
                        ${CMAKE_DL_LIBS})
endif()
