"""Quotas under real concurrency: eight client processes write, rewrite and delete as one user
with a quota of keys and bytes, as fast as they can; not one key or byte over it is ever stored,
and the broker's count of the user's use matches what is there."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from brokers import running_broker

from prontodb.clients import Client

WRITER = textwrap.dedent(
    """
    import json, random, sys
    from prontodb.clients import Client, QuotaExceeded
    url, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    refused = stored = 0
    with Client.connect(url, user="ann", cursor="quota") as client:
        for _ in range(150):
            key = f"k{rng.randrange(60)}"
            try:
                if rng.random() < 0.2:
                    client.delete(key)
                else:
                    client.set(key, "x" * rng.randrange(0, 60))
                    stored += 1
            except QuotaExceeded:
                refused += 1
    print(json.dumps({"refused": refused, "stored": stored}))
    """
)


def test_eight_writers_never_pass_a_quota(tmp_path: Path, short_dir: Path) -> None:
    with (
        running_broker(tmp_path / "data", short_dir / "b.sock") as broker,
        Client.connect(broker.url, cursor="quota") as admin,
    ):
        admin.quota_set("ann", max_keys=25, max_bytes=900)
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, broker.url, str(seed)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for seed in range(8)
        ]
        try:
            outputs = [json.loads(w.communicate(timeout=120)[0]) for w in writers]
        finally:
            for w in writers:
                if w.poll() is None:
                    w.kill()
                    w.wait()
        assert all(w.returncode == 0 for w in writers)
        assert sum(o["refused"] for o in outputs) > 0  # the quota was reached, and held
        owned = [
            info
            for key in admin.keys("", cursor="quota")
            if (info := admin.get_info(key, cursor="quota")) is not None and info.writer == "ann"
        ]
        use = admin.quota_show("ann")["ann"]["use"]
        assert use["keys"] == len(owned) <= 25
        assert use["bytes"] == sum(info.size for info in owned) <= 900
