#!/usr/bin/env bash
# The README's demo command: sets up .venv, then runs a short seed workflow through the CLI on the
# embedded default (a broker the first command starts in the background, on a private data dir).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/setup.sh
PATH="$root/.venv/bin:$PATH" examples/demo_workflow.sh "$@"
