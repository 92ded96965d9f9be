"""The async client's tests, written once: scripts/unasync.py makes the sync client's from them.

Each ``test_*.py`` here has a generated twin in tests/_sync/ (``async`` -> ``sync`` in its name).
``support.py`` is not generated: it is what differs between the two sides, with the same names
in tests/_sync/support.py.
"""
