#!/usr/bin/env bash
# Runs the benchmarks and rewrites their sections of docs/BENCHMARKS.md.
#   ./scripts/bench.sh                      every benchmark, with its defaults
#   ./scripts/bench.sh NAME [ARGS...]       one benchmark (open_large, million, throughput, cli_startup,
#                                           claims, watch_fanout, locks, queues, batch, mcp, metrics_cost,
#                                           pipelined) with its arguments,
#                                           e.g. ./scripts/bench.sh throughput --seconds 2
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/setup.sh
benchmarks=(open_large million throughput cli_startup claims watch_fanout locks queues batch mcp metrics_cost pipelined)
if [ $# -gt 0 ]; then
    name="$1"
    shift
    if [[ ! " ${benchmarks[*]} " == *" $name "* ]]; then
        echo "bench.sh: no benchmark named '$name'; pick one of: ${benchmarks[*]}" >&2
        exit 2
    fi
    benchmarks=("$name")
fi
for name in "${benchmarks[@]}"; do
    echo "== $name"
    .venv/bin/python -m "bench.$name" "$@"
done
