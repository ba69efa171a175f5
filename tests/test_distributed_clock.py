"""Collectives on the simulated clock: their own stream, overlap with compute, the trace and the report."""

import json

import pytest
import torch

from torch_tpu import _C
from torch_tpu._C.clock import CollectiveCost
from torch_tpu.profiler import profile

chip = _C.current_chip()
MM_SECONDS = 2 * 1024**3 / 2307e12 + 1e-6  # a 1024^3 bf16 matmul: compute-bound, plus the launch


def _collective(seconds, name="all_reduce"):
    return CollectiveCost(name, ici_bytes=1 << 20, seconds=seconds, axes=("x:4 ring",), algorithm="test ring",
                          group="test")


def test_a_collective_overlaps_compute_until_waited_for(tmp_path):
    clock = chip.clock
    stream = clock.collective_stream("ICI test group")
    a = torch.ones(1024, 1024, dtype=torch.bfloat16, device="tpu")
    communication = 5 * MM_SECONDS
    with profile() as prof:
        a @ a
        start, end = clock.charge_collective(_collective(communication), stream, issued_on=0)
        a @ a  # runs while the collective is in flight
        clock.wait(0, end)  # what work.wait() does: the compute stream waits for the collective
        a @ a
    assert start == pytest.approx(prof.window.device_start + MM_SECONDS)  # issued after the first matmul
    assert end - start == pytest.approx(communication)
    assert prof.device_seconds == pytest.approx(MM_SECONDS + communication + MM_SECONDS)
    report = prof.report()
    assert report.ici_seconds == pytest.approx(communication)
    assert report.exposed_ici_seconds == pytest.approx(communication - MM_SECONDS)  # one matmul hid
    assert report.kernels == 3 and [row.name for row in report.ops] == ["mm"]
    assert report.ici_share == pytest.approx((communication - MM_SECONDS) / prof.device_seconds)
    text = str(report)
    assert "Collectives over the ICI" in text and "all_reduce [test]" in text and "exposed" in text

    prof.export_chrome_trace(tmp_path / "trace.json")
    events = json.loads((tmp_path / "trace.json").read_text())["traceEvents"]
    (collective,) = [e for e in events if e.get("cat") == "collective"]
    assert collective["tid"] == stream and collective["dur"] == pytest.approx(communication * 1e6)
    assert collective["args"]["axes"] == ["x:4 ring"] and collective["args"]["bytes"] == 1 << 20
    assert collective["args"]["algorithm"] == "test ring"
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name" and e["pid"] == 0}
    assert names[stream] == "ICI test group"


def test_collectives_on_one_stream_run_one_after_another():
    clock = chip.clock
    stream = clock.collective_stream("ICI serial")
    clock.synchronize()
    first = clock.charge_collective(_collective(1e-3), stream, issued_on=0)
    second = clock.charge_collective(_collective(2e-3), stream, issued_on=0)
    assert second[0] == pytest.approx(first[1]) and second[1] == pytest.approx(first[1] + 2e-3)
    assert clock.now(0) == pytest.approx(first[0])  # the compute stream did not move
    clock.synchronize()
    assert clock.now(0) == pytest.approx(second[1])  # the host waits for every stream, ICI included


def test_running_report_counts_ici_time():
    import torch_tpu

    clock = chip.clock
    stream = clock.collective_stream("ICI report")
    torch_tpu.report(reset=True)
    clock.charge_collective(_collective(3e-3, name="all_gather"), stream, issued_on=0)
    result = torch_tpu.report()
    assert result.ici_seconds == pytest.approx(3e-3)
    assert result.collectives["all_gather [test]"].count == 1
    assert result.exposed_ici_seconds is None
