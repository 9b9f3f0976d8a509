# The SIMT execution layer: fiber switches (Kiln's against ucontext) and block barriers.
add_executable(bench_simt bench_simt.cpp)
target_link_libraries(bench_simt PRIVATE kiln::kiln benchmark::benchmark)
