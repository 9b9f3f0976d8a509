#!/usr/bin/env bash
# bench/gpu_check.sh: the one GPU check: Kiln's GPU tests and CUDA benchmarks on an H100 / H200, one table out.
#
#   bench/gpu_check.sh prepare      here (nvcc, no GPU needed): builds the GPU programs into build-gpu/carry/
#                                   (test_kernels_gpu, test_cuda_backend_gpu, bench_gpu, train_demo_pretrain_cuda,
#                                   train_demo_cuda (the whole program: SFT, APO-zero with its reference model, the
#                                   merge), kiln_fryer, the PyTorch fixture, the demo's text, and the Debian libraries
#                                   they need that a bare GPU machine lacks: Google Benchmark). Prints what
#                                   travels and its size. cuDNN comes from the GPU machine (0.5 GB).
#   bench/gpu_check.sh run [DIR]    on the GPU machine (no network, no Debian packages; CUDA 13 and PyTorch's CUDA
#                                   libraries): runs the GPU tests, compute-sanitizer memcheck on them, the
#                                   benchmarks, and prints one table. DIR defaults to build-gpu/carry.
#                                   Results (JSON, logs) go to $OUT when set (the device tool), else DIR/results.
# A lent machine's minutes go to the GPU alone: everything that can be built or checked without one is done by
# `prepare`, which also runs `run` once here, where every step must say "skipped: no CUDA device".
set -uo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cmd=${1:-}

demo_steps=300
# the demo's arguments on carried data, the same on the CPU and on the GPU
demo_args() {
  echo --steps $demo_steps --log-every 50 --eval-every 0 --eval-batches 16 --sample-tokens 0 --data "$1/fortunes"
}
heldout() { sed -n 's/.*held-out loss \([0-9.]*\) nats\/token.*/\1/p' "$1" | tail -1; }
# the demo's whole program, 10 steps a phase, the same on the CPU and on the GPU; compared by the text bits/byte of
# its table's apo row (the model after pretraining, long context, SFT and APO-zero with its reference)
program_args() {
  echo --steps 10 --log-every 5 --eval-batches 4 --eval-task-examples 8 --reasoning-problems 4 --sample-tokens 0 \
    --data "$1/fortunes"
}
apo_bpb() { awk -F'|' '$2 == " apo " { gsub(/ /, "", $4); print $4 }' "$1/summary.md" 2>/dev/null; }
# against_cpu <label> <measure> <log> <exit status> <cpu value> <gpu value>: a GPU run's measure within 2% of the
# CPU run's (skipped without a device; a failed run fails)
against_cpu() {
  local label=$1 what=$2 log=$3 rc=$4 cpu=$5 gpu=$6
  if grep -q "no CUDA device" "$log"; then echo "skipped: no CUDA device"; return 0; fi
  if ((rc != 0)); then tail -3 "$log"; return 1; fi
  if awk -v c="$cpu" -v g="$gpu" 'BEGIN { d = g - c; if (d < 0) d = -d; exit !(g != "" && d <= 0.02 * c) }'; then
    echo "$label: GPU $what $gpu, CPU $cpu: within 2%"
  else
    echo "$label: FAILED: GPU $what '$gpu', CPU $cpu (more than 2% apart)"
    return 1
  fi
}

prepare() {
  local b=$here/build-gpu
  mkdir -p "$b"
  cmake -S "$here" -B "$b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON -DKILN_TESTS=ON -DKILN_BENCH=ON \
    >"$b/configure.log" 2>&1 || { cat "$b/configure.log"; echo "gpu_check: configure failed" >&2; exit 1; }
  ninja -C "$b" test_kernels_gpu test_cuda_backend_gpu test_nccl_gpu bench_gpu bench_gpu_step train_demo_pretrain train_demo_pretrain_cuda \
    train_demo train_demo_cuda kiln_fryer \
    || { echo "gpu_check: build failed" >&2; exit 1; }
  rm -rf "$b/carry" && mkdir -p "$b/carry/lib" "$b/carry/fixtures" "$b/carry/demo"
  cp "$b/tests/test_kernels_gpu" "$b/tests/test_cuda_backend_gpu" "$b/tests/test_nccl_gpu" "$b/bench/bench_gpu" "$b/bench/bench_gpu_step" \
    "$b/train_demo_pretrain_cuda" "$b/train_demo_cuda" "$b/kiln_fryer" "$b/carry/"
  strip "$b/carry/"*_gpu "$b/carry/bench_gpu" "$b/carry/bench_gpu_step" "$b/carry/train_demo_pretrain_cuda" \
    "$b/carry/train_demo_cuda" "$b/carry/kiln_fryer"
  cp "$here/tests/fixtures/tiny_rnope.safetensors" "$b/carry/fixtures/"
  # The demo's data (the GPU machine has no fortunes package; each run trains the recipe's BPE on it, which is
  # deterministic), and the CPU trainer's held-out loss after the same steps: the GPU run must reach it within 2%.
  cp -rL /usr/share/games/fortunes "$b/carry/demo/fortunes"
  echo "gpu_check: the CPU reference run of the demo (${demo_steps} steps)"
  (cd "$b" && "$b/train_demo_pretrain" $(demo_args "$b/carry/demo") --threads "$(nproc)" --out "$b/demo-cpu") \
    > "$b/demo-cpu.log" 2>&1 || { tail "$b/demo-cpu.log"; echo "gpu_check: the CPU demo run failed" >&2; exit 1; }
  heldout "$b/demo-cpu.log" > "$b/carry/demo/cpu_heldout.txt"
  echo "gpu_check: CPU held-out loss $(cat "$b/carry/demo/cpu_heldout.txt")"
  echo "gpu_check: the CPU reference run of the demo's program (10 steps a phase)"
  (cd "$b" && "$b/train_demo" $(program_args "$b/carry/demo") --threads "$(nproc)" --out "$b/program-cpu") \
    > "$b/program-cpu.log" 2>&1 || { tail "$b/program-cpu.log"; echo "gpu_check: the CPU program run failed" >&2; exit 1; }
  apo_bpb "$b/program-cpu" > "$b/carry/demo/cpu_program_bpb.txt"
  echo "gpu_check: CPU text bits/byte after APO $(cat "$b/carry/demo/cpu_program_bpb.txt")"
  cp "$here/bench/gpu_check.sh" "$b/carry/"
  # Debian libraries the GPU machine does not have (CUDA's own come from the machine: cuBLAS is 0.6 GB)
  for lib in $(ldd "$b/bench/bench_gpu" "$b/bench/bench_gpu_step" "$b/tests/test_kernels_gpu" \
                   "$b/tests/test_cuda_backend_gpu" "$b/tests/test_nccl_gpu" "$b/train_demo_pretrain_cuda" \
                   "$b/train_demo_cuda" | awk '/=> \// {print $3}' | sort -u); do
    case $lib in
      */libbenchmark* | */libopenblas* | */libgfortran* | */libquadmath* | */libpcre2* | */libxxhash* | */libgomp* | \
      */libmpi* | */libopen-pal* | */libopen-rte* | */libhwloc* | */libevent* | */libudev*)  # Open MPI: one rank loads it
        cp -L "$lib" "$b/carry/lib/" ;;
    esac
  done
  # what travels is at most 64 MiB: the largest libraries go xz-compressed (OpenBLAS: 36 MB -> ~8 MB) and `run`
  # unpacks them with Python's lzma
  for lib in "$b/carry/lib/"libopenblas* "$b/carry/lib/"libgfortran*; do
    [[ -f $lib ]] && xz -9 -T0 -f "$lib"
  done
  du -sh --apparent-size "$b/carry"
  echo "gpu_check: prepared $b/carry; dry run here:"
  OUT=$b/dry-run run "$b/carry"
  echo "gpu_check: on the GPU machine: bench/gpu_check.sh run build-gpu/carry   (carry: build-gpu/carry)"
}

run() {
  local d=${1:-$here/build-gpu/carry}
  d=$(cd "$d" && pwd) || { echo "gpu_check: no folder $1" >&2; return 1; }  # the demo runs in another folder
  local out=${OUT:-$d/results}
  mkdir -p "$out"
  # the libraries that travelled compressed, unpacked beside the results
  local unpacked=$out/lib
  mkdir -p "$unpacked"
  python3 - "$d/lib" "$unpacked" <<'PY' || { echo "gpu_check: unpacking the carried libraries failed" >&2; return 1; }
import glob, lzma, os, sys
for f in glob.glob(os.path.join(sys.argv[1], "*.xz")):
    with lzma.open(f) as src, open(os.path.join(sys.argv[2], os.path.basename(f)[:-3]), "wb") as dst:
        dst.write(src.read())
PY
  # CUDA's libraries: the toolkit's, else PyTorch's wheels (nvidia-cublas and friends) on the machine
  local extra=$d/lib:$unpacked
  for p in /usr/local/cuda/lib64 $(python3 - 2>/dev/null <<'PY'
import glob, os
try:
    import nvidia
    for base in nvidia.__path__:
        for lib in glob.glob(os.path.join(base, "**", "lib"), recursive=True):
            print(lib)
except Exception:
    pass
PY
); do
    [[ -d $p ]] && extra=$extra:$p
  done
  export LD_LIBRARY_PATH=$extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv \
      | tee "$out/nvidia-smi.csv"
  else
    echo "gpu_check: nvidia-smi not found"
  fi
  local status=0
  echo "== test_kernels_gpu"
  "$d/test_kernels_gpu" 2>&1 | tee "$out/test_kernels_gpu.log"
  local t=${PIPESTATUS[0]}
  ((t == 0)) || status=1
  if command -v compute-sanitizer >/dev/null && ! grep -q "skipped: no CUDA device" "$out/test_kernels_gpu.log"; then
    echo "== compute-sanitizer memcheck test_kernels_gpu"
    # Kiln's kernels only (cuDNN's under memcheck take minutes), and a time limit: device minutes are scarce
    timeout 180 compute-sanitizer --tool memcheck --error-exitcode 3 "$d/test_kernels_gpu" \
      --test-case-exclude='*cuDNN*' >"$out/memcheck.log" 2>&1
    local m=$?
    tail -3 "$out/memcheck.log"
    ((m == 0)) || status=1
  fi
  echo "== test_cuda_backend_gpu"
  # the fixture's path compiled in is this checkout's: the carried copy is named instead
  KILN_TEST_FIXTURES=$d/fixtures "$d/test_cuda_backend_gpu" 2>&1 | tee "$out/test_cuda_backend_gpu.log"
  ((PIPESTATUS[0] == 0)) || status=1
  echo "== test_nccl_gpu (NCCL loaded from the machine's CUDA or PyTorch libraries)"
  "$d/test_nccl_gpu" 2>&1 | tee "$out/test_nccl_gpu.log" | tail -3
  ((PIPESTATUS[0] == 0)) || status=1
  echo "== test_cuda_backend_gpu with Kiln's attention kernel (KILN_ATTENTION=kiln) instead of cuDNN's"
  KILN_ATTENTION=kiln KILN_TEST_FIXTURES=$d/fixtures "$d/test_cuda_backend_gpu" 2>&1 \
    | tee "$out/test_cuda_backend_gpu_kiln_attention.log" | tail -3
  ((PIPESTATUS[0] == 0)) || status=1
  if command -v compute-sanitizer >/dev/null && ! grep -q "skipped: no CUDA device" "$out/test_kernels_gpu.log"; then
    echo "== compute-sanitizer memcheck: whole training steps of the tiny model (the trainer's step API)"
    KILN_ATTENTION=kiln KILN_TEST_FIXTURES=$d/fixtures timeout 120 compute-sanitizer --tool memcheck \
      --error-exitcode 3 "$d/test_cuda_backend_gpu" --test-case="*trainer's step*" >"$out/memcheck_step.log" 2>&1
    local ms=$?
    tail -3 "$out/memcheck_step.log"
    ((ms == 0)) || status=1
  fi
  if [[ -x $d/train_demo_pretrain_cuda && -s $d/demo/cpu_heldout.txt ]]; then
    echo "== the demo on the GPU (train_demo_pretrain_cuda, ${demo_steps} steps) against the CPU's held-out loss"
    (cd "$out" && "$d/train_demo_pretrain_cuda" $(demo_args "$d/demo") --out "$out/demo-gpu") > "$out/demo-gpu.log" 2>&1
    local dr=$?
    grep -E "^kiln: (backend|held-out)|^step .*/${demo_steps} " "$out/demo-gpu.log" | tail -4
    against_cpu demo "held-out loss" "$out/demo-gpu.log" $dr "$(cat "$d/demo/cpu_heldout.txt")" \
      "$(heldout "$out/demo-gpu.log")" || status=1
  fi
  if [[ -x $d/train_demo_cuda && -s $d/demo/cpu_program_bpb.txt ]]; then
    echo "== the demo's program on the GPU (train_demo_cuda, 10 steps a phase: APO-zero's reference on the device)"
    (cd "$out" && "$d/train_demo_cuda" $(program_args "$d/demo") --out "$out/program-gpu") > "$out/program-gpu.log" 2>&1
    local pr=$?
    grep -E "^kiln: (backend|preference|merge step)|^\| apo " "$out/program-gpu.log" | cut -c1-160
    against_cpu program "text bits/byte after APO" "$out/program-gpu.log" $pr "$(cat "$d/demo/cpu_program_bpb.txt")" \
      "$(apo_bpb "$out/program-gpu")" || status=1
  fi
  echo "== kiln_fryer (20 s: bf16 GEMM, then HBM copies)"
  "$d/kiln_fryer" --seconds 20 2>&1 | tee "$out/fryer.log" | tail -8
  local f=${PIPESTATUS[0]}
  if grep -q "no CUDA device" "$out/fryer.log"; then echo "skipped: no CUDA device"; elif ((f != 0)); then status=1; fi
  echo "== bench_gpu"
  "$d/bench_gpu" --benchmark_min_time=0.2 --benchmark_out="$out/bench_gpu.json" --benchmark_out_format=json \
    2>&1 | tee "$out/bench_gpu.log"
  ((PIPESTATUS[0] == 0)) || status=1
  echo "== bench_gpu_step (training steps of ablation_1b and smollm3_3b)"
  "$d/bench_gpu_step" --benchmark_out="$out/bench_gpu_step.json" --benchmark_out_format=json \
    2>&1 | tee "$out/bench_gpu_step.log"
  ((PIPESTATUS[0] == 0)) || status=1
  if [[ -s $out/bench_gpu.json ]]; then
    python3 - "$out/bench_gpu.json" "$out/bench_gpu_step.json" <<'PY'
import json, os, sys
runs = []
for f in sys.argv[1:]:
    if os.path.exists(f) and os.path.getsize(f):
        runs += json.load(open(f))["benchmarks"]
copy = next((r.get("GB/s") for r in runs if r["name"].startswith("gpu/copy")), None)
gemm = next((r.get("TFLOP/s") for r in runs if r["name"].startswith("gpu/gemm_bf16")), None)
print(f"{'benchmark':44s} {'ms':>9s} {'GB/s':>9s} {'of copy':>8s} {'TFLOP/s':>8s} {'of gemm':>8s} {'tokens/s':>9s} {'MFU':>6s}")
for r in runs:
    gb, tf, tok, mfu = r.get("GB/s"), r.get("TFLOP/s"), r.get("tokens/s"), r.get("MFU")
    cols = [f"{gb:9.0f}" if gb else " " * 9, f"{gb / copy:8.2f}" if gb and copy else " " * 8,
            f"{tf:8.1f}" if tf else " " * 8, f"{tf / gemm:8.2f}" if tf and gemm else " " * 8,
            f"{tok:9.0f}" if tok else " " * 9, f"{mfu:6.3f}" if mfu else " " * 6]
    print(f"{r['name'] + ('/' + r['label'] if r.get('label') else ''):44.44s} {r['real_time']:9.3f} " + " ".join(cols))
PY
  fi
  echo "gpu_check: $([[ $status == 0 ]] && echo passed || echo FAILED) (logs in $out)"
  return $status
}

case $cmd in
  prepare) prepare ;;
  run) shift; run "$@" ;;
  *) echo "usage: bench/gpu_check.sh prepare | run [DIR]" >&2; exit 2 ;;
esac
