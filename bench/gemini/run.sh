#!/usr/bin/env bash
# Gemini quota benchmark of the product (see bench/gemini/README.md).
#
#   bench/gemini/run.sh                  full run, about 45 minutes (build excluded)
#   bench/gemini/run.sh --quick          smoke run, about 6 minutes
#   bench/gemini/run.sh [--quick] --only q120-w4,burst   (any quota_bench.py option)
#
# Builds the release binaries, checks RabbitMQ and Redis, runs the five real
# workers against the Gemini-wire fake and writes bench/gemini/RESULTS.md.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
cd "$ROOT"

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "Redis is not reachable at 127.0.0.1:6379; start one with:" >&2
  echo "  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no" >&2
  exit 1
fi
if ! python3 -c 'import socket; socket.create_connection(("127.0.0.1", 5672), timeout=3)' 2>/dev/null; then
  echo "RabbitMQ is not reachable at 127.0.0.1:5672; start it with: rabbitmq-server -detached" >&2
  exit 1
fi
python3 -c 'import pika' 2>/dev/null || { echo "python3 needs pika (pip install pika)" >&2; exit 1; }

cargo build --release -q --workspace --bins
exec python3 "$HERE/quota_bench.py" "$@"
