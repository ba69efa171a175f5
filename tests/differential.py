"""The differential oracle the kernel tests share: run on CPU, run on tpu copies, compare."""

import pytest
import torch
from torch.utils._pytree import tree_map


def to_tpu(value):
    return value.to("tpu") if isinstance(value, torch.Tensor) else value


def check(fn, *args, **kwargs):
    """fn on CPU args and on their tpu copies agree (values, dtype, shape), or both raise the same class."""
    try:
        expected = fn(*args, **kwargs)
    except Exception as cpu_error:
        with pytest.raises(type(cpu_error)):
            fn(*tree_map(to_tpu, args), **tree_map(to_tpu, kwargs))
        return
    actual = fn(*tree_map(to_tpu, args), **tree_map(to_tpu, kwargs))
    actual = tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, actual)
    torch.testing.assert_close(actual, expected, equal_nan=True)
    return actual


def make(*shape, dtype=torch.float32):
    if dtype == torch.bool:
        return torch.rand(shape) > 0.5
    if not dtype.is_floating_point:
        return torch.randint(-50, 50, shape, dtype=dtype)
    return torch.randn(shape).to(dtype)


def noncontiguous(*shape, dtype=torch.float32):
    """A transposed view with the given shape."""
    return make(*reversed(shape), dtype=dtype).permute(*reversed(range(len(shape))))


def check_same_error(call, on_cpu="cpu", on_tpu="tpu"):
    """``call(on_cpu)`` raises, and ``call(on_tpu)`` raises the same class with the same message."""
    with pytest.raises(Exception) as cpu_error:
        call(on_cpu)
    with pytest.raises(type(cpu_error.value)) as tpu_error:
        call(on_tpu)
    assert str(tpu_error.value) == str(cpu_error.value)
