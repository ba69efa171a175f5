"""Every float32 input's erf, bit for bit: torch_tpu's float32 erf (csrc_py/special.py) against round ten's
(tests/erf_round_ten.py), whose bits eager and compiled GELU, erf and foreach erf have had since; NaN inputs must
give NaN. Round eleven's rewrite for speed promised the same bits; the default suite checks a sample
(tests/test_pointwise.py). Prints each differing input (the first few) and a count, and exits 1 if any differs.

Not a test (all 2**32 inputs take a few minutes). Run: python tests/sweep_erf.py [FIRST_CHUNK [CHUNKS]]
(chunks of 2**24 bit patterns, 256 in all).
"""
import sys
import time

import numpy as np

from erf_round_ten import erf as round_ten_erf
from torch_tpu._C.special import erf

CHUNK_BITS = 24
CHUNKS = 1 << (32 - CHUNK_BITS)
SHOWN = 10


def differences(patterns):
    """The bit patterns among ``patterns`` (uint32) whose erf, into a new array or in place (as GELU takes it),
    differs from round ten's (NaN for NaN allowed)."""
    x = patterns.view(np.float32)
    expected = round_ten_erf(x)
    in_place = x.copy()
    differ = np.zeros(x.shape, bool)
    for actual in (erf(x), erf(in_place, out=in_place)):
        differ |= (expected.view(np.uint32) != actual.view(np.uint32)) & ~(np.isnan(expected) & np.isnan(actual))
    return patterns[differ]


def main():
    first = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    count = int(sys.argv[2]) if len(sys.argv) > 2 else CHUNKS - first
    started, found = time.time(), 0
    for chunk in range(first, first + count):
        patterns = np.arange(chunk << CHUNK_BITS, (chunk + 1) << CHUNK_BITS, dtype=np.uint64).astype(np.uint32)
        differing = differences(patterns)
        for pattern in differing[:max(0, SHOWN - found)]:
            value = np.uint32(pattern).view(np.float32)
            print(f"differs: 0x{int(pattern):08x} ({value!r}): {erf(np.array([value]))[0]!r} against "
                  f"{round_ten_erf(np.array([value]))[0]!r}")
        found += differing.size
    print(f"{count << CHUNK_BITS} inputs from 0x{first << CHUNK_BITS:08x}: {found} differ "
          f"({time.time() - started:.0f} s)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
