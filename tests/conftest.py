"""Test-suite settings: property tests run the same examples on every run, so a failure is reproducible."""

from __future__ import annotations

from hypothesis import settings

settings.register_profile("zraft", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("zraft")
