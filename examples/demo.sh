#!/usr/bin/env bash
# A tour of queuectl on the SQLite default: enqueue a few jobs, drain them, look around.
set -euo pipefail
q=${1:-queuectl}
say() { printf '\n$ %s\n' "$*"; "$@"; }

say "$q" enqueue "echo Hello World"
say "$q" enqueue --id build-42 --priority 5 "sleep 0.5; echo built"
say "$q" enqueue '{"id": "flaky", "command": "echo trying; exit 3", "max_retries": 1}'
say "$q" enqueue --delay 1s "date -u +%H:%M:%S"
say "$q" enqueue "no-such-command --flag"
say "$q" config set backoff-base 1.5
say "$q" status
say "$q" worker start --burst --concurrency 2
say "$q" list
say "$q" dlq list
say "$q" logs flaky
say "$q" dlq retry flaky
say "$q" status
