"""Abstract mode against PyTorch's OpInfo samples: every output's shape, dtype and strides as on the CPU.

Each sample runs on the CPU and, in abstract mode, on tpu (its inputs copied with their values first,
as tests/opinfo_support.py does). Either both give outputs with the same metadata (and so do the
gradients), or both raise errors of the same class, or abstract mode raises NoValuesError for an op
whose output depends on values it does not have. The default run takes the representative ops of
tests/opinfo_support.py; ``-m opinfo_full`` takes every op (1217 (op, kind) cases, of which the
21 in ``EXPECTED_FAILURES`` fail, each for the reason given there).
"""

import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.utils._pytree import tree_flatten

import opinfo_support as support
import torch_tpu
from torch_tpu._errors import NoValuesError

# Outputs that need values: their shape depends on them, or they are Python numbers
NEEDS_VALUES = (NoValuesError,)
DEFAULT_SAMPLES = 4  # per op and kind in the default run; the full sweep takes every sample


def _significant_strides(tensor):
    """Strides that decide the layout: those of dimensions longer than 1, in a tensor with elements."""
    if tensor.layout != torch.strided or not tensor.numel():
        return None
    return tuple(stride for size, stride in zip(tensor.shape, tensor.stride()) if size > 1)


def _metadata(result):
    return [(tuple(t.shape), t.dtype, _significant_strides(t)) for t in tree_flatten(result)[0]
            if isinstance(t, torch.Tensor)]


def _abstract_outcome(op, sample, kind, cpu_side=frozenset()):
    tpu_sample = support.sample_to_tpu(sample, cpu_side)
    if not support._touches_tpu(tpu_sample):
        return None

    def on_cpu():
        result = support._call(op, sample)
        return support._input_grads(op, sample, lambda outs: [torch.ones_like(o) for o in outs]) \
            if kind == support.GRAD else result

    def on_tpu():
        with torch_tpu.abstract():
            result = support._call(op, tpu_sample)
            return support._input_grads(op, tpu_sample, lambda outs: [torch.ones_like(o) for o in outs]) \
                if kind == support.GRAD else result

    try:
        expected = on_cpu()
    except Exception as cpu_error:
        try:
            on_tpu()
        except NEEDS_VALUES:
            return None
        except Exception as tpu_error:
            return None if isinstance(tpu_error, type(cpu_error)) else f"{support.first_line(tpu_error)} (CPU: {support.first_line(cpu_error)})"
        return f"tpu did not raise; CPU raised {support.first_line(cpu_error)}"
    if expected is support.SKIPPED:
        return None
    try:
        actual = on_tpu()
    except NEEDS_VALUES:
        return None
    except Exception as error:
        return support.first_line(error)
    if any(isinstance(t, torch.Tensor) and t.device.type != "tpu" for t in tree_flatten(actual)[0]):
        return "an output is not on tpu"
    if _metadata(actual) != _metadata(expected):
        return f"metadata {_metadata(actual)} != CPU's {_metadata(expected)}"
    return None


def _failures(op, dtype, kind, samples=None):
    generated = list(op.sample_inputs("cpu", dtype, requires_grad=kind == support.GRAD))[:samples]
    failures = []
    for sample, cpu_side in zip(generated, support.cpu_side_leaves(op, dtype, kind, generated)):
        reason = _abstract_outcome(op, sample, kind, cpu_side)
        if reason is not None:
            failures.append(reason)
    return failures


NO_TPU_KERNEL = "no tpu kernel in eager mode either (sparse layouts)"
NO_META = "PyTorch has no Meta kernel for it and abstract mode no rule: NotImplementedError naming the op"
META_LAYOUT = "Meta lays the result out differently from the CPU (same shape, dtype and bytes)"
# (op, kind) -> why the full sweep fails it; strict, so a fix shows up as an unexpected pass
EXPECTED_FAILURES = {
    **{(name, kind): NO_TPU_KERNEL for name in ("sparse.sampled_addmm", "sparse.mm.reduce")
       for kind in (support.FORWARD, support.GRAD)},
    **{(name, support.FORWARD): NO_META for name in ("geqrf", "histogram", "histogramdd")},
    **{(name, support.FORWARD): META_LAYOUT for name in (
        "svd", "linalg.svd", "linalg.eig", "linalg.eigh", "nonzero_static", "fft.hfft2", "fft.hfftn", "fft.rfft2",
        "fft.rfftn", "nn.functional.max_unpool2d", "nn.functional.max_unpool2d.grad")},
    **{(name, support.GRAD): META_LAYOUT for name in (
        "fft.irfft2", "fft.irfftn", "nn.functional.scaled_dot_product_attention")},
}


def _cases(ops, expected=None):
    cases = []
    for op in ops:
        for kind, dtype in support.kinds_and_dtypes(op, (torch.float32,)):
            why = (expected or {}).get((op.full_name, kind))
            marks = [pytest.mark.xfail(reason=why, strict=True)] if why else []
            cases.append(pytest.param(op, kind, id=f"{op.full_name}-{kind}", marks=marks))
    return cases


@pytest.mark.parametrize("op, kind", _cases(support.fast_ops()))
def test_abstract_metadata_matches_cpu(op, kind):
    assert _failures(op, torch.float32, kind, samples=DEFAULT_SAMPLES) == []


@pytest.mark.opinfo_full
@pytest.mark.parametrize("op, kind", _cases(op_db, EXPECTED_FAILURES))
def test_abstract_metadata_matches_cpu_full(op, kind):
    assert _failures(op, torch.float32, kind) == []
