"""torch_tpu.profiler: Chrome trace of a training step, the roofline table, plot_memory."""

import collections
import json
import sys

import expecttest
import pytest
import torch
import torch.nn.functional as F

import torch_tpu
from torch_tpu import _C
from torch_tpu.profiler import profile

clock = _C.current_chip().clock


def mlp_training_step():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).to("tpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    inputs, labels = torch.randn(8, 16, device="tpu"), torch.randint(0, 4, (8,), device="tpu")

    def step():
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def test_trace_has_every_kernel_of_a_training_step(tmp_path):
    step = mlp_training_step()
    step()  # creates the optimizer state outside the profile
    kernels_before = clock.kernels_run
    with profile() as prof:
        step()
        prof.step()
    launched = clock.kernels_run - kernels_before
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    device = [e for e in events if e["ph"] == "X" and e["cat"] == "kernel"]
    host = [e for e in events if e["ph"] == "X" and e["cat"] == "cpu_op"]
    assert len(device) == len(host) == len(prof.records) == launched > 0
    names = collections.Counter(e["name"] for e in device)
    # nn.Linear is one fused launch each way (ops/product_nodes.py), not addmm, t and mm
    for expected in ("linear", "linear_backward", "threshold_backward.grad_input", "_foreach_add_.List"):
        assert any(name.startswith(expected.split(".")[0]) for name in names), (expected, names)
    assert names == collections.Counter(r.cost.name for r in prof.records)
    for event in events:
        assert {"ph", "pid", "tid", "name"} <= event.keys()
    for event in device + host:
        assert event["ts"] >= 0 and event["dur"] > 0
    # kernels on one stream run back to back on the simulated clock, starting at 0
    starts = sorted((e["ts"], e["dur"]) for e in device)
    assert starts[0][0] == 0
    for (ts, dur), (next_ts, _) in zip(starts, starts[1:]):
        assert next_ts == pytest.approx(ts + dur, abs=1e-5)
    assert sum(e["dur"] for e in device) == pytest.approx(prof.device_seconds * 1e6)
    mm = next(e for e in device if e["name"] == "linear")
    assert mm["args"]["mxu_flops"] == 2 * 8 * 16 * 32 and mm["args"]["dtypes"] == ["float32"] * 3
    assert mm["args"]["shapes"] == [[8, 16], [32, 16], [32]]  # input, weight, bias
    metadata = {(e["pid"], e["tid"], e["args"]["name"]) for e in events if e["ph"] == "M" and e["name"].endswith("_name")}
    assert any("simulated" in name for _, _, name in metadata)
    assert (0, 0, "stream 0") in metadata
    assert any(e["ph"] == "C" and e["pid"] == 0 for e in events)  # HBM counter on the device clock
    assert any(e["ph"] == "i" for e in events)  # the step mark


def test_trace_has_a_track_per_stream(tmp_path):
    side = torch.tpu.Stream()
    x = torch.ones(64, device="tpu")
    with profile() as prof:
        x + 1
        with torch.tpu.stream(side):
            x * 2
    trace = torch_tpu.profiler.chrome_trace(prof)
    tracks = {(e["tid"], e["name"]) for e in trace["traceEvents"] if e.get("cat") == "kernel"}
    assert tracks == {(0, "add.Tensor"), (side.stream_id, "mul.Tensor")}
    json.dumps(trace)


class TestTable(expecttest.TestCase):
    def test_key_averages_table_ranks_ops_by_device_time(self):
        a = torch.ones(1024, 1024, dtype=torch.bfloat16, device="tpu")
        v = torch.ones(1 << 20, device="tpu")
        with profile() as prof:
            for _ in range(2):
                a @ a
            v + v
            v.sum()
        table = prof.key_averages().table(sort_by="device_time_total", row_limit=10)
        self.assertExpectedInline(table, """\
---------------------------------------------------------------------------------------------------------------------------------------------
Name                                Calls  Device total  Device %  Device avg     MXU FLOPs    HBM bytes   FLOP/B  Ridge  % roofline    Bound
---------------------------------------------------------------------------------------------------------------------------------------------
mm                                      2       3.862us     47.5%     1.931us    4.29 GFLOP    12.00 MiB    341.3    313       48.2%  compute
add.Tensor                              1       2.705us     33.3%     2.705us             -    12.00 MiB        -      -       63.0%   memory
sum.dim_IntList                         1       1.568us     19.3%     1.568us             -     4.00 MiB        -      -       36.2%   memory
---------------------------------------------------------------------------------------------------------------------------------------------
""")

    def test_row_limit_and_sort_keys(self):
        v = torch.ones(1000, device="tpu")
        with profile() as prof:
            v + v
            v * v
            v * v
        rows = prof.key_averages()
        assert {r.name: r.count for r in rows} == {"add.Tensor": 1, "mul.Tensor": 2}
        table = rows.table(sort_by="count", row_limit=1)
        assert "mul.Tensor" in table and "add.Tensor" not in table
        with pytest.raises(ValueError, match="sort_by"):
            rows.table(sort_by="nonsense")
        by_shape = prof.key_averages(group_by_input_shape=True)
        assert [r.name for r in by_shape if r.name.startswith("add")] == ["add.Tensor [(1000,), (1000,)]"]


def test_bound_mark_follows_the_ridge_point():
    small = torch.ones(64, 64, dtype=torch.bfloat16, device="tpu")
    big = torch.empty(2048, 2048, dtype=torch.bfloat16, device="tpu")
    with profile() as prof:
        small @ small
    (row,) = prof.key_averages()
    assert row.intensity == pytest.approx(2 * 64**3 / (3 * 64 * 64 * 2)) and row.bound == "memory"
    assert row.ridge_point == pytest.approx(2307e12 / 7380e9)
    with profile() as prof:
        big @ big
    (row,) = prof.key_averages()
    assert row.intensity > row.ridge_point and row.bound == "compute"
    compute = 2 * 2048**3 / 2307e12
    assert row.roofline_fraction == pytest.approx(compute / (compute + 1e-6))


def test_plot_memory_without_matplotlib_names_the_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        torch_tpu.profiler.plot_memory(str(tmp_path / "hbm.png"))


def test_plot_memory_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    torch.ones(1000, device="tpu")
    path = tmp_path / "hbm.png"
    torch_tpu.profiler.plot_memory(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_profiles_nest_and_stop_recording():
    x = torch.ones(8, device="tpu")
    with profile() as outer:
        x + 1
        with profile() as inner:
            x * 2
    x - 1
    assert [r.cost.name for r in outer.records] == ["add.Tensor", "mul.Tensor"]
    assert [r.cost.name for r in inner.records] == ["mul.Tensor"]
    assert clock.recorders == []
