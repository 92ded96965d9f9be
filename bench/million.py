"""One million keys: disk after compaction, memory, and a restart to the first answer, vs Redis.

    python -m bench.million [--keys 1000000] [--no-report]

Both servers get the same keys (``key:0000000`` ...) and 32-byte values, loaded fast: ProntoDB
through the broker by pipelined txns of 128 sets (``call_many``), Redis by pipelined MSETs of
1,000 pairs. Both fsync every acknowledged write (ProntoDB ``--fsync always``; Redis
``appendonly yes``, ``appendfsync always``). Then each compacts (Redis ``BGREWRITEAOF``;
ProntoDB's compaction of the stopped database, ``Database.compact``, which is what the broker
runs in a thread), each is stopped and started again on its files, and the restart is timed
from the process's start to the first answer of a GET of a loaded key (Redis answers -LOADING
until its AOF is read). RSS is the process's VmRSS after the restart and that answer.

The targets (issue 23): start-up <= 1.5x Redis's, RSS <= 2x Redis's, disk <= 1.5x Redis's AOF.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from prontodb.broker.database import Database
from prontodb.clients import Client

from .report import machine, update_section
from .servers import Server, running, start_prontodb, start_redis

VALUE_SIZE = 32
TXN_OPS = 128  # the most one txn takes
IN_FLIGHT = 16  # txns per call_many
MSET_PAIRS = 1000


def key_name(i: int) -> str:
    return f"key:{i:07d}"


def value_of(i: int) -> str:
    """32 characters, different for every key (an id in a fixed text, as task payloads go)."""
    return f"task-{i:07d}-pending-{i * 7919 % 10**8:08d}"[:VALUE_SIZE].ljust(VALUE_SIZE, "x")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -- ProntoDB ----------------------------------------------------------------------------------


def load_prontodb(server: Server, keys: int) -> None:
    with Client.connect(f"unix://{server.socket}", user="bench") as client:
        requests = []
        for start in range(0, keys, TXN_OPS):
            ops = [
                {"op": "set", "key": key_name(i), "value": value_of(i)}
                for i in range(start, min(start + TXN_OPS, keys))
            ]
            requests.append(("txn", {"cursor": "default", "compares": [], "ops": ops}))
            if len(requests) == IN_FLIGHT:
                _check(client.call_many(requests))
                requests = []
        if requests:
            _check(client.call_many(requests))


def _check(results: list[object]) -> None:
    for result in results:
        if isinstance(result, Exception):
            raise result


def first_answer_prontodb(directory: Path, probe: str) -> tuple[Server, float]:
    began = time.perf_counter()
    server = start_prontodb(directory)
    with Client.connect(f"unix://{server.socket}", user="bench") as client:
        found = client.get(probe)
    elapsed = time.perf_counter() - began
    assert found is not None, "the restarted broker lost a key"
    return server, elapsed


def run_prontodb(tmp: Path, keys: int) -> tuple[dict[str, float], float, int]:
    directory = tmp / "prontodb"
    directory.mkdir()
    began = time.perf_counter()
    with running(start_prontodb(directory)) as server:
        load_prontodb(server, keys)
    load = time.perf_counter() - began
    (db_dir,) = [p for p in (directory / "data").glob("*.db") if p.is_dir()]
    before = tree_bytes(db_dir)
    began = time.perf_counter()
    db = Database.open(db_dir)
    try:
        db.compact()
    finally:
        db.close()
    compaction = time.perf_counter() - began
    disk = tree_bytes(db_dir)
    server, start = first_answer_prontodb(directory, key_name(keys // 2))
    with running(server):
        rss = rss_bytes(server.pid)
    return {"load": load, "log": before, "compaction": compaction, "disk": disk}, start, rss


# -- Redis -------------------------------------------------------------------------------------


def _resp(*parts: str) -> bytes:
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _redis_call(path: str, command: bytes, replies: int = 1) -> bytes:
    """Send ``command`` (one or many, pipelined) and read ``replies`` simple replies."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(command)
        data = b""
        while data.count(b"\r\n") < replies:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
        return data


def load_redis(server: Server, keys: int) -> None:
    commands = []
    for start in range(0, keys, MSET_PAIRS):
        pairs: list[str] = []
        for i in range(start, min(start + MSET_PAIRS, keys)):
            pairs += (key_name(i), value_of(i))
        commands.append(_resp("MSET", *pairs))
    for start in range(0, len(commands), IN_FLIGHT):
        some = commands[start : start + IN_FLIGHT]
        reply = _redis_call(server.socket, b"".join(some), len(some))
        assert reply == b"+OK\r\n" * len(some), reply[:200]


def rewrite_aof(server: Server) -> None:
    assert _redis_call(server.socket, _resp("BGREWRITEAOF")).startswith(b"+")
    while True:
        info = subprocess.run(
            ["redis-cli", "-s", server.socket, "INFO", "persistence"],
            capture_output=True,
            check=True,
        ).stdout
        if b"aof_rewrite_in_progress:0" in info and b"aof_rewrite_scheduled:0" in info:
            return
        time.sleep(0.05)


def first_answer_redis(directory: Path, probe: str) -> tuple[Server, float]:
    began = time.perf_counter()
    server = start_redis(directory)  # returns once PING answers PONG, not -LOADING
    reply = _redis_call(server.socket, _resp("GET", probe), 2)
    elapsed = time.perf_counter() - began
    assert reply.startswith(b"$"), reply
    return server, elapsed


def run_redis(tmp: Path, keys: int) -> tuple[dict[str, float], float, int]:
    directory = tmp / "redis"
    directory.mkdir()
    began = time.perf_counter()
    with running(start_redis(directory)) as server:
        load_redis(server, keys)
        load = time.perf_counter() - began
        before = tree_bytes(directory / "appendonlydir")
        began = time.perf_counter()
        rewrite_aof(server)
        compaction = time.perf_counter() - began
    disk = tree_bytes(directory / "appendonlydir")
    server, start = first_answer_redis(directory, key_name(keys // 2))
    with running(server):
        rss = rss_bytes(server.pid)
    return {"load": load, "log": before, "compaction": compaction, "disk": disk}, start, rss


def _verdict(ratio: float, target: float) -> str:
    return f"{ratio:.2f}x (target <= {target}x: {'**met**' if ratio <= target else '**not met**'})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--no-report", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="prontodb-million-", dir="/var/tmp") as name:
        tmp = Path(name)
        ours, our_start, our_rss = run_prontodb(tmp, args.keys)
        theirs, their_start, their_rss = run_redis(tmp, args.keys)
    mib = 2**20
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    lines = [
        f"## One million keys: disk, memory and restart vs Redis ({machine()})",
        "",
        f"{args.keys:,} keys of {VALUE_SIZE}-byte values (`key:0000000` ...), loaded into a broker "
        f"(pipelined txns of {TXN_OPS} sets, `--fsync always`) and into Redis {redis.stdout.split()[2].removeprefix('v=')} "
        f"(pipelined MSETs, `appendfsync always`); then compacted (ProntoDB: `Database.compact`; "
        "Redis: BGREWRITEAOF), stopped and started again. Command: `python -m bench.million`.",
        "",
        "| measure | ProntoDB | Redis | ProntoDB/Redis |",
        "| --- | ---: | ---: | ---: |",
        f"| load, s | {ours['load']:.1f} | {theirs['load']:.1f} | {ours['load'] / theirs['load']:.2f}x |",
        f"| log before compaction, MiB | {ours['log'] / mib:.1f} | {theirs['log'] / mib:.1f} | "
        f"{ours['log'] / theirs['log']:.2f}x |",
        f"| compaction, s | {ours['compaction']:.2f} | {theirs['compaction']:.2f} | "
        f"{ours['compaction'] / theirs['compaction']:.2f}x |",
        f"| disk after compaction, MiB | {ours['disk'] / mib:.1f} | {theirs['disk'] / mib:.1f} | "
        f"{ours['disk'] / theirs['disk']:.2f}x |",
        f"| restart to the first answer, s | {our_start:.2f} | {their_start:.2f} | "
        f"{our_start / their_start:.2f}x |",
        f"| RSS after the restart, MiB | {our_rss / mib:.0f} | {their_rss / mib:.0f} | "
        f"{our_rss / their_rss:.2f}x |",
        "",
        "Targets from issue 23:",
        "",
        f"- start-up to the first answer <= 1.5x Redis's: {_verdict(our_start / their_start, 1.5)}",
        f"- RSS <= 2x Redis's: {_verdict(our_rss / their_rss, 2)}",
        f"- disk after compaction <= 1.5x Redis's AOF: {_verdict(ours['disk'] / theirs['disk'], 1.5)}",
    ]
    print("\n".join(lines))
    if not args.no_report:
        update_section("million", "\n".join(lines))


if __name__ == "__main__":
    main()
