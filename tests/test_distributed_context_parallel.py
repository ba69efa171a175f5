"""Context parallelism on tpu chips: ``context_parallel``'s ring attention keeps each chip's part of the sequence
and equals one chip's attention, forward and backward, causal or not; dropout is refused
(tests/distributed/context_parallel.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
from launch import run_ok  # noqa: E402


@pytest.mark.parametrize("nproc", [2, pytest.param(4, marks=pytest.mark.distributed_full)])
def test_ring_attention_keeps_the_sequence_sharded_and_matches_one_chip(nproc):
    output = run_ok("context_parallel.py", nproc, timeout=300)
    assert output.count("context parallel ok") == nproc, output
