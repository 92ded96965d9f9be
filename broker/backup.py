"""Backup files: one self-checking file holding the snapshots of one or more databases.

The file is a storage file (the 32-byte header, kind BACKUP, then records framed and checksummed as
in segments; docs/FORMAT.md, "Backups"). Its records are an INFO record, then per database a BEGIN
record, the engine's snapshot records as they are, and an END record, and last a CLOSE record.
A reader accepts a file only if every checksum holds and every section is complete up to CLOSE, so a
truncated, damaged or foreign file is refused before anything is restored from it.

Blocking file I/O, no clock and no trio: the broker runs these in threads.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from .database import Database
from .engine import Engine, EngineLimits, Record
from .storage import (
    HEADER_SIZE,
    CorruptionError,
    DirectoryLock,
    FileKind,
    RecordReader,
    StorageError,
    StorageOptions,
    check_header,
    encode_header,
    encode_records,
    fsync_directory,
    new_salt,
    write_all,
)

SUFFIX = ".db"
FORMAT = 1
# Record kinds of the backup's own records; the engine's snapshot kinds (16 and up) go in between.
INFO, BEGIN, END, CLOSE = 1, 2, 3, 4
_MAX_RECORD = 64 << 20  # engine snapshot records stay far below this
_CHUNK = 4 << 20  # bytes of records encoded per write


@dataclass(frozen=True, slots=True)
class Section:
    """One database in a backup: its name, the user whose cursor it is (None: global or
    default), its revision and key count."""

    name: str
    owner: str | None
    revision: int
    keys: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "owner": self.owner,
            "revision": self.revision,
            "keys": self.keys,
        }


@dataclass(frozen=True, slots=True)
class Contents:
    """What a checked backup file holds."""

    path: Path
    created: float
    sections: list[Section]
    size: int


def target_path(output: Path, now_stamp: str) -> Path:
    """Where ``backup --output PATH`` writes: inside PATH if it is a directory (a timestamped
    name), else PATH itself if it ends in ``.db``, else ``PATH.db``."""
    if output.is_dir():
        return output / f"backup-{now_stamp}{SUFFIX}"
    if output.name.endswith(SUFFIX):
        return output
    return output.with_name(output.name + SUFFIX)


def write(
    path: Path,
    created: float,
    sections: Iterable[tuple[Section, Iterable[Record]]],
) -> int:
    """Write a new backup file at ``path`` (refusing to replace one): its bytes.

    Written to ``path.tmp``, fsynced and renamed into place, so the file appears whole or not at
    all. FileExistsError if ``path`` exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(path)
    # A name of its own: two backups to one target must not share a temporary file.
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    salt = new_salt()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        size = _write_all(fd, salt, created, sections)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.link(tmp, path)  # fails, rather than replaces, if the name was taken meanwhile
    finally:
        tmp.unlink()
    fsync_directory(path.parent)
    return size


def _write_all(
    fd: int, salt: int, created: float, sections: Iterable[tuple[Section, Iterable[Record]]]
) -> int:
    write_all(fd, encode_header(FileKind.BACKUP, 1, salt))
    size = HEADER_SIZE
    pending: list[Record] = [(INFO, _pack({"format": FORMAT, "created": created}))]
    pending_bytes = 0
    count = 0

    def flush() -> None:
        nonlocal size, pending, pending_bytes
        data = encode_records(pending, _MAX_RECORD, salt)
        write_all(fd, data)
        size += len(data)
        pending, pending_bytes = [], 0

    for section, records in sections:
        pending.append((BEGIN, _pack(section.as_dict())))
        n = 0
        for record in records:
            pending.append(record)
            pending_bytes += len(record[1])
            n += 1
            if pending_bytes >= _CHUNK:
                flush()
        pending.append((END, _pack({"name": section.name, "records": n})))
        count += 1
    pending.append((CLOSE, _pack({"databases": count})))
    flush()
    return size


def read(path: Path) -> Contents:
    """Check the whole file and say what it holds; CorruptionError (naming the file and what
    is wrong) for anything that is not a complete backup."""
    created = 0.0
    sections: list[Section] = []
    for kind, fields, _records in _sections(path):
        if kind == INFO:
            created = fields["created"]
        else:
            sections.append(fields)
    return Contents(path, created, sections, path.stat().st_size)


def records_of(path: Path, index: int) -> Iterator[Record]:
    """The snapshot records of the file's database number ``index`` (from 0, in the order
    :func:`read` lists them; call it first, to check the file)."""
    number = -1
    for kind, _section, records in _sections(path):
        if kind == BEGIN:
            number += 1
            if number == index:
                yield from records
                return
    raise IndexError(index)


def restore_into(
    directory: Path,
    records: Iterable[Record],
    *,
    options: StorageOptions,
    limits: EngineLimits,
    above: int = 0,
) -> int:
    """Make the database in ``directory`` (existing or not) hold the backed-up state, atomically:
    its files are swapped by a compaction (the manifest's rename is the commit point), so a crash
    leaves the old state or the new one. The revision continues above both the backup's and
    ``above`` (the old database's), so a watcher's old resume point reads as compacted. Returns
    the new revision.

    The directory's lock is held throughout, taken before anything is read: DirectoryLocked (and
    nothing changed) if another broker or program has the directory open."""
    directory.mkdir(parents=True, exist_ok=True)
    with DirectoryLock(directory) as lock:
        engine = Engine.restore(records, limits)
        try:
            database = Database.open(directory, options=options, limits=limits, lock=lock)
        except StorageError:
            # Damaged past opening: exactly when a restore is wanted. Keep it aside (our lock
            # goes with it), start afresh in a directory the new database locks for itself.
            aside = directory.with_name(f"{directory.name}.damaged-{secrets.token_hex(4)}")
            os.rename(directory, aside)
            database = Database.open(directory, options=options, limits=limits)
        try:
            engine.rebase(
                max(engine.revision, database.engine.revision, above) + 1,
                database.engine.next_session,
            )
            database.engine = engine
            database.compact()
        finally:
            database.close()
    return engine.revision


def _sections(path: Path) -> Iterator[tuple[int, Any, Iterator[Record]]]:
    """(INFO, info, empty) then (BEGIN, Section, its records) per database, checking every
    record and the structure as it goes; a section's records must be read before the next."""
    try:
        # Non-blocking, so that a FIFO cannot hold the reading thread; then regular files only.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise CorruptionError(path, None, f"cannot be read ({exc.strerror})", _ADVICE) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CorruptionError(path, None, "not a regular file", _ADVICE)
        head = os.pread(fd, HEADER_SIZE, 0)
        if head[:8] != b"PRONTODB"[: len(head)] or len(head) < 8:
            raise CorruptionError(path, 0, "not a ProntoDB backup", _ADVICE)
        header = check_header(head, path, FileKind.BACKUP, 1)
        reader = RecordReader(fd, HEADER_SIZE, os.fstat(fd).st_size, header.salt, path)
        records = iter(reader)
        kind, payload = _next(records, reader, path)
        if kind != INFO or _unpack(payload, path).get("format") != FORMAT:
            raise CorruptionError(
                path,
                HEADER_SIZE,
                "the backup's first record is not one this version reads",
                _ADVICE,
            )
        yield INFO, _unpack(payload, path), iter(())
        count = 0
        while True:
            kind, payload = _next(records, reader, path)
            if kind == CLOSE:
                if _unpack(payload, path).get("databases") != count:
                    raise CorruptionError(path, reader.good_end, "sections are missing", _ADVICE)
                try:
                    next(records)
                except StopIteration:
                    _check_end(reader, path)
                    return
                raise CorruptionError(path, reader.good_end, "records follow its end", _ADVICE)
            if kind != BEGIN:
                raise CorruptionError(path, reader.good_end, f"unexpected record {kind}", _ADVICE)
            fields = _unpack(payload, path)
            try:
                section = Section(
                    fields["name"], fields["owner"], fields["revision"], fields["keys"]
                )
            except KeyError as exc:
                raise CorruptionError(path, None, f"a section lacks {exc}", _ADVICE) from None
            body = _body(records, reader, path)
            yield BEGIN, section, body
            for _ in body:  # the caller may not have read it all
                pass
            count += 1
    finally:
        os.close(fd)


def _body(records: Iterator[Record], reader: RecordReader, path: Path) -> Iterator[Record]:
    while True:
        kind, payload = _next(records, reader, path)
        if kind == END:
            return
        if kind < 16:
            raise CorruptionError(path, reader.good_end, f"unexpected record {kind}", _ADVICE)
        yield kind, payload


def _next(records: Iterator[Record], reader: RecordReader, path: Path) -> Record:
    try:
        kind, payload = next(records)
    except StopIteration:
        _check_end(reader, path)
        raise CorruptionError(path, reader.good_end, "the file ends too early", _ADVICE) from None
    return kind, bytes(payload)


def _check_end(reader: RecordReader, path: Path) -> None:
    if reader.damage is not None:
        raise CorruptionError(path, reader.damage.offset, reader.damage.reason, _ADVICE)


def _pack(document: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(document, use_bin_type=True)
    return packed


def _unpack(payload: bytes, path: Path) -> dict[str, Any]:
    try:
        document = msgpack.unpackb(payload, raw=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise CorruptionError(path, None, f"a record does not decode ({exc})", _ADVICE) from exc
    if not isinstance(document, dict):
        raise CorruptionError(path, None, "a record is not a map", _ADVICE)
    return document


_ADVICE = "Nothing was restored from it; use another backup file."
