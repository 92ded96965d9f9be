"""The sync client's tests: ``test_*.py`` here are generated from tests/_async/ by
scripts/unasync.py (do not edit them); ``support.py`` is hand-written, tests/_async/support.py's
names for threads and blocking sockets."""
