"""FSDP2 x tensor parallelism on a (2, 2) mesh of tpu chips with activation checkpointing and ``clip_grad_norm_``,
eager and compiled: losses and gradient norms equal one chip's training (tests/distributed/parallel_2d.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
from launch import run_ok  # noqa: E402


@pytest.mark.distributed_full
@pytest.mark.parametrize("mode", ["eager", "compile"])
def test_fsdp_tp_with_checkpointing_and_clipping_matches_one_chip(mode):
    output = run_ok("parallel_2d.py", 4, mode, timeout=600)
    assert output.count("parallel 2d ok") == 4, output
