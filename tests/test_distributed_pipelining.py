"""Pipeline parallelism (``torch.distributed.pipelining``) on tpu chips: each schedule's microbatch losses and
every stage's gradients equal one chip's training of the whole stack (tests/distributed/pipeline.py)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
from launch import run_ok  # noqa: E402

FULL = pytest.mark.distributed_full


@pytest.mark.parametrize("schedule, nproc", [
    pytest.param("GPipe", 2, id="gpipe-2"),
    pytest.param("1F1B", 4, id="1f1b-4", marks=FULL),
    pytest.param("Interleaved1F1B", 2, id="interleaved-2", marks=FULL),
    pytest.param("Interleaved1F1B", 4, id="interleaved-4", marks=FULL),
])
def test_pipeline_schedule_matches_one_chip(schedule, nproc):
    output = run_ok("pipeline.py", nproc, schedule, timeout=300)
    assert output.count(f"pipeline {schedule} ok") == nproc, output
