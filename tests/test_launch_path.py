"""The short launch paths of the eager hot path agree with the general ones they stand in for.

Functional overloads of structured pointwise ops (``sigmoid``, ``gelu``, ``pow.Tensor_Scalar``, ...)
take a direct path for contiguous floating tpu operands of one shape and PyTorch's structured
wrapper otherwise: both must give CPU's values, dtypes and strides, charge the same bytes and
allocate exactly their result.
"""

import pytest
import torch
import torch.nn.functional as F

import torch_tpu
from differential import check, check_same_error, make, noncontiguous

clock = torch_tpu._C.current_chip().clock

CALLS = {
    "neg": torch.neg,
    "sigmoid": torch.sigmoid,
    "exp": torch.exp,
    "gelu": F.gelu,
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "pow_scalar": lambda x: torch.pow(x, 3),
    "maximum": lambda x: torch.maximum(x, x.flip(0)),
    "eq": lambda x: torch.eq(x, x.flip(0)),
    "silu_backward": lambda x: torch.ops.aten.silu_backward(x, x.flip(0)),
    "remainder_number": lambda x: torch.remainder(x, 2.5),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.int32])
@pytest.mark.parametrize("name", CALLS)
def test_direct_and_structured_paths_match_cpu(name, dtype):
    if dtype == torch.int32 and name in ("sigmoid", "exp", "gelu", "gelu_tanh", "silu_backward"):
        pytest.skip("a floating-only op: the int case is an error, checked below")
    fn = CALLS[name]
    check(fn, make(6, 5, dtype=dtype))  # the direct path for floats, the wrapper for int32
    check(fn, noncontiguous(6, 5, dtype=dtype))  # the wrapper: strided operands


def test_strided_operands_give_cpu_strides():
    x = noncontiguous(6, 5)
    assert torch.sigmoid(x.to("tpu")).stride() == torch.sigmoid(x).stride()


def test_broadcasting_and_cpu_scalars_take_the_structured_wrapper():
    check(torch.maximum, make(4, 1), make(1, 5))
    check(torch.atan2, make(4, 5), torch.tensor(0.5))
    check(torch.atan2, make(4, 5, dtype=torch.float64), make(4, 5, dtype=torch.float32))


@pytest.mark.parametrize("call", [
    lambda d: F.softshrink(torch.ones(3, device=d), -0.5),
    lambda d: torch.maximum(torch.ones(3, device=d), torch.ones(4, device=d)),
    lambda d: F.gelu(torch.ones(3, device=d), approximate="cubic"),
], ids=["softshrink_lambda", "shapes", "gelu_approximate"])
def test_errors_are_pytorchs_on_either_path(call):
    check_same_error(call)


def test_direct_path_charges_what_the_out_form_charges():
    x = torch.rand(1000, device="tpu")
    before = clock.op_totals.get("sigmoid", torch_tpu._C.clock.OpTotals()).copy()
    torch.sigmoid(x)
    functional = clock.op_totals["sigmoid"]
    assert functional.count == before.count + 1 and functional.bytes == before.bytes + 8000
    out_before = clock.op_totals.get("sigmoid.out", torch_tpu._C.clock.OpTotals()).copy()
    torch.sigmoid(x, out=torch.empty(1000, device="tpu"))
    assert clock.op_totals["sigmoid.out"].bytes == out_before.bytes + 8000


def test_direct_path_allocates_exactly_its_result():
    x = torch.rand(1000, device="tpu")
    torch.tpu.reset_peak_memory_stats()
    allocated = torch.tpu.memory_allocated()
    y = torch.exp(x)
    assert torch.tpu.memory_allocated() == allocated + 4000
    assert torch.tpu.max_memory_allocated() == allocated + 4000
    del y
    assert torch.tpu.memory_allocated() == allocated
