// tools/train.cpp: one dedicated trainer per recipe. kiln_add_trainer() compiles this file with
// KILN_RECIPE_HEADER (the recipe's path), KILN_RECIPE (its type, recipes::<stem>) and KILN_RECIPE_NAME.
#include KILN_RECIPE_HEADER
#include "trainer_main.hpp"

int main(int argc, char** argv) { return kiln::train_main<KILN_RECIPE>(argc, argv, KILN_RECIPE_NAME); }
