#!/usr/bin/env bash
# Match benchmark: our matcher vs pandas merge_asof vs polars join_asof, side
# by side on the same generated data.
#
#   bench/match/run.sh [N_RESPONSES N_SESSIONS]     (default 10000000 1000000)
#   REPEAT=3 bench/match/run.sh 1000000 100000      (best of 3 per contender)
#
# Data is generated once into bench/data/match-N-M/ (git-ignored) and reused.
# Each contender runs in its own process; only the match is timed (ours:
# SessionIndex::build + match_records; pandas/polars: the sorts they need +
# the asof join). Ours runs in three modes (see workers/match/examples/
# match_bench.rs): records = match_records, owned MatchedRecords (what the
# worker uses); positions = match_positions, the join indexer; shared = a
# what-if with Arc<SessionMatch>. Loading is reported separately. Peak RSS comes from
# /usr/bin/time. Up to 2M responses, the three assignments are also compared
# row for row (ours with the pandas rule vs pandas; ours with the
# last-in-file rule vs polars). Writes its section of bench/match/RESULTS.md.
set -euo pipefail

N_RESP=${1:-10000000}
N_SESS=${2:-1000000}
REPEAT=${REPEAT:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA="$ROOT/bench/data/match-$N_RESP-$N_SESS"
RUNS="$DATA/runs.jsonl"

if [[ ! -f "$DATA/responses.csv" || ! -f "$DATA/sessions.csv" ]]; then
  python3 "$HERE/gen.py" "$N_RESP" "$N_SESS" "$DATA"
fi
(cd "$ROOT" && cargo build --release -q -p engage-match --example match_bench)
BIN="$ROOT/target/release/examples/match_bench"

VERIFY=0
if (( N_RESP <= 2000000 )); then VERIFY=1; fi

# run NAME CMD... : runs CMD, appends its JSON line plus peak RSS (MiB) to $RUNS.
run() {
  local name=$1; shift
  local line rss
  line=$(/usr/bin/time -f '%M' -o "$DATA/.rss" "$@" 2>"$DATA/.stderr" | tail -n 1) || {
    cat "$DATA/.stderr" >&2; echo "$name failed" >&2; exit 1; }
  rss=$(tail -n 1 "$DATA/.rss")
  echo "$line" | python3 -c 'import json,sys; d=json.loads(sys.stdin.read()); d["contender"]=sys.argv[1]; d["rss_mib"]=round(int(sys.argv[2])/1024); print(json.dumps(d))' "$name" "$rss" >>"$RUNS"
  tail -n 1 "$RUNS"
}

: >"$RUNS"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$DATA/verify.txt"
for ((i = 0; i < REPEAT; i++)); do
  out_ours=(); out_pd=(); out_pl=()
  if (( VERIFY && i == 0 )); then
    out_ours=(--out "$DATA/ours.csv"); out_pd=("$DATA/pandas.csv"); out_pl=("$DATA/polars.csv")
  fi
  run "engage-match records" "$BIN" "$DATA" --mode records --rule pandas "${out_ours[@]}"
  run "engage-match positions" "$BIN" "$DATA" --mode positions --rule pandas
  run "engage-match shared (what-if)" "$BIN" "$DATA" --mode shared --rule pandas
  run pandas python3 "$HERE/peers.py" pandas "$DATA" "${out_pd[@]}"
  run polars python3 "$HERE/peers.py" polars "$DATA" "${out_pl[@]}"
done

if (( VERIFY )); then
  "$BIN" "$DATA" --mode positions --rule last-in-file --out "$DATA/ours-last.csv" >/dev/null
  python3 - "$DATA" <<'PY'
import csv, sys
d = sys.argv[1]
def load(name):
    with open(f"{d}/{name}", newline="") as f:
        return {r["response_id"]: r["session_id"] for r in csv.DictReader(f)}
ours, pd_, ours_last, pl_ = (load(n) for n in ("ours.csv", "pandas.csv", "ours-last.csv", "polars.csv"))
for a, b, label in ((ours, pd_, "match_records (pandas rule) vs pandas"),
                    (ours_last, pl_, "match_positions (last-in-file rule) vs polars"),
                    (pd_, pl_, "pandas vs polars")):
    diff = sum(1 for k in a if a[k] != b.get(k))
    print(f"- {label}: {len(a) - diff:,}/{len(a):,} identical assignments, {diff:,} differ")
PY
fi >"$DATA/verify.txt"
[[ -s "$DATA/verify.txt" ]] && cat "$DATA/verify.txt"

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
LOADAVG="$LOAD_BEFORE before, $LOAD_AFTER after" \
  python3 "$HERE/table.py" "$RUNS" "$N_RESP" "$N_SESS" "$DATA/verify.txt"
