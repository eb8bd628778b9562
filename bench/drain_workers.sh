#!/usr/bin/env bash
# Drain throughput by worker count on both backends: 2,000 `true` jobs,
# `worker start --burst -c W` for W = 1, 2, 4 (wall time, start-up included).
# Usage: bash bench/drain_workers.sh   (PYTHON and PG_ADMIN_URL may be overridden)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PG=${PG_ADMIN_URL:-postgresql://postgres@127.0.0.1:5432/postgres}
export PYTHONPATH=$PWD
tmp=$(mktemp -d)
seq 1 2000 | sed 's/.*/true/' > "$tmp/jobs.txt"
for W in 1 2 4; do
  psql "$PG" -qc "DROP DATABASE IF EXISTS qdrain" -c "CREATE DATABASE qdrain" >/dev/null 2>&1
  for url in "$tmp/q$W.db" "postgresql+psycopg://postgres@127.0.0.1:5432/qdrain"; do
    $PY -m queuectl --db "$url" enqueue --file "$tmp/jobs.txt" >/dev/null
    start=$(date +%s.%N); $PY -m queuectl --db "$url" worker start --burst -c "$W" 2>/dev/null; end=$(date +%s.%N)
    case $url in *://*) name=postgresql ;; *) name=sqlite ;; esac
    echo "W=$W $name: $(python3 -c "print(round(2000 / ($end - $start)))") jobs/s"
  done
done
psql "$PG" -qc "DROP DATABASE IF EXISTS qdrain" >/dev/null 2>&1
rm -rf "$tmp"
