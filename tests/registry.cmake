# tests/registry.cmake: the recipe registry (kiln_recipes, tools/registry) as tools/kiln uses it, over the shipped
# recipes and the test recipes: list, match a transformers config.json (tests/fixtures/hf/tiny_llama) to its recipe,
# refuse one that fits none with every differing field, diff two plans, name a checkpoint's recipe.
file(GLOB kiln_test_recipes ${CMAKE_CURRENT_SOURCE_DIR}/recipes/*.hpp)
kiln_add_registry(kiln_recipes_test RECIPES ${KILN_SHIPPED_RECIPES} ${kiln_test_recipes})
add_test(NAME tools.registry COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/registry_test.sh $<TARGET_FILE:kiln_recipes_test>
                                     $<TARGET_FILE:train_tiny_llama> ${KILN_TEST_FIXTURES}
                                     ${CMAKE_CURRENT_BINARY_DIR}/registry_test)
set_tests_properties(tools.registry PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: " FAIL_REGULAR_EXPRESSION "FAIL: "
                     ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
