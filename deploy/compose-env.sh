#!/usr/bin/env bash
# Creates (or completes) the .env file docker-compose.yml needs: random
# passwords for RabbitMQ, Redis, MinIO (root and the fleet's own user),
# Grafana and the dashboard token, your uid/gid for the `cli` service, and the
# ./data directory shared with the containers. Run it once from anywhere:
#
#   deploy/compose-env.sh
#
# An existing .env is never overwritten: only missing variables are appended,
# because RabbitMQ, MinIO and Grafana keep the first password they saw in their
# volumes (to change one, see docs/operations.md, "Rotating keys").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
env_file="${ENGAGE_COMPOSE_ENV:-$root/.env}"

# 32 hex characters from the kernel's CSPRNG: URL-safe, so they can sit in
# the amqp:// and redis:// URLs (and in KEDA's, which refuses special characters).
random() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n'; }

umask 077
touch "$env_file"
chmod 600 "$env_file"

added=()
put() { # put NAME VALUE: append NAME=VALUE unless NAME is already set
    if ! grep -q "^$1=" "$env_file"; then
        printf '%s=%s\n' "$1" "$2" >>"$env_file"
        added+=("$1")
    fi
}

put RABBITMQ_USER engage
put RABBITMQ_PASSWORD "$(random)"
put REDIS_PASSWORD "$(random)"
put MINIO_ROOT_USER engage-admin
put MINIO_ROOT_PASSWORD "$(random)"
put S3_ACCESS_KEY engage-fleet
put S3_SECRET_KEY "$(random)"
put GRAFANA_PASSWORD "$(random)"
put ENGAGE_DASHBOARD_TOKEN "$(random)"
put HOST_UID "$(id -u)"
put HOST_GID "$(id -g)"
put ENGAGE_ANALYZER acoustic
put GEMINI_API_KEY ""

# Created here, by you: a directory Docker creates for a bind mount belongs to root.
umask 022
mkdir -p "$root/data/in" "$root/data/out"

if ((${#added[@]})); then
    echo "$env_file: added ${added[*]}"
else
    echo "$env_file: complete, nothing added"
fi
