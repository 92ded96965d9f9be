"""Fault injection for tests: storage calls these hooks right before the system call each stands
for, and a hook may raise the OSError the kernel would give (EIO from a failing disk) or stall
(a slow one). Never set outside tests; unset, each costs one attribute test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(slots=True)
class FaultPoints:
    """The hooks; each gets the path of the file the call is about."""

    fsync: Callable[[Path], None] | None = None
    """Before each data fsync of a segment (appends, rolls, the interval timer, close)."""


FAULTS = FaultPoints()
