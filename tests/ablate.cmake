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
# --eval-every-tokens: 512 tokens a step, evaluations where the tokens pass a multiple of 1000 (steps 2, 4, 6 = the end)
# and at the start: the same token counts whatever the batch shape.
add_test(NAME trainer.eval_every_tokens COMMAND sh -c "'$<TARGET_FILE:train_ablate_tiny>' --steps 6 --eval-every-tokens 1000 --out '${CMAKE_CURRENT_BINARY_DIR}/eval_tokens' --resume none --sample-tokens 0 --threads 2 > /dev/null && grep -o '\"tokens\":[0-9]*,\"val_loss\"' '${CMAKE_CURRENT_BINARY_DIR}/eval_tokens/metrics.jsonl' | cut -d: -f2 | cut -d, -f1 | paste -sd' '")
set_tests_properties(trainer.eval_every_tokens PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "^0 1024 2048 3072\n$"
                     ENVIRONMENT "OMP_WAIT_POLICY=passive")
