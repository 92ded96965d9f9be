#!/usr/bin/env bash
# The reliability suite at full size: the same cases as ./scripts/test.sh runs (tests/reliability/),
# with bigger counts, and their figures written into docs/RELIABILITY.md.
#   ./scripts/torture.sh                 every case
#   ./scripts/torture.sh -k surgery      pytest arguments pass through (figures of those cases only)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
source scripts/setup.sh
figures="$(mktemp /tmp/prontodb-figures-XXXXXX.json)"
trap 'rm -f "$figures"' EXIT
began=$(date +%s)
PRONTODB_TORTURE=1 PRONTODB_RELIABILITY_FIGURES="$figures" \
    .venv/bin/pytest tests/reliability -m reliability -p no:cacheprovider "$@"
echo "== torture: $(( $(date +%s) - began )) s; figures into docs/RELIABILITY.md"
.venv/bin/python tests/reliability_kit.py "$figures" "./scripts/torture.sh $*"
