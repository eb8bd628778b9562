#!/usr/bin/env bash
# Database load of an idle pool on PostgreSQL: transactions per second counted by
# pg_stat_database over 20 s for `worker start -c 2`, with and without LISTEN/NOTIFY.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PG=${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
export PYTHONPATH=$PWD
URL=postgresql+psycopg://postgres@127.0.0.1:5432/qidle
psql "$PG" -qc "DROP DATABASE IF EXISTS qidle" -c "CREATE DATABASE qidle" >/dev/null 2>&1
count() { psql "$PG" -Atc "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'qidle'"; }
for listen in 1 0; do
  QUEUECTL_LISTEN=$listen $PY -m queuectl --db "$URL" worker start -c 2 2>/dev/null & pid=$!
  sleep 5; a=$(count); sleep 20; b=$(count)
  kill -TERM "$pid"; wait "$pid" || true
  echo "QUEUECTL_LISTEN=$listen: idle pool of 2 workers + supervisor: $(( (b - a) / 20 )) transactions/s"
done
psql "$PG" -qc "DROP DATABASE IF EXISTS qidle" >/dev/null 2>&1
