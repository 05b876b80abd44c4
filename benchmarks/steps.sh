# Sourced by the benchmark scripts (run_diagnoses.sh, run_traces.sh); needs OUT set.
# step NAME COMMAND...: runs COMMAND and appends {"step": NAME, "seconds": S} to
# OUT/timings.jsonl, unless OUT/.done/NAME exists (a rerun skips finished steps; delete that file
# to redo one).
mkdir -p "$OUT"
TIMINGS="$OUT/timings.jsonl"
touch "$TIMINGS"

step() {
  local name=$1 start
  shift
  if [ -f "$OUT/.done/$name" ]; then
    echo "== $name: done before, skipped" >&2
    return
  fi
  start=$(date +%s.%N)
  echo "== $name: $*" >&2
  "$@"
  printf '{"step": "%s", "seconds": %.1f}\n' "$name" "$(echo "$(date +%s.%N) - $start" | bc)" >>"$TIMINGS"
  mkdir -p "$OUT/.done" && touch "$OUT/.done/$name"
}
