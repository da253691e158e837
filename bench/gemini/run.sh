#!/usr/bin/env bash
# Gemini rate-limit and cost benchmark (see bench/gemini/README.md).
#
#   bench/gemini/run.sh            full run, about 4 minutes (compile excluded)
#   bench/gemini/run.sh --quick    about 1 minute
#   REDIS_URL=redis://host:6379 bench/gemini/run.sh
#
# Builds the example in release mode, checks Redis, runs every row against the
# fake Gemini server and writes the table to bench/gemini/RESULTS.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
REDIS_URL=${REDIS_URL:-}

ping_url=${REDIS_URL:-redis://127.0.0.1:6379}
if ! redis-cli -u "$ping_url" ping >/dev/null 2>&1; then
  echo "Redis is not reachable at $ping_url; start one with:" >&2
  echo "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no" >&2
  exit 1
fi

args=("$@")
if [[ -n "$REDIS_URL" ]]; then args+=(--redis "$REDIS_URL"); fi
cd "$ROOT"
cargo build --release -q -p engage-analyze --example ratelimit_bench
exec cargo run --release -q -p engage-analyze --example ratelimit_bench -- "${args[@]}"
