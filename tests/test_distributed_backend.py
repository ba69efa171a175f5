"""The "ici" backend across processes: collectives, DTensor, bad input and faults.

The suite worker (tests/distributed/suite.py, with collectives.py, dtensor.py and sync_batch_norm.py) runs
on every rank: each c10d and functional collective on tpu tensors against gloo on CPU tensors (bit for bit,
or a float32 reduction rounded once), the ICI time charged against the cost model, DTensor against
single-device results, SyncBatchNorm against one CPU BatchNorm over the whole batch, mismatched collectives
and bad arguments (clear errors on every rank, also when only one rank's arguments are refused, and the group
still works), and finally that destroy_process_group() left no thread or socket behind. Faults run with
a short timeout (TORCH_TPU_DIST_TIMEOUT) and must end well within it.
"""

import os
import re
import sys

import pytest

from torch_tpu.distributed.work import Work

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
from launch import spawn_ranks  # noqa: E402

TIMEOUT = 3  # seconds, for the process groups of the fault tests


def _suite(world):
    results = spawn_ranks("suite.py", world, timeout=400)
    for rank, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"rank {rank} failed ({code}):\n{stdout}\n{stderr[-6000:]}"
        assert re.search(rf"rank {rank}: suite ok \(threads and sockets before (\(\d+, \d+\)), after \1\)", stdout), stdout


def test_suite_on_2_processes():
    _suite(2)


@pytest.mark.distributed_full
def test_suite_on_4_processes():
    _suite(4)


def test_a_dead_rank_makes_the_others_raise_at_once():
    (code, stdout, stderr), (dead, _, _) = spawn_ranks("suite.py", 2, "dead", env={"TORCH_TPU_DIST_TIMEOUT": str(TIMEOUT)},
                                                       timeout=120)
    assert dead == 3 and code == 0, stderr[-4000:]
    seconds, message = re.search(r"rank 0: suite ok: after ([0-9.]+) s: (.*)", stdout).groups()
    assert float(seconds) < TIMEOUT
    assert "all_reduce on rank 0 of process group 'default_pg': not every rank of the group reached" in message
    assert "Connection closed by peer" in message


@pytest.mark.distributed_full
def test_a_rank_that_never_arrives_times_out():
    (code, stdout, stderr), _ = spawn_ranks("hang.py", 2, env={"TORCH_TPU_DIST_TIMEOUT": str(TIMEOUT)}, timeout=120,
                                            until=[0])
    assert code == 0, stderr[-4000:]
    seconds, message = re.search(r"rank 0 raised after ([0-9.]+) s: (.*)", stdout).groups()
    assert TIMEOUT - 0.5 <= float(seconds) < TIMEOUT + 5
    assert "all_reduce on rank 0" in message and f"Timed out waiting {TIMEOUT * 1000}ms" in message


def test_comm_debug_mode_counts_a_tensor_parallel_step_as_with_gloo():
    results = spawn_ranks("comm_counts.py", 2, timeout=300)
    for rank, (code, stdout, stderr) in enumerate(results):
        assert code == 0, f"rank {rank} failed ({code}):\n{stdout}\n{stderr[-6000:]}"
        assert f"rank {rank}: comm counts ok" in stdout and "'c10d.allreduce_': 1" in stdout, stdout


def test_polling_a_work_never_raises_and_wait_raises_what_went_wrong():
    """c10d's contract: is_completed() only reports; the error of bringing results back surfaces at wait()."""
    class Finished:  # a transport's handle whose bytes have arrived
        def is_completed(self):
            return True

        def wait(self):
            return True

    class FailingCopy:
        def finish(self):
            raise ValueError("the copy back to HBM failed")

    work = Work("all_reduce on rank 0", [Finished()], [FailingCopy()])
    assert work.is_completed() and not work.is_success()
    with pytest.raises(ValueError, match="the copy back to HBM failed"):
        work.wait()
    assert isinstance(work.exception(), ValueError)
