#!/usr/bin/env bash
# Audio memory benchmark: peak RSS of one download and one analyze worker of
# the shipped fleet under a mix of 100 KB-200 MB audio files, at concurrency
# 32 and 200, with the audio memory budget at its default (1.5 GiB), at 512 MiB
# and off, side by side in one run (about 10 minutes after the build; ~2 GB of generated
# audio under bench/data/memory/, git-ignored and reused).
#
#   bench/memory/run.sh
#   CONCURRENCY=32 BUDGETS=1610612736,268435456 bench/memory/run.sh
#
# Uses RabbitMQ and Redis on 127.0.0.1. Rewrites the generated block of
# bench/memory/RESULTS.md.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CONCURRENCY=${CONCURRENCY:-32,200}
BUDGETS=${BUDGETS:-1610612736,536870912}
if [[ -z "${NO_BUILD:-}" ]]; then
  (cd "$ROOT" && cargo build --release -q --workspace --bins)
fi
mkdir -p "$ROOT/bench/data/memory"
python3 "$HERE/rss_bench.py" --bins "$ROOT/target/release" --work "$ROOT/bench/data/memory" \
  --concurrency "$CONCURRENCY" --budgets "$BUDGETS" --results "$HERE/RESULTS.md" \
  --command "CONCURRENCY=$CONCURRENCY BUDGETS=$BUDGETS bench/memory/run.sh"
