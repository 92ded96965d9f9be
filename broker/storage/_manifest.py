"""The MANIFEST: which snapshot and which segments are live, with a checksum over its body.

On disk it is two lines: a compact JSON body, then ``crc32:<8 hex digits>`` of the body's bytes.
Format 2 adds ``last_segment``, rewritten on every roll, so that a missing newest segment is
seen as missing; format 1 (without it) is still read.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ._errors import CorruptionError
from ._layout import MANIFEST_NAME, parse_snapshot_name, replace_file, snapshot_name

MANIFEST_FORMAT = 2
_MAX_MANIFEST_BYTES = 4096
_KEYS_V1 = {"format", "snapshot", "snapshot_bytes", "first_segment"}
_KEYS = {*_KEYS_V1, "last_segment"}


@dataclass(frozen=True, slots=True)
class Manifest:
    """The live file set: ``snapshot`` (if any) plus every segment from ``first_segment`` on,
    of which at least those up to ``last_segment`` exist (a roll creates the next segment
    before it records it here, so more may exist, never fewer)."""

    snapshot: str | None = None
    snapshot_bytes: int = 0
    first_segment: int = 1
    last_segment: int = 1
    legacy: bool = field(default=False, compare=False)
    """Read from a format 1 file, which vouched for no segment: its builds made segment 1 after
    the manifest, and recorded no roll."""

    def encode(self) -> bytes:
        """The file's bytes: JSON body line, then its crc32 line."""
        body = json.dumps(
            {
                "format": MANIFEST_FORMAT,
                "snapshot": self.snapshot,
                "snapshot_bytes": self.snapshot_bytes,
                "first_segment": self.first_segment,
                "last_segment": self.last_segment,
            },
            separators=(",", ":"),
        ).encode()
        return body + b"\ncrc32:%08x\n" % zlib.crc32(body)


def decode_manifest(data: bytes, path: Path) -> Manifest:
    """Parse and check a manifest; CorruptionError for any damage or inconsistency."""
    lines = data.split(b"\n")
    if len(lines) != 3 or lines[2] or not lines[1].startswith(b"crc32:"):
        raise CorruptionError(path, 0, "the manifest is not a JSON line followed by a crc32 line")
    body, crc_line = lines[0], lines[1]
    if crc_line != b"crc32:%08x" % zlib.crc32(body):
        raise CorruptionError(path, len(body) + 1, "the manifest checksum does not match its body")
    try:
        fields = json.loads(body)
    except ValueError:
        fields = None
    if not isinstance(fields, dict):
        fields = {}
    version = fields.get("format")
    if type(version) is int and version > MANIFEST_FORMAT:
        raise CorruptionError(
            path,
            0,
            f"manifest format {version}, but this build reads formats 1 to {MANIFEST_FORMAT}",
            "Open it with the ProntoDB version that wrote it, or restore from a backup.",
        )
    legacy = version == 1 and set(fields) == _KEYS_V1
    if legacy:
        fields = {**fields, "last_segment": fields["first_segment"]}
    elif version != MANIFEST_FORMAT or set(fields) != _KEYS:
        raise CorruptionError(path, 0, "the manifest body does not have the expected fields")
    snapshot, size, first = fields["snapshot"], fields["snapshot_bytes"], fields["first_segment"]
    last = fields["last_segment"]
    if snapshot is None:
        consistent = type(size) is int and size == 0 and type(first) is int and first == 1
    else:
        through = parse_snapshot_name(snapshot) if isinstance(snapshot, str) else None
        consistent = (
            through is not None
            and type(size) is int
            and size > 0
            and type(first) is int
            and first == through + 1
        )
    if not consistent or type(last) is not int or last < first:
        raise CorruptionError(path, 0, "the manifest names an inconsistent file set")
    return Manifest(snapshot, size, first, last, legacy=legacy)


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest of ``directory``, or None if it has none."""
    path = directory / MANIFEST_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, _MAX_MANIFEST_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > _MAX_MANIFEST_BYTES:
        raise CorruptionError(path, _MAX_MANIFEST_BYTES, "the manifest is far too large")
    return decode_manifest(data, path)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Replace the manifest atomically (tmp, fsync, rename, fsync directory)."""
    replace_file(directory, MANIFEST_NAME, manifest.encode())


def snapshot_manifest(through_segment: int, snapshot_bytes: int, last_segment: int) -> Manifest:
    """The manifest after a compaction through ``through_segment``, with ``last_segment`` the
    active segment then."""
    return Manifest(
        snapshot_name(through_segment), snapshot_bytes, through_segment + 1, last_segment
    )
