"""MCP's stdio transport without threads: what ``prontodb mcp`` serves its host through.

The SDK's ``mcp.server.stdio.stdio_server`` reads stdin and writes stdout through anyio worker
threads (``anyio.wrap_file``): every line in and out is handed to a thread and back. This one
reads and writes the descriptors from the event loop itself (``anyio.wait_readable`` and
``wait_writable``), and gives the SDK's server the same two streams: ``SessionMessage`` (or the
``Exception`` a line failed to parse with) in, ``SessionMessage`` out, one JSON object a line.

Measured before writing it (2 cores; a raw client writing a `get` line and reading the answer,
5,000 times, to one long-lived server; py-spy, cProfile and the threads' CPU times): with the SDK's
transport a call took 1.1-1.2 ms (p50), and the server burnt 0.9 ms of CPU on its event-loop thread
and 0.1-0.2 ms on worker threads. Each call made three thread round trips (a readline, a write, a
flush), each a hand-off to a worker and a wake-up of the loop through its self-pipe, and about 20
passes of the event loop. With this transport: 0.64-0.68 ms, 0.48 ms of CPU, one thread, about 8
passes of the loop; with the tool stubbed out (no broker), 0.50 ms before and 0.25 ms after. The
rest is the SDK's request path (validation, its OpenTelemetry wrapper, a task per request, the
relay of the first request) and the tool with its broker round trip: docs/BENCHMARKS.md.

What it does, beyond the SDK's transport:

- Pipes and sockets are switched to non-blocking mode for the session and switched back on the
  way out (the mode belongs to the open file, which the host may share). A terminal is left as it
  is, since it is usually shared with the shell that started the server (a server killed before
  it could switch back would leave the shell's terminal non-blocking): it is read once it is
  readable and written as it is. A regular file (``prontodb mcp < requests``) is read and
  written directly, as it never makes a reader wait.
- A line that is not a JSON-RPC message is answered with a JSON-RPC error (-32700 "Parse error"
  for what is not JSON, -32600 "Invalid Request" for JSON that is not a message, with the id
  when it has one), then the session goes on. The SDK's server would drop it silently, leaving
  a request's sender waiting for ever. Blank lines are skipped. The bytes must be UTF-8.
- A line longer than ``MAX_LINE`` (4 MiB, the SDK's own limit on an HTTP request body) is not
  buffered whole: it is answered with a parse error (id null: its id is not read), dropped up
  to its newline, said on stderr, and the session goes on. Memory stays bounded by the limit.
- End of input (the host closed stdin) ends the session: the read stream ends, and the server
  returns (the SDK answers requests still running then with "Connection closed").

While serving, fd 0 reads the null device and fd 1 writes to stderr (as with the SDK's
transport), so a child (an autostarted broker) or a stray print cannot reach the host's pipes;
the wire is served from private duplicates, and both are put back on exit.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, Self

import anyio
import anyio.lowlevel
import mcp_types as types
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

log = logging.getLogger("prontodb.mcp")

MAX_LINE = 4 * 1024 * 1024  # bytes in one message, its newline not counted
_CHUNK = 64 * 1024  # bytes read at a time


@asynccontextmanager
async def stdio_server(
    max_line: int = MAX_LINE,
) -> AsyncIterator[tuple[LineReader, LineWriter]]:
    """Serve MCP over this process's stdin and stdout: yields ``(read_stream, write_stream)``
    for ``Server.run``, as the SDK's ``stdio_server()`` does. fd 0 and 1 are diverted (to the
    null device and stderr) while it serves and restored on exit."""
    with _claimed(0, _null_input) as wire_in, _claimed(1, _stderr_output) as wire_out:
        async with fd_transport(wire_in, wire_out, max_line) as streams:
            yield streams


@asynccontextmanager
async def fd_transport(
    read_fd: int, write_fd: int, max_line: int = MAX_LINE
) -> AsyncIterator[tuple[LineReader, LineWriter]]:
    """The transport over any two descriptors (a pipe's ends in tests), which stay open: their
    blocking modes are restored on exit."""
    with _nonblocking(read_fd), _nonblocking(write_fd):
        writer = LineWriter(write_fd)
        yield LineReader(read_fd, writer, max_line), writer


class _ClosedOnExit:
    """``async with`` a stream closes it on the way out, as anyio's streams do."""

    async def aclose(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class LineReader(_ClosedOnExit):
    """The read stream: a message for each line (or the ``ValidationError`` of a line that is
    not one, after it was answered); ends at end of input."""

    def __init__(self, fd: int, answer: LineWriter, max_line: int) -> None:
        self._fd = fd
        self._answer = answer  # parse errors are answered here, not by the server
        self._max_line = max_line
        self._wait_first = _waits_for_input(fd)
        self._buffer = bytearray()
        self._scanned = 0  # the buffer holds no newline before this
        self._dropping = False  # inside an oversized line, dropping it up to its newline
        self._eof = False
        self._closed = False

    async def receive(self) -> SessionMessage | Exception:
        """The next message; ``anyio.EndOfStream`` once the input has ended."""
        await anyio.lowlevel.checkpoint_if_cancelled()
        while True:
            line = await self._line()
            if line.strip():
                break
        try:
            return SessionMessage(types.jsonrpc_message_adapter.validate_json(line, by_name=False))
        except ValidationError as exc:
            await self._tell(_refusal(line, exc))
            return exc

    async def _line(self) -> bytearray:
        while True:
            if self._closed:
                raise anyio.ClosedResourceError
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0 and not self._dropping:
                line = self._buffer[:end]
                del self._buffer[: end + 1]
                self._scanned = 0
                if len(line) <= self._max_line:
                    return line
                await self._oversized()
            elif end >= 0:  # the end of the line being dropped
                del self._buffer[: end + 1]
                self._scanned = 0
                self._dropping = False
            elif self._eof:
                if self._buffer and not self._dropping:  # a last line without its newline
                    line, self._buffer = self._buffer, bytearray()
                    return line
                raise anyio.EndOfStream
            else:
                await self._fill()

    async def _fill(self) -> None:
        """Read a chunk into the buffer (or note the end of input); past the limit without a
        newline, the line is oversized: answered, and dropped as it comes."""
        self._scanned = len(self._buffer)
        chunk = await self._read()
        if not chunk:
            self._eof = True
        elif self._dropping:
            self._buffer[:] = chunk
            self._scanned = 0
        else:
            self._buffer += chunk
            if len(self._buffer) > self._max_line and self._buffer.find(b"\n", self._scanned) < 0:
                self._buffer.clear()
                self._scanned = 0
                self._dropping = True
                await self._oversized()

    async def _oversized(self) -> None:
        log.warning(
            "dropped an input line longer than %d bytes (not read as a message)", self._max_line
        )
        await self._tell(
            _error(
                None, types.PARSE_ERROR, f"Parse error: a line longer than {self._max_line} bytes"
            )
        )

    async def _tell(self, answer: SessionMessage) -> None:
        """Answer the host; if it no longer reads, reading goes on to the end of its input."""
        try:
            await self._answer.send(answer)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            log.debug("dropped an answer to a line that was not a message: output closed")

    async def _read(self) -> bytes:
        while True:
            if self._wait_first:
                await anyio.wait_readable(self._fd)
            try:
                return os.read(self._fd, _CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(self._fd)

    async def aclose(self) -> None:
        """Stop reading (the descriptor stays open: the transport owns it)."""
        self._closed = True
        await anyio.lowlevel.checkpoint()

    def __aiter__(self) -> LineReader:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None


class LineWriter(_ClosedOnExit):
    """The write stream: each message as one line, written whole before the next one starts."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # A file is written without waiting (epoll cannot wait on it, and it never needs to).
        self._pollable = _pollable(fd)
        self._lock = anyio.Lock(fast_acquire=True)
        self._closed = False
        self._broken: OSError | None = None

    async def send(self, item: SessionMessage) -> None:
        """Write ``item``'s message and a newline. ``anyio.BrokenResourceError`` once the host
        stopped reading (its end of the pipe closed)."""
        data = item.message.model_dump_json(by_alias=True, exclude_unset=True).encode() + b"\n"
        async with self._lock:
            if self._closed:
                raise anyio.ClosedResourceError
            if self._broken is not None:
                raise anyio.BrokenResourceError from self._broken
            sent = self._write(data)
            if sent < len(data):
                # A line begun is finished: given up half-way, it would corrupt the next one.
                with anyio.CancelScope(shield=True):
                    await self._write_rest(memoryview(data)[sent:])

    def _write(self, data: bytes | memoryview) -> int:
        try:
            return os.write(self._fd, data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            self._broken = exc
            raise anyio.BrokenResourceError from exc

    async def _write_rest(self, data: memoryview) -> None:
        while data:
            if self._pollable:
                await anyio.wait_writable(self._fd)
            data = data[self._write(data) :]

    async def aclose(self) -> None:
        """Refuse further messages (the descriptor stays open: the transport owns it)."""
        self._closed = True
        await anyio.lowlevel.checkpoint()


def _error(request_id: types.RequestId | None, code: int, message: str) -> SessionMessage:
    error = types.ErrorData(code=code, message=message)
    return SessionMessage(types.JSONRPCError(jsonrpc="2.0", id=request_id, error=error))


def _refusal(line: bytearray, exc: ValidationError) -> SessionMessage:
    """The answer to a line that is not a JSON-RPC message."""
    if any(e["type"] == "json_invalid" for e in exc.errors()):
        return _error(None, types.PARSE_ERROR, "Parse error: not a line of UTF-8 JSON")
    request_id: Any = None
    try:
        request_id = json.loads(line).get("id")
    except (ValueError, AttributeError, RecursionError):
        pass
    if isinstance(request_id, bool) or not isinstance(request_id, int | str):
        request_id = None
    return _error(request_id, types.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message")


# -- the descriptors ------------------------------------------------------------------------------


def _pipe_or_socket(fd: int) -> bool:
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def _pollable(fd: int) -> bool:
    """Whether the event loop can wait on ``fd`` (epoll refuses regular files and /dev/null)."""
    return _pipe_or_socket(fd) or os.isatty(fd)


def _waits_for_input(fd: int) -> bool:
    """Whether ``fd`` is read only once it is readable: a terminal left blocking (a read would
    block the event loop). A pipe or socket is non-blocking by now, and a file never waits."""
    return os.isatty(fd) and os.get_blocking(fd)


@contextmanager
def _nonblocking(fd: int) -> Iterator[None]:
    """Non-blocking I/O on ``fd`` while in the block, if it is a pipe or a socket (see the
    module's docstring for the rest); its mode as it was on exit."""
    if not _pipe_or_socket(fd) or not os.get_blocking(fd):
        yield
        return
    os.set_blocking(fd, False)
    try:
        yield
    finally:
        os.set_blocking(fd, True)


def _null_input() -> int:
    return os.open(os.devnull, os.O_RDONLY)


def _stderr_output() -> int:
    return os.dup(2)


@contextmanager
def _claimed(fd: int, diversion: Callable[[], int]) -> Iterator[int]:
    """A private duplicate of the standard descriptor ``fd`` (closed on exec) while ``fd``
    itself points at ``diversion()``; ``fd`` is put back on exit."""
    wire = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    try:
        replacement = diversion()
        try:
            os.dup2(replacement, fd)
        finally:
            os.close(replacement)
        yield wire
    finally:
        os.dup2(wire, fd)
        os.close(wire)
