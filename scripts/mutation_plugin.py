"""pytest plugin loaded by scripts/mutation inside mutmut's copy (never by ./scripts/test).

* Hypothesis is made deterministic for a mutation run: the same examples for every mutant, so
  that a verdict (killed or survived) can be reproduced, and no deadline, since mutmut's
  trampolines and ``nice`` slow every call and a missed deadline would count as a kill that no
  assertion made.
* Only the test files named in ``tube_mutation_tests.txt`` (glob patterns relative to the
  project, one a line) are collected. mutmut is given the folder ``tests`` once and for all, so
  that test files added later are picked up as new tests (mutmut then collects their coverage
  alone and keeps the other results) instead of a changed selection discarding every result.
* In mutmut's check of its own setup (every function raising, ``MUTANT_UNDER_TEST=fail``, run
  inside mutmut's process), sockets and threads that the failing tests leave behind are not
  turned into errors at the end of the session: the project's settings make them errors, which
  would escape ``pytest.main`` as an exception and stop mutmut, instead of the failed run it
  expects. Each mutant's own run (a forked process) keeps them as errors.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile(
    "mutation", deadline=None, derandomize=True, database=None, print_blob=False
)
settings.load_profile("mutation")

_PATTERNS = [
    line.strip()
    for line in Path("tube_mutation_tests.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
]


def pytest_configure(config: pytest.Config) -> None:
    """For mutmut's setup check only: leftovers of the forced failures stay warnings."""
    if os.environ.get("MUTANT_UNDER_TEST") == "fail":
        config.addinivalue_line("filterwarnings", "ignore::pytest.PytestUnraisableExceptionWarning")
        config.addinivalue_line("filterwarnings", "ignore::ResourceWarning")


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Skip every test file (and folder) that no pattern selects."""
    relative = collection_path.resolve().relative_to(Path.cwd().resolve()).as_posix()
    if collection_path.is_dir():
        # Folders holding a selected file are entered; the others are not.
        if any(pattern.startswith(relative + "/") for pattern in _PATTERNS):
            return None
        return True
    if not relative.endswith(".py") or Path(relative).name == "conftest.py":
        return None
    return None if any(fnmatch.fnmatch(relative, pattern) for pattern in _PATTERNS) else True
