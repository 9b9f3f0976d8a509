# Data programs: kiln_tokenize (text / Megatron -> shuffled shards) and kiln_tokstats (fertility, continued words).
# Both use the BPE tokenizer (kiln/data/tokenizer.hpp), which needs PCRE2 (Debian: libpcre2-dev).
find_library(KILN_PCRE2_8 NAMES pcre2-8 REQUIRED)
add_executable(kiln_tokenize ${CMAKE_CURRENT_LIST_DIR}/tokenize.cpp)
target_link_libraries(kiln_tokenize PRIVATE kiln::kiln ${KILN_PCRE2_8})
add_executable(kiln_tokstats ${CMAKE_CURRENT_LIST_DIR}/tokstats.cpp)
target_link_libraries(kiln_tokstats PRIVATE kiln::kiln ${KILN_PCRE2_8})
add_executable(kiln_tokenizer ${CMAKE_CURRENT_LIST_DIR}/tokenizer.cpp)
target_link_libraries(kiln_tokenizer PRIVATE kiln::kiln ${KILN_PCRE2_8})
# kiln_make_task: evaluation tasks in HellaSwag's layout from text on the machine (kiln/eval/make_tasks.hpp)
add_executable(kiln_make_task ${CMAKE_CURRENT_LIST_DIR}/make_task.cpp)
target_link_libraries(kiln_make_task PRIVATE kiln::kiln)
