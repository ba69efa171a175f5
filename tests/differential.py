"""The differential oracle the kernel tests share: run on CPU, run on tpu copies, compare.

``check`` compares what an op returns *and* what it leaves in its tensor arguments, so in-place
ops, ``out=`` and foreach lists are checked by the same call as functional ops. ``check_grads``
adds the input gradients of a random projection of the outputs.
"""

import pytest
import torch
from torch.testing import assert_close
from torch.utils._pytree import tree_leaves, tree_map


def _copy(value, device):
    """An independent copy of a tensor on ``device`` (leaves stay leaves), anything else as it is."""
    if not isinstance(value, torch.Tensor):
        return value
    copy = value.detach().to(device, copy=True)
    return copy.requires_grad_(value.requires_grad) if value.is_leaf else copy


def to_tpu(value):
    """``value`` with every tensor in it (nested in lists, tuples and dicts) copied to tpu."""
    return tree_map(lambda v: _copy(v, "tpu"), value)


def to_cpu(value):
    return tree_map(lambda v: v.cpu() if isinstance(v, torch.Tensor) else v, value)


def compare(actual, expected, **tolerance):
    """tpu results (any nesting) are on tpu and close to the CPU ones, NaNs included, dtypes equal."""
    for got in tree_leaves(actual):
        if isinstance(got, torch.Tensor):
            assert got.device.type == "tpu", f"expected a tpu result, got one on {got.device}"
    assert_close(to_cpu(actual), expected, equal_nan=True, **tolerance)


def assert_identical(actual, expected):
    """Bit for bit: same values (NaNs too), dtype and shape, wherever each tensor lives."""
    assert_close(actual.cpu(), expected.cpu(), rtol=0, atol=0, equal_nan=True)


def check(fn, *args, atol=None, rtol=None, **kwargs):
    """``fn`` on tpu copies of the arguments agrees with ``fn`` on CPU copies, or both raise the same class.

    Agreement covers the results and every tensor argument afterwards (what in-place ops wrote).
    Returns the tpu results.
    """
    cpu_args, cpu_kwargs = tree_map(lambda v: _copy(v, "cpu"), (args, kwargs))
    tpu_args, tpu_kwargs = to_tpu((args, kwargs))
    try:
        expected = fn(*cpu_args, **cpu_kwargs)
    except Exception as cpu_error:  # noqa: BLE001 - the tpu must raise the same class
        with pytest.raises(type(cpu_error)):
            fn(*tpu_args, **tpu_kwargs)
        return None
    actual = fn(*tpu_args, **tpu_kwargs)
    compare(actual, expected, atol=atol, rtol=rtol)
    compare(_tensors_in((tpu_args, tpu_kwargs)), _tensors_in((cpu_args, cpu_kwargs)), atol=atol, rtol=rtol)
    return actual


def check_factory(factory, *args, atol=0, rtol=0, **kwargs):
    """``factory(..., device="tpu")`` equals the CPU result (bit for bit by default), or raises the same class."""
    try:
        expected = factory(*args, **kwargs)
    except Exception as cpu_error:  # noqa: BLE001 - the tpu must raise the same class
        with pytest.raises(type(cpu_error)):
            factory(*args, **kwargs, device="tpu")
        return None
    actual = factory(*args, **kwargs, device="tpu")
    compare(actual, expected, atol=atol, rtol=rtol)
    return actual


def _tensors_in(value):
    return [leaf for leaf in tree_leaves(value) if isinstance(leaf, torch.Tensor)]


def check_grads(fn, *inputs, atol=None, rtol=None, seed=1):
    """Outputs of ``fn`` and the gradients of a random projection of them (its real part), tpu against CPU.

    Floating tensor inputs become leaves that require grad; other arguments pass through. The
    random projection drives every backward kernel with a non-trivial incoming gradient. Returns
    the tpu outputs.
    """
    results = {}
    for device in ("cpu", "tpu"):
        leaves = [_leaf(x, device) for x in inputs]
        outputs = [o for o in tree_leaves(fn(*leaves)) if isinstance(o, torch.Tensor)]
        differentiable = [o for o in outputs if o.requires_grad]
        assert differentiable, "nothing to differentiate"
        generator = torch.Generator().manual_seed(seed)
        projections = [(o * torch.randn(o.shape, generator=generator, dtype=o.dtype).to(device)).sum()
                       for o in differentiable]
        loss = sum(p.real if p.is_complex() else p for p in projections)  # complex outputs: a real loss
        wanted = [x for x in leaves if isinstance(x, torch.Tensor) and x.requires_grad]
        grads = torch.autograd.grad(loss, wanted, allow_unused=True)
        results[device] = ([o.detach() for o in outputs], list(grads))
    compare(results["tpu"], results["cpu"], atol=atol, rtol=rtol)
    return results["tpu"][0]


def _leaf(value, device):
    if not isinstance(value, torch.Tensor):
        return value
    leaf = value.detach().to(device, copy=True)
    return leaf.requires_grad_(leaf.is_floating_point() or leaf.is_complex())


def make(*shape, dtype=torch.float32, generator=None):
    """Random values of ``dtype``: normal floats, small integers, fair booleans."""
    if dtype == torch.bool:
        return torch.rand(shape, generator=generator) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, generator=generator, dtype=dtype)
    if not dtype.is_floating_point:
        return torch.randint(-50, 50, shape, generator=generator).to(dtype)
    return torch.randn(shape, generator=generator).to(dtype)


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
