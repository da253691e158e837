#!/usr/bin/env bash
# Clean benchmark: this project's cleaner vs jq vs plain Python json + pandas,
# side by side on the same generated JSON Lines activity log.
#
#   bench/clean/run.sh [SIZE_MB...]          (default: 100)
#   bench/clean/run.sh 100 2000              (the runs in RESULTS.md)
#   SKIP_PYTHON=1 bench/clean/run.sh 2000    (skip the slowest contender)
#
# Inputs are generated once into bench/data/clean/ (git-ignored) and reused.
# Every contender reads the same file from a warm page cache and writes its
# output to bench/data/clean/out-*/ (removed after each run). Wall time and
# peak RSS and CPU time (user + system) come from /usr/bin/time -v. The
# machine is shared, so "MB/s per CPU-s" (bytes / CPU seconds) is the steadier
# per-core figure; wall time depends on what else runs. Contenders:
#   ours (N threads)  clean_bench: parallel byte-range clean, full validation,
#                     dedup, 16 partitions + rejects file per 64 MiB piece
#   ours (1 thread)   the same with --threads 1
#   jq                jq -cR -f english_filter.jq (English filter only)
#   python+pandas     pandas_clean.py (English filter only, 200k-line chunks)
# The peers do strictly less work than ours (no timestamp/user-id/accuracy
# validation, no response ids, no dedup, no partitioning).
# Appends the markdown tables to stdout; copy them into RESULTS.md.
set -euo pipefail

SIZES=("$@")
if (( ${#SIZES[@]} == 0 )); then SIZES=(100); fi
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA="$ROOT/bench/data/clean"
THREADS=${THREADS:-$(nproc)}
mkdir -p "$DATA"

if [[ ! -x /usr/bin/time ]]; then
  echo "/usr/bin/time is missing: apt-get install time" >&2
  exit 1
fi
command -v jq >/dev/null || { echo "jq is missing" >&2; exit 1; }

(cd "$ROOT" && cargo build --release -q -p engage-clean --example clean_bench)
BIN="$ROOT/target/release/examples/clean_bench"

# measure NAME SIZE_BYTES OUTDIR CMD... : runs CMD under /usr/bin/time -v and
# appends {"name","bytes","seconds","cpu_seconds","rss_kb","out_records"} to $RUNS.
measure() {
  local name=$1 bytes=$2 outdir=$3; shift 3
  rm -rf "$outdir"; mkdir -p "$outdir"
  cat "$FILE" >/dev/null # warm the page cache the same way for everyone
  /usr/bin/time -v -o "$DATA/.time" "$@" >"$outdir/.stdout" 2>"$DATA/.stderr" || {
    cat "$DATA/.stderr" >&2; echo "$name failed" >&2; exit 1; }
  local wall rss records user sys
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$DATA/.time")
  user=$(awk -F': ' '/User time \(seconds\)/ {print $2}' "$DATA/.time")
  sys=$(awk -F': ' '/System time \(seconds\)/ {print $2}' "$DATA/.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$DATA/.time")
  records=$(find "$outdir" -name '*.jsonl' ! -name 'rejects.jsonl' -exec cat {} + 2>/dev/null | wc -l)
  python3 - "$name" "$bytes" "$wall" "$rss" "$records" "$user" "$sys" >>"$RUNS" <<'PY'
import json, sys
name, size, wall, rss, records, user, sys_ = sys.argv[1:]
parts = [float(p) for p in wall.split(":")]
secs = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
print(json.dumps({"name": name, "bytes": int(size), "seconds": secs,
                  "cpu_seconds": float(user) + float(sys_),
                  "rss_kb": int(rss), "out_records": int(records)}))
PY
  rm -rf "$outdir"
}

for SIZE in "${SIZES[@]}"; do
  FILE="$DATA/activity-${SIZE}MB.jsonl"
  if [[ ! -f "$FILE" ]]; then
    echo "generating $FILE ..." >&2
    python3 "$HERE/gen.py" "$SIZE" "$FILE"
  fi
  BYTES=$(stat -c %s "$FILE")
  RUNS="$DATA/runs-${SIZE}MB.jsonl"
  : >"$RUNS"
  echo "size ${SIZE} MB: ours (${THREADS} threads) ..." >&2
  measure "ours (${THREADS} threads)" "$BYTES" "$DATA/out-ours" \
    "$BIN" "$FILE" --threads "$THREADS" --out "$DATA/out-ours"
  echo "size ${SIZE} MB: ours (1 thread) ..." >&2
  measure "ours (1 thread)" "$BYTES" "$DATA/out-ours1" \
    "$BIN" "$FILE" --threads 1 --out "$DATA/out-ours1"
  echo "size ${SIZE} MB: jq ..." >&2
  measure "jq" "$BYTES" "$DATA/out-jq" \
    sh -c "jq -cR -f '$HERE/english_filter.jq' '$FILE' > '$DATA/out-jq/english.jsonl'"
  if [[ -z "${SKIP_PYTHON:-}" ]]; then
    echo "size ${SIZE} MB: python+pandas ..." >&2
    measure "python+pandas" "$BYTES" "$DATA/out-py" \
      python3 "$HERE/pandas_clean.py" "$FILE" "$DATA/out-py/english.jsonl"
  fi
  python3 "$HERE/table.py" "$RUNS" "$SIZE"
done
