"""Scalar arguments (clamp bounds, alpha, thresholds, slopes, fill values) reach tpu kernels as CPU's kernels
read them: c10's checked conversion refuses a value out of the target type's range, hardtanh's legacy integer
rules, and the one-element fill that converts 16-bit floats unchecked. Each case against torch CPU."""

import pytest
import torch
import torch.nn.functional as F

from differential import check, check_same_error

aten = torch.ops.aten

# op -> a call taking (tensor, number); the number is put where CPU converts it with Scalar::to<T>()
SCALAR_CALLS = {
    "clamp_min": lambda x, v: torch.clamp(x, min=-v),
    "clamp_max": lambda x, v: torch.clamp(x, max=v),
    "clamp_inplace": lambda x, v: x.clone().clamp_(max=v),
    "clamp_min_op": lambda x, v: torch.clamp_min(x, v),
    "clamp_max_op": lambda x, v: torch.clamp_max(x, v),
    "hardtanh_min": lambda x, v: F.hardtanh(x, -v, 1),
    "hardtanh_max": lambda x, v: F.hardtanh(x, -1, v),
    "hardtanh_backward": lambda x, v: aten.hardtanh_backward(x, x, -1, v),
    "threshold_threshold": lambda x, v: torch.threshold(x, v, 1),
    "threshold_value": lambda x, v: torch.threshold(x, 1, v),
    "threshold_backward": lambda x, v: aten.threshold_backward(x, x, v),
    "add_alpha": lambda x, v: torch.add(x, x, alpha=v),
    "sub_alpha": lambda x, v: torch.sub(x, x, alpha=v),
    "rsub_alpha": lambda x, v: torch.rsub(x, x, alpha=v),
    "hardshrink": lambda x, v: F.hardshrink(x, v),
    "hardshrink_backward": lambda x, v: aten.hardshrink_backward(x, x, v),
    "softshrink_backward": lambda x, v: aten.softshrink_backward(x, x, v),
    "logit": lambda x, v: torch.logit(x, v),
    "elu": lambda x, v: F.elu(x, v),
    "elu_backward": lambda x, v: aten.elu_backward(x, v, 1, 1, False, x),
    "leaky_relu": lambda x, v: F.leaky_relu(x, v),
    "leaky_relu_backward": lambda x, v: aten.leaky_relu_backward(x, x, v, False),
    "softplus": lambda x, v: F.softplus(x, v),
    "softplus_backward": lambda x, v: aten.softplus_backward(x, x, v, 20),
    "addcmul": lambda x, v: torch.addcmul(x, x, x, value=v),
    "addcdiv": lambda x, v: torch.addcdiv(x, x, x + 1, value=v),
    "lerp": lambda x, v: torch.lerp(x, x, v),
    "pow": lambda x, v: torch.pow(x, v),
    "where": lambda x, v: torch.where(x > 0, x, v),
    "addmm_beta": lambda x, v: torch.addmm(x[:1].reshape(1, 1), x[:1].reshape(1, 1), x[1:2].reshape(1, 1), beta=v),
    "addmm_alpha": lambda x, v: torch.addmm(x[:1].reshape(1, 1), x[:1].reshape(1, 1), x[1:2].reshape(1, 1), alpha=v),
    "baddbmm_beta": lambda x, v: torch.baddbmm(x.reshape(1, 3, 1), x.reshape(1, 3, 1), x[:1].reshape(1, 1, 1), beta=v),
    "addbmm_alpha": lambda x, v: torch.addbmm(x.reshape(3, 1), x.reshape(1, 3, 1), x[:1].reshape(1, 1, 1), alpha=v),
    "addmv_beta": lambda x, v: torch.addmv(x, torch.diag(x), x, beta=v),
    "addr_alpha": lambda x, v: torch.addr(torch.diag(x), x, x, alpha=v),
    "addr_beta": lambda x, v: torch.addr(torch.diag(x), x, x, beta=v),
}
# (dtype, a number beyond its range, or beyond float32's only): where CPU refuses, tpu refuses in its words
NUMBERS = [(torch.float16, 1e6), (torch.bfloat16, 1e40), (torch.float32, 1e40), (torch.uint8, 300),
           (torch.int8, -200), (torch.float16, 60000.0)]


@pytest.mark.parametrize("call", SCALAR_CALLS.values(), ids=SCALAR_CALLS.keys())
@pytest.mark.parametrize("dtype, number", NUMBERS, ids=[f"{d}-{n}" for d, n in NUMBERS])
def test_scalars_out_of_range_are_refused_where_cpu_refuses_them(call, dtype, number):
    x = torch.tensor([0.0, 1.0, 5.0]).to(dtype)
    try:
        call(x, number)
    except Exception:  # noqa: BLE001 - tpu must raise the same error
        check_same_error(lambda device: call(x.to(device), number))
        return
    check(call, x, number)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int64])
@pytest.mark.parametrize("bounds", [(-1, 3), (-0.5, 2.7), (-5, -1), (0, 300), (-200, 300), (1e40, 2)])
def test_hardtanh_on_integers_truncates_its_bounds_and_refuses_negative_ones_for_uint8(dtype, bounds):
    """CPU's legacy rule: an integral tensor's bounds truncate to integers (-0.5 is 0), a uint8 one refuses a
    negative bound (it wrapped to 255 on tpu), and clamp then checks each bound against the dtype."""
    x = torch.tensor([0, 1, 2, 5, 100]).to(dtype)
    check(lambda t: F.hardtanh(t, *bounds), x)
    check(lambda t: F.hardtanh(t.clone(), *bounds, inplace=True), x)


@pytest.mark.parametrize("out_dtype", [torch.float64, torch.bfloat16, torch.complex64, torch.int64])
def test_hardtanh_out_takes_only_its_inputs_dtype_as_clamp_does(out_dtype):
    for x in (torch.tensor([-2.0, 0.5, 3.0]), torch.tensor([-2, 0, 3])):
        if x.dtype == out_dtype:
            continue
        check_same_error(lambda device: aten.hardtanh.out(x.to(device), -1, 1,
                                                           out=torch.empty(3, dtype=out_dtype, device=device)))


@pytest.mark.parametrize("x, bounds", [(torch.tensor([0, 1, 5], dtype=torch.uint8), (-1.5, 1.5)),
                                       (torch.tensor([True, False]), (-1, 1)), (torch.tensor([1j]), (-1, 1)),
                                       (torch.tensor([1, 2]), (-1, 2 ** 70))])
def test_hardtanh_out_checks_its_arguments_before_the_outs_dtype(x, bounds):
    check_same_error(lambda device: aten.hardtanh.out(x.to(device), *bounds,
                                                       out=torch.empty(x.shape, dtype=torch.float32, device=device)))


@pytest.mark.parametrize("grad_dtype", [torch.float64, torch.bfloat16])
def test_hardtanh_backward_writes_its_grad_input_out(grad_dtype):
    x = torch.tensor([-2.0, 0.5, 3.0])
    check(lambda g, t, out: aten.hardtanh_backward.grad_input(g, t, -1, 1, grad_input=out),
          x, x, torch.empty(3, dtype=grad_dtype))


def test_hardtanh_backward_refuses_integers_in_cpus_words():
    x = torch.tensor([-2, 0, 3])
    check_same_error(lambda device: aten.hardtanh_backward(x.to(device), x.to(device), -1, 1))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2,
                                   torch.float32, torch.uint8])
@pytest.mark.parametrize("number", [1e6, 1e40, -1e300, 300])
@pytest.mark.parametrize("shape", [(), (1,), (2,)])
def test_a_one_element_fill_converts_16_and_8_bit_floats_unchecked_as_cpu_does(dtype, number, shape):
    def fill(device):
        return torch.full(shape, number, dtype=dtype, device=device)

    try:
        expected = fill("cpu")
    except RuntimeError:
        check_same_error(fill)
        return
    bits = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[expected.element_size()]
    assert torch.equal(fill("tpu").cpu().view(bits), expected.view(bits))


FOREACH_SCALAR_CALLS = {
    "add_alpha": lambda xs, v: torch._foreach_add(xs, xs, alpha=v),
    "add__alpha": lambda xs, v: torch._foreach_add_([x.clone() for x in xs], xs, alpha=v),
    "clamp_min": lambda xs, v: torch._foreach_clamp_min(xs, v),
    "clamp_max_list": lambda xs, v: torch._foreach_clamp_max(xs, [v] * len(xs)),
    "maximum": lambda xs, v: torch._foreach_maximum(xs, v),
    "lerp": lambda xs, v: torch._foreach_lerp(xs, xs, v),
    "addcmul": lambda xs, v: torch._foreach_addcmul(xs, xs, xs, value=v),
    "addcdiv_list": lambda xs, v: torch._foreach_addcdiv(xs, xs, xs, [v] * len(xs)),
}


@pytest.mark.parametrize("call", FOREACH_SCALAR_CALLS.values(), ids=FOREACH_SCALAR_CALLS.keys())
@pytest.mark.parametrize("dtype, number", [(torch.float16, 1e6), (torch.bfloat16, 1e40), (torch.float32, 1e40),
                                           (torch.float16, 2.0)], ids=str)
def test_foreach_fast_path_checks_scalars_as_the_per_tensor_op_does(call, dtype, number):
    """The fast NumPy loop converts its numbers as CPU's per-tensor ops do: checked, refused past the type's range."""
    tensors = [torch.tensor([1.0, 2.0]).to(dtype), torch.tensor([3.0]).to(dtype)]
    try:
        expected = call(tensors, number)
    except RuntimeError:
        check_same_error(lambda device: call([t.to(device) for t in tensors], number))
        return
    actual = call([t.to("tpu") for t in tensors], number)
    assert all(torch.equal(a.cpu(), e) for a, e in zip(actual, expected))


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("dtype, number", [(torch.float16, 1e6), (torch.float16, -7e4), (torch.bfloat16, 3.3999e38)])
def test_a_number_past_a_16_bit_range_becomes_inf_without_numpys_warning(dtype, number):
    check(lambda x: torch.add(x, number), torch.ones(3, dtype=dtype))
