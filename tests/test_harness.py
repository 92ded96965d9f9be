"""The suite does not depend on how it was started: processes it starts get Ctrl-C (SIGINT) with
its default meaning even when the suite itself was started with SIGINT ignored (a shell's
background job), else the tests of Ctrl-C would hang or pass for the wrong reason."""

from __future__ import annotations

import subprocess
import sys


def test_a_started_process_has_the_default_sigint_handler() -> None:
    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip() == "True"
