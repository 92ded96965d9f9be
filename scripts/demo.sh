#!/usr/bin/env bash
# The README's demo command: sets up .venv, then runs the cookbook's task workflow through the CLI on
# the embedded default (a broker the first command starts in the background, on a private data dir).
#   ./scripts/demo.sh [TASKS]    TASKS tasks (default 100); see examples/demo_workflow.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/setup.sh
PATH="$root/.venv/bin:$PATH" examples/demo_workflow.sh "$@"
