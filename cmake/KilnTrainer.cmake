# kiln_add_trainer(NAME RECIPE <header> BACKEND cpu|cuda|simt [EXCLUDE_FROM_ALL])
#   Compiles tools/train.cpp (the training step) and tools/train_tools.cpp (decoder, HF config, plan printer) with
#   the recipe included, two translation units that build in parallel, and links kiln_trainer_cli: the trainer
#   program's command line, data, checkpoints and HF interop, compiled once for every recipe (tools/cli).
#   A recipe header recipes/foo.hpp defines the type recipes::foo. BACKEND cuda: the training step is compiled by
#   nvcc for the GPU (backend/cuda.hpp); simt: the same CUDA backend compiled by g++ over the SIMT layer, a CPU
#   program that runs the CUDA backend's code (slowly), for tests.
# kiln_add_plan(NAME RECIPE <header> [EXCLUDE_FROM_ALL])
#   Compiles tools/plan.cpp with the recipe: prints its static plan without building any kernels.
set(KILN_SOURCE_DIR ${CMAKE_CURRENT_LIST_DIR}/..)

file(GLOB KILN_TRAINER_CLI_SOURCES CONFIGURE_DEPENDS ${KILN_SOURCE_DIR}/tools/cli/*.cpp)
add_library(kiln_trainer_cli STATIC ${KILN_TRAINER_CLI_SOURCES})
target_include_directories(kiln_trainer_cli PUBLIC ${KILN_SOURCE_DIR}/tools)
target_link_libraries(kiln_trainer_cli PUBLIC kiln::kiln)

function(_kiln_recipe_defs target recipe)
  get_filename_component(abs ${recipe} ABSOLUTE)
  get_filename_component(stem ${recipe} NAME_WE)
  if(NOT stem MATCHES "^[A-Za-z_][A-Za-z0-9_]*$")
    message(FATAL_ERROR "kiln: recipe file name '${stem}' must be a C++ identifier: recipes/<name>.hpp defines recipes::<name>")
  endif()
  target_compile_definitions(${target} PRIVATE KILN_RECIPE_HEADER="${abs}" KILN_RECIPE=recipes::${stem}
                             KILN_RECIPE_NAME="${stem}")
endfunction()

function(kiln_add_trainer name)
  cmake_parse_arguments(arg "EXCLUDE_FROM_ALL" "RECIPE;BACKEND" "" ${ARGN})
  if(NOT arg_RECIPE)
    message(FATAL_ERROR "kiln_add_trainer(${name}): RECIPE <header> is required")
  endif()
  if(NOT arg_BACKEND)
    set(arg_BACKEND cpu)
  endif()
  if(arg_BACKEND STREQUAL "cpu")
    add_executable(${name} ${KILN_SOURCE_DIR}/tools/train.cpp ${KILN_SOURCE_DIR}/tools/train_tools.cpp)
  elseif(arg_BACKEND STREQUAL "cuda")
    # nvcc compiles the training step: tools/train.cpp through a generated .cu (a source file's language is one per
    # directory, and the CPU trainers compile the same file as C++)
    if(NOT KILN_HAVE_CUDA)
      message(FATAL_ERROR "kiln_add_trainer(${name}): BACKEND cuda needs nvcc (CUDA 13 at /usr/local/cuda), which "
                          "CMake did not find; set CMAKE_CUDA_COMPILER, or use BACKEND cpu")
    endif()
    set(cu ${CMAKE_CURRENT_BINARY_DIR}/${name}_sources/train.cu)
    file(CONFIGURE OUTPUT ${cu} CONTENT "#include \"${KILN_SOURCE_DIR}/tools/train.cpp\"\n")
    add_executable(${name} ${cu} ${KILN_SOURCE_DIR}/tools/train_tools.cpp)
    target_compile_definitions(${name} PRIVATE KILN_BACKEND_CUDA)
    target_link_libraries(${name} PRIVATE kiln_cuda_headers CUDA::cublasLt)
    if(TARGET kiln_cudnn)  # cuDNN's attention (cmake/KilnCudnn.cmake); without it Kiln's attention kernel runs
      target_link_libraries(${name} PRIVATE kiln_cudnn)
    endif()
    if(TARGET kiln_nccl)  # GPU ranks (data parallelism over NCCL)
      target_link_libraries(${name} PRIVATE kiln_nccl)
    endif()
    target_compile_options(${name} PRIVATE $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wno-aggressive-loop-optimizations>)
  elseif(arg_BACKEND STREQUAL "simt")
    # the CUDA backend's code compiled by g++ over the SIMT layer: a CPU program, for testing the CUDA trainer
    add_executable(${name} ${KILN_SOURCE_DIR}/tools/train.cpp ${KILN_SOURCE_DIR}/tools/train_tools.cpp)
    target_compile_definitions(${name} PRIVATE KILN_BACKEND_CUDA)
  else()
    message(FATAL_ERROR "kiln_add_trainer(${name}): BACKEND must be cpu, cuda or simt, got '${arg_BACKEND}'")
  endif()
  if(arg_EXCLUDE_FROM_ALL)
    set_target_properties(${name} PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
  target_link_libraries(${name} PRIVATE kiln_trainer_cli)
  _kiln_recipe_defs(${name} ${arg_RECIPE})
endfunction()

function(kiln_add_plan name)
  cmake_parse_arguments(arg "EXCLUDE_FROM_ALL" "RECIPE" "" ${ARGN})
  add_executable(${name} ${KILN_SOURCE_DIR}/tools/plan.cpp)
  if(arg_EXCLUDE_FROM_ALL)
    set_target_properties(${name} PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
  target_link_libraries(${name} PRIVATE kiln::kiln)
  if(TARGET kiln_cudnn)  # --check-attention: cuDNN's validation of the phases' attention graphs
    target_link_libraries(${name} PRIVATE kiln_cudnn)
  endif()
  _kiln_recipe_defs(${name} ${arg_RECIPE})
endfunction()

# kiln_add_registry(NAME RECIPES <header>... [EXCLUDE_FROM_ALL])
#   The recipe registry program (tools/registry): one generated translation unit per recipe (its plan summary and its
#   model's HF-config check, no kernels), the list of them, and the registry's command line, compiled once.
#   `tools/kiln import` and `tools/kiln plan a b` ask it instead of building every recipe's plan printer.
add_library(kiln_registry_cli STATIC ${KILN_SOURCE_DIR}/tools/registry/main.cpp)
target_include_directories(kiln_registry_cli PUBLIC ${KILN_SOURCE_DIR}/tools)
target_link_libraries(kiln_registry_cli PUBLIC kiln::kiln)

function(kiln_add_registry name)
  cmake_parse_arguments(arg "EXCLUDE_FROM_ALL" "" "RECIPES" ${ARGN})
  set(dir ${CMAKE_CURRENT_BINARY_DIR}/${name}_sources)
  set(sources "")
  set(decls "")
  set(calls "")
  set(seen "")
  foreach(recipe IN LISTS arg_RECIPES)
    get_filename_component(abs ${recipe} ABSOLUTE)
    get_filename_component(stem ${recipe} NAME_WE)
    if(stem IN_LIST seen)
      message(FATAL_ERROR "kiln_add_registry(${name}): two recipes named ${stem} (${abs})")
    endif()
    list(APPEND seen ${stem})
    file(CONFIGURE OUTPUT ${dir}/${stem}.cpp CONTENT
"// Generated by kiln_add_registry (cmake/KilnTrainer.cmake): the registry entry of recipe ${stem}.
#define KILN_REGISTRY_RECIPE
#include \"${abs}\"
#include \"registry/entry.hpp\"
kiln::RegistryEntry kiln_registry_${stem}() { return kiln::registry_entry<recipes::${stem}>(\"${stem}\", \"${abs}\"); }
" @ONLY)
    list(APPEND sources ${dir}/${stem}.cpp)
    string(APPEND decls "kiln::RegistryEntry kiln_registry_${stem}();\n")
    string(APPEND calls "kiln_registry_${stem}(), ")
  endforeach()
  file(CONFIGURE OUTPUT ${dir}/main.cpp CONTENT
"// Generated by kiln_add_registry (cmake/KilnTrainer.cmake): the registered recipes.
#include \"registry/entry.hpp\"
${decls}
int main(int argc, char** argv) { return kiln::registry::main(argc, argv, {${calls}}); }
" @ONLY)
  add_executable(${name} ${dir}/main.cpp ${sources})
  target_link_libraries(${name} PRIVATE kiln_registry_cli)
  if(arg_EXCLUDE_FROM_ALL)
    set_target_properties(${name} PROPERTIES EXCLUDE_FROM_ALL ON)
  endif()
endfunction()
