"""Shared fixtures: HBM accounting baselines and fresh Python processes.

Anything that must be decided at import time (autoload, chip selection, HBM size)
or that measures the whole process (RSS, golden memory summaries) runs in a
subprocess, so each test sees a clean chip.
"""

import gc
import inspect
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import torch_tpu  # noqa: F401  (explicit, in case autoload is off in the parent environment)

# The reference models (examples/models.py) are shared by the examples, benchmarks and tests.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "examples"))

SUBPROCESS_TIMEOUT = 120


class MemoryBaseline:
    """``memory_allocated()`` at the start of a test; ``delta()`` is what the test added since."""

    def __init__(self):
        gc.collect()
        self.bytes = torch.tpu.memory_allocated()

    def delta(self):
        gc.collect()
        return torch.tpu.memory_allocated() - self.bytes


@pytest.fixture
def paused_collector():
    """Garbage cycles left by earlier tests (tracebacks, compiled frames) hold tpu tensors; the cyclic
    collector would free them at whatever moment it runs, moving ``memory_allocated`` under a test
    that measures it. Collect them first and keep the collector off for the test."""
    gc.collect()
    gc.disable()
    yield
    gc.enable()


def pytest_collection_modifyitems(items):
    """A test that reads ``memory_allocated`` compares it across calls: it gets ``paused_collector``, so that an
    earlier test's garbage cycles are freed before it starts and not in the middle of a measured call."""
    reads_memory = {}
    for item in items:
        function = getattr(item, "function", None)
        if function is None or "paused_collector" in item.fixturenames:
            continue
        if function not in reads_memory:
            try:
                reads_memory[function] = "memory_allocated" in inspect.getsource(function)
            except (OSError, TypeError):
                reads_memory[function] = False
        if reads_memory[function]:
            item.fixturenames.insert(0, "paused_collector")


@pytest.fixture
def memory_baseline(paused_collector):
    baseline = MemoryBaseline()
    yield baseline
    assert baseline.delta() == 0, "the test leaked HBM: memory_allocated did not return to its baseline"


def start_python(code, env=None):
    """Start ``code`` in a fresh interpreter with extra environment variables; ``finish_python`` waits for it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TORCH_TPU_")}
    environment.update(env or {})
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_python(process, check=True):
    """Wait for a process from ``start_python``; returns it completed, with its output."""
    stdout, stderr = process.communicate(timeout=SUBPROCESS_TIMEOUT)
    if check and process.returncode != 0:
        raise AssertionError(f"subprocess failed ({process.returncode}):\n{stdout}\n{stderr}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_python(code, env=None, check=True):
    """Run ``code`` in a fresh interpreter with extra environment variables; returns the completed process."""
    return finish_python(start_python(code, env), check)


@pytest.fixture
def python_subprocess():
    return run_python


@pytest.fixture
def seeded():
    """torch's global RNG at seed 0, for tests that draw their inputs from it."""
    torch.manual_seed(0)


@pytest.fixture
def fresh_dynamo():
    """Dynamo's caches and torch_tpu's program records emptied around a compile test."""
    from torch_tpu.compile import debug

    torch._dynamo.reset()
    debug.clear()
    yield
    torch._dynamo.reset()
