# tests/io.cmake: kiln::io beyond the safetensors reader: HF config.json, sharded safetensors, TensorBoard events,
# JSONL, checkpoints; libFuzzer targets for the two parsers that read untrusted files.
kiln_add_test(test_hf_config test_hf_config.cpp)
kiln_add_test(test_tensorboard test_tensorboard.cpp)
kiln_add_test(test_safetensors_sharded test_safetensors_sharded.cpp)
kiln_add_test(test_checkpoint test_checkpoint.cpp)
