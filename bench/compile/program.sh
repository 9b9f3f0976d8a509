#!/usr/bin/env bash
# bench/compile/program.sh: compile time of the op program represented two ways, at the demo's depth (8 layers)
# and SmolLM3's (36): Boost.Hana (every op a type, hana::for_each) against Kiln's constexpr array of op values.
# Needs Debian's libboost-dev for the Hana side. Prints seconds (g++ -std=c++20 -O2, best of 3) and checks both
# programs print the same op count and checksum. Run: bash bench/compile/program.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
[[ -f /usr/include/boost/hana.hpp ]] || { echo "bench/compile/program.sh: needs /usr/include/boost/hana.hpp (apt-get install libboost-dev)"; exit 1; }
best() {  # best of 3 wall times of a command, in seconds
  local b=999
  for _ in 1 2 3; do
    local s e
    s=$(date +%s.%N); "$@"; e=$(date +%s.%N)
    b=$(echo "$b $e $s" | awk '{t = $2 - $3; print (t < $1 ? t : $1)}')
  done
  echo "$b"
}
printf '%-10s %8s %14s %14s\n' layers ops "hana (s)" "constexpr (s)"
for L in 8 36; do
  th=$(best g++ -std=c++20 -O2 -DLAYERS=$L "$here/hana_program.cpp" -o "$out/h")
  tc=$(best g++ -std=c++20 -O2 -DLAYERS=$L "$here/constexpr_program.cpp" -o "$out/c")
  rh=$("$out/h") rc=$("$out/c")
  [[ "$rh" == "$rc" ]] || { echo "the two programs differ: hana '$rh', constexpr '$rc'"; exit 1; }
  printf '%-10s %8s %14.2f %14.2f\n' "$L" "${rh%% *}" "$th" "$tc"
done
