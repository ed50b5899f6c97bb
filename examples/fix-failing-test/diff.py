"""Prints the unified diff of two folders' files (what a person approves)."""
import difflib
import pathlib
import sys

before, after = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for old in sorted(before.rglob("*.py")):
    new = after / old.relative_to(before)
    lines = difflib.unified_diff(
        old.read_text().splitlines(keepends=True),
        new.read_text().splitlines(keepends=True) if new.exists() else [],
        fromfile=str(old),
        tofile=str(new),
    )
    sys.stdout.writelines(lines)
