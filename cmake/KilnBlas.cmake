# The CPU BLAS: Debian's OpenBLAS built with OpenMP, linked by its own path, so that Kiln's OpenMP loops and
# OpenBLAS share one thread pool (the pthread build would spin a second pool against ours on few cores).
# Measured on a 2-core AMD EPYC (bench/RESULTS.md): OpenBLAS-openmp 190-340 GFLOP/s sgemm, BLIS-openmp 40-65.
find_path(KILN_OPENBLAS_INCLUDE cblas.h
  PATHS /usr/include/x86_64-linux-gnu/openblas-openmp /usr/include/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
find_library(KILN_OPENBLAS_LIB openblas
  PATHS /usr/lib/x86_64-linux-gnu/openblas-openmp /usr/lib/aarch64-linux-gnu/openblas-openmp
  NO_DEFAULT_PATH)
if(NOT KILN_OPENBLAS_INCLUDE OR NOT KILN_OPENBLAS_LIB)
  message(FATAL_ERROR "kiln: OpenBLAS (OpenMP build) not found. Install it with:\n  apt-get install libopenblas-openmp-dev\n(tools/kiln does this for you)")
endif()
add_library(kiln_blas INTERFACE)
target_include_directories(kiln_blas INTERFACE ${KILN_OPENBLAS_INCLUDE})
target_link_libraries(kiln_blas INTERFACE ${KILN_OPENBLAS_LIB})
get_filename_component(_kiln_blas_dir ${KILN_OPENBLAS_LIB} DIRECTORY)
target_link_options(kiln_blas INTERFACE "-Wl,-rpath,${_kiln_blas_dir}")
