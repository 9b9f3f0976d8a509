# Programs that work on runs: plot (metrics.jsonl -> PNG), ablate (a campaign of runs -> table and PNG).
add_executable(kiln_plot ${CMAKE_CURRENT_LIST_DIR}/plot.cpp)
target_link_libraries(kiln_plot PRIVATE kiln::kiln)
# ablate: an ablation campaign's runs (trainers given), its table and curves (kiln/eval/ablation.hpp)
add_executable(kiln_ablate ${CMAKE_CURRENT_LIST_DIR}/ablate.cpp)
target_link_libraries(kiln_ablate PRIVATE kiln::kiln)
