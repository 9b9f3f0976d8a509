# The MPI communicator's all-reduce bandwidth (bench/bench_mpi.cpp), run under mpirun.
add_executable(kiln_bench_mpi ${CMAKE_CURRENT_LIST_DIR}/bench_mpi.cpp)
target_link_libraries(kiln_bench_mpi PRIVATE kiln::kiln benchmark::benchmark)
