"""Counts per module of a mutmut run, as a Markdown table (used by scripts/mutation).

    mutation_summary.py MUTANTS_REV TESTS_REV [ADDED...]   the table
    mutation_summary.py --names STATUS...        the mutants with these verdicts, one a line

Run in the directory where mutmut ran (it reads mutants/**/*.py.meta, mutmut's own record of
each mutant's exit code, and maps exit codes to verdicts with mutmut's own table). The score is
killed / (mutants - not checked): a timeout is listed apart and is not counted as killed.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

COLUMNS = ("killed", "timeout", "survived", "no tests", "suspicious", "not checked", "other")


def say(line: str) -> None:
    sys.stdout.write(line + "\n")


def verdicts() -> dict[str, dict[str, str]]:
    """Each mutated module's mutants, by name, with mutmut's verdict."""
    found: dict[str, dict[str, str]] = {}
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to("mutants"))[: -len(".meta")]
        found[module] = {name: status_by_exit_code[code] for name, code in exit_codes.items()}
    return found


def main() -> None:
    if sys.argv[1:2] == ["--names"]:
        # --names STATUS...: the names of the mutants with one of these verdicts, one a line.
        for by_name in verdicts().values():
            for name, status in by_name.items():
                if status in sys.argv[2:]:
                    say(name)
        return
    mutants_rev, tests_rev = [*sys.argv[1:], "?", "?"][:2]
    added = sys.argv[3:]
    rows: list[tuple[str, Counter[str]]] = []
    for module, by_name in verdicts().items():
        counts: Counter[str] = Counter()
        for status in by_name.values():
            counts[status if status in COLUMNS else "other"] += 1
        rows.append((module, counts))
    total: Counter[str] = Counter()
    say(f"Mutants and test suite of commit {mutants_rev}")
    if added:
        say(f"plus the tests added at commit {tests_rev}: {', '.join(added)}")
    say("")
    say("| module | mutants | " + " | ".join(COLUMNS) + " | score |")
    say("|---|---:|" + "---:|" * len(COLUMNS) + "---:|")
    for module, counts in [*rows, ("**total**", total)]:
        if module != "**total**":
            total.update(counts)
        mutants = sum(counts.values())
        checked = mutants - counts["not checked"]
        score = f"{100 * counts['killed'] / checked:.1f} %" if checked else "-"
        cells = " | ".join(str(counts[column]) for column in COLUMNS)
        say(f"| {module} | {mutants} | {cells} | {score} |")


if __name__ == "__main__":
    main()
