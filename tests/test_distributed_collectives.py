"""The "ici" backend under torchrun: every collective on tpu tensors equals gloo on CPU tensors.

The worker (tests/distributed/collectives.py) compares each c10d and functional collective on tpu
tensors, for many dtypes and reduce ops, with the same collective over a plain gloo group on CPU
tensors, bit for bit (or with a float32 reduction rounded once, for the dtypes reduced that way),
and checks the ICI time charged for one all-reduce against the cost model.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
from launch import run_ok  # noqa: E402


@pytest.mark.parametrize("nproc", [2, 4])
def test_collectives_equal_gloo(nproc):
    output = run_ok("collectives.py", nproc)
    assert sorted(line for line in output.splitlines() if "collectives ok" in line) == [
        f"rank {r}: collectives ok" for r in range(nproc)
    ]
