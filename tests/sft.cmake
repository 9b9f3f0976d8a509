# tests/sft.cmake: supervised fine-tuning as a phase (tests/recipes/sft_tiny.hpp: pretraining, then kiln::SFT on
# conversations generated from the corpus): the phase reads chat data, its loss is the assistant tokens', and a run
# stopped and one killed in the SFT phase resume bitwise (tests/resume_test.sh).
if(NOT TARGET train_sft_tiny)
  kiln_add_trainer(train_sft_tiny RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/sft_tiny.hpp BACKEND cpu)
endif()
set(kiln_sft_dir ${CMAKE_CURRENT_BINARY_DIR}/sft_test)
add_test(NAME trainer.sft COMMAND sh -c "rm -rf '${kiln_sft_dir}' && '$<TARGET_FILE:train_sft_tiny>' --cache '${kiln_sft_dir}/cache' --out '${kiln_sft_dir}/run' --resume none --threads 2 --sample-tokens 0 --eval-every 4")
set_tests_properties(trainer.sft PROPERTIES LABELS cpu ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 300
                     PASS_REGULAR_EXPRESSION "kiln: SFT \\(loss on the assistant's tokens\\) \\| data [^\n]*chat.jsonl \\| [0-9]+ conversations, [0-9]+ held out.*step +20/20 \\(sft 8/8\\)")
# 20 steps a phase (sft: steps 21-40, a checkpoint at its step 10 = 30), 16 micro-batches a step so that a signal
# lands before the run ends: SIGTERM after step 24, SIGKILL after 33 (resumed from 30), both in the SFT phase.
add_test(NAME trainer.sft_resume_bitwise COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/resume_test.sh $<TARGET_FILE:train_sft_tiny>
                                                 ${CMAKE_CURRENT_BINARY_DIR}/sft_resume_test --steps 20 --grad-accum 16
                                                 --cache ${CMAKE_CURRENT_BINARY_DIR}/sft_resume_test/cache)
set_tests_properties(trainer.sft_resume_bitwise PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: "
                     FAIL_REGULAR_EXPRESSION "FAIL: " ENVIRONMENT "OMP_WAIT_POLICY=passive;KILN_RESUME_AT=24 33" TIMEOUT 600)
# The chat format against transformers' apply_chat_template (tests/fixtures/chat, tests/reference/make_chat_fixture.py),
# the reader's errors, packing, the loss mask's gradient, the generated conversations.
kiln_add_test(test_chat test_chat.cpp)
# Preference optimisation as a phase (tests/recipes/post_tiny.hpp: pretraining, SFT, APO-zero): its data, the loss at
# its start (the policy is the reference: APO-zero's 1 - 1/2 + 1/2 = 1), its statistics, `chat` with the result
# (messages in the template, /no_think opening the answer with the empty think block), and a run killed in it
# resuming bitwise (the reference comes back from the checkpoint).
if(NOT TARGET train_post_tiny)
  kiln_add_trainer(train_post_tiny RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/post_tiny.hpp BACKEND cpu)
endif()
set(kiln_post_dir ${CMAKE_CURRENT_BINARY_DIR}/post_test)
add_test(NAME trainer.preference COMMAND sh -c "rm -rf '${kiln_post_dir}' && '$<TARGET_FILE:train_post_tiny>' --cache '${kiln_post_dir}/cache' --out '${kiln_post_dir}/run' --resume none --threads 2 --sample-tokens 0 --eval-every 4 && grep -c '\"rewards/accuracies\"' '${kiln_post_dir}/run/metrics.jsonl' && '$<TARGET_FILE:train_post_tiny>' chat --checkpoint '${kiln_post_dir}/run/checkpoints' --message 'What is 1 + 2?' --message /no_think --message hi --max-tokens 4 --temperature 0")
set_tests_properties(trainer.preference PROPERTIES LABELS cpu ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 300
                     PASS_REGULAR_EXPRESSION "kiln: preference optimisation \\(apo_zero, beta 0.1, against the weights the phase starts from\\) \\| data [^\n]*pairs.jsonl \\| [0-9]+ pairs, [0-9]+ held out.*held-out loss 1.0000 at the phase's start \\(preference accuracy 0.000, margin \\+0.000\\).*step +28/28 \\(apo 8/8\\) \\| loss [0-9.]+ \\| pref acc [0-9.]+ margin [-+][0-9.]+.*\n8\nkiln: chat with [^\n]*step_00000028 \\(step 28, phase apo\\) \\| think mode.*\n> /no_think\n\\(no-think mode\\)\n> hi\n<think>\n\n</think>\n")
# With TRL's rpo_alpha: the phase says so, its held-out loss at the start is 1 + the chosen answers' NLL (the tiny
# model's is ~6 nats), and every record of its pairs (training steps, held-out evaluations) carries nll_loss.
set(kiln_rpo_dir ${CMAKE_CURRENT_BINARY_DIR}/post_rpo_test)
add_test(NAME trainer.preference_rpo COMMAND sh -c "rm -rf '${kiln_rpo_dir}' && '$<TARGET_FILE:train_post_tiny>' --cache '${kiln_rpo_dir}/cache' --out '${kiln_rpo_dir}/run' --resume none --threads 2 --sample-tokens 0 --steps 2 --log-every 1 --rpo-alpha 1 && test $(grep rewards/margins '${kiln_rpo_dir}/run/metrics.jsonl' | grep -vc nll_loss) -eq 0 && grep -c nll_loss '${kiln_rpo_dir}/run/metrics.jsonl'")
set_tests_properties(trainer.preference_rpo PROPERTIES LABELS cpu ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 300
                     PASS_REGULAR_EXPRESSION "apo_zero, beta 0\\.1, \\+ 1 x the chosen answers' NLL \\(RPO\\), against the weights the phase starts from\\).*held-out loss [2-9]\\.[0-9]+ at the phase's start.*step +6/6 \\(apo 2/2\\)")
# 20 steps a phase (apo: steps 41-60, a checkpoint at its step 10 = 50), 16 micro-batches a step so that a signal
# lands before the run ends: SIGTERM after step 44, SIGKILL after 52 (resumed from 50, whose reference blob returns).
add_test(NAME trainer.preference_resume_bitwise COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/resume_test.sh $<TARGET_FILE:train_post_tiny>
                                                 ${CMAKE_CURRENT_BINARY_DIR}/post_resume_test --steps 20 --grad-accum 16
                                                 --cache ${CMAKE_CURRENT_BINARY_DIR}/post_resume_test/cache)
set_tests_properties(trainer.preference_resume_bitwise PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: "
                     FAIL_REGULAR_EXPRESSION "FAIL: " TIMEOUT 600
                     ENVIRONMENT "OMP_WAIT_POLICY=passive;KILN_RESUME_AT=44 52")
# The same program on the CUDA backend (bf16 storage), compiled by g++ over the SIMT layer: 3 steps a phase from the
# same data and initialisation stay within bf16's tolerance of the CPU trainer's losses in every phase, and in the
# APO phase the pairs' rewards (beta x the log-ratios against the reference) too.
kiln_add_trainer(train_post_tiny_simt RECIPE ${CMAKE_CURRENT_SOURCE_DIR}/recipes/post_tiny.hpp BACKEND simt)
add_test(NAME trainer.preference_cuda_simt COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/cuda_simt_trainer_test.sh
                                                $<TARGET_FILE:train_post_tiny> $<TARGET_FILE:train_post_tiny_simt>
                                                ${CMAKE_CURRENT_BINARY_DIR}/post_cuda_simt 9
                                                --cache ${CMAKE_CURRENT_BINARY_DIR}/post_cuda_simt_cache --resume none)
set_tests_properties(trainer.preference_cuda_simt PROPERTIES LABELS cpu ENVIRONMENT "OMP_WAIT_POLICY=passive"
                     TIMEOUT 300 PASS_REGULAR_EXPRESSION "cuda_simt_trainer: the CUDA backend's losses are within")
# And it resumes bitwise in the APO phase (8 steps a phase, a checkpoint every 4: SIGTERM after step 19, SIGKILL
# after 22, resumed from 20): the reference model (cuda::Frozen) comes back from the checkpoint's fp32 copy.
add_test(NAME trainer.preference_cuda_simt_resume COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/resume_test.sh
                                                       $<TARGET_FILE:train_post_tiny_simt>
                                                       ${CMAKE_CURRENT_BINARY_DIR}/post_cuda_simt_resume --steps 8
                                                       --grad-accum 2 --checkpoint-every 4
                                                       --cache ${CMAKE_CURRENT_BINARY_DIR}/post_cuda_simt_resume/cache)
set_tests_properties(trainer.preference_cuda_simt_resume PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: "
                     FAIL_REGULAR_EXPRESSION "FAIL: " TIMEOUT 600
                     ENVIRONMENT "OMP_WAIT_POLICY=passive;KILN_RESUME_AT=19 22")
# Under data parallelism (2 CPU ranks): one process's steps, and the global batch's statistics in the log.
if(KILN_MPIRUN AND MPI_CXX_FOUND)
  add_test(NAME parallel.preference_dp2 COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/preference_dp_test.sh
                                                $<TARGET_FILE:train_post_tiny> ${CMAKE_CURRENT_BINARY_DIR}/preference_dp
                                                ${KILN_MPIRUN})
  set_tests_properties(parallel.preference_dp2 PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: "
                       FAIL_REGULAR_EXPRESSION "FAIL: " TIMEOUT 300)
endif()
# DPO and APO-zero against TRL's formulas (tests/fixtures/preference, tests/reference/make_preference_fixture.py),
# the pairs reader, the generated pairs, and the weighted backward against finite differences of the loss.
kiln_add_test(test_preference test_preference.cpp)
# Merging (train_<recipe> merge, tools/cli/merge.cpp) on the SFT run's checkpoints (tests/merge_test.sh).
add_test(NAME trainer.merge COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/merge_test.sh $<TARGET_FILE:train_sft_tiny>
                                    $<TARGET_FILE:train_post_tiny> ${CMAKE_CURRENT_BINARY_DIR}/merge_test)
set_tests_properties(trainer.merge PROPERTIES LABELS cpu PASS_REGULAR_EXPRESSION "PASS: " FAIL_REGULAR_EXPRESSION "FAIL: "
                     ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 300)
# The demo as the whole program (recipes/demo.hpp: pretraining in two data stages with reasoning documents, long
# context, SFT, APO-zero, the merge step), 2 steps a phase: every phase runs, the generated tasks and the additions
# are scored (CF only: the demo leaves MCF out), and the run ends with the table of each phase's end, the merge's row
# last, also in summary.md; the curves mark the 4 phases and draw the 5 scored measures.
set(kiln_demo_dir ${CMAKE_CURRENT_BINARY_DIR}/demo_program)
add_test(NAME trainer.demo_program COMMAND sh -c "rm -rf '${kiln_demo_dir}' && '$<TARGET_FILE:train_demo>' --steps 2 --eval-every 0 --eval-batches 1 --eval-task-examples 4 --reasoning-problems 1 --reasoning-docs 50 --sample-tokens 0 --cache '${kiln_demo_dir}/cache' --out '${kiln_demo_dir}/run' --threads 2 --log-every 1 && test -s '${kiln_demo_dir}/run/summary.md' && ls '${kiln_demo_dir}/cache' | grep -c '^task-' && ! grep -q 'formulation.:.MCF' '${kiln_demo_dir}/run/metrics.jsonl' && '$<TARGET_FILE:kiln_plot>' '${kiln_demo_dir}/run'")
set_tests_properties(trainer.demo_program PROPERTIES LABELS cpu ENVIRONMENT "OMP_WAIT_POLICY=passive" TIMEOUT 300
                     PASS_REGULAR_EXPRESSION "boosted reasoning x0\\.30.*kiln: what each phase did \\(held-out data; chance: completion 0\\.25, instructions 0\\.25, preferences 0\\.5\\):\n\\| after \\| step \\| text bits/byte \\| additions think \\| additions no-think \\| completion \\| instructions \\| preferences \\|\n[^\n]*\n\\| start \\| 0 \\|[^\n]*\n\\| pretrain \\| 2 \\|[^\n]*\n\\| long \\| 4 \\|[^\n]*\n\\| sft \\| 6 \\|[^\n]*\n\\| apo \\| 8 \\|[^\n]*\n\\| apo \\+ merge \\| 8 \\|.*\n3\nkiln plot: 8 steps, [0-9]+ evaluations, 5 scored measures, 4 phases")
