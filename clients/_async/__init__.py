"""The client, async (anyio); clients/_sync is generated from clients/_async by scripts/unasync.py."""
