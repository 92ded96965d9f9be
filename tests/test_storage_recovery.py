"""Recovery on open: torn tails, damage in the middle, sealed files, headers, manifest, orphans."""

from __future__ import annotations

import logging
import os
import random
import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prontodb.broker.storage import CorruptionError, SegmentStorage, StorageOptions

from storage_files import Record, opened, reopen

SEG1, SEG2, SEG3 = "seg-00000001.log", "seg-00000002.log", "seg-00000003.log"


def write_batches(path: Path, *batches: list[Record], roll_after: int | None = None) -> None:
    storage, _ = opened(path)
    for i, batch in enumerate(batches):
        storage.append(batch)
        if roll_after == i:
            storage.roll()
    storage.close()


def flip(path: Path, offset: int, mask: int = 0x01) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= mask
    path.write_bytes(bytes(data))


def record_offsets(path: Path) -> list[int]:
    """Start offsets of the records in a file, read with the documented framing."""
    data, pos, offsets = path.read_bytes(), 32, []
    while pos < len(data):
        offsets.append(pos)
        pos += 9 + struct.unpack_from("<I", data, pos + 4)[0]
    return offsets


# -- the active segment --------------------------------------------------------------------------

FIRST = [(1, b"alpha" * 3), (2, b""), (3, b"gamma")]
LAST = (4, bytes(range(40)))


def test_the_last_record_torn_at_every_byte_offset_is_cut(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_batches(tmp_path, FIRST, [LAST])
    segment = tmp_path / SEG1
    whole = segment.read_bytes()
    start = record_offsets(segment)[-1]
    assert len(whole) - start == 9 + 40
    for cut in range(start, len(whole)):
        segment.write_bytes(whole[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="prontodb.storage"):
            assert reopen(tmp_path) == FIRST
        assert segment.stat().st_size == start
        if cut == start:
            assert not caplog.records  # a clean end: nothing to cut
        else:
            (warning,) = caplog.records
            message = warning.getMessage()
            assert str(segment) in message
            assert f"cut {cut - start} bytes" in message
            assert f"offset {start}" in message
    # After recovery the log takes appends again and keeps them.
    storage, _ = opened(tmp_path)
    storage.append([LAST])
    storage.close()
    assert reopen(tmp_path) == [*FIRST, LAST]


@pytest.mark.parametrize(
    "garbage",
    [bytes(4096), random.Random(3).randbytes(1000), b"\xff" * 100, b"\x01"],
    ids=["zeros", "random", "ones", "one-byte"],
)
def test_garbage_after_the_last_record_is_cut(
    tmp_path: Path, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    write_batches(tmp_path, FIRST)
    segment = tmp_path / SEG1
    size = segment.stat().st_size
    with segment.open("ab") as f:
        f.write(garbage)
    with caplog.at_level(logging.WARNING, logger="prontodb.storage"):
        assert reopen(tmp_path) == FIRST
    assert segment.stat().st_size == size
    assert f"cut {len(garbage)} bytes" in caplog.text


def test_damage_followed_by_a_valid_record_is_not_cut(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [LAST])
    segment = tmp_path / SEG1
    second = record_offsets(segment)[1]
    flip(segment, second + 4)  # the length field of the second record
    size = segment.stat().st_size
    storage = SegmentStorage.open(tmp_path)
    with pytest.raises(CorruptionError) as caught:
        list(storage.replay())
    storage.close()
    error = caught.value
    assert (error.path, error.offset) == (segment, second)
    assert str(segment) in str(error)
    assert f"offset {second}" in str(error)
    assert "backup" in str(error)
    assert f"truncate this file to {second} bytes" in str(error)
    assert segment.stat().st_size == size  # acknowledged data is never cut


def test_a_zeroed_hole_before_valid_records_is_not_cut(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [LAST], [LAST])
    segment = tmp_path / SEG1
    offsets = record_offsets(segment)
    data = bytearray(segment.read_bytes())
    data[offsets[1] : offsets[3]] = bytes(offsets[3] - offsets[1])
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as caught:
        reopen(tmp_path)
    assert caught.value.offset == offsets[1]


def test_a_huge_garbage_tail_is_refused_rather_than_searched_forever(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST)
    with (tmp_path / SEG1).open("ab") as f:
        f.write(random.Random(4).randbytes(3 * 1024 * 1024))
    with pytest.raises(CorruptionError, match="too many would-be records"):
        reopen(tmp_path)


def test_a_last_segment_with_a_header_cut_short_is_reinitialised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_batches(tmp_path, FIRST)
    unrecorded = (tmp_path / "MANIFEST").read_bytes()
    storage, _ = opened(tmp_path)
    storage.roll()  # segment 2 made and recorded in the manifest
    storage.close()
    segment = tmp_path / SEG2
    header = segment.read_bytes()
    assert len(header) == 32
    for size in [*range(32), 32]:
        # A crash while creating segment 2, before the manifest recorded it.
        (tmp_path / "MANIFEST").write_bytes(unrecorded)
        segment.write_bytes(header[:size] if size < 32 else bytes(32))
        with caplog.at_level(logging.WARNING, logger="prontodb.storage"):
            assert reopen(tmp_path) == FIRST
        rewritten = segment.read_bytes()
        # The same header but for a fresh salt (bytes 24..27), under its own crc.
        assert len(rewritten) == 32
        assert rewritten[:24] == header[:24]
        assert struct.unpack_from("<I", rewritten, 28)[0] == zlib.crc32(rewritten[:28])
        assert "reinitialised" in caplog.text


@pytest.mark.parametrize("size", [0, 10, 31, 32])
def test_a_recorded_segment_with_a_header_cut_short_is_an_error(tmp_path: Path, size: int) -> None:
    # The manifest records a segment only once its header is durable: a short header there is
    # damage (the segment may have held records), not a crash mid-roll.
    write_batches(tmp_path, FIRST)
    segment = tmp_path / SEG1
    segment.write_bytes(segment.read_bytes()[:size] if size < 32 else bytes(32))
    with pytest.raises(CorruptionError, match="header is cut short") as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == segment


# -- records framed inside values -----------------------------------------------------------------


def salt_of(path: Path) -> int:
    """The salt in a file's header (docs/FORMAT.md): it seeds every record crc in the file."""
    return int(struct.unpack_from("<I", path.read_bytes(), 24)[0])


def framed(kind: int, payload: bytes, salt: int) -> bytes:
    """One record in the documented framing, its crc seeded with ``salt``."""
    covered = struct.pack("<IB", len(payload), kind) + payload
    return struct.pack("<I", zlib.crc32(covered, salt)) + covered


def write_torn_value(path: Path, embedded: bytes) -> tuple[int, int]:
    """Append FIRST, then a value holding ``embedded``, and tear that value after ``embedded``
    (as a crash mid-write would). Return (where the torn record starts, where the file ends)."""
    write_batches(path, FIRST, [(1, b"value:" + embedded + b"." * 64)])
    segment = path / SEG1
    start = record_offsets(segment)[-1]
    torn_at = segment.stat().st_size - 32  # inside the trailing dots, after ``embedded``
    os.truncate(segment, torn_at)
    return start, torn_at


@pytest.mark.parametrize("source", ["another-database", "unseeded-crc", "neighbouring-salt"])
def test_records_framed_inside_a_torn_value_do_not_stop_the_tail_being_cut(
    tmp_path: Path, source: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "db"
    SegmentStorage.open(path).close()  # the segment exists, so its salt is known
    if source == "another-database":
        # A client stores a whole ProntoDB segment (another database's) as a value.
        write_batches(tmp_path / "other", FIRST, [LAST])
        embedded = (tmp_path / "other" / SEG1).read_bytes()
    elif source == "unseeded-crc":
        embedded = framed(*LAST, salt=0)  # plain zlib.crc32, as a client would frame it
    else:
        embedded = framed(*LAST, salt=salt_of(path / SEG1) ^ 1)
    start, torn_at = write_torn_value(path, embedded)
    with caplog.at_level(logging.WARNING, logger="prontodb.storage"):
        assert reopen(path) == FIRST
    assert (path / SEG1).stat().st_size == start
    assert f"cut {torn_at - start} bytes of torn tail at offset {start}" in caplog.text


def test_a_record_with_this_files_salt_inside_a_torn_value_is_taken_as_valid(
    tmp_path: Path,
) -> None:
    """The search does look inside payloads: what protects a client's value is the salt alone."""
    SegmentStorage.open(tmp_path).close()
    start, torn_at = write_torn_value(tmp_path, framed(*LAST, salt=salt_of(tmp_path / SEG1)))
    with pytest.raises(CorruptionError, match="yet a valid record starts") as caught:
        reopen(tmp_path)
    assert caught.value.offset == start
    assert (tmp_path / SEG1).stat().st_size == torn_at  # nothing cut


def test_every_file_gets_its_own_salt(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [LAST], roll_after=0)
    storage, _ = opened(tmp_path)
    storage.roll()
    storage.install_snapshot(2, [LAST])
    storage.close()
    names = ["snap-00000002.snap", SEG3]
    assert sorted(os.listdir(tmp_path)) == sorted(["MANIFEST", *names])
    salts = {salt_of(tmp_path / name) for name in names}
    write_batches(tmp_path / "again", FIRST)
    salts.add(salt_of(tmp_path / "again" / SEG1))
    assert len(salts) == 3  # two equal only with probability about 3 in 2**32


# -- max_record_size limits writing, not reading ------------------------------------------------

BIG = 600 * 1024  # over the lowered limit below, under the default one
LOWERED = StorageOptions(max_record_size=512 * 1024)


def test_records_over_a_lowered_max_record_size_are_still_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(6)
    big = [(n, rng.randbytes(BIG)) for n in (1, 2, 3)]
    storage, _ = opened(tmp_path)  # the default limit, 16 MiB
    storage.append([big[0]])
    storage.roll()
    storage.install_snapshot(1, [big[0]])  # in the snapshot
    storage.append([big[1]])
    storage.roll()  # in a sealed segment
    storage.append([big[2], (4, b"small")])  # and in the active one
    storage.close()
    sizes = {name: (tmp_path / name).stat().st_size for name in os.listdir(tmp_path)}

    with caplog.at_level(logging.WARNING, logger="prontodb.storage"):
        storage, replayed = opened(tmp_path, LOWERED)
    assert replayed == [*big, (4, b"small")]
    assert not caplog.records
    assert {name: (tmp_path / name).stat().st_size for name in os.listdir(tmp_path)} == sizes
    # The lowered limit still holds for writing.
    with pytest.raises(ValueError, match="max_record_size"):
        storage.append([(5, bytes(BIG))])
    storage.append([(5, bytes(512 * 1024))])
    storage.close()
    assert reopen(tmp_path) == [*big, (4, b"small"), (5, bytes(512 * 1024))]


def test_damage_before_a_record_over_a_lowered_limit_is_not_cut(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [(4, random.Random(7).randbytes(BIG))])
    segment = tmp_path / SEG1
    third = record_offsets(segment)[2]
    flip(segment, third + 9)  # the payload of a small record before the big one
    size = segment.stat().st_size
    storage = SegmentStorage.open(tmp_path, LOWERED)
    with pytest.raises(CorruptionError, match="yet a valid record starts") as caught:
        list(storage.replay())
    storage.close()
    assert caught.value.offset == third
    assert segment.stat().st_size == size  # the big record after the damage is not cut away


# -- sealed segments and the snapshot -----------------------------------------------------------


def test_damage_in_a_sealed_segment_is_an_error_even_at_its_end(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [LAST], roll_after=0)
    segment = tmp_path / SEG1
    last = record_offsets(segment)[-1]
    flip(segment, segment.stat().st_size - 1)  # a torn tail, were it the active segment
    storage = SegmentStorage.open(tmp_path)
    with pytest.raises(CorruptionError) as caught:
        list(storage.replay())
    storage.close()
    assert (caught.value.path, caught.value.offset) == (segment, last)
    assert str(segment) in str(caught.value)
    assert "backup" in str(caught.value)


def test_a_sealed_segment_cut_at_a_record_boundary_is_an_error(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [LAST], roll_after=0)
    segment = tmp_path / SEG1
    boundary = record_offsets(segment)[-1]
    segment.write_bytes(segment.read_bytes()[:boundary])
    with pytest.raises(CorruptionError, match="sealed at") as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == segment


def compacted(path: Path) -> Path:
    storage, _ = opened(path)
    storage.append([(1, b"old")])
    storage.roll()
    storage.install_snapshot(1, [(5, b"snap-a" * 5), (6, b"snap-b" * 5)])
    storage.append([(1, b"new")])
    storage.close()
    return path / "snap-00000001.snap"


def test_damage_in_the_snapshot_is_an_error(tmp_path: Path) -> None:
    snapshot = compacted(tmp_path)
    assert reopen(tmp_path) == [(5, b"snap-a" * 5), (6, b"snap-b" * 5), (1, b"new")]
    second = record_offsets(snapshot)[1]
    flip(snapshot, second + 20, 0x80)
    storage = SegmentStorage.open(tmp_path)
    with pytest.raises(CorruptionError) as caught:
        list(storage.replay())
    storage.close()
    assert (caught.value.path, caught.value.offset) == (snapshot, second)
    assert f"{snapshot} at byte offset {second}" in str(caught.value)


def test_a_snapshot_of_the_wrong_size_is_an_error(tmp_path: Path) -> None:
    snapshot = compacted(tmp_path)
    snapshot.write_bytes(snapshot.read_bytes()[: record_offsets(snapshot)[1]])
    with pytest.raises(CorruptionError, match="manifest recorded"):
        SegmentStorage.open(tmp_path)


# -- file headers -------------------------------------------------------------------------------


def test_a_foreign_file_is_refused(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, roll_after=0)
    (tmp_path / SEG1).write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(CorruptionError, match="not a ProntoDB file") as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == tmp_path / SEG1
    assert str(tmp_path / SEG1) in str(caught.value)


def test_a_file_of_another_format_version_is_refused(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST)
    segment = tmp_path / SEG1
    data = bytearray(segment.read_bytes())
    data[8:10] = struct.pack("<H", 2)
    data[28:32] = struct.pack("<I", zlib.crc32(data[:28]))
    segment.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="format version 2"):
        SegmentStorage.open(tmp_path)


def test_a_segment_under_another_number_is_refused(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [LAST], roll_after=0)
    (tmp_path / SEG3).write_bytes((tmp_path / SEG2).read_bytes())
    with pytest.raises(CorruptionError, match="says number 2, but the file name says 3"):
        SegmentStorage.open(tmp_path)


def test_a_gap_in_the_segments_is_an_error(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, [LAST], [LAST], roll_after=0)
    storage, _ = opened(tmp_path)
    storage.roll()
    storage.close()
    (tmp_path / SEG2).unlink()
    with pytest.raises(CorruptionError, match="segment missing") as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == tmp_path / SEG2
    assert caught.value.offset is None


# -- the manifest -------------------------------------------------------------------------------


def test_a_missing_manifest_is_an_error_when_segments_exist(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST)
    (tmp_path / "MANIFEST").unlink()
    with pytest.raises(CorruptionError, match="manifest is missing"):
        SegmentStorage.open(tmp_path)


@pytest.mark.parametrize(
    "damage",
    [
        "flip",
        "truncate",
        "empty",
        "valid-crc-bad-json",
        "valid-crc-bad-fields",
        "newer-format",
        "format-2-without-last",
        "last-before-first",
    ],
)
def test_a_damaged_manifest_is_an_error(tmp_path: Path, damage: str) -> None:
    write_batches(tmp_path, FIRST)
    manifest = tmp_path / "MANIFEST"
    data = manifest.read_bytes()

    def signed(body: bytes) -> bytes:
        return body + b"\ncrc32:%08x\n" % zlib.crc32(body)

    manifest.write_bytes(
        {
            "flip": data.replace(b"null", b"nulm"),
            "truncate": data[:-3],
            "empty": b"",
            "valid-crc-bad-json": signed(b"{not json"),
            "valid-crc-bad-fields": signed(
                b'{"format":1,"snapshot":null,"snapshot_bytes":0,"first_segment":2}'
            ),
            "newer-format": signed(
                b'{"format":3,"snapshot":null,"snapshot_bytes":0,"first_segment":1,'
                b'"last_segment":1}'
            ),
            "format-2-without-last": signed(
                b'{"format":2,"snapshot":null,"snapshot_bytes":0,"first_segment":1}'
            ),
            "last-before-first": signed(
                b'{"format":2,"snapshot":null,"snapshot_bytes":0,"first_segment":1,'
                b'"last_segment":0}'
            ),
        }[damage]
    )
    with pytest.raises(CorruptionError) as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == manifest


def test_a_manifest_naming_a_missing_snapshot_is_an_error(tmp_path: Path) -> None:
    snapshot = compacted(tmp_path)
    snapshot.unlink()
    with pytest.raises(CorruptionError, match="snapshot, but it is missing") as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == snapshot


# -- orphans ------------------------------------------------------------------------------------


def test_orphans_of_an_interrupted_compaction_are_deleted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    compacted(tmp_path)  # live: snap-00000001.snap, seg-00000002.log
    header = (tmp_path / SEG2).read_bytes()[:32]
    orphans = [SEG1, "snap-00000002.snap", "snap-00000002.snap.tmp", "MANIFEST.tmp"]
    for name in orphans:
        (tmp_path / name).write_bytes(header)
    (tmp_path / "notes.txt").write_bytes(b"not ours: left alone")
    (tmp_path / "snap-00000000.snap").write_bytes(b"not a name we write (numbers start at 1)")
    with caplog.at_level(logging.WARNING, logger="prontodb.storage"):
        assert reopen(tmp_path) == [(5, b"snap-a" * 5), (6, b"snap-b" * 5), (1, b"new")]
    assert sorted(os.listdir(tmp_path)) == [
        "MANIFEST",
        "notes.txt",
        "seg-00000002.log",
        "snap-00000000.snap",
        "snap-00000001.snap",
    ]
    for name in orphans:
        assert name in caplog.text


def test_a_database_whose_creation_was_interrupted_opens(tmp_path: Path) -> None:
    # Creation writes segment 1 (its header), then the manifest: a crash in between leaves
    # segment 1 alone, holding no record, with or without the manifest's temporary file.
    write_batches(tmp_path)
    (tmp_path / "MANIFEST").unlink()
    assert reopen(tmp_path) == []
    (tmp_path / "MANIFEST").rename(tmp_path / "MANIFEST.tmp")
    assert reopen(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["MANIFEST", SEG1]
    (tmp_path / "MANIFEST").unlink()
    with (tmp_path / SEG1).open("r+b") as segment:
        segment.truncate(20)  # the header itself cut short
    assert reopen(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["MANIFEST", SEG1]


def test_a_missing_segment_1_is_an_error_not_a_new_database(tmp_path: Path) -> None:
    # Most databases never leave segment 1: it is all their data, and once the manifest exists
    # it was made before it. Serving an empty database instead would lose everything silently.
    write_batches(tmp_path, FIRST)
    (tmp_path / SEG1).unlink()
    with pytest.raises(CorruptionError, match="segment missing") as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == tmp_path / SEG1
    assert os.listdir(tmp_path) == ["MANIFEST"]  # nothing made in its place


def test_a_segment_1_with_records_but_no_manifest_is_an_error(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST)
    (tmp_path / "MANIFEST").unlink()
    with pytest.raises(CorruptionError, match="manifest is missing"):
        SegmentStorage.open(tmp_path)


def test_a_missing_last_segment_is_an_error(tmp_path: Path) -> None:
    # Rolling records the new segment in the manifest once it exists: without that, losing the
    # newest segment would make the sealed one before it look like the end of the log.
    write_batches(tmp_path, FIRST, [LAST], roll_after=0)
    (tmp_path / SEG2).unlink()
    with pytest.raises(CorruptionError, match="segment missing") as caught:
        SegmentStorage.open(tmp_path)
    assert caught.value.path == tmp_path / SEG2


def test_a_roll_cut_short_before_the_manifest_keeps_the_new_segment(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST, roll_after=0)
    manifest = (tmp_path / "MANIFEST").read_bytes()
    write_batches(tmp_path, [LAST], roll_after=0)  # segment 3 made and recorded
    (tmp_path / "MANIFEST").write_bytes(manifest)  # as if the crash came before the recording
    assert reopen(tmp_path) == [*FIRST, LAST]
    assert b'"last_segment":3' in (tmp_path / "MANIFEST").read_bytes()  # brought up to date


def test_a_creation_cut_short_under_format_1_still_opens(tmp_path: Path) -> None:
    # Format 1 builds wrote the manifest first, then segment 1: a crash between left a format 1
    # manifest without segment 1 (or with its header cut short), which they opened as new.
    body = b'{"format":1,"snapshot":null,"snapshot_bytes":0,"first_segment":1}'
    (tmp_path / "MANIFEST").write_bytes(body + b"\ncrc32:%08x\n" % zlib.crc32(body))
    assert reopen(tmp_path) == []
    assert (tmp_path / "MANIFEST").read_bytes().startswith(b'{"format":2,')  # upgraded
    (tmp_path / "MANIFEST").write_bytes(body + b"\ncrc32:%08x\n" % zlib.crc32(body))
    (tmp_path / SEG1).write_bytes(b"PRONTODB")
    assert reopen(tmp_path) == []


def test_a_format_1_manifest_is_read_and_upgraded_at_the_next_roll(tmp_path: Path) -> None:
    write_batches(tmp_path, FIRST)
    body = b'{"format":1,"snapshot":null,"snapshot_bytes":0,"first_segment":1}'
    (tmp_path / "MANIFEST").write_bytes(body + b"\ncrc32:%08x\n" % zlib.crc32(body))
    write_batches(tmp_path, [LAST], roll_after=0)
    assert reopen(tmp_path) == [*FIRST, LAST]
    assert (tmp_path / "MANIFEST").read_bytes().startswith(b'{"format":2,')


# -- random damage ------------------------------------------------------------------------------

_template: tuple[dict[str, bytes], list[Record]] | None = None


def template() -> tuple[dict[str, bytes], list[Record]]:
    """A small database with a snapshot, two sealed segments and an active one, as bytes."""
    global _template
    if _template is None:
        rng = random.Random(5)
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch)
            storage, _ = opened(path, StorageOptions(segment_size=200))
            storage.append([(1, b"compacted away")])
            storage.roll()
            snap = [(9, rng.randbytes(30)), (9, rng.randbytes(5))]
            storage.install_snapshot(1, snap)
            written = list(snap)
            for _ in range(12):
                batch = [(rng.randint(1, 255), rng.randbytes(rng.randint(0, 40))) for _ in range(2)]
                storage.append(batch)
                written += batch
            assert storage.stats().segments >= 3
            storage.close()
            files = {name: (path / name).read_bytes() for name in os.listdir(path)}
        _template = (files, written)
    return _template


@given(data=st.data())
def test_random_bit_flips_never_yield_a_wrong_record(tmp_path: Path, data: st.DataObject) -> None:
    files, written = template()
    damaged = dict(files)
    for _ in range(data.draw(st.integers(1, 3), label="flips")):
        name = data.draw(st.sampled_from(sorted(files)), label="file")
        content = bytearray(damaged[name])
        bit = data.draw(st.integers(0, len(content) * 8 - 1), label="bit")
        content[bit // 8] ^= 1 << (bit % 8)
        damaged[name] = bytes(content)
    path = Path(tempfile.mkdtemp(dir=tmp_path))
    for name, damaged_content in damaged.items():
        (path / name).write_bytes(damaged_content)
    try:
        replayed = reopen(path)
    except CorruptionError:
        return
    assert replayed == written[: len(replayed)]
