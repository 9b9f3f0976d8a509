#!/usr/bin/env bash
# bench/compile_time.sh [recipe.hpp]: what a user waits for when building a dedicated trainer.
#   clean:    configure a fresh build directory and build the recipe's trainer (every file it needs)
#   rebuild:  touch the recipe header and build again (what an edit of the recipe costs)
#   cuda:     with nvcc, the same for train_<stem>_cuda
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
# The CUDA trainer (nvcc compiles the training step) where the toolkit is there: its first build after the CPU
# trainer's (the recipe-independent libraries are built), then the rebuild after touching the recipe.
if ninja -C "$work" -t targets all 2>/dev/null | grep -q "^train_${stem}_cuda:"; then
  read -r cuda cuda_kb < <(timed ninja -C "$work" -j "$(nproc)" "train_${stem}_cuda")
  touch "$recipe"
  read -r cuda_re cuda_re_kb < <(timed ninja -C "$work" -j "$(nproc)" "train_${stem}_cuda")
  printf 'train_%s_cuda: build after the CPU trainer %.1f s (peak %d MB), rebuild after touching %s %.1f s (peak %d MB)\n' \
    "$stem" "$cuda" $((cuda_kb / 1024)) "$(basename "$recipe")" "$cuda_re" $((cuda_re_kb / 1024))
fi

