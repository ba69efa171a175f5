"""CPU's AVX2/AVX512 kernels round a product and a sum once (an FMA) in add/sub with an alpha, addcmul's last
step and lerp; the tpu replays it (csrc_py/vpu.py ``fused_multiply_add``), per-tensor and foreach alike, so
optimizers that use them (SGD's ``add_(alpha=-lr)``, Adam's ``lerp_``/``addcmul_``) train bit for bit as on CPU."""

import itertools
import math

import pytest
import torch

import torch_tpu
from torch_tpu.ops import pointwise
from differential import to_tpu

pytestmark = pytest.mark.skipif(not pointwise.cpu_fuses_multiply_add(), reason="this CPU build rounds twice")

FLOATS = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _bits(t):
    t = torch.view_as_real(t) if t.is_complex() else t
    return t.contiguous().view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])


def assert_same_bits(actual, expected):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.equal(_bits(actual.cpu()), _bits(expected))


def _randn(*shape, dtype, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
def test_addcmul_and_lerp_round_as_cpu_does(dtype):
    x, a, b = (_randn(4099, dtype=dtype, seed=s) for s in range(3))
    weights = _randn(4099, dtype=dtype, seed=3) * 1.5
    tpu = [t.to("tpu") for t in (x, a, b, weights)]
    assert_same_bits(torch.addcmul(tpu[0], tpu[1], tpu[2], value=0.3), torch.addcmul(x, a, b, value=0.3))
    assert_same_bits(torch.addcmul(tpu[0], tpu[1], tpu[2]), torch.addcmul(x, a, b))
    for weight in (0.1, 0.7, -0.3, 1.2):
        assert_same_bits(torch.lerp(tpu[0], tpu[1], weight), torch.lerp(x, a, weight))
        assert_same_bits(torch._foreach_lerp([tpu[0]], [tpu[1]], weight)[0], torch.lerp(x, a, weight))
    assert_same_bits(torch.lerp(tpu[0], tpu[1], tpu[3]), torch.lerp(x, a, weights))
    assert_same_bits(torch._foreach_addcmul([tpu[0]], [tpu[1]], [tpu[2]], 0.3)[0], torch.addcmul(x, a, b, value=0.3))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("value", [1.0, -1.0, 0.5])
def test_signed_zeros_sum_as_on_cpu(dtype, value):
    """A zero result keeps the sign IEEE addition gives it (-0.0 * 1 + -0.0 is -0.0): float64's error-free steps
    lost it."""
    signs = torch.arange(4096)  # every sign combination, in vectors and in the scalar tail
    x, a, b = (torch.where(signs & bit > 0, -0.0, 0.0).to(dtype) for bit in (1, 2, 4))
    tpu = [t.to("tpu") for t in (x, a, b)]
    assert_same_bits(torch.addcmul(tpu[0], tpu[1], tpu[2], value=value), torch.addcmul(x, a, b, value=value))
    assert_same_bits(torch.add(tpu[0], tpu[1], alpha=value), torch.add(x, a, alpha=value))


@pytest.mark.parametrize("value", [1.0, -1.0])
def test_a_product_that_underflows_onto_a_zero_keeps_the_products_sign_as_on_cpu(value):
    """float64: a nonzero product too small for the format, added to a zero, is the product's signed zero (the FMA
    rounds the exact product); adding +0.0 to the rounded -0.0 gave +0.0. Zero factors keep IEEE addition's sign."""
    tiny, zero = [1e-170, -1e-170, 5e-324, -5e-324], [0.0, -0.0]
    x, a, b = (torch.tensor(column, dtype=torch.float64) for column in zip(*itertools.product(zero, tiny + zero, tiny)))
    assert_same_bits(torch.addcmul(*to_tpu((x, a, b)), value=value), torch.addcmul(x, a, b, value=value))
    assert_same_bits(torch.add(*to_tpu((x, a)), alpha=1e-170 * value), torch.add(x, a, alpha=1e-170 * value))


@pytest.mark.parametrize("size", [1, 2, 5])
def test_a_sum_of_two_nans_keeps_the_products_nan_as_cpu(size):
    """x86 makes inf - inf the negative NaN; CPU's FMA of two NaNs returns the product's, at every size."""
    negative_nan = torch.full((size,), math.inf) - math.inf
    positive_nan = torch.full((size,), math.nan)
    for a, b in [(negative_nan, positive_nan), (positive_nan, negative_nan)]:
        assert_same_bits(torch.add(*to_tpu((a, b)), alpha=2.0), torch.add(a, b, alpha=2.0))
        assert_same_bits(torch.addcmul(*to_tpu((b, a, a)), value=0.5), torch.addcmul(b, a, a, value=0.5))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_addcmul_with_value_one_keeps_cpus_nan_bits(dtype):
    """addcmul with value 1 (a compiled lerp's) skips scaling by 1; signalling and quiet NaNs with payloads, in
    either factor or the addend, come out with CPU's bits all the same."""
    integer = {torch.float32: torch.int32, torch.float64: torch.int64}[dtype]
    quiet = {torch.float32: 0x7FC00001, torch.float64: 0x7FF8000000000001}[dtype]
    signalling = {torch.float32: 0x7F800001, torch.float64: 0x7FF0000000000001}[dtype]
    nans = torch.tensor([quiet, signalling, signalling + 0x12345], dtype=integer).view(dtype)
    values = torch.cat([nans, -nans, torch.tensor([1.0, 0.0, -0.0, 2.5], dtype=dtype)])
    ones = torch.ones_like(values)
    for x, t1, t2 in [(ones, values, ones * 2), (values, ones, values.flip(0)), (ones * 0, values, values)]:
        assert_same_bits(torch.addcmul(*to_tpu((x, t1, t2)), value=1), torch.addcmul(x, t1, t2, value=1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_power_of_two_alpha_is_fused_where_its_product_overflows_or_underflows(dtype):
    info = torch.finfo(dtype)
    a = torch.tensor([-info.max, -info.tiny * 2 ** -23, 1.0], dtype=dtype)
    b = torch.tensor([info.max, 3 * info.tiny * 2 ** -23, 3.0], dtype=dtype)
    for alpha in (2, 0.5):
        assert_same_bits(torch.add(a.to("tpu"), b.to("tpu"), alpha=alpha), torch.add(a, b, alpha=alpha))


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD"])
@pytest.mark.parametrize("foreach", [False, True])
def test_optimizer_states_stay_bit_identical_to_cpu(name, foreach):
    cpu_param = _randn(4096, dtype=torch.float32, seed=0).requires_grad_()
    tpu_param = cpu_param.detach().to("tpu").requires_grad_()
    make = getattr(torch.optim, name)
    optimizers = [make([p], lr=1e-2, foreach=foreach) for p in (cpu_param, tpu_param)]
    for step in range(3):
        grad = _randn(4096, dtype=torch.float32, seed=10 + step)
        cpu_param.grad, tpu_param.grad = grad, grad.to("tpu")
        for optimizer in optimizers:
            optimizer.step()
    cpu_state, tpu_state = (o.state[p] for o, p in zip(optimizers, (cpu_param, tpu_param)))
    for key in ("exp_avg", "exp_avg_sq"):
        if key in cpu_state:
            assert_same_bits(tpu_state[key], cpu_state[key])
    if name == "SGD":  # Adam's parameters also go through sqrt, which CPU computes with another rounding
        assert_same_bits(tpu_param.detach(), cpu_param.detach())


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_sub_is_add_of_the_negated_alpha_as_on_cpu(dtype):
    """-0 + 0 is +0 where -0 - 0 is -0: CPU's sub adds ``-alpha * b``, so a zero part's sign follows that."""
    parts = (0.0, -0.0, 1.0, math.inf)
    values = torch.tensor([complex(re, im) for re in parts for im in parts], dtype=dtype)
    a, b = values[:, None].repeat(1, len(values)), values[None].repeat(len(values), 1)
    ta, tb = a.to("tpu"), b.to("tpu")
    assert_same_bits(ta - tb, a - b)
    assert_same_bits(torch.sub(ta, tb, alpha=2), torch.sub(a, b, alpha=2))
    assert_same_bits(torch.rsub(ta, tb), torch.rsub(a, b))
    assert_same_bits(torch._foreach_sub([ta], [tb], alpha=3)[0], torch.sub(a, b, alpha=3))


def test_foreach_numbers_past_the_range_become_inf_silently(recwarn):
    result = torch._foreach_add([torch.ones(3, device="tpu")], 1e300)[0]
    assert torch.equal(result.cpu(), torch._foreach_add([torch.ones(3)], 1e300)[0])
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def _double_rounding_hazards():
    """float32 ``c``, ``alpha`` and ``b`` whose exact ``c + alpha * b`` lies a hair off a float32 midpoint, so close
    that its float64 sum is the midpoint itself: ``alpha * b = h (1 - 2**-46)`` with ``h`` half of ``c``'s float32
    step. Normal sums of both signs, and sums in float32's subnormal range and at its bottom (``c`` = 0); ``alpha``
    carries 2**-40, so that ``b`` stays a normal float32 where ``h`` is below float32's range."""
    odd = 2**-23  # c's last bit set: ties to even then round away from the nearer side
    normal = torch.tensor([1 + odd, 1.0, -3 - 2 * odd, (1.5 + odd) * 2**100, (1.25 + odd) * 2**-120],
                          dtype=torch.float64)
    # float64 sums a subnormal's product exactly unless c spans enough bits: near float32's smallest normal
    subnormal = torch.tensor([2**-127 + 2**-149, 2**-126 - 2**-149, 2**-127, 3 * 2**-149, 0.0], dtype=torch.float64)
    c = torch.cat([normal, -normal, subnormal, -subnormal]).to(torch.float32)
    magnitude = c.double().abs()
    step = torch.where(magnitude < 2**-126, torch.full_like(magnitude, 2**-149),
                       2.0 ** (torch.frexp(magnitude).exponent - 24).double())
    alpha = 2**-40 * (1 + 2**-23)
    b = (step / 2 * (1 - 2**-23) * 2**40).to(torch.float32)
    assert torch.equal(b.double() * 2**-39 / step, torch.full_like(step, 1 - 2**-23))  # b is exact
    return c, alpha, torch.cat([b[: len(b) // 2], -b[len(b) // 2:]])


def test_sums_a_hair_off_a_float32_midpoint_round_as_cpus_fma():
    c, alpha, b = _double_rounding_hazards()
    expected = torch.add(c, b, alpha=alpha)
    assert not torch.equal(expected, (c.double() + alpha * b.double()).float())  # two roundings would differ
    assert_same_bits(torch.add(c.to("tpu"), b.to("tpu"), alpha=alpha), expected)
    in_place = c.to("tpu")
    in_place.add_(b.to("tpu"), alpha=alpha)  # the sum's operand is the output: read before it is written
    assert_same_bits(in_place, expected)
    a = torch.full_like(b, alpha)
    assert_same_bits(torch.addcmul(c.to("tpu"), a.to("tpu"), b.to("tpu")), torch.addcmul(c, a, b))


def test_a_nan_sum_does_not_hide_another_elements_subnormal_sum():
    """The doubt test screens for subnormal sums with the magnitudes' minimum, which a NaN element must not turn
    into NaN: in one tensor, and across the tensors a foreach list computes as one flat array."""
    c, alpha, b = _double_rounding_hazards()
    c, b = torch.cat([c, torch.tensor([math.nan])]), torch.cat([b, torch.tensor([1.0])])
    assert_same_bits(torch.add(c.to("tpu"), b.to("tpu"), alpha=alpha), torch.add(c, b, alpha=alpha))
    cs, bs = [c[:-1], c[-1:]], [b[:-1], b[-1:]]
    for actual, expected in zip(torch._foreach_add(to_tpu(cs), to_tpu(bs), alpha=alpha),
                                torch._foreach_add(cs, bs, alpha=alpha)):
        assert_same_bits(actual, expected)


def test_a_foreach_list_of_small_tensors_rounds_each_element_as_cpu():
    """Small tensors computed as one flat array, larger ones on their own, each element as CPU's fma gives it."""
    c, alpha, b = _double_rounding_hazards()
    sizes = [1, 7, 0, 9000, 3]
    cs = [c.repeat(n)[:n] if n else c[:0] for n in sizes] + [c.reshape(4, 5).t()]  # a strided one
    bs = [b.repeat(n)[:n] if n else b[:0] for n in sizes] + [b.reshape(4, 5).t()]
    cs[2] = c[:0]
    expected = [torch.add(x, y, alpha=alpha) for x, y in zip(cs, bs)]
    tpu = [x.to("tpu") for x in cs]
    torch._foreach_add_(tpu, [y.to("tpu") for y in bs], alpha=alpha)
    for actual, wanted in zip(tpu, expected):
        assert_same_bits(actual, wanted)


def test_a_float32_fused_multiply_add_holds_one_float64_array_at_a_time():
    """The float64 sum lands in the product's memory and the dropped bits in the magnitudes': apart from the
    float32 result and small masks, the FMA holds at most two float64 arrays of its size at once (four before:
    product, sum, magnitudes, bits), so an optimizer step's passes stay in cache; the bits are the tests above."""
    import tracemalloc

    import numpy as np

    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(65_536).astype(np.float32) for _ in range(3))
    c[:100] = -a[:100] * b[:100]  # exact zeros: the subnormal screen's branch runs too
    out = np.empty_like(c)
    tracemalloc.start()
    try:
        torch_tpu._C.vpu.fused_multiply_add(a, b, c, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2.5 * a.size * 8


def test_operands_that_broadcast_round_once_as_cpus_fma():
    """The float32 sum is made in the product's memory only when the sum's operand broadcasts to the product's shape
    (equal shapes, an optimizer's, are told apart without ``np.broadcast_shapes``): a row of hazards added to a
    matrix, a matrix to a row, and an addend that broadcasts both ways."""
    c, alpha, b = _double_rounding_hazards()
    rows = torch.stack([b, -b, b * 0.5])
    for x, y in ((c, rows), (c.expand(3, -1).contiguous(), b), (c[:, None].expand(-1, 2)[:4], b[None, :2])):
        assert_same_bits(torch.add(x.to("tpu"), y.to("tpu"), alpha=alpha), torch.add(x, y, alpha=alpha))
        assert_same_bits(torch.addcmul(x.to("tpu"), y.to("tpu"), torch.tensor(alpha).to("tpu")),
                         torch.addcmul(x, y, torch.tensor(alpha, dtype=torch.float32)))
