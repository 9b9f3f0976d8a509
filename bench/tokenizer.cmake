# bench/tokenizer.cmake: the tokenizer benchmark (encode bytes/s, pre-tokenize, train) on the fortunes corpus.
add_executable(bench_tokenizer bench_tokenizer.cpp)
target_link_libraries(bench_tokenizer PRIVATE kiln::kiln benchmark::benchmark)
