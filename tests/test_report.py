"""The step report (torch_tpu.report(), prof.report()) and python -m torch_tpu.smi."""

import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

import torch_tpu
from torch_tpu import _C, smi
from torch_tpu.profiler import profile

report = importlib.import_module("torch_tpu.report")  # torch_tpu.report is the function

chip = _C.current_chip()


def test_profiled_report_numbers():
    a = torch.ones(1024, 1024, dtype=torch.bfloat16, device="tpu")
    with profile() as prof:
        for _ in range(3):
            b = a @ a
            prof.step()
        big = torch.empty(1 << 20, device="tpu")  # 4 MiB more at the peak
        del big
    result = prof.report()
    flops = 3 * 2 * 1024**3
    seconds = 3 * (max(flops / 3 / 2307e12, 3 * 2 * 1024**2 / 7.38e12) + 1e-6)
    assert result.device_seconds == pytest.approx(seconds)
    assert result.flops == flops and result.steps == 3
    assert result.mfu == pytest.approx(flops / (seconds * 2307e12))
    assert result.step_seconds == pytest.approx(seconds / 3)
    assert result.hbm_peak >= (1 << 20) * 4 + 2 * 2 * 1024**2
    assert result.hbm_capacity == chip.hbm.capacity
    text = str(result)
    for expected in ("estimated device time", "MFU", "HBM peak", "of 192.00 GiB", "3 steps", "mm"):
        assert expected in text
    del b


def test_report_since_reset_counts_only_new_work():
    torch_tpu.report(reset=True)
    x = torch.ones(1 << 20, device="tpu")
    x + x
    result = torch_tpu.report()
    assert "since last reset" in str(result)
    names = {row.name: row.count for row in result.ops}
    assert names == {"fill_.Scalar": 1, "add.Tensor": 1}
    expected = (4 * (1 << 20) / 7.38e12 + 1e-6) + (12 * (1 << 20) / 7.38e12 + 1e-6)
    assert result.device_seconds == pytest.approx(expected)
    assert result.kernels == 2 and result.hbm_peak >= 8 * (1 << 20)


def test_report_is_exported():
    assert torch_tpu.report is report.report
    assert "process start" in str(report.report()) or "last reset" in str(report.report())


def test_chip_status_and_stale_files(tmp_path):
    publisher = report.Publisher(str(tmp_path))
    publisher.write()
    stale = tmp_path / "999999999.json"
    stale.write_text("{}")
    (status,) = smi.live_statuses(str(tmp_path))
    assert not stale.exists()
    assert status["pid"] == os.getpid() and status["chip"] == "ironwood"
    assert status["hbm_used"] == torch.tpu.memory_allocated()
    assert status["kernels_run"] == chip.clock.kernels_run
    assert str(os.getpid()) in smi.format_table([status])
    publisher.remove()
    assert smi.live_statuses(str(tmp_path)) == []


def test_smi_lists_live_processes(tmp_path):
    publisher = report.Publisher(str(tmp_path))
    publisher.write()
    env = {**os.environ, "TORCH_TPU_RUNTIME_DIR": str(tmp_path)}
    listed = subprocess.run([sys.executable, "-m", "torch_tpu.smi", "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    assert [s["pid"] for s in json.loads(listed.stdout)] == [os.getpid()]
    publisher.remove()
    assert "No running torch_tpu processes" in smi.format_table(smi.live_statuses(str(tmp_path)))
