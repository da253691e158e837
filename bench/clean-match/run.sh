#!/usr/bin/env bash
# Clean + match benchmark: from files to a matched CSV, engage vs polars vs
# pandas vs DuckDB (and jq for the clean step alone), in one run on the same
# inputs.
#
#   bench/clean-match/run.sh                   (100 MB and 530 MB, the runs in RESULTS.md)
#   BIG=1 bench/clean-match/run.sh             (adds 2 GB and 5 GB)
#   bench/clean-match/run.sh 100 2000          (sizes in MB)
#   PEERS="polars duckdb" bench/clean-match/run.sh 530
#   DATA=/dev/shm/cm bench/clean-match/run.sh  (where inputs and outputs go)
#   APPEND=1 PEERS=polars bench/clean-match/run.sh 2000
#                                              (adds to the previous run's table
#                                               instead of starting a new one)
#   REPEAT=3 bench/clean-match/run.sh         (every contender 3 times in a row;
#                                               the table shows the median run)
#   SKIP_CLEAN=1 bench/clean-match/run.sh 5000 (without the `engage clean`
#                                               reference, whose cleaned.jsonl
#                                               is another copy of the input)
#
# Inputs (gen.py: the shape of issue 14, 530 MB = 2M responses, 20k learners,
# 200k sessions) are generated once into $DATA/SIZE/ and reused. Every
# contender runs in its own process, reads the same files from a warm page
# cache and writes its matched CSV to $DATA/SIZE/out-NAME (removed after the
# check). Wall time, CPU time (user + system) and peak RSS come from
# /usr/bin/time -v; MB/s is input megabytes per wall second. Contenders:
#   engage            target/release/engage run --stop-after match (writes matched.csv)
#   engage clean      the same with --stop-after clean (reference: the clean step alone)
#   polars, pandas,   peers.py (read JSON Lines, English filter, repeats dropped,
#   duckdb            nearest asof join within 5 min by learner, sorted CSV)
#   jq (clean only)   jq -cR -f bench/clean/english_filter.jq
# A peer's rows are checked against engage's (check.py: same responses, same
# session, pandas semantics; polars may pick an equally near session) before
# its timing is recorded; a peer that disagrees fails the run.
# pandas is skipped above 1 GB (it needs ~10x the input in memory) unless
# PANDAS_MAX_MB says otherwise. Writes bench/clean-match/RESULTS.md.
set -euo pipefail

SIZES=("$@")
if (( ${#SIZES[@]} == 0 )); then
  SIZES=(100 530)
  if [[ "${BIG:-0}" == 1 ]]; then SIZES+=(2000 5000); fi
fi
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA=${DATA:-$ROOT/bench/data/clean-match}
PEERS=${PEERS-polars duckdb pandas jq}  # PEERS="" runs engage alone
PANDAS_MAX_MB=${PANDAS_MAX_MB:-1000}
BIN=${ENGAGE_BIN:-$ROOT/target/release/engage}
RUNS="$DATA/runs.jsonl"
mkdir -p "$DATA"

if [[ ! -x /usr/bin/time ]]; then echo "/usr/bin/time is missing: apt-get install time" >&2; exit 1; fi
python3 -c 'import polars, pandas, duckdb' 2>/dev/null || {
  echo "pip install polars pandas duckdb" >&2; exit 1; }
if [[ -z "${ENGAGE_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q -p engage)
fi
mkdir -p "$DATA/s3-empty"

# measure NAME SIZE_MB OUT CMD... : runs CMD under /usr/bin/time -v, appends
# {"name","size_mb","bytes","seconds","cpu_seconds","rss_kb"} to $RUNS.
measure() {
  local name=$1 size=$2 out=$3; shift 3
  local rep
  for ((rep = 1; rep <= ${REPEAT:-1}; rep++)); do
    rm -rf "$out"
    cat "$FILE" "$SESSIONS" >/dev/null # warm the page cache the same way for everyone
    /usr/bin/time -v -o "$DATA/.time" "$@" >"$DATA/.stdout" 2>"$DATA/.stderr" || {
      cat "$DATA/.stderr" >&2; echo "$name failed" >&2; exit 1; }
    python3 - "$name" "$size" "$(stat -c %s "$FILE")" "$DATA/.time" >>"$RUNS" <<'PY'
import json, re, sys
name, size, nbytes, tfile = sys.argv[1:]
t = open(tfile).read()
get = lambda k: re.search(re.escape(k) + r": (.*)", t).group(1).strip()
parts = [float(p) for p in get("Elapsed (wall clock) time (h:mm:ss or m:ss)").split(":")]
wall = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
print(json.dumps({"name": name, "size_mb": int(size), "bytes": int(nbytes), "seconds": wall,
                  "cpu_seconds": float(get("User time (seconds)")) + float(get("System time (seconds)")),
                  "rss_kb": int(get("Maximum resident set size (kbytes)"))}))
PY
    tail -n 1 "$RUNS" >&2
  done
}

# check NAME CSV [--ties-ok]: the peer's rows against engage's matched.csv.
check() {
  local name=$1 csv=$2; shift 2
  python3 "$HERE/check.py" "$ENGAGE_OUT/matched.csv" "$csv" "$SESSIONS" "$@" >"$DATA/.check" || {
    cat "$DATA/.check" >&2; echo "$name disagrees with engage: its timing does not count" >&2; exit 1; }
  python3 -c 'import json,sys; r=json.load(open(sys.argv[2])); r["name"]=sys.argv[1]; r["check"]=True; print(json.dumps(r))' \
    "$name" "$DATA/.check" >>"$DATA/checks-$SIZE.jsonl"
}

if [[ "${APPEND:-0}" != 1 ]]; then : >"$RUNS"; rm -f "$DATA"/checks-*.jsonl "$DATA"/summary-*.json; fi
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for SIZE in "${SIZES[@]}"; do
  DIR="$DATA/$SIZE"
  FILE="$DIR/activity.jsonl"
  SESSIONS="$DIR/sessions.csv"
  if [[ ! -f "$FILE" || ! -f "$SESSIONS" ]]; then
    echo "generating $DIR ..." >&2
    python3 "$HERE/gen.py" "$SIZE" "$DIR"
  fi
  : >"$DATA/checks-$SIZE.jsonl"
  ENGAGE_OUT="$DIR/out-engage"
  common=(--activity "$FILE" --sessions "$SESSIONS" --s3-root "$DATA/s3-empty"
          --audio-buckets learner-audio --force)
  echo "== $SIZE MB" >&2
  if [[ "${SKIP_CLEAN:-0}" != 1 ]]; then
    measure "engage clean" "$SIZE" "$DIR/out-clean" "$BIN" run "${common[@]}" --stop-after clean --out "$DIR/out-clean"
    rm -rf "$DIR/out-clean"
  fi
  measure engage "$SIZE" "$ENGAGE_OUT" "$BIN" run "${common[@]}" --stop-after match --out "$ENGAGE_OUT"
  for peer in $PEERS; do
    case $peer in
      jq)
        measure "jq (clean only)" "$SIZE" "$DIR/out-jq.jsonl" \
          sh -c 'jq -cR -f "$1" <"$2" >"$3"' sh "$ROOT/bench/clean/english_filter.jq" "$FILE" "$DIR/out-jq.jsonl"
        rm -f "$DIR/out-jq.jsonl" ;;
      pandas|polars|duckdb)
        if [[ $peer == pandas ]] && (( SIZE > PANDAS_MAX_MB )); then
          echo "skipping pandas at $SIZE MB (PANDAS_MAX_MB=$PANDAS_MAX_MB)" >&2; continue
        fi
        measure "$peer" "$SIZE" "$DIR/out-$peer.csv" python3 "$HERE/peers.py" "$peer" "$FILE" "$SESSIONS" "$DIR/out-$peer.csv"
        ties=(); [[ $peer == polars ]] && ties=(--ties-ok)
        check "$peer" "$DIR/out-$peer.csv" "${ties[@]}"
        rm -f "$DIR/out-$peer.csv" ;;
      *) echo "unknown peer $peer" >&2; exit 2 ;;
    esac
  done
  cp "$ENGAGE_OUT/summary.json" "$DATA/summary-$SIZE.json"
  rm -rf "$ENGAGE_OUT"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

LOADAVG="$LOAD_BEFORE before, $LOAD_AFTER after" python3 "$HERE/table.py" "$DATA" >"$HERE/RESULTS.md"
cat "$HERE/RESULTS.md"
