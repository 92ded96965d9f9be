#!/usr/bin/env bash
# Creates .venv if missing and installs ProntoDB into it, editable, with the test and mcp extras.
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
# pip's output (and setuptools' warnings about the editable layout) goes to a log, shown only if
# the install fails: on success it is noise.
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "== setting up .venv (pip install -e '.[test,mcp]'; the log is .venv/install.log)"
    log=.venv/install.log
    if ! { .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip &&
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,mcp]'; } \
        >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup: pip install failed (the log above is in $log)" >&2
        exit 1
    fi
    touch "$stamp"
fi
# Bytecode for our sources, as a regular install would have it: the CLI starts in loops, and
# without .pyc files (PYTHONDONTWRITEBYTECODE is set on some machines) every start recompiles.
.venv/bin/python -m compileall -q protocol broker clients testing >/dev/null
