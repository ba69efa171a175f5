"""Multi-host runs and torch.distributed.checkpoint.

Two torchrun invocations (two "hosts", one rank each, init_process_group("ici")) find each other
over a TCP rendezvous on loopback, as hosts of a TPU slice would. Sharded (FSDP2, DTensor) state
dicts saved with torch.distributed.checkpoint on N ranks (init_process_group() with no backend)
load onto a different number of ranks (init_process_group("cpu:gloo,tpu:ici")), every tensor equal. Full state
dicts held by rank 0 load into FSDP2 with ``broadcast_from_rank0``, and ``dcp.async_save`` round-trips.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
from launch import finish, free_port, run_ok, start_torchrun  # noqa: E402


def test_two_hosts_over_a_tcp_rendezvous():
    port = free_port()
    hosts = [
        start_torchrun("multihost.py", 1, launcher_args=("--nnodes=2", f"--node-rank={node}", "--master-addr=127.0.0.1",
                                                        f"--master-port={port}"))
        for node in (0, 1)
    ]
    outputs = [finish(host, 240, f"host {node}") for node, host in enumerate(hosts)]
    for node, (code, stdout, stderr) in enumerate(outputs):
        assert code == 0, f"host {node} failed:\n{stdout}\n{stderr[-6000:]}"
        assert f"rank {node} on node {node}: multihost ok" in stdout


@pytest.mark.parametrize("saved_on, loaded_on", [
    (2, 1), pytest.param(4, 2, marks=pytest.mark.distributed_full), pytest.param(2, 4, marks=pytest.mark.distributed_full),
])
def test_sharded_checkpoint_reloads_on_another_world_size(tmp_path, saved_on, loaded_on):
    saved = run_ok("checkpoint.py", saved_on, "save", str(tmp_path))
    assert saved.count("checkpoint saved") == saved_on
    loaded = run_ok("checkpoint.py", loaded_on, "load", str(tmp_path), env={"BACKEND": "cpu:gloo,tpu:ici"})
    assert loaded.count("checkpoint loaded") == loaded_on


@pytest.mark.distributed_full
def test_full_state_dicts_from_rank_0_and_an_async_checkpoint(tmp_path):
    output = run_ok("full_state_dict.py", 2, str(tmp_path))
    assert output.count("full state dict ok") == 2
