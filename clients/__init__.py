"""ProntoDB clients: the async client, the sync client and the ``prontodb`` CLI (part 2)."""
