"""The calculator's tests: one line per test, no timings, exit 1 on a failure."""
from calc import add, average, subtract

CASES = [
    ("add", lambda: add(2, 3), 5),
    ("subtract", lambda: subtract(5, 3), 2),
    ("average", lambda: average([1, 2, 3, 6]), 3),
]

failed = 0
for name, run, expected in CASES:
    got = run()
    if got == expected:
        print(f"ok {name}")
    else:
        failed += 1
        print(f"FAIL {name}: expected {expected}, got {got}")
print(f"{len(CASES) - failed} passed, {failed} failed")
raise SystemExit(1 if failed else 0)
