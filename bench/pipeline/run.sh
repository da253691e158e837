#!/usr/bin/env bash
# Fleet pipeline-overhead benchmark: the five-stage fleet with near-instant
# analysis versus a bare RabbitMQ relay moving the same number of messages,
# side by side, in one run (about 5 minutes after the build). See
# bench/pipeline/README.md for what is measured and how.
#
#   bench/pipeline/run.sh                                   (5,000 learners × 14 log entries ≈ 48k items)
#   LEARNERS=2000 RESPONSES=10 bench/pipeline/run.sh
#   CONFIGS=default,200x64 PERF= bench/pipeline/run.sh      (no profiled runs)
#
# CONFIGS: comma-separated fleet settings, each `default` (the product's
#   defaults: ENGAGE_CONCURRENCY 32, ENGAGE_PARTITIONS 16) or
#   CONCURRENCYxPARTITIONS[xCLEAN_PIECE_BYTES], optionally with `@shm` to put
#   the file:// store on tmpfs instead of the disk (isolates the store's cost).
# REPEAT: runs per config, round-robin; the best is reported (the relay: best of 3).
# PERF: configs run once more under `perf record -a -g` (not compared).
# RabbitMQ: a private node is started on free loopback ports (fresh state, its
#   own CPU accounting); SHARED_RABBITMQ=1 uses 127.0.0.1:5672 instead.
# Redis: a private redis-server on a free loopback port; SHARED_REDIS=1 uses
#   127.0.0.1:6379 instead.
# Data is generated once into bench/data/pipeline-L-R/ (git-ignored) and
# reused. Rewrites the generated block of bench/pipeline/RESULTS.md.
set -euo pipefail

LEARNERS=${LEARNERS:-5000}
RESPONSES=${RESPONSES:-14}
CONFIGS=${CONFIGS:-default,100x16,200x64,default@shm,200x64@shm}
PERF=${PERF-default,200x64@shm}
REPEAT=${REPEAT:-2}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DATA="$ROOT/bench/data/pipeline-$LEARNERS-$RESPONSES"
BIN="$ROOT/target/release"

if [[ -z "${NO_BUILD:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q --workspace --bins &&
    cargo build --release -q -p engage --example amqp_relay)
fi

if [[ ! -f "$DATA/tiny_audio.json" ]]; then
  rm -rf "$DATA"
  "$BIN/engage" gen-data --learners "$LEARNERS" --responses "$RESPONSES" --seed 7 \
    --no-audio --out "$DATA" >/dev/null
  python3 "$HERE/tiny_audio.py" "$DATA" >"$DATA/tiny_audio.json.tmp"
  mv "$DATA/tiny_audio.json.tmp" "$DATA/tiny_audio.json"
fi

extra=()
[[ -n "$PERF" ]] && extra+=(--perf "$PERF")
[[ -n "${SHARED_REDIS:-}" ]] && extra+=(--shared-redis)
[[ -n "${SHARED_RABBITMQ:-}" ]] && extra+=(--shared-rabbitmq)
python3 "$HERE/fleet_bench.py" --data "$DATA" --bins "$BIN" \
  --relay "$BIN/examples/amqp_relay" --configs "$CONFIGS" --repeat "$REPEAT" --check-outputs \
  --results "$HERE/RESULTS.md" --json "$DATA/results.json" "${extra[@]}" \
  --command "LEARNERS=$LEARNERS RESPONSES=$RESPONSES CONFIGS=$CONFIGS REPEAT=$REPEAT PERF=$PERF bench/pipeline/run.sh"
