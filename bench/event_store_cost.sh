#!/usr/bin/env bash
# What the event store adds to a write: the same benchmark against a server
# with EVENT_STORE=true and one with EVENT_STORE=false, alternating rounds.
#   bash bench/event_store_cost.sh [rounds] [requests] [concurrency]
# Needs PostgreSQL and Redis on 127.0.0.1 (make services); uses database bench_events.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}; requests=${2:-1000}; concurrency=${3:-1}
port=8097
psql -h 127.0.0.1 -U postgres -qc "drop database if exists bench_events" -c "create database bench_events" >/dev/null
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_events REDIS_URL=redis://127.0.0.1:6379/0
export PORT=$port WEB_CONCURRENCY=${WEB_CONCURRENCY:-4} RUN_RELAY=false
for round in $(seq "$rounds"); do
  for store in true false; do
    EVENT_STORE=$store make -s run > "/tmp/bench-event-store-$store.log" 2>&1 &
    for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.5; done
    echo "== round $round, EVENT_STORE=$store"
    .venv/bin/python bench/run.py --base-url "http://127.0.0.1:$port" --requests "$requests" \
      --concurrency "$concurrency" | grep -E "^(operation|create|patch)"
    pkill -TERM -f "gunicorn -c gunicorn.conf.py" || true
    wait || true
  done
done
