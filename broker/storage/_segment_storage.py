"""SegmentStorage: the log as numbered segment files plus one snapshot, in one directory."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Self

from ._errors import CorruptionError, StorageError, os_reason
from ._faults import FAULTS
from ._file_header import HEADER_SIZE, FileKind, check_header, encode_header, new_salt
from ._file_set import FileSet, create_segment, open_file_set, remove_orphans
from ._interface import WriteObserver
from ._layout import (
    MANIFEST_NAME,
    TMP_SUFFIX,
    fsync_directory,
    fsync_directory_quietly,
    segment_name,
    snapshot_name,
    unlink_quietly,
    write_all,
    write_file_synced,
)
from ._lock import DirectoryLock
from ._manifest import snapshot_manifest, write_manifest
from ._options import FsyncPolicy, StorageOptions, StorageStats
from ._records import (
    RECORD_HEADER_SIZE,
    Damage,
    RecordReader,
    SearchAbandoned,
    encode_records,
    find_record,
)

logger = logging.getLogger("prontodb.storage")

_SNAPSHOT_CHUNK = 1024 * 1024


class SegmentStorage:
    """The append-only segment backend of :class:`Storage` (docs/FORMAT.md).

    Open with :meth:`open`, exhaust :meth:`replay`, then :meth:`append` from one writer thread.
    One other thread may call :meth:`install_snapshot` (or :meth:`compaction_steps`) and
    :meth:`stats` meanwhile: an internal lock guards the file set.
    """

    def __init__(
        self, directory: Path, options: StorageOptions, files: FileSet, lock: DirectoryLock | None
    ) -> None:
        # Private: use SegmentStorage.open().
        self._directory = directory
        self._options = options
        self._manifest = files.manifest
        self._sealed = files.sealed  # number -> size of every live sealed segment, in order
        self._active = files.active
        self._fd = files.fd
        self._active_size = files.active_size
        self._salt = files.active_salt  # of the active segment: appends seed their crcs with it
        self._orphans = files.orphans  # deleted once replay has verified the live set
        self._directory_lock = lock  # released by close(); None when the caller's
        self._lock = threading.Lock()
        self._replayed = False
        self._appended = False
        self._closed = False
        self._failure: StorageError | None = None
        self._compacting = False
        self._unsynced = 0
        self._last_sync = time.monotonic()
        self._appends = 0
        self._fsyncs = 0
        # Told how long each data fsync took (the broker's metrics); set it after opening.
        self.observer: WriteObserver | None = None

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        directory: str | os.PathLike[str],
        options: StorageOptions | None = None,
        *,
        lock: DirectoryLock | bool = False,
    ) -> Self:
        """Open the database in ``directory``, creating the directory and segment 1 if new.

        ``lock``: True takes the directory's lock (:class:`DirectoryLock`) until :meth:`close`,
        so that a second opener, in this process or another, gets :class:`DirectoryLocked`
        (``Database.open`` does this); a DirectoryLock the caller holds on ``directory`` stays
        the caller's (closing leaves it held); False takes none, for tests and tools that keep
        other openers out themselves.

        Checks the manifest, the file set and every file header, and reinitialises a last segment
        whose header a crash cut short. Record checksums are verified by :meth:`replay`, which
        also cuts a torn tail and, once all is well, deletes the orphans of an interrupted
        compaction. Raises CorruptionError for damage, StorageError for other failures.
        """
        options = options or StorageOptions()
        path = Path(directory)
        if isinstance(lock, DirectoryLock) and not (lock.held and lock.directory == path):
            raise StorageError(f"{lock!r} is not a lock held on {path}")
        try:
            path.mkdir(parents=True, exist_ok=True)
            own = DirectoryLock(path).acquire() if lock is True else None
            try:
                files = open_file_set(path)
            except BaseException:
                if own is not None:
                    own.release()  # a failed open leaves the directory to the next opener
                raise
        except OSError as exc:
            raise StorageError(f"cannot open the database in {path}: {exc}") from exc
        return cls(path, options, files, own)

    # -- reading ------------------------------------------------------------------------------

    def replay(self) -> Iterator[tuple[int, bytes]]:
        """Every record in order: the snapshot's, then each segment's.

        Exhaust it before the first :meth:`append`. Damage in the snapshot or a sealed segment
        raises CorruptionError. In the active segment, damage followed by nothing valid is a
        torn tail: it is cut off (and logged); damage followed by a valid record raises. Only
        once every record has been verified are the orphans of an interrupted compaction
        deleted: until then they may be the only complete copy of the data.
        """
        with self._lock:
            self._check_open()
            if self._appended:
                raise StorageError("replay() reads the log only before the first append")
        return self._replay()

    def _replay(self) -> Iterator[tuple[int, bytes]]:
        try:
            if self._manifest.snapshot is not None:
                yield from self._replay_sealed(
                    self._manifest.snapshot, FileKind.SNAPSHOT, self._manifest.first_segment - 1
                )
            for number in list(self._sealed):
                yield from self._replay_sealed(segment_name(number), FileKind.SEGMENT, number)
            active = self._directory / segment_name(self._active)
            reader = RecordReader(self._fd, HEADER_SIZE, self._active_size, self._salt, active)
            yield from reader
            if reader.damage is not None:
                self._cut_torn_tail(reader.damage)
            remove_orphans(self._directory, self._orphans)
            self._orphans = []
            manifest = self._manifest
            if manifest.legacy or manifest.last_segment < self._active:  # format 1, or a roll
                with self._lock:  # cut short before it was recorded
                    self._record_last_segment(self._active)
        except OSError as exc:
            raise StorageError(f"cannot read the database in {self._directory}: {exc}") from exc
        with self._lock:
            self._replayed = True
            self._last_sync = time.monotonic()

    def _replay_sealed(self, name: str, kind: FileKind, number: int) -> Iterator[tuple[int, bytes]]:
        path = self._directory / name
        fd = os.open(path, os.O_RDONLY)
        try:
            # Checked at open already; read again here for the salt, from this very descriptor.
            salt = check_header(os.pread(fd, HEADER_SIZE, 0), path, kind, number).salt
            size = os.fstat(fd).st_size
            reader = RecordReader(fd, HEADER_SIZE, size, salt, path)
            yield from reader
        finally:
            os.close(fd)
        if reader.damage is not None:
            raise CorruptionError(path, reader.damage.offset, reader.damage.reason)

    def _cut_torn_tail(self, damage: Damage) -> None:
        path = self._directory / segment_name(self._active)
        size = self._active_size
        truncate_advice = (
            "Restore the database from a backup, or truncate this file to "
            f"{damage.offset} bytes to keep the records before the damage (those after it are lost)."
        )
        try:
            found = find_record(self._fd, damage.offset + 1, size, self._salt)
        except SearchAbandoned:
            raise CorruptionError(
                path,
                damage.offset,
                f"{damage.reason}; the {size - damage.offset} bytes after it hold too many "
                "would-be records to rule out valid ones, so they are not cut automatically",
                truncate_advice,
            ) from None
        if found is not None:
            raise CorruptionError(
                path,
                damage.offset,
                f"{damage.reason}, yet a valid record starts at offset {found}: the damage is "
                "inside the log, not a torn tail",
                truncate_advice,
            )
        with self._lock:
            os.ftruncate(self._fd, damage.offset)
            os.fsync(self._fd)
            self._active_size = damage.offset
        logger.warning(
            "%s: cut %d bytes of torn tail at offset %d (%s)",
            path,
            size - damage.offset,
            damage.offset,
            damage.reason,
        )

    # -- writing ------------------------------------------------------------------------------

    @property
    def directory(self) -> Path:
        """The database directory."""
        return self._directory

    @property
    def options(self) -> StorageOptions:
        """The options the storage was opened with."""
        return self._options

    @property
    def max_record_size(self) -> int:
        """The largest payload :meth:`append` and compaction accept (reading takes any size)."""
        return self._options.max_record_size

    def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Write ``records`` as one batch: one ``write`` and, per the fsync policy, one fsync.

        ValueError for a kind outside 1..255 or a payload over ``max_record_size`` (nothing is
        written). Rolls to a new segment once the active one reaches ``segment_size``. After a
        failed write or fsync every later call raises StorageError.
        """
        salt = self._salt  # framed outside the lock; only this writer thread rolls
        data = encode_records(records, self.max_record_size, salt)
        with self._lock:
            self._check_writable()
            self._appended = True
            if not data:
                return
            if salt != self._salt:  # rolled meanwhile from another thread, against the rules
                data = encode_records(records, self.max_record_size, self._salt)
            start = self._active_size
            try:
                write_all(self._fd, data)
            except OSError as exc:
                self._undo_partial_write(start)
                raise self._fail("write to", exc) from exc
            self._active_size += len(data)
            self._unsynced += len(data)
            self._appends += 1
            policy = self._options.fsync
            if policy is FsyncPolicy.ALWAYS or (
                policy is FsyncPolicy.INTERVAL
                and time.monotonic() - self._last_sync >= self._options.fsync_interval
            ):
                self._sync_locked()
            if self._active_size >= self._options.segment_size:
                self._roll_locked()

    def roll(self) -> int:
        """Seal the active segment now, even if small, and start the next; return the sealed number."""
        with self._lock:
            self._check_writable()
            self._appended = True
            return self._roll_locked()

    def sync(self) -> None:
        """Fsync whatever was appended and not yet synced (whatever the policy)."""
        with self._lock:
            self._check_open()
            self._check_not_failed()
            if self._unsynced:
                self._sync_locked()

    def sync_due_at(self) -> float | None:
        """Under ``interval``: when the unsynced data should be synced; otherwise None."""
        with self._lock:
            if (
                self._options.fsync is not FsyncPolicy.INTERVAL
                or not self._unsynced
                or self._closed
                or self._failure is not None
            ):
                return None
            return self._last_sync + self._options.fsync_interval

    def close(self) -> None:
        """Sync (unless a write failed) and close the files. Closing twice is harmless."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if self._unsynced and self._failure is None:
                    self._sync_locked()
            finally:
                try:
                    os.close(self._fd)
                finally:
                    if self._directory_lock is not None:
                        self._directory_lock.release()  # only once the files are closed

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"the storage of {self._directory} is closed")

    def _check_not_failed(self) -> None:
        if self._failure is not None:
            # A fresh exception each time: re-raising one instance would grow its traceback.
            raise StorageError(str(self._failure)) from self._failure

    def _check_writable(self) -> None:
        self._check_open()
        self._check_not_failed()
        if not self._replayed:
            raise StorageError("exhaust replay() before the first append, roll or compaction")

    def _sync_locked(self) -> None:
        began = time.monotonic()
        try:
            if FAULTS.fsync is not None:
                FAULTS.fsync(self._directory / segment_name(self._active))
            os.fdatasync(self._fd)
        except OSError as exc:
            # After a failed fsync the kernel may have dropped the dirty pages while still
            # serving them from its cache ("fsyncgate"): never retry and carry on. Under
            # `always` nothing after the last good fsync was acknowledged, so it is cut, and
            # the reopen that follows re-reads only what is known to be on disk.
            if self._options.fsync is FsyncPolicy.ALWAYS and self._unsynced:
                self._undo_partial_write(self._active_size - self._unsynced)
            raise self._fail("fsync", exc) from exc
        self._fsyncs += 1
        self._unsynced = 0
        self._last_sync = now = time.monotonic()
        if self.observer is not None:
            self.observer.fsynced(now - began)

    def _roll_locked(self) -> int:
        sealed, size = self._active, self._active_size
        if self._unsynced:
            self._sync_locked()  # sealed segments are always on disk, whatever the policy
        try:
            fd, salt = create_segment(self._directory, sealed + 1, size)
        except OSError as exc:
            raise self._fail("create the next segment after", exc) from exc
        try:
            # Recorded only once it exists: from now on its absence is damage.
            self._record_last_segment(sealed + 1)
        except OSError as exc:
            os.close(fd)
            raise self._fail("record the next segment in the manifest after", exc) from exc
        try:
            os.close(self._fd)
        except OSError as exc:  # the data is already synced; a failing close loses nothing
            logger.warning("closing sealed segment %d: %s", sealed, exc)
        self._fd = fd
        self._salt = salt
        self._sealed[sealed] = size
        self._active = sealed + 1
        self._active_size = HEADER_SIZE
        return sealed

    def _record_last_segment(self, last: int) -> None:
        """Make the manifest vouch for every segment up to ``last`` (under the lock)."""
        self._manifest = replace(self._manifest, last_segment=last, legacy=False)
        write_manifest(self._directory, self._manifest)

    def _undo_partial_write(self, start: int) -> None:
        # Best effort: if the cut fails too, the next open treats the partial batch as a torn tail.
        try:
            os.ftruncate(self._fd, start)
        except OSError as exc:
            logger.warning("could not cut a partial write back to offset %d: %s", start, exc)

    def _fail(self, action: str, exc: OSError) -> StorageError:
        path = self._directory / segment_name(self._active)
        # Raised to the caller, which reports it (the broker: in the answer, and in one line of
        # its log); no more writes until the database is reopened.
        self._failure = StorageError(f"could not {action} {path}: {os_reason(exc)}")
        return self._failure

    # -- compaction ---------------------------------------------------------------------------

    def should_compact(self, live_bytes: int) -> bool:
        """Whether compaction pays, given that the live state would take ``live_bytes``.

        True when the live files exceed ``compact_min_bytes`` and more than
        ``compact_garbage_ratio`` of their bytes are garbage.
        """
        total = self.stats().total_bytes
        if total <= self._options.compact_min_bytes:
            return False
        return (total - live_bytes) / total > self._options.compact_garbage_ratio

    def install_snapshot(self, through_segment: int, records: Iterable[tuple[int, bytes]]) -> None:
        """Replace the snapshot and every segment up to ``through_segment`` by ``records``.

        ``records`` is the live state as of the moment ``through_segment`` was sealed. A crash at
        any point leaves either the old file set or the new one (docs/FORMAT.md, "Compaction").
        """
        for _step in self.compaction_steps(through_segment, records):
            pass

    def compaction_steps(
        self, through_segment: int, records: Iterable[tuple[int, bytes]]
    ) -> Generator[str, None, None]:
        """:meth:`install_snapshot` one step at a time, yielding each step's name once done.

        The steps: ``snapshot_written``, ``snapshot_renamed``, ``manifest_written``,
        ``manifest_installed``, ``old_segments_deleted``, ``old_snapshot_deleted``. Abandoning
        the iterator between steps leaves the files as a crash there would.
        """
        with self._lock:
            self._check_compactable(through_segment)
        return self._compaction(through_segment, records)

    def _check_compactable(self, through: int) -> None:
        self._check_writable()
        if not self._manifest.first_segment <= through < self._active:
            raise ValueError(
                f"through_segment must be a live sealed segment "
                f"({self._manifest.first_segment}..{self._active - 1}), not {through}"
            )

    def _compaction(
        self, through: int, records: Iterable[tuple[int, bytes]]
    ) -> Generator[str, None, None]:
        directory = self._directory
        name = snapshot_name(through)
        snap_tmp = directory / (name + TMP_SUFFIX)
        manifest_tmp = directory / (MANIFEST_NAME + TMP_SUFFIX)
        with self._lock:
            if self._compacting:
                raise StorageError("a compaction is already running")
            self._check_compactable(through)  # again: another compaction may have run since
            self._compacting = True
        try:
            # No step spans a yield, so abandoning the iterator changes nothing on disk.
            try:
                size = self._write_snapshot(snap_tmp, through, records)
            except BaseException:
                unlink_quietly(snap_tmp)
                raise
            yield "snapshot_written"

            try:
                os.replace(snap_tmp, directory / name)
                fsync_directory(directory)
            except OSError as exc:
                raise StorageError(f"compaction could not install {name}: {exc}") from exc
            yield "snapshot_renamed"

            # Under the lock: a roll replaces the manifest through the same temporary name.
            with self._lock:
                manifest = snapshot_manifest(through, size, self._active)
                try:
                    write_file_synced(manifest_tmp, manifest.encode())
                except OSError as exc:
                    raise StorageError(f"compaction could not write {manifest_tmp}: {exc}") from exc
            yield "manifest_written"

            with self._lock:
                try:
                    if manifest.last_segment != self._active:
                        # A roll came in between (and its own manifest write used the tmp).
                        manifest = snapshot_manifest(through, size, self._active)
                        write_file_synced(manifest_tmp, manifest.encode())
                    os.replace(manifest_tmp, directory / MANIFEST_NAME)
                    fsync_directory(directory)
                except OSError as exc:
                    raise StorageError(f"compaction could not install the manifest: {exc}") from exc
                old_snapshot = self._manifest.snapshot
                old_segments = [n for n in self._sealed if n <= through]
                for number in old_segments:
                    del self._sealed[number]
                self._manifest = manifest
            logger.info("%s: installed %s (%d bytes)", directory, name, size)
            yield "manifest_installed"

            for number in old_segments:
                unlink_quietly(directory / segment_name(number))
            fsync_directory_quietly(directory)
            yield "old_segments_deleted"

            if old_snapshot is not None and old_snapshot != name:
                unlink_quietly(directory / old_snapshot)
                fsync_directory_quietly(directory)
            yield "old_snapshot_deleted"
        finally:
            with self._lock:
                self._compacting = False

    def _write_snapshot(
        self, path: Path, through: int, records: Iterable[tuple[int, bytes]]
    ) -> int:
        max_size = self.max_record_size
        salt = new_salt()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise StorageError(f"compaction could not create {path}: {exc}") from exc
        try:
            write_all(fd, encode_header(FileKind.SNAPSHOT, through, salt))
            size = HEADER_SIZE
            chunk: list[tuple[int, bytes]] = []
            chunk_bytes = 0
            for kind, payload in records:
                chunk.append((kind, payload))
                chunk_bytes += RECORD_HEADER_SIZE + len(payload)
                if chunk_bytes >= _SNAPSHOT_CHUNK:
                    write_all(fd, encode_records(chunk, max_size, salt))
                    size += chunk_bytes
                    chunk, chunk_bytes = [], 0
            write_all(fd, encode_records(chunk, max_size, salt))
            size += chunk_bytes
            os.fsync(fd)
        except OSError as exc:
            raise StorageError(f"compaction could not write {path}: {exc}") from exc
        finally:
            os.close(fd)
        return size

    # -- reporting ----------------------------------------------------------------------------

    def stats(self) -> StorageStats:
        """Sizes and counters of the live files. Read without the lock, which an append holds
        through its fsync: a slow disk must not stall whoever asks (the broker's event loop).
        Each figure is current; together they may be one append apart."""
        sealed = list(self._sealed.values())  # one C-level copy: no roll can change it midway
        manifest = self._manifest
        segment_bytes = sum(sealed) + self._active_size
        return StorageStats(
            total_bytes=manifest.snapshot_bytes + segment_bytes,
            snapshot_bytes=manifest.snapshot_bytes,
            bytes_since_compaction=segment_bytes,
            segments=len(sealed) + 1,
            first_segment=manifest.first_segment,
            active_segment=self._active,
            snapshot=manifest.snapshot,
            unsynced_bytes=self._unsynced,
            appends=self._appends,
            fsyncs=self._fsyncs,
        )

    def __repr__(self) -> str:
        return f"<SegmentStorage {str(self._directory)!r} active={segment_name(self._active)}>"
