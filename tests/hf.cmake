# tests/hf.cmake: Hugging Face interop (train_<recipe> export / import): a trained checkpoint -> HF directory ->
# checkpoint round trip, and a tiny Llama saved by transformers (tests/fixtures/hf/tiny_llama, made by
# tests/reference/make_hf_fixtures.py) imported into a recipe of its shape, Kiln's logits against transformers'.
# No Python or network at test time.
if(NOT TARGET train_tiny_llama)  # tools/kiln ... --recipe tests/recipes/tiny_llama.hpp makes it a user recipe
  kiln_add_trainer(train_tiny_llama RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/tiny_llama.hpp BACKEND cpu)
endif()
add_test(NAME trainer.hf_interop COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/hf_interop_test.sh $<TARGET_FILE:train_demo_pretrain>
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

# The same SmolLM3 with transformers' YaRN (rope_parameters rope_type "yarn", factor 4 over 16 positions) imported
# into tests/recipes/tiny_smollm3_yarn.hpp: Kiln's logits with YaRN's frequencies and attention factor within 1e-4
# of transformers' float64 ones; the export writes rope_scaling back; the plain recipe refuses the checkpoint,
# naming the scaling.
if(NOT TARGET train_tiny_smollm3_yarn)
  kiln_add_trainer(train_tiny_smollm3_yarn RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/tiny_smollm3_yarn.hpp BACKEND cpu)
endif()
set(kiln_yarn_work ${CMAKE_CURRENT_BINARY_DIR}/hf_smollm3_yarn_test)
set(kiln_yarn_fx ${KILN_TEST_FIXTURES}/hf/tiny_smollm3_yarn)
add_test(NAME trainer.hf_smollm3_yarn
         COMMAND sh -c "rm -rf '${kiln_yarn_work}' && '$<TARGET_FILE:train_tiny_smollm3_yarn>' import --hf '${kiln_yarn_fx}' --out '${kiln_yarn_work}/ck' && '$<TARGET_FILE:train_tiny_smollm3_yarn>' export --checkpoint '${kiln_yarn_work}/ck' --out '${kiln_yarn_work}/hf' --check-logits '${kiln_yarn_fx}/reference_logits.safetensors' && grep -q '\"rope_type\": \"yarn\"' '${kiln_yarn_work}/hf/config.json' && grep -q '\"max_position_embeddings\": 64' '${kiln_yarn_work}/hf/config.json' && echo EXPORTED && '$<TARGET_FILE:train_tiny_smollm3>' import --hf '${kiln_yarn_fx}' --out '${kiln_yarn_work}/plain' 2>&1; echo \"exit $?\"")
set_tests_properties(trainer.hf_smollm3_yarn PROPERTIES LABELS cpu
                     PASS_REGULAR_EXPRESSION "logits match.*EXPORTED.*rope_scaling: checkpoint yarn x4 over 16.*recipe none.*exit 3"
                     ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")
