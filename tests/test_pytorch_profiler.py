"""PyTorch's own profilers on tpu: clean runs, and the simulated chip in their tables and traces.

Ported from OpenReg's test_profiler (``torch.autograd.profiler.profile(use_device=...)``) and extended
to ``torch.profiler.profile``: both must run without C++ errors, report no negative times, print
tables and export Chrome traces. The device times they report are the simulated kernel times,
checked against the roofline formula.
"""

import json

import pytest
import torch
from torch.autograd.profiler import profile as autograd_profile
from torch.profiler import ProfilerActivity, record_function

from conftest import run_python
from torch_tpu._C.clock import LAUNCH_OVERHEAD_SECONDS

STUB_ERROR = "PrivateUse1 used in profiler but not enabled"


def memory_bound_us(nbytes):
    return (nbytes / torch.tpu.get_device_properties().hbm_bandwidth + LAUNCH_OVERHEAD_SECONDS) * 1e6


def pytorch_profile():
    return torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.PrivateUse1], record_shapes=True)


PROFILERS = {"torch.autograd.profiler": lambda: autograd_profile(use_device="tpu", record_shapes=True),
             "torch.profiler": pytorch_profile}


def events_of(prof):
    return prof.function_events if isinstance(prof, autograd_profile) else prof.events()


@pytest.mark.parametrize("make", PROFILERS.values(), ids=list(PROFILERS))
def test_device_time_of_an_op_is_its_simulated_kernel_time(make, capfd):
    x = torch.ones(1 << 20, device="tpu")
    with make() as prof:
        with record_function("my_block"):
            y = x * 2
    assert STUB_ERROR not in capfd.readouterr().err  # no C++ error logged per op
    events = events_of(prof)
    (mul,) = [e for e in events if e.name == "aten::mul"]
    expected = memory_bound_us(x.nbytes + y.nbytes)
    assert mul.device_time_total == pytest.approx(expected, rel=1e-9)
    assert mul.self_device_time_total == pytest.approx(expected, rel=1e-9)
    (kernel,) = [e for e in events if e.device_type == torch._C._autograd.DeviceType.PrivateUse1]
    assert kernel.name == "mul.Tensor" and kernel.device_time_total == pytest.approx(expected, rel=1e-9)
    assert kernel.linked_correlation_id == mul.id
    (block,) = [e for e in events if e.name == "my_block"]
    assert block.device_time_total == pytest.approx(expected, rel=1e-9)  # a parent counts its children's kernels
    for event in events:
        assert event.cpu_time_total >= 0 and event.self_cpu_time_total >= 0
        assert event.device_time_total >= 0 and event.self_device_time_total >= 0


def test_tables_show_simulated_tpu_time(capfd):
    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 10)).to("tpu")
    x = torch.randn(32, 10, device="tpu")
    with autograd_profile(use_device="tpu", record_shapes=True) as prof:
        for _ in range(3):
            model(x).sum().backward()
    assert STUB_ERROR not in capfd.readouterr().err
    table = prof.key_averages().table(sort_by="self_device_time_total", row_limit=20)
    assert "Self TPU" in table and "TPU total" in table and "Self TPU time total" in table
    averages = {a.key: a for a in prof.key_averages()}
    # nn.Linear is one fused launch each way (ops/product_nodes.py), under aten::linear
    assert averages["aten::linear"].count == 6 and averages["aten::linear"].self_device_time_total > 0
    kernels = [e for e in prof.function_events if e.device_type == torch._C._autograd.DeviceType.PrivateUse1]
    total = sum(e.device_time_total for e in kernels)
    ops_total = sum(e.self_device_time_total for e in prof.function_events
                    if e.device_type == torch._C._autograd.DeviceType.CPU)
    assert total == pytest.approx(ops_total, rel=1e-9) and total > 0  # every kernel found its op
    assert any("backward" in e.name.lower() and e.device_time_total > 0 for e in prof.function_events)
    assert prof.key_averages(group_by_input_shape=True).table(row_limit=5)


@pytest.mark.parametrize("make", PROFILERS.values(), ids=list(PROFILERS))
def test_kernels_find_their_ops_whatever_the_host_clock_says(make, monkeypatch, tmp_path):
    """Attribution reads Kineto's clock only: a host clock off by milliseconds (as a loaded host's calibration
    can be) still gives every kernel its op, in the tables and the trace, and leaves no marker behind."""
    import random
    import time

    import torch_tpu._cost as cost

    jitter = random.Random(0)
    monkeypatch.setattr(cost, "_perf_counter_ns", lambda: time.perf_counter_ns() + jitter.randrange(-10**7, 10**7))
    x = torch.ones(64, device="tpu")
    with make() as prof:
        for _ in range(5):
            (x * 2).sum()
    events = events_of(prof)
    kernels = [e for e in events if e.device_type == torch._C._autograd.DeviceType.PrivateUse1]
    ops = {e.id: e.name for e in events if e.device_type == torch._C._autograd.DeviceType.CPU}
    assert len(kernels) == 10 and not [e for e in events if "tpu kernel" in e.name]
    assert sorted(ops[k.linked_correlation_id] for k in kernels) == ["aten::mul"] * 5 + ["aten::sum"] * 5
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())["traceEvents"]
    ids = {e["args"]["External id"]: e["name"] for e in trace if e.get("cat") == "cpu_op"}
    lanes = [e for e in trace if e.get("cat") == "kernel" and e.get("pid") == 0]
    assert sorted(ids[k["args"]["External id"]] for k in lanes) == ["aten::mul"] * 5 + ["aten::sum"] * 5
    assert not [e for e in trace if "tpu kernel" in e.get("name", "")]


@pytest.mark.parametrize("make", PROFILERS.values(), ids=list(PROFILERS))
def test_chrome_trace_has_the_simulated_chip(make, tmp_path):
    side = torch.tpu.Stream()
    x = torch.ones(1 << 16, device="tpu")
    with make() as prof:
        x + 1
        with torch.tpu.stream(side):
            x * 3
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    trace = json.loads(path.read_text())
    events = trace["traceEvents"]
    kernels = [e for e in events if e.get("cat") == "kernel" and e.get("pid") == 0]
    assert {(k["name"], k["tid"]) for k in kernels} == {("add.Tensor", 0), ("mul.Tensor", side.stream_id)}
    for kernel in kernels:
        assert kernel["dur"] == pytest.approx(memory_bound_us(2 * x.nbytes), rel=1e-6) and kernel["ts"] > 0
        (op,) = [e for e in events if e.get("cat") == "cpu_op" and e["args"].get("External id") == kernel["args"]["External id"]]
        assert op["name"] == "aten::" + kernel["name"].split(".")[0]
    names = {e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("pid") == 0 and e["name"].endswith("_name")}
    assert any("simulated clock" in name for name in names) and f"stream {side.stream_id}" in names


def test_profile_memory_counts_each_allocation_in_its_own_blocks_only():
    """Sibling and nested blocks: each counts the bytes allocated within it, none those of a block before it."""
    x = torch.ones(1000, device="tpu")
    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.PrivateUse1],
                                profile_memory=True) as prof:
        kept = []
        for block in range(3):
            with record_function(f"outer{block}"):
                kept.append(x * 2)  # 4000 bytes
                with record_function(f"inner{block}"):
                    kept.append(torch.ones(block + 1, device="tpu"))  # 4 * (block + 1) bytes
    usage = {e.name: e.device_memory_usage for e in prof.events() if e.name.startswith(("outer", "inner"))}
    assert usage == {**{f"outer{b}": 4000 + 4 * (b + 1) for b in range(3)}, **{f"inner{b}": 4 * (b + 1) for b in range(3)}}


def test_profile_memory_counts_hbm_bytes_in_every_enclosing_op_as_cuda_does():
    """PyTorch's tables gain "TPU Mem" columns, as "CUDA Mem" with a CUDA allocator reporting to the profiler."""
    x = torch.ones(1000, device="tpu")
    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.PrivateUse1],
                                profile_memory=True) as prof:
        with record_function("my_block"):
            y = x * 2  # allocates 4000 bytes
            z = y.sum()  # 4 bytes, kept
            del y  # freed inside the block
    events = prof.events()
    (mul,) = [e for e in events if e.name == "aten::mul"]
    (total,) = [e for e in events if e.name == "aten::sum"]
    (block,) = [e for e in events if e.name == "my_block"]
    assert mul.device_memory_usage == mul.self_device_memory_usage == 4000
    assert total.device_memory_usage == z.nbytes
    assert block.device_memory_usage == z.nbytes and block.self_device_memory_usage == -4000
    assert not any(e.name.startswith("tpu memory #") for e in events)  # the markers are gone
    table = prof.key_averages().table(sort_by="self_device_memory_usage", row_limit=5)
    assert "Self TPU Mem" in table and "3.91 KB" in table
    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.PrivateUse1]) as plain:
        x * 2
    assert all(e.device_memory_usage == 0 for e in plain.events())  # without profile_memory: nothing counted
    kept = torch.tpu.memory_allocated()
    y = x * 2  # the allocator logs alone again once the profile has ended
    assert torch.tpu.memory_allocated() == kept + y.nbytes


def test_cpu_only_activities_add_no_device_time():
    x = torch.ones(16, device="tpu")
    with torch.profiler.profile(activities=[ProfilerActivity.CPU]) as prof:
        x + 1
    assert all(e.device_time_total == 0 for e in prof.events())
    assert not any(e.device_type == torch._C._autograd.DeviceType.PrivateUse1 for e in prof.events())


def test_empty_profiles_and_exceptions_inside_a_profile():
    with autograd_profile(use_device="tpu") as empty:
        pass
    assert isinstance(empty.function_events, list)
    with pytest.raises(ValueError, match="inside"):
        with autograd_profile(use_device="tpu") as prof:
            torch.ones(4, device="tpu") + 1
            raise ValueError("raised inside the profile")
    assert any(e.name == "aten::add" for e in prof.function_events)
    assert prof.key_averages().table()


def test_a_profile_started_before_the_chip_exists_sees_its_kernels():
    out = run_python("""
        import torch
        from torch_tpu import _C
        with torch.profiler.profile() as prof:
            print(_C.chip.created())
            x = torch.ones(1 << 10, device="tpu") + 1
        kernels = [e.name for e in prof.events() if e.device_type == torch._C._autograd.DeviceType.PrivateUse1]
        print(sorted(kernels))
    """).stdout.splitlines()
    assert out == ["False", "['add.Tensor', 'fill_.Scalar']"]
