#!/usr/bin/env bash
# bench/compile_time.sh [recipe.hpp]: what a user waits for when building a dedicated trainer.
#   clean:    configure a fresh build directory and build the recipe's trainer (every file it needs)
#   rebuild:  touch the recipe header and build again (what an edit of the recipe costs)
# Prints wall seconds and peak compiler memory; record them in bench/RESULTS.md with the machine and date.
# Default recipe: recipes/demo.hpp. Uses `nproc` jobs (CI and the reference machines: 2 cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
recipe=$(readlink -f "${1:-$root/recipes/demo.hpp}")
stem=$(basename "$recipe" .hpp)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
extra=()
[[ "$recipe" == "$root/recipes/"* ]] || extra=(-DKILN_USER_RECIPES="$recipe")
cmake -S "$root" -B "$work" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_TESTS=OFF -DKILN_BENCH=OFF "${extra[@]}" > /dev/null
timed() {  # wall seconds and peak RSS (KB) of a command
  /usr/bin/time -f "%e %M" -o "$work/time" "$@" > /dev/null
  cat "$work/time"
}
read -r clean clean_kb < <(timed ninja -C "$work" -j "$(nproc)" "train_$stem")
touch "$recipe"
read -r rebuild rebuild_kb < <(timed ninja -C "$work" -j "$(nproc)" "train_$stem")
printf 'train_%s on %s cores: clean build %.1f s (peak %d MB), rebuild after touching %s %.1f s (peak %d MB)\n' \
  "$stem" "$(nproc)" "$clean" $((clean_kb / 1024)) "$(basename "$recipe")" "$rebuild" $((rebuild_kb / 1024))
