# tests/hf.cmake: Hugging Face interop (train_<recipe> export / import): a trained checkpoint -> HF directory ->
# checkpoint round trip, and a tiny Llama saved by transformers (tests/fixtures/hf/tiny_llama, made by
# tests/reference/make_hf_fixtures.py) imported into a recipe of its shape, Kiln's logits against transformers'.
# No Python or network at test time.
if(NOT TARGET train_tiny_llama)  # tools/kiln ... --recipe tests/recipes/tiny_llama.hpp makes it a user recipe
  kiln_add_trainer(train_tiny_llama RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/tiny_llama.hpp BACKEND cpu)
endif()
add_test(NAME trainer.hf_interop COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/hf_interop_test.sh $<TARGET_FILE:train_demo>
                                         $<TARGET_FILE:train_tiny_llama> $<TARGET_FILE:kiln_tokenize> ${KILN_TEST_FIXTURES}
                                         ${CMAKE_CURRENT_BINARY_DIR}/hf_interop_test)
set_tests_properties(trainer.hf_interop PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: "
                     FAIL_REGULAR_EXPRESSION "FAIL: " ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")

# A tiny SmolLM3 saved by transformers' own SmolLM3ForCausalLM (v5 config form: rope_parameters, dtype; NoPE layer 3)
# imported into tests/recipes/tiny_smollm3.hpp: Kiln's logits within 1e-4 (relative) of transformers' float64 ones.
if(NOT TARGET train_tiny_smollm3)
  kiln_add_trainer(train_tiny_smollm3 RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/tiny_smollm3.hpp BACKEND cpu)
endif()
set(kiln_smol_work ${CMAKE_CURRENT_BINARY_DIR}/hf_smollm3_test)
add_test(NAME trainer.hf_smollm3
         COMMAND sh -c "rm -rf '${kiln_smol_work}' && '$<TARGET_FILE:train_tiny_smollm3>' import --hf '${KILN_TEST_FIXTURES}/hf/tiny_smollm3' --out '${kiln_smol_work}/ck' && '$<TARGET_FILE:train_tiny_smollm3>' export --checkpoint '${kiln_smol_work}/ck' --out '${kiln_smol_work}/hf' --check-logits '${KILN_TEST_FIXTURES}/hf/tiny_smollm3/reference_logits.safetensors' && grep -q '\"no_rope_layers\"' '${kiln_smol_work}/hf/config.json' && echo PASS")
set_tests_properties(trainer.hf_smollm3 PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "logits match.*PASS"
                     ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
