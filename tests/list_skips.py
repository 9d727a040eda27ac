#!/usr/bin/python3
"""Prints each ctest entry that ctest reported as skipped, with its reason, after a run: the
names from ctest's own output (***Skipped), the reasons from the entry's output in
Testing/Temporary/LastTest.log (a gtest "Skipped" message, or tests/fixture.py's "skipped: ..."
lines). scripts/test.sh calls it so that CI's log says why each skip happened.

Usage: list_skips.py CTEST_OUTPUT BUILD_DIR
"""
import os
import re
import sys


def reasons(log, name):
    block = re.search(r"Test: " + re.escape(name) + r"\n(.*?)<end of output>", log, re.S)
    if not block:
        return ["(no output recorded)"]
    lines = block.group(1).splitlines()
    found = []
    for i, line in enumerate(lines):
        if line.endswith(": Skipped") and i + 1 < len(lines):  # gtest: the message follows
            found.append(lines[i + 1].strip())
        elif line.startswith("skipped: "):
            found.append(line[len("skipped: "):].strip())
    return sorted(set(found)) or ["(no reason printed)"]


def main(output_path, build):
    with open(output_path, errors="replace") as f:
        names = re.findall(r"Test +#\d+: (\S+) \.+\*+Skipped", f.read())
    if not names:
        return
    path = os.path.join(build, "Testing", "Temporary", "LastTest.log")
    log = open(path, errors="replace").read() if os.path.exists(path) else ""
    print(f"{len(names)} skipped, each with its reason:")
    for name in names:
        for reason in reasons(log, name):
            print(f"  {name}: {reason}")


if __name__ == "__main__":
    main(*sys.argv[1:])
