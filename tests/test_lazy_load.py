"""``import torch`` loads only torch_tpu's registration; the kernels load on first tpu use, whichever it is.

Each check runs in a fresh interpreter, since what matters is what the first use finds. Nothing is
timed here (benchmarks/autoload.py measures the import cost): the tests check which modules are
loaded, which is what the cost comes from.
"""

import pickle

import pytest
import torch

from conftest import finish_python, run_python, start_python

# Loaded by the first tpu use, never by `import torch`: the kernels and what they import.
HEAVY = ("ml_dtypes", "scipy", "torch_tpu.ops", "torch_tpu._tensor", "torch_tpu._C.dtypes", "torch_tpu._abstract_launch")
REPORT_HEAVY = f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"


def test_import_torch_registers_the_device_but_loads_no_kernels(tmp_path):
    out = run_python(f"""
        import sys, torch
        {REPORT_HEAVY}
        print(torch._C._get_privateuse1_backend_name(), torch.tpu.is_available(), torch.tpu.device_count())
        from torch_tpu import _C
        with torch.profiler.profile() as prof:  # profiles the tpu by default, yet creates no chip
            torch.ones(2) + 1
        torch.manual_seed(1234)  # waits for the chip, as CUDA's seed waits for CUDA
        print(_C.chip.created(), torch.tpu.is_initialized())
        {REPORT_HEAVY}
        print(torch.tpu.memory_allocated(), torch.tpu.initial_seed(), torch.tpu.is_initialized())
        {REPORT_HEAVY}
        x = torch.ones(3, device="tpu")
        {REPORT_HEAVY}
        print(x.tolist(), torch.tpu.memory_allocated())
    """, env={"TORCH_TPU_RUNTIME_DIR": str(tmp_path)}).stdout.splitlines()
    assert out == [
        "[]", "tpu True 1", "False False", "[]", "0 1234 True", "[]", str(sorted(HEAVY)), "[1.0, 1.0, 1.0] 12",
    ]


def test_a_torch_program_that_never_uses_the_tpu_publishes_no_chip_status(tmp_path):
    run_python("import torch; torch.ones(3).sum()", env={"TORCH_TPU_RUNTIME_DIR": str(tmp_path)})
    assert list(tmp_path.iterdir()) == []


ARANGE_ON_TPU = pickle.dumps(torch.arange(4.0, device="tpu"))

FIRST_USES = {
    "factory": ("torch.ones(4, device='tpu') * 2", "[2.0, 2.0, 2.0, 2.0]"),
    "to": ("torch.arange(4.).to('tpu') + 0", "[0.0, 1.0, 2.0, 3.0]"),
    "aten op, no factory (the boxed fallback loads the kernels)":
        ("torch.ops.aten.add.Tensor(torch.ops.aten.full.default([4], 1.5, device='tpu'), 1)", "[2.5, 2.5, 2.5, 2.5]"),
    "untyped storage": ("torch.UntypedStorage(4, device='tpu').fill_(7)", "[7, 7, 7, 7]"),
    "unpickling": (f"pickle.loads({ARANGE_ON_TPU!r})", "[0.0, 1.0, 2.0, 3.0]"),
    "torch.load(map_location='tpu')":
        ("(lambda b: (torch.save(torch.arange(4.), b), b.seek(0), torch.load(b, map_location='tpu'))[2])(io.BytesIO())",
         "[0.0, 1.0, 2.0, 3.0]"),
    "autocast": ("(lambda c: c.__enter__() and torch.eye(2, device='tpu') @ torch.eye(2, device='tpu'))"
                 "(torch.autocast('tpu')).dtype", "torch.bfloat16"),
}


@pytest.fixture(scope="module")
def first_use_processes():
    """One fresh interpreter per first use, all started at once (they spend their time importing)."""
    return {name: start_python(f"""
        import io, pickle, sys, torch
        result = {expression}
        print(result.tolist() if hasattr(result, 'tolist') else result)
        print(result.device if isinstance(result, torch.Tensor) else 'tpu:0')
        {REPORT_HEAVY}
    """) for name, (expression, _) in FIRST_USES.items()}


@pytest.mark.parametrize("first_use", FIRST_USES, ids=list(FIRST_USES))
def test_every_first_use_loads_the_kernels(first_use, first_use_processes):
    out = finish_python(first_use_processes[first_use]).stdout.splitlines()
    assert out == [FIRST_USES[first_use][1], "tpu:0", str(sorted(HEAVY))]


def test_import_torch_tpu_with_autoload_off():
    out = run_python(f"""
        import sys, torch
        print('torch_tpu' in sys.modules, hasattr(torch, 'tpu'))
        import torch_tpu
        {REPORT_HEAVY}
        print(torch.ones(2, device='tpu'), torch_tpu.fallback_counts())
    """, env={"TORCH_DEVICE_BACKEND_AUTOLOAD": "0"}).stdout.splitlines()
    assert out == ["False False", "[]", "tensor([1., 1.], device='tpu:0') {}"]


def test_submodules_load_when_first_named():
    out = run_python("""
        import sys, torch, torch_tpu
        print('torch_tpu.fp8' in sys.modules, torch_tpu.fp8.E4M3, 'torch_tpu.fp8' in sys.modules)
        print(hasattr(torch_tpu, 'no_such_module'))
    """).stdout.splitlines()
    assert out == ["False torch.float8_e4m3fn True", "False"]


def test_the_compile_backend_loads_only_when_torch_compile_calls_it():
    out = run_python("""
        import sys, torch
        x = torch.ones(3, device="tpu") + 1
        compile_modules = ("torch._dynamo", "torch._inductor", "torch_tpu.compile.pipeline")
        print([m for m in compile_modules if m in sys.modules], "torch_tpu.compile.registration" in sys.modules)
        print(torch.compile(lambda x: x * 2, backend="tpu")(x).tolist(), "torch_tpu.compile.pipeline" in sys.modules)
    """).stdout.splitlines()
    assert out == ["[] True", "[4.0, 4.0, 4.0] True"]
