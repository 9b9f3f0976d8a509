# tests/ablate.cmake: the ablation runner (kiln_ablate, tools/kiln ablate) on two tiny recipes (tests/ablate_test.sh).
foreach(r ablate_tiny ablate_tiny_mqa)
  if(NOT TARGET train_${r})
    kiln_add_trainer(train_${r} RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/${r}.hpp BACKEND cpu)
  endif()
endforeach()
add_test(NAME trainer.ablate COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/ablate_test.sh $<TARGET_FILE:kiln_ablate>
                                     $<TARGET_FILE:train_ablate_tiny> $<TARGET_FILE:train_ablate_tiny_mqa>
                                     $<TARGET_FILE:kiln_make_task> ${CMAKE_CURRENT_BINARY_DIR}/ablate_test)
set_tests_properties(trainer.ablate PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: " FAIL_REGULAR_EXPRESSION "FAIL: "
                     ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive" TIMEOUT 600)
