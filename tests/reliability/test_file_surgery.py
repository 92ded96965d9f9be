"""File surgery on a stopped database's directory: ProntoDB never serves a wrong value, never
silently drops an intact record, and every refusal is a clear message naming the damaged file.

Two databases are built through the embedded :class:`Database`, keeping the state after every
acknowledged write (one record each, so the state after the first n records of the log is the
model at revision n): one compacted, with a snapshot, sealed segments and an active segment, and
one that never rolled. Each case copies one of them into a fresh directory, cuts, flips, deletes,
copies or adds a file, reopens it, and judges what comes back:

- opened: the state must be the model after exactly the whole records the surgery left (a torn
  tail is cut, nothing before it dropped), and a torn tail must be cut from the file;
- refused: a CorruptionError whose message names the damaged or missing file (and the byte
  offset, where the damage has one) and says what to do.

A real broker is started on a data directory with a damaged catalog.json: it must refuse to
start, exit non-zero, and name the file in its log. Offsets and flipped bits come from a seeded
``random.Random`` (SEED), so every failure message says how to find the case again.

Figures, one row per test: cases; refused; recovered (opened with the records before the damage,
a torn tail cut); ignored (opened with every record: the surgery could not change the state);
and the failures, which must be 0: wrongly refused, wrongly allowed (a refusal was due), wrong
values (a state that no prefix of the writes had), lost (intact records dropped), unclear (a
refusal that is not a CorruptionError naming the file, its offset and what to do), tail not cut,
foreign file touched, leaked fds.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from brokers import START_TIMEOUT, STOP_TIMEOUT, running_broker, serve_command
from reliability_kit import Figures, Scale

from prontodb.broker.database import Database
from prontodb.broker.engine import Applied, Engine, OpKind, TxnOp
from prontodb.broker.storage import CorruptionError, FsyncPolicy, StorageOptions

from storage_files import file_records

SCENARIO = "file surgery on a stopped broker's directory"
SEED = 20261207
HEADER = 32  # every segment and snapshot starts with a 32-byte header (docs/FORMAT.md)
MANIFEST = "MANIFEST"
ALL = 1 << 30  # a sample size meaning "every one"
# A clear refusal says what to do: restore from a backup, or (a torn tail) truncate the file.
ADVICE = ("backup", "truncate")

State = tuple[int, list[tuple[Any, ...]]]
Span = tuple[int, int]  # a record's start and end offsets in its file


def segment_name(number: int) -> str:
    return f"seg-{number:08d}.log"


def segment_number(name: str) -> int:
    return int(name.removeprefix("seg-").removesuffix(".log"))


def snapshot_name(number: int) -> str:
    return f"snap-{number:08d}.snap"


def dump(engine: Engine) -> State:
    """What a reader can observe: the revision and every key's entry."""
    return engine.revision, [
        (k, e.value, e.create_rev, e.mod_rev, e.version, e.writer, e.time) for k, e in engine.scan()
    ]


def record_spans(data: bytes) -> list[Span]:
    """Where each record of a segment or snapshot file lies, read by the documented framing."""
    spans, pos = [], HEADER
    while pos < len(data):
        end = pos + 9 + struct.unpack_from("<I", data, pos + 4)[0]
        spans.append((pos, end))
        pos = end
    return spans


def file_header(kind: int, number: int, previous_size: int, salt: int) -> bytes:
    """A segment (kind 1) or snapshot (kind 2) header, built from docs/FORMAT.md."""
    body = struct.pack("<8sHBBIQI", b"PRONTODB", 1, kind, 0, number, previous_size, salt)
    return body + struct.pack("<I", zlib.crc32(body))


def salt_of(data: bytes) -> int:
    return int(struct.unpack_from("<I", data, 24)[0])


def signed(body: bytes) -> bytes:
    """A MANIFEST with ``body`` and its valid crc line: damage that the checksum cannot see."""
    return body + b"\ncrc32:%08x\n" % zlib.crc32(body)


def sample(rng: random.Random, population: Sequence[int], k: int) -> list[int]:
    """``k`` of ``population`` in order (all of them if there are no more)."""
    return list(population) if k >= len(population) else sorted(rng.sample(population, k))


# -- the databases operated on --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Template:
    """A stopped database as bytes, with the model of its state after every record."""

    name: str
    files: dict[str, bytes]
    states: list[State]
    """``states[n]``: the state after the first n records of the log (so at revision n)."""
    base: dict[str, int]
    """Segment name -> how many records of the log come before its first one."""
    spans: dict[str, list[Span]]
    """Segment or snapshot name -> where each of its records lies."""

    @property
    def full(self) -> int:
        return len(self.states) - 1

    @property
    def segments(self) -> list[str]:
        return sorted(name for name in self.files if name.startswith("seg-"))

    @property
    def active(self) -> str:
        return self.segments[-1]

    @property
    def snapshot(self) -> str | None:
        return next((name for name in self.files if name.startswith("snap-")), None)

    @property
    def sealed(self) -> list[str]:
        """The files written whole and never appended to again: snapshot and sealed segments."""
        return ([self.snapshot] if self.snapshot else []) + self.segments[:-1]

    def lay_out(self, directory: Path, changes: Mapping[str, bytes | None]) -> None:
        """Write the files into ``directory``, with ``changes``: new bytes, or None to leave out."""
        directory.mkdir()
        for name, data in {**self.files, **changes}.items():
            if data is not None:
                (directory / name).write_bytes(data)


def write_one(db: Database, rng: random.Random, now: float) -> None:
    """One acknowledged write of a random kind; each makes exactly one record."""
    engine = db.engine
    roll = rng.random()
    keys = [f"jobs.k{i}" for i in range(12)]
    present = engine.keys("jobs")
    applied: Applied[Any]
    if roll < 0.12 and present:
        applied = engine.delete(rng.choice(present), writer="surgeon", now=now)
    elif roll < 0.25:
        applied = engine.incr("counter", rng.randint(1, 9), writer="surgeon", now=now)
    elif roll < 0.35:
        ops = [TxnOp(OpKind.SET, rng.choice(keys), "t" * rng.randint(0, 40))]
        applied = engine.txn([], [*ops, TxnOp(OpKind.INCR, "counter")], writer="surgeon", now=now)
    else:
        value = {"n": now, "pad": "x" * rng.randint(0, 60)}
        applied = engine.set(rng.choice(keys), value, writer="surgeon", now=now)
    assert len(applied.records) == 1  # the model counts records
    db.writer.wait(db.submit(applied))  # acknowledged: durable


def build(directory: Path, rng: random.Random, *, compact: bool, segment_size: int) -> Template:
    """A database with known contents: compacted (a snapshot, three or more sealed segments and an
    active one two-thirds full), or a few writes that never rolled."""
    # Small segments, so that the log rolls; compaction only when asked. The files are read back
    # whole, so fsyncs while building would only cost time (close syncs).
    options = StorageOptions(
        fsync=FsyncPolicy.NEVER, segment_size=segment_size, compact_min_bytes=1 << 40
    )
    db = Database.open(directory, options=options)
    states = [dump(db.engine)]

    def write() -> None:
        write_one(db, rng, float(len(states)))
        states.append(dump(db.engine))

    def active_size() -> int:
        return (directory / segment_name(db.storage.stats().active_segment)).stat().st_size

    try:
        if compact:
            while db.storage.stats().segments < 4:
                write()
            db.compact()
            while db.storage.stats().segments < 4 or active_size() < segment_size * 2 // 3:
                write()
        else:
            for _ in range(14):
                write()
    finally:
        db.close()
    files = {name: (directory / name).read_bytes() for name in os.listdir(directory)}
    spans = {name: record_spans(data) for name, data in files.items() if name != MANIFEST}
    base, before = {}, len(states) - 1
    for name in sorted((n for n in files if n.startswith("seg-")), reverse=True):
        assert len(file_records(directory / name)) == len(spans[name])
        before -= len(spans[name])
        base[name] = before
    template = Template(directory.name, files, states, base, spans)
    assert len(template.segments) >= 4 if compact else len(template.segments) == 1
    assert (template.snapshot is not None) == compact
    # The snapshot holds every record before the first live segment, and reopening gives the model.
    assert reopen(directory) == states[-1]
    return template


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory, scale: Scale) -> list[Template]:
    root = tmp_path_factory.mktemp("templates")
    rng = random.Random(SEED)
    size = scale.pick(1536, 8192)  # under torture a larger database: more offsets to try
    return [
        build(root / "compacted", rng, compact=True, segment_size=size),
        build(root / "never-rolled", rng, compact=False, segment_size=size),
    ]


@pytest.fixture
def compacted(templates: list[Template]) -> Template:
    """The database with a snapshot and sealed segments."""
    return templates[0]


# -- judging a case -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    """What a case must come to: opened with the model after ``count`` records, or (``count``
    None) refused naming one of ``names`` and, where the damage has one, an offset in ``offset``."""

    count: int | None = None
    names: tuple[str, ...] = ()
    offset: int | range | None = None
    active_size: int | None = None
    """Once opened, the active segment's size: a torn tail cut exactly there."""
    untouched: tuple[str, ...] = ()
    """Files that must still hold the bytes the case gave them (foreign names are left alone)."""


def difference(state: State, model: list[State]) -> str:
    """Where ``state`` departs from the model at its revision, for a failure message."""
    revision = state[0]
    if not 0 <= revision < len(model):
        return f"revision {revision}, but {len(model) - 1} records were written"
    got = {entry[0]: entry for entry in state[1]}
    wanted = {entry[0]: entry for entry in model[revision][1]}
    key = min(k for k in got.keys() | wanted.keys() if got.get(k) != wanted.get(k))
    return f"at revision {revision}, {key!r} is {got.get(key)}, not {wanted.get(key)}"


def reopen(directory: Path) -> State:
    db = Database.open(directory, threaded_writer=False)
    try:
        return dump(db.engine)
    finally:
        db.close()


def unclear(error: Exception, paths: Sequence[Path], offset: int | range | None) -> str | None:
    """Why a refusal is not clear, or None if it is."""
    message = str(error)
    if not isinstance(error, CorruptionError):
        return f"a {type(error).__name__}, not a CorruptionError"
    if not any(str(path) in message for path in paths):
        return "it names none of " + ", ".join(path.name for path in paths)
    if offset is not None:
        wanted = range(offset, offset + 1) if isinstance(offset, int) else offset
        if error.offset not in wanted or f"byte offset {error.offset}" not in message:
            return f"it does not name the offset ({offset})"
    if not any(word in message for word in ADVICE):
        return "it does not say what to do"
    return None


def open_fds() -> set[str]:
    """This process's open file descriptors, with what each one is open on."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
        except FileNotFoundError:  # the listing's own descriptor, closed by now
            pass
    return fds


class Tally:
    """The figures of one test (one row of the scenario's table), and what went wrong."""

    FAILURES = ("wrongly refused", "wrongly allowed", "wrong values", "lost", "unclear")

    def __init__(self, figures: Figures, *extra: str) -> None:
        self.figures = figures
        figures.scenario = SCENARIO
        for name in ("cases", "refused", "recovered", "ignored", *extra, *self.FAILURES):
            figures[name] = 0
        self.failures = [*extra, *self.FAILURES, "leaked fds"]
        self.problems: list[str] = []
        self._fds = open_fds()  # a refused open must close what it opened

    def problem(self, kind: str, label: str, what: str) -> None:
        self.figures.add(kind)
        self.problems.append(f"{kind}: {label} (seed {SEED}): {what}")

    def case(
        self,
        template: Template,
        tmp_path: Path,
        label: str,
        changes: Mapping[str, bytes | None],
        expect: Expect,
    ) -> None:
        """Lay out ``template`` with ``changes`` in a fresh directory, reopen it, judge it."""
        directory = tmp_path / "case"
        template.lay_out(directory, changes)
        try:
            self.judge(template, directory, f"{template.name}: {label}", expect, changes)
        finally:
            shutil.rmtree(directory)

    def judge(
        self,
        template: Template,
        directory: Path,
        label: str,
        expect: Expect,
        changes: Mapping[str, bytes | None],
    ) -> None:
        self.figures.add("cases")
        try:
            state = reopen(directory)
        except Exception as error:
            self.figures.add("refused")
            if expect.count is not None:
                self.problem("wrongly refused", label, f"{type(error).__name__}: {error}")
                return
            why = unclear(error, [directory / name for name in expect.names], expect.offset)
            if why is not None:
                self.problem("unclear", label, f"{why}: {type(error).__name__}: {error}")
            return
        served = state[0]
        model = 0 <= served <= template.full and template.states[served] == state
        wanted = "a refusal" if expect.count is None else f"the state after {expect.count}"
        what = f"opened with the state after {served} records, wanted {wanted}"
        if not model or (expect.count is not None and served > expect.count):
            self.problem("wrong values", label, difference(state, template.states))
        elif expect.count is None:
            self.problem("wrongly allowed" if served == template.full else "lost", label, what)
        elif served < expect.count:
            self.problem("lost", label, what)
        else:
            self.figures.add("recovered" if served < template.full else "ignored")
            self._check_files(directory / template.active, label, expect, changes)

    def _check_files(
        self, active: Path, label: str, expect: Expect, changes: Mapping[str, bytes | None]
    ) -> None:
        if expect.active_size is not None and active.stat().st_size != expect.active_size:
            size = active.stat().st_size
            self.problem("tail not cut", label, f"{size} bytes, not {expect.active_size}")
        for name in expect.untouched:
            path = active.parent / name
            if not path.exists() or path.read_bytes() != changes[name]:
                self.problem("foreign file touched", label, f"{name} was changed or deleted")

    def check(self) -> None:
        """Every must-be-zero figure is zero; else the first problems, with how to find them."""
        leaked = open_fds() - self._fds
        self.figures["leaked fds"] = len(leaked)
        if leaked:
            self.problems.append(f"leaked fds: {sorted(leaked)}")
        counts = {name: self.figures[name] for name in self.failures}
        assert not self.problems, f"{counts}\n" + "\n".join(self.problems[:12])


# -- truncation ------------------------------------------------------------------------------------

# Offsets inside records, per sealed file (the active segments are cut at every offset).
SEALED_CUTS = (20, 3000)


def boundaries(template: Template, name: str) -> set[int]:
    """Offsets where a cut leaves whole records only: 0, the header's end, each record's end."""
    data = template.files[name]
    return {0, HEADER, *(end for _, end in template.spans[name])} - {len(data)}


def test_truncating_the_active_segment_keeps_every_whole_record(
    tmp_path: Path, figures: Figures, templates: list[Template]
) -> None:
    tally = Tally(figures, "tail not cut")
    for template in templates:
        name = template.active
        data, spans = template.files[name], template.spans[name]
        for cut in range(HEADER, len(data)):
            whole = [end for _, end in spans if end <= cut]
            expect = Expect(
                count=template.base[name] + len(whole), active_size=max([HEADER, *whole])
            )
            tally.case(template, tmp_path, f"{name} cut to {cut} bytes", {name: data[:cut]}, expect)
    tally.check()


def test_a_recorded_segment_cut_inside_its_header_is_refused(
    tmp_path: Path, figures: Figures, templates: list[Template]
) -> None:
    """A roll makes the segment, header fsynced, before the MANIFEST records it (as does
    creation for segment 1), so no crash leaves a recorded segment with a short header: like a
    missing segment, it is damage that may have held acknowledged records."""
    tally = Tally(figures)
    for template in templates:
        name = template.active
        data = template.files[name]
        for label, damaged in [
            *((f"{name} cut to {cut} bytes", data[:cut]) for cut in range(HEADER)),
            (f"{name} cut to a zeroed header", bytes(HEADER)),
        ]:
            tally.case(template, tmp_path, label, {name: damaged}, Expect(names=(name,)))
    tally.check()


def test_truncating_a_sealed_segment_or_the_snapshot_is_refused(
    tmp_path: Path, figures: Figures, scale: Scale, compacted: Template
) -> None:
    tally = Tally(figures)
    rng = random.Random(SEED)
    for name in compacted.sealed:
        data = compacted.files[name]
        edges = boundaries(compacted, name)
        inside = [cut for cut in range(len(data)) if cut not in edges]
        for cut in sorted(edges) + sample(rng, inside, scale.pick(*SEALED_CUTS)):
            expect = Expect(names=(name,), offset=cut)
            tally.case(
                compacted, tmp_path, f"{name} cut to {cut} bytes", {name: data[:cut]}, expect
            )
    tally.check()


# -- bit flips -------------------------------------------------------------------------------------

FLIPS = (120, 3000)  # bits flipped per file


def flipped(data: bytes, bit: int) -> bytes:
    damaged = bytearray(data)
    damaged[bit // 8] ^= 1 << (bit % 8)
    return bytes(damaged)


def flip_expectation(template: Template, name: str, offset: int) -> Expect:
    """A flip in a header, a sealed file, or a record with records after it is refused, naming
    where the damaged record (or header) starts; in the active segment's last record it is a
    torn tail, cut at that record."""
    if offset < HEADER:
        return Expect(names=(name,), offset=range(HEADER + 1))
    spans = template.spans[name]
    index = next(i for i, (start, end) in enumerate(spans) if start <= offset < end)
    start = spans[index][0]
    if name == template.active and index == len(spans) - 1:
        return Expect(count=template.base[name] + index, active_size=start)
    return Expect(names=(name,), offset=start)


def test_bit_flips_are_refused_or_cut_as_a_torn_tail(
    tmp_path: Path, figures: Figures, scale: Scale, templates: list[Template]
) -> None:
    tally = Tally(figures, "tail not cut")
    rng = random.Random(SEED)
    for template in templates:
        for name in [*template.sealed, template.active]:
            data = template.files[name]
            bits = sample(rng, range(len(data) * 8), scale.pick(*FLIPS))
            if name == template.active:
                # Every field of the last record (crc, length, kind, payload), whatever the sample.
                start, end = template.spans[name][-1]
                bits += [8 * at for at in (start, start + 4, start + 8, end - 1)]
            for bit in bits:
                expect = flip_expectation(template, name, bit // 8)
                label = f"{name} bit {bit % 8} of byte {bit // 8} flipped"
                tally.case(template, tmp_path, label, {name: flipped(data, bit)}, expect)
    tally.check()


# -- missing, duplicated and extra files -----------------------------------------------------------


def test_a_missing_file_is_refused_naming_it(
    tmp_path: Path, figures: Figures, templates: list[Template]
) -> None:
    """The MANIFEST, the snapshot, every segment (the last one and the only one included)."""
    tally = Tally(figures)
    for template in templates:
        for name in sorted(template.files):
            expect = Expect(names=(name,))
            tally.case(template, tmp_path, f"{name} missing", {name: None}, expect)
    tally.check()


Case = tuple[str, Mapping[str, bytes | None], Expect]


def copies_and_strays(template: Template) -> Iterator[Case]:
    """Files duplicated or added: refused when they could change the state, else ignored."""
    full, active = template.full, template.active
    last = segment_number(active)
    next_segment = segment_name(last + 1)
    # A segment under the next number could only be replayed twice: its header says otherwise.
    for name in template.segments:
        copy = segment_name(segment_number(name) + 1)
        yield f"{name} copied to {copy}", {copy: template.files[name]}, Expect(names=(copy,))
    if len(template.segments) > 2:
        one, two = template.segments[:2]
        swapped = {one: template.files[two], two: template.files[one]}
        yield f"{one} and {two} swapped", swapped, Expect(names=(one, two))
    # Copies outside the live set are what an interrupted compaction leaves: orphans.
    first = segment_number(template.segments[0])
    leftovers = [MANIFEST + ".tmp"]
    if template.snapshot is not None:
        through = first - 1
        leftovers += [snapshot_name(n) for n in {through - 1, through + 1, last} if n > 0]
        leftovers += [template.snapshot + ".tmp", segment_name(through), segment_name(1)]
    for name in leftovers:
        source = template.snapshot if name.startswith("snap-") else template.segments[0]
        source = MANIFEST if name.startswith(MANIFEST) else source
        assert source is not None
        yield f"{source} copied to {name}", {name: template.files[source]}, Expect(count=full)

    # A stray segment beyond the last.
    data = template.files[active]
    salt = salt_of(data)
    rolled = file_header(1, last + 1, len(data), salt ^ 0x5A5A5A5A)
    ignored = Expect(count=full, active_size=len(data))  # the old active segment: sealed as is
    yield "an empty next segment", {next_segment: b""}, ignored
    yield "a next segment of 32 zero bytes", {next_segment: bytes(HEADER)}, ignored
    yield "a next segment as a roll leaves it", {next_segment: rolled}, ignored
    zeros = rolled + bytes(4096)
    yield "a next segment with a zero-filled tail", {next_segment: zeros}, ignored
    # The active segment's records under a fresh salt are garbage there: a torn tail, cut.
    other_salt = rolled + data[HEADER:]
    yield "a next segment holding the records of another salt", {next_segment: other_salt}, ignored
    replayed = file_header(1, last + 1, len(data), salt) + data[HEADER:]
    refused = Expect(names=(next_segment,), offset=HEADER)
    yield "a next segment repeating the active segment's records", {next_segment: replayed}, refused
    wrong_size = file_header(1, last + 1, len(data) - 1, salt)
    refused = Expect(names=(active, next_segment))
    yield "a next segment recording another size", {next_segment: wrong_size}, refused
    foreign = b"SQLite format 3\x00" + bytes(100)
    refused = Expect(names=(next_segment,), offset=0)
    yield "a foreign file as the next segment", {next_segment: foreign}, refused
    gap = segment_name(last + 2)
    after_gap = {gap: file_header(1, last + 2, 0, salt)}
    yield "a segment after a gap", after_gap, Expect(names=(next_segment, gap))

    # Names that are not ours, whatever they hold.
    for name in (
        "notes.txt",
        "seg-1.log",
        f"seg-0{active[4:]}",  # nine digits: an alias of the active segment's number
        f"{next_segment}.bak",
        f"{next_segment}~",
        f".{next_segment}",
        next_segment.upper(),
        "seg-00000000.log",
        "snap-00000000.snap",
        "MANIFEST.bak",
    ):
        source = MANIFEST if name.startswith(MANIFEST) else active
        yield (
            f"{source} copied to {name}",
            {name: template.files[source]},
            Expect(count=full, untouched=(name,)),
        )


def test_duplicated_and_extra_files_are_refused_or_ignored(
    tmp_path: Path, figures: Figures, templates: list[Template]
) -> None:
    tally = Tally(figures, "tail not cut", "foreign file touched")
    for template in templates:
        for label, changes, expect in copies_and_strays(template):
            tally.case(template, tmp_path, label, changes, expect)
    tally.check()


# -- duplicated records ----------------------------------------------------------------------------

DUPLICATES = (4, ALL)  # records repeated per sealed file


def test_a_duplicated_record_in_the_active_segment_is_refused_at_its_offset(
    tmp_path: Path, figures: Figures, templates: list[Template]
) -> None:
    """A record repeated right after itself, or at the end: its checksum holds, its revision
    does not follow."""
    tally = Tally(figures)
    for template in templates:
        name = template.active
        data = template.files[name]
        for start, end in template.spans[name]:
            record = data[start:end]
            again = data[:end] + record + data[end:]
            expect = Expect(names=(name,), offset=end)
            tally.case(
                template, tmp_path, f"{name} record at {start} repeated", {name: again}, expect
            )
            if end < len(data):
                expect = Expect(names=(name,), offset=len(data))
                label = f"{name} record at {start} repeated at the end"
                tally.case(template, tmp_path, label, {name: data + record}, expect)
    tally.check()


def test_a_duplicated_record_in_a_sealed_file_is_refused(
    tmp_path: Path, figures: Figures, scale: Scale, compacted: Template
) -> None:
    """Sealed files were fsynced whole: a record more is refused, naming the file."""
    tally = Tally(figures)
    rng = random.Random(SEED)
    for name in compacted.sealed:
        data, spans = compacted.files[name], compacted.spans[name]
        for index in sample(rng, range(len(spans)), scale.pick(*DUPLICATES)):
            start, end = spans[index]
            again = data[:end] + data[start:end] + data[end:]
            expect = Expect(names=(name,), offset=range(len(again) + 1))
            label = f"{name} record at {start} repeated"
            tally.case(compacted, tmp_path, label, {name: again}, expect)
    tally.check()


# -- the MANIFEST ----------------------------------------------------------------------------------

MANIFEST_FLIPS = (60, ALL)


def wrong_fields(template: Template) -> Iterator[tuple[str, bytes, tuple[str, ...]]]:
    """MANIFESTs with a valid checksum and wrong fields: (what, bytes, files a refusal may name
    besides the MANIFEST, when the manifest contradicts them rather than itself)."""
    body = template.files[MANIFEST].split(b"\n")[0]
    fields: dict[str, Any] = json.loads(body)
    first, through = fields["first_segment"], fields["first_segment"] - 1

    def changed(**values: Any) -> bytes:
        return signed(json.dumps({**fields, **values}, separators=(",", ":")).encode())

    without_first = {k: v for k, v in fields.items() if k != "first_segment"}
    yield "no first_segment", signed(json.dumps(without_first).encode()), ()
    yield "an unknown field", changed(compacted=True), ()
    yield "format 99", changed(format=99), ()
    yield "format 0", changed(format=0), ()
    yield "format as a string", changed(format=str(fields["format"])), ()
    yield "negative snapshot_bytes", changed(snapshot_bytes=-1), ()
    yield "first_segment as a float", changed(first_segment=float(first)), ()
    yield "first_segment off by one", changed(first_segment=first + 1), ()
    yield "a body that is a list", signed(json.dumps(list(fields.values())).encode()), ()
    yield "a body that is null", signed(b"null"), ()
    yield "a body that is not JSON", signed(body[:-1]), ()
    yield "an extra line", body + b"\n" + template.files[MANIFEST], ()
    yield "bytes after the crc line", template.files[MANIFEST] + b"x", ()
    if "last_segment" in fields:
        yield "last_segment before first_segment", changed(last_segment=first - 1), ()
        beyond = fields["last_segment"] + 1
        yield "last_segment beyond the log", changed(last_segment=beyond), (segment_name(beyond),)
    if template.snapshot is None:
        named = snapshot_name(1)
        yield "a snapshot that is not there", changed(snapshot=named, snapshot_bytes=99), (named,)
        return
    size = fields["snapshot_bytes"]
    yield "snapshot_bytes off by one", changed(snapshot_bytes=size + 1), (template.snapshot,)
    yield "a malformed snapshot name", changed(snapshot=f"snap-{through}.snap"), ()
    forgotten = changed(snapshot=None, snapshot_bytes=0, first_segment=1)
    yield "the snapshot forgotten", forgotten, (segment_name(1),)
    older = snapshot_name(through - 1)
    yield "an older snapshot named", changed(snapshot=older, first_segment=through), (older,)


def test_a_damaged_manifest_is_refused(
    tmp_path: Path, figures: Figures, scale: Scale, templates: list[Template]
) -> None:
    tally = Tally(figures)
    rng = random.Random(SEED)
    for template in templates:
        data = template.files[MANIFEST]
        cases: list[tuple[str, bytes, tuple[str, ...]]] = [
            (f"cut to {cut} bytes", data[:cut], ()) for cut in range(len(data))
        ]
        bits = sample(rng, range(len(data) * 8), scale.pick(*MANIFEST_FLIPS))
        cases += [(f"bit {b % 8} of byte {b // 8} flipped", flipped(data, b), ()) for b in bits]
        cases += wrong_fields(template)
        for what, damaged, others in cases:
            expect = Expect(names=(MANIFEST, *others))
            tally.case(template, tmp_path, f"MANIFEST: {what}", {MANIFEST: damaged}, expect)
    tally.check()


# -- a broker's catalog.json -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Start:
    """How a broker that should refuse to start went: its exit status, None if it did not exit
    (``started``: it served instead; else it hung), and its log."""

    status: int | None
    started: bool
    log: str


def refused_start(data_dir: Path) -> Start:
    """Start a broker on ``data_dir`` that should refuse. One that did not exit by itself is
    killed by its pid. (brokers.start_broker would hide the exit status of one that refused.)"""
    log = data_dir.parent / "broker.log"
    read_fd, write_fd = os.pipe()
    args = ["--data-dir", str(data_dir), "--socket", str(data_dir.parent / "b.sock")]
    with log.open("wb") as out:
        process = subprocess.Popen(
            serve_command(*args, "--ready-fd", str(write_fd)),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            pass_fds=(write_fd,),
        )
    os.close(write_fd)
    try:
        # A serving broker writes a line on the pipe; a refusing one exits, which closes it.
        ready, _, _ = select.select([read_fd], [], [], START_TIMEOUT)
        started = bool(ready) and bool(os.read(read_fd, 65536))
        status = process.wait(STOP_TIMEOUT) if ready and not started else None
    finally:
        os.close(read_fd)
        if process.poll() is None:
            process.kill()
            process.wait(STOP_TIMEOUT)
    return Start(status, started, log.read_text(errors="replace"))


def catalog_document(data_dir: Path) -> dict[str, Any]:
    """A valid catalog (docs/FORMAT.md, "The catalog"): one global cursor."""
    cursor = {"name": "jobs", "path": str(data_dir / "jobs-elsewhere.db"), "owner": None}
    return {
        "format": 1,
        "cursors": [{**cursor, "by": "admin", "time": 1.0}],
        "users": [],
        "grants": [],
        "bootstrapped": False,
    }


def try_catalogs(
    tally: Tally,
    short_dir: Path,
    damages: Callable[[bytes, dict[str, Any]], Iterator[tuple[str, bytes]]],
) -> None:
    """Start a broker on a valid catalog (it must serve), then on each damaged one (it must
    refuse: exit non-zero, name catalog.json in its log, say what to do, change nothing)."""
    data_dir = short_dir / "data"
    catalog = data_dir / "catalog.json"
    data_dir.mkdir()
    document = catalog_document(data_dir)
    catalog.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")
    with running_broker(data_dir, short_dir / "ok.sock"):
        pass  # it started, so the catalog is otherwise valid
    for what, damaged in damages(catalog.read_bytes(), document):
        label = f"catalog.json: {what}"
        catalog.write_bytes(damaged)
        tally.figures.add("cases")
        start = refused_start(data_dir)
        if start.status is None:
            what = "the broker started" if start.started else "the broker hung"
            tally.problem("wrongly allowed", label, what)
            continue
        tally.figures.add("refused")
        if start.status == 0:
            tally.problem("unclear", label, "the broker exited with status 0")
        elif str(catalog) not in start.log:
            tally.problem("unclear", label, f"its log does not name catalog.json:\n{start.log}")
        elif not any(word in start.log for word in ADVICE):
            tally.problem("unclear", label, f"its log says nothing to do:\n{start.log}")
        if catalog.read_bytes() != damaged:
            tally.problem("wrongly allowed", label, "the broker changed catalog.json")


def unreadable_catalogs(valid: bytes, document: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    yield "empty", b""
    yield "cut in half", valid[: len(valid) // 2]
    yield "its closing brace cut", valid.rstrip()[:-1]
    yield "its first byte flipped", bytes([valid[0] ^ 0x01]) + valid[1:]
    yield "a byte that is not UTF-8", valid.replace(b'"jobs"', b'"jo\xffs"')
    yield "binary garbage", random.Random(SEED).randbytes(300)


def test_a_broker_refuses_an_unreadable_catalog(short_dir: Path, figures: Figures) -> None:
    tally = Tally(figures)
    try_catalogs(tally, short_dir, unreadable_catalogs)
    tally.check()


def with_cursor(document: dict[str, Any], **values: Any) -> bytes:
    """The catalog with its cursor's fields changed."""
    return json.dumps({**document, "cursors": [{**document["cursors"][0], **values}]}).encode()


def misshapen_catalogs(valid: bytes, document: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    def changed(**values: Any) -> bytes:
        return json.dumps({**document, **values}).encode()

    yield "a list, not an object", json.dumps([document]).encode()
    yield "format 2", changed(format=2)
    yield "no format", json.dumps({k: v for k, v in document.items() if k != "format"}).encode()
    yield "cursors null", changed(cursors=None)
    yield "cursors an object", changed(cursors={"jobs": document["cursors"][0]})
    yield "a cursor without a path", changed(cursors=[{"name": "jobs"}])
    yield "a cursor with an unknown field", with_cursor(document, colour="red")
    yield "a cursor name that is a list", with_cursor(document, name=["jobs"])
    grant = {"level": "emperor", "user": "a", "cursor": "jobs", "prefix": ""}
    yield "a grant of an unknown level", changed(grants=[grant])


def test_a_broker_refuses_a_catalog_of_the_wrong_shape(short_dir: Path, figures: Figures) -> None:
    tally = Tally(figures)
    try_catalogs(tally, short_dir, misshapen_catalogs)
    tally.check()


def mistyped_catalogs(valid: bytes, document: dict[str, Any]) -> Iterator[tuple[str, bytes]]:
    # A broker that took these would serve a directory relative to its working directory, or
    # fail every request for the cursor ("The broker failed unexpectedly") instead of refusing.
    yield "a relative cursor path", with_cursor(document, path="jobs-elsewhere.db")
    yield "a cursor path that is a number", with_cursor(document, path=5)
    yield "a cursor name that is a number", with_cursor(document, name=5)
    yield "a cursor owner that is a number", with_cursor(document, owner=7)


def test_a_broker_refuses_a_catalog_with_values_of_the_wrong_kind(
    short_dir: Path, figures: Figures
) -> None:
    tally = Tally(figures)
    try_catalogs(tally, short_dir, mistyped_catalogs)
    tally.check()
