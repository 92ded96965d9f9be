#!/usr/bin/env bash
# The README's demo command: sets up .venv, then runs the seed's task workflow on an embedded database.
# (Until the broker server lands, "embedded" means in-process, on a temporary data directory.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/setup.sh
.venv/bin/python examples/embedded_workflow.py "$@"
