# tests/phases.cmake: a recipe whose program has two phases (tests/recipes/two_phase.hpp) run through the trainer's
# command line, phase by phase and whole (tests/phases_test.sh). The same semantics in-process: test_train.cpp.
if(NOT TARGET train_two_phase)
  kiln_add_trainer(train_two_phase RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/two_phase.hpp BACKEND cpu)
endif()
add_test(NAME trainer.phases COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/phases_test.sh $<TARGET_FILE:train_two_phase>
                                     ${CMAKE_CURRENT_BINARY_DIR}/phases_test)
set_tests_properties(trainer.phases PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: " FAIL_REGULAR_EXPRESSION "FAIL: "
                     ENVIRONMENT "OMP_NUM_THREADS=2;OMP_WAIT_POLICY=passive")

# The demo's program with its long-context phase (recipes/demo_long.hpp), 4 steps a phase: the retrieval documents are
# a source of the corpus (boosted in the long phase), and a task is scored at the run's start, at the end of the
# 256-token phase, at the start of the 1024-token one (its shape and theta) and at the end: 2 records a formulation
# pair in each phase; the final checkpoint's loss by position on a long text (the GPL) at the long phase's length.
# --retrieval-docs on byte-level data is refused.
if(NOT TARGET train_demo_long)
  kiln_add_trainer(train_demo_long RECIPE ${PROJECT_SOURCE_DIR}/recipes/demo_long.hpp BACKEND cpu)
endif()
set_target_properties(train_demo_long PROPERTIES EXCLUDE_FROM_ALL OFF)  # shipped recipes build on demand; the test needs it
set(kiln_long_dir ${CMAKE_CURRENT_BINARY_DIR}/demo_long_test)
add_test(NAME trainer.demo_long COMMAND sh -c "rm -rf '${kiln_long_dir}' && mkdir -p '${kiln_long_dir}' && '$<TARGET_FILE:kiln_make_task>' /usr/share/games/fortunes --held-out 20 --retrieval 100:300 --count 8 --out '${kiln_long_dir}/near.jsonl' > /dev/null && '$<TARGET_FILE:train_demo_long>' --steps 4 --eval-batches 1 --retrieval-docs 40 --eval-task '${kiln_long_dir}/near.jsonl' --sample-tokens 0 --out '${kiln_long_dir}/run' --cache '${kiln_long_dir}/cache' --resume none --threads 2 --log-every 2 > '${kiln_long_dir}/log' && grep -o 'boosted retrieval x3.00' '${kiln_long_dir}/log' && grep '\"task\"' '${kiln_long_dir}/run/metrics.jsonl' | grep -c '\"phase\":\"pretrain\"' && grep '\"task\"' '${kiln_long_dir}/run/metrics.jsonl' | grep -c '\"phase\":\"long\"' && grep -o 'held-out loss [0-9.]* at the phase.s start' '${kiln_long_dir}/log' && '$<TARGET_FILE:train_demo_long>' eval --checkpoint '${kiln_long_dir}/run/checkpoints' --text /usr/share/common-licenses/GPL-3 --by-position 256,512 --phase long | grep -o 'loss by position.*' && '$<TARGET_FILE:train_demo_pretrain>' --retrieval-docs 5 --tokenizer '' --steps 1 2>&1; echo \"exit $?\"")
set_tests_properties(trainer.demo_long PROPERTIES LABELS cpu ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 300
                     PASS_REGULAR_EXPRESSION "boosted retrieval x3\\.00\n4\n4\nheld-out loss [0-9.]+ at the phase.s start\nloss by position \\([0-9]+ rows of 1024 tokens, each from position 0\\): \\[0, 256\\) [0-9.]+, \\[256, 512\\) [0-9.]+, \\[512, 1024\\) [0-9.]+\n.*--retrieval-docs adds documents to a text corpus tokenized with --tokenizer bpe:<n>, not to byte-level data.*exit 1")
