"""torch.tpu.memory._record_memory_history / _snapshot / _dump_snapshot, read by PyTorch's memory_viz."""

import gc
import pickle

import pytest
import torch
from torch.cuda import _memory_viz

memory = torch.tpu.memory


@pytest.fixture
def recording():
    memory._record_memory_history(max_entries=10_000)
    yield
    memory._record_memory_history(enabled=None)


def allocate_and_free():
    kept = torch.ones(1000, device="tpu")
    temporary = kept * 2
    del temporary
    gc.collect()
    return kept


def test_snapshot_has_torch_cuda_structure(recording):
    kept = allocate_and_free()
    snapshot = memory._snapshot()
    assert {"segments", "device_traces"} <= snapshot.keys()
    assert len(snapshot["device_traces"]) == torch.tpu.device_count()
    actions = [e["action"] for e in snapshot["device_traces"][0]]
    assert actions[:4] == ["alloc", "alloc", "free_requested", "free_completed"]
    for entry in snapshot["device_traces"][0]:
        assert {"action", "addr", "size", "stream", "frames", "time_us"} <= entry.keys()
    address = kept.untyped_storage().data_ptr()
    (segment,) = [s for s in snapshot["segments"] if s["address"] == address]
    assert segment["total_size"] == segment["allocated_size"] == 4000
    (block,) = segment["blocks"]
    assert block["state"] == "active_allocated" and block["size"] == 4000
    assert any(f["name"] == "allocate_and_free" for f in block["frames"])
    assert sum(s["allocated_size"] for s in snapshot["segments"]) == torch.tpu.memory_allocated()


def test_memory_viz_reads_the_snapshot(recording, tmp_path):
    kept = allocate_and_free()
    path = tmp_path / "snapshot.pickle"
    memory._dump_snapshot(str(path))
    snapshot = pickle.loads(path.read_bytes())
    trace = _memory_viz.trace(snapshot)
    assert "del " in trace and "3.9KiB" in trace
    assert "total_allocated" in _memory_viz.segsum(snapshot)
    flamegraph = _memory_viz.memory(snapshot, format_flamegraph=lambda lines: lines)
    assert "allocate_and_free" in flamegraph
    assert "Active Memory Timeline" in _memory_viz.trace_plot(snapshot)
    assert "Allocator State History" in _memory_viz.segment_plot(snapshot)
    del kept


def test_max_entries_keeps_the_latest_events():
    memory._record_memory_history(max_entries=3)
    try:
        x = torch.ones(10, device="tpu")
        y = torch.ones(20, device="tpu")
        del x
        entries = memory._snapshot()["device_traces"][0]
    finally:
        memory._record_memory_history(enabled=None)
    assert [(e["action"], e["size"]) for e in entries] == [("alloc", 80), ("free_requested", 40), ("free_completed", 40)]
    del y


def test_state_mode_keeps_stacks_but_no_trace():
    memory._record_memory_history(enabled="state")
    try:
        x = torch.ones(10, device="tpu")
        snapshot = memory._snapshot()
    finally:
        memory._record_memory_history(enabled=None)
    assert snapshot["device_traces"] == [[]]
    (segment,) = [s for s in snapshot["segments"] if s["address"] == x.untyped_storage().data_ptr()]
    assert segment["blocks"][0]["frames"]


def test_stopping_records_nothing_more():
    memory._record_memory_history()
    memory._record_memory_history(enabled=None)
    torch.ones(10, device="tpu")
    snapshot = memory._snapshot()
    assert snapshot["device_traces"] == [[]]
    assert all(not s["blocks"][0]["frames"] for s in snapshot["segments"])


def test_oom_is_traced():
    memory._record_memory_history()
    try:
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(1 << 50, dtype=torch.uint8, device="tpu")
        (oom,) = [e for e in memory._snapshot()["device_traces"][0] if e["action"] == "oom"]
    finally:
        memory._record_memory_history(enabled=None)
    assert oom["size"] == 1 << 50 and oom["device_free"] > 0
    assert "raise OutOfMemoryError" in _memory_viz.trace({"segments": [], "device_traces": [[oom]]})


def test_bad_arguments():
    with pytest.raises(ValueError, match="enabled"):
        memory._record_memory_history(enabled="sometimes")
    with pytest.raises(ValueError, match="context"):
        memory._record_memory_history(context="everything")
