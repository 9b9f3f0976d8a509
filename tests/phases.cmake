# tests/phases.cmake: a recipe whose program has two phases (tests/recipes/two_phase.hpp) run through the trainer's
# command line, phase by phase and whole (tests/phases_test.sh). The same semantics in-process: test_train.cpp.
if(NOT TARGET train_two_phase)
  kiln_add_trainer(train_two_phase RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/two_phase.hpp BACKEND cpu)
endif()
add_test(NAME trainer.phases COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/phases_test.sh $<TARGET_FILE:train_two_phase>
                                     ${CMAKE_CURRENT_BINARY_DIR}/phases_test)
set_tests_properties(trainer.phases PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: " FAIL_REGULAR_EXPRESSION "FAIL: "
                     ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
