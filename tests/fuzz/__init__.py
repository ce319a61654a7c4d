"""Fuzzing with hypothesis: the codec, a live node's peer and client handlers, the WAL reader and the
snapshot decoder. `python -m tests.fuzz --help`; CI runs a small number of cases (tests/unit/test_fuzz.py)."""
