"""Shared test settings: hypothesis profiles sized for a 2-core CI machine, short temp dirs."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", parent=settings.get_profile("default"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A fresh private directory with a short path: a Unix socket path must fit in 107 bytes,
    and pytest's tmp_path can be longer than that."""
    path = Path(tempfile.mkdtemp(prefix="pdb-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
