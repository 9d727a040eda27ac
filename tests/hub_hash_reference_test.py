#!/usr/bin/python3
"""model/hub_hash's SHA-256 against Python's hashlib.

Files of seeded random bytes, at lengths around SHA-256's padding boundaries and
the 1 MiB read chunk, are hashed by hashlib and by the C++ (the gtest case
HubHashReference.PrintsDigests of $HUB_HASH_TEST_BINARY, which prints
`sha256 <hex> <path>` for each file in HUB_HASH_FILES). Tolerance: exact string
equality of the 64 hex digits.
"""
import hashlib
import os
import random
import subprocess
import sys
import tempfile

BINARY = os.environ["HUB_HASH_TEST_BINARY"]
MIB = 1 << 20
LENGTHS = [0, 1, 55, 56, 63, 64, 65, 119, 120, 1000, MIB - 1, MIB, MIB + 7, 3 * MIB + 5]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def main():
    rng = random.Random(20241130)
    with tempfile.TemporaryDirectory(prefix="hub_hash_reference_") as tmp:
        expected = {}
        for n in LENGTHS:
            # A space in the name: paths are printed whole, after the digest.
            path = os.path.join(tmp, f"random {n}.bin")
            data = rng.randbytes(n)
            with open(path, "wb") as f:
                f.write(data)
            expected[path] = hashlib.sha256(data).hexdigest()
        p = subprocess.run([BINARY, "--gtest_filter=HubHashReference.PrintsDigests"],
                           env={**os.environ, "HUB_HASH_FILES": os.pathsep.join(expected)},
                           capture_output=True, text=True, timeout=120)
    check(p.returncode == 0, f"{os.path.basename(BINARY)} exits 0 (got {p.returncode})")
    # A skipped case would also exit 0 and print nothing to compare.
    check("[  SKIPPED ]" not in p.stdout, "the gtest case ran (not skipped)")
    got = {}
    for line in p.stdout.splitlines():
        if line.startswith("sha256 "):
            _, digest, path = line.split(" ", 2)
            got[path] = digest
    for path, digest in expected.items():
        name = os.path.basename(path)
        check(got.get(path) == digest, f"{name}: C++ {got.get(path)} == hashlib {digest}")
    if failures:
        print(p.stdout + p.stderr, file=sys.stderr)
        print(f"{len(failures)} failure(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
