#!/usr/bin/env bash
# Runs the benchmarks and rewrites their sections of docs/BENCHMARKS.md. Arguments go to each benchmark.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/setup.sh
.venv/bin/python -m bench.open_large "$@"
