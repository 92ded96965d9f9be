#!/usr/bin/env bash
# The README's test command: sets up .venv, then runs every check (ruff, mypy --strict, the import
# contracts, pytest). Extra arguments go to pytest, e.g. ./scripts/test.sh -k storage -x, or
# ./scripts/test.sh -m "not slow" for the unit layer alone (about a minute). The full run, with no
# arguments, also measures branch coverage and prints the report at the end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/setup.sh
bin=.venv/bin

"$bin/python" scripts/unasync.py --check
"$bin/python" scripts/mcp_ops.py --check
echo "== ruff"
"$bin/ruff" check .
"$bin/ruff" format --check .

echo "== mypy --strict"
# The folders install as prontodb.<part> through a path mapping that mypy cannot follow,
# so it reads them through a tree of links laid out the way they install.
mkdir -p .typecheck/prontodb
for part in protocol broker clients testing; do
    ln -sfn "../../$part" ".typecheck/prontodb/$part"
done
export MYPYPATH=.typecheck
"$bin/mypy" -p prontodb.protocol -p prontodb.broker -p prontodb.clients -p prontodb.testing | sed 's#^\.typecheck/prontodb/##'
"$bin/mypy" tests examples bench

echo "== import contracts (lint-imports)"
"$bin/lint-imports" --no-cache

echo "== pytest"
if [ "$#" -eq 0 ]; then
    # coverage run, not pytest --cov: pytest imports its plugins before pytest-cov starts
    # measuring, and ProntoDB's own plugin (prontodb.testing, through its entry point) is one.
    status=0
    "$bin/coverage" run -m pytest || status=$?
    "$bin/coverage" report  # fails below the floor in pyproject.toml
    exit "$status"
else
    "$bin/pytest" "$@"
fi
