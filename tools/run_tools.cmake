# Programs that work on runs: plot (metrics.jsonl -> PNG).
add_executable(kiln_plot ${CMAKE_CURRENT_LIST_DIR}/plot.cpp)
target_link_libraries(kiln_plot PRIVATE kiln::kiln)
