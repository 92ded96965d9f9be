"""Headless Chromium for the dashboard's browser test and its screenshot (bench/dashboard_shot.py).

Debian's ``chromium`` is started here as a process of our own, with a fresh profile and the
DevTools protocol on a loopback port, and Playwright (its Python package, no browser download)
drives it over that protocol (``connect_over_cdp``). Starting it ourselves keeps its pid, so it is
stopped by pid however the caller ends, and the flags are the ones that work on a closed network
as root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

FLAGS = (
    "--headless",
    "--no-sandbox",  # as root there is no sandbox to drop into
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no update checks or field trials: no network here
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",  # a free port; the browser says which on stderr
)
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def chromium_path() -> str | None:
    """Debian's chromium, if installed (``CHROMIUM`` names another)."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium")


class Chromium:
    """A running headless Chromium: ``endpoint`` is its DevTools websocket."""

    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.process = process
        self.endpoint = ""
        self.log = log
        self.copier: threading.Thread | None = None  # copies its stderr to ``log``

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        """Stop the browser by pid (its process group: the renderers and helpers it forked)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
            except ProcessLookupError:
                pass
        if self.copier is not None:
            self.copier.join(STOP_TIMEOUT)  # it reads to the end of stderr, then closes it


@contextmanager
def chromium(profile: Path, *, width: int = 1400, height: int = 1000) -> Iterator[Chromium]:
    """A headless Chromium on a fresh profile in ``profile`` for the ``with`` block; stopped by
    pid on the way out. RuntimeError if it is missing or does not start."""
    path = chromium_path()
    if path is None:
        raise RuntimeError("chromium is not installed (apt-get install chromium)")
    profile.mkdir(parents=True, exist_ok=True)
    log = profile.parent / f"{profile.name}.log"
    args = [path, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    process = subprocess.Popen(
        [*args, "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: stop() ends its helpers with it
    )
    browser = Chromium(process, log)
    try:
        assert process.stderr is not None
        found, browser.copier = _endpoint(process.stderr, log)
        if found is None:
            raise RuntimeError(f"chromium did not start; its log:\n{log.read_text()}")
        browser.endpoint = found
        yield browser
    finally:
        browser.stop()


def _endpoint(stderr: IO[str], log: Path) -> tuple[str | None, threading.Thread]:
    """The DevTools address chromium prints once it listens (None: it did not within
    START_TIMEOUT), and the thread that copies its stderr to ``log`` meanwhile and after, so
    that the pipe never fills (it closes the pipe at its end)."""
    found: list[str] = []
    listening = threading.Event()

    def copy() -> None:
        with stderr, log.open("w") as out:
            for line in stderr:
                out.write(line)
                out.flush()
                match = _LISTENING.search(line)
                if match and not found:
                    found.append(match.group(1))
                    listening.set()
        listening.set()  # it exited: stop waiting

    copier = threading.Thread(target=copy, daemon=True)
    copier.start()
    listening.wait(START_TIMEOUT)
    return (found[0] if found else None), copier
