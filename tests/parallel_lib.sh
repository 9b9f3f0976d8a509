# tests/parallel_lib.sh: what the tests of parallel layouts share (sourced by dp_test.sh, zero_test.sh, tp_test.sh,
# torchrun_test.sh): mpirun's line for 2 ranks here, and the losses of runs compared step by step.
export OMPI_MCA_btl_vader_single_copy_mechanism=none  # containers: no ptrace-based copies between ranks
export OMP_WAIT_POLICY=passive
mpi=("$mpirun" --oversubscribe --bind-to none)
(($(id -u) == 0)) && mpi+=(--allow-run-as-root)
# losses <run dir>: "step loss" lines from its metrics.jsonl, in step order
losses() { awk 'match($0, /"loss":[^,}]*/) { l = substr($0, RSTART + 7, RLENGTH - 7);
                 match($0, /"step":[0-9]+/); s = substr($0, RSTART + 7, RLENGTH - 7); if (l != "null") print s, l }' \
               "$1/metrics.jsonl" | sort -n; }
# compare <a> <b> <tolerance> <what>: the same steps, losses within the relative tolerance (0: bitwise)
compare() {
  paste "$1" "$2" | awk -v tol="$3" -v what="$4" '
    { n++; d = $4 - $2; if (d < 0) d = -d; r = d / $2; if (r > worst) worst = r
      if ($1 != $3 || (tol == 0 ? $2 != $4 : r > tol)) { bad = 1; print "FAIL: " what ": step " $1 ": " $2 " vs " $4 } }
    END { if (n == 0) { print "FAIL: " what ": no steps"; exit 1 }
          printf "%s: %d steps, largest relative difference %.2e\n", what, n, worst; exit bad }'
}
# run <out> <command...>: the command with --out <out>, its console in <out>.log; a failure shows it and fails
run() { local out=$1; shift; "$@" --out "$out" > "$out.log" 2>&1 || { cat "$out.log"; echo "FAIL: $out"; exit 1; }; }
