#!/usr/bin/env bash
# Creates .venv if missing and installs ProntoDB into it, editable, with the test extras.
# Sourced by demo.sh and test.sh so that both set up the same way.
set -euo pipefail
# -h or --help to the script that sources this: its header comment is its help; nothing is set up.
if [[ ${1:-} == -h || ${1:-} == --help ]]; then
    sed -n '2,/^[^#]/{/^#/{s/^# \{0,1\}//;p}}' "$0"
    exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
# Reinstall only when the project's metadata changed since the last install.
stamp=.venv/.prontodb-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
    touch "$stamp"
fi
# Bytecode for our sources, as a regular install would have it: the CLI starts in loops, and
# without .pyc files (PYTHONDONTWRITEBYTECODE is set on some machines) every start recompiles.
.venv/bin/python -m compileall -q protocol broker clients >/dev/null
