"""_foreach_* kernels, differential against torch CPU on the same lists (tensor, scalar and scalar-list forms)."""

import math
import re

import pytest
import torch
from torch.testing import assert_close

from differential import check, check_same_error, to_tpu

from torch_tpu._tensor import as_numpy
from torch_tpu.ops.foreach import _BINARY, _UNARY

SHAPES = [(3, 4), (5,), (), (2, 0)]


def make_list(dtype=torch.float32, seed=0, low=-2.0, high=2.0, shapes=SHAPES):
    generator = torch.Generator().manual_seed(seed)
    tensors = [torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low for shape in shapes]
    tensors.append((torch.rand(4, 3, generator=generator, dtype=torch.float64) * (high - low) + low).t())  # strided
    if dtype.is_floating_point:
        return [t.to(dtype) for t in tensors]
    return [t.round().to(dtype) for t in tensors]


FLOATS = [torch.float32, torch.bfloat16, torch.float64]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", sorted(_UNARY))
def test_unary(name, dtype):
    check(getattr(torch, f"_foreach_{name}"), make_list(dtype))
    check(getattr(torch, f"_foreach_{name}_"), make_list(dtype))


@pytest.mark.parametrize("name", ["abs", "neg", "sign", "sqrt"])
def test_unary_integer_lists_promote_like_cpu(name):
    check(getattr(torch, f"_foreach_{name}"), make_list(torch.int64))
    check(getattr(torch, f"_foreach_{name}_"), make_list(torch.int32))


BINARY_CASES = {
    "Scalar": lambda: 1.7,
    "ScalarList": lambda: [0.5, -1.25, 2.0, 3.0, -0.75],
    "List": lambda: make_list(seed=1, low=0.5, high=2.0),
    "Tensor": lambda: torch.tensor(-1.5),
}


def binary_other(kind, dtype):
    other = BINARY_CASES[kind]()
    return [t.to(dtype) for t in other] if kind == "List" else other


def overloads(name):
    return set(getattr(torch.ops.aten, f"_foreach_{name}").overloads())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name,kind", [(n, k) for n in sorted(_BINARY) for k in BINARY_CASES if k in overloads(n)])
def test_binary(name, kind, dtype):
    functional = getattr(torch, f"_foreach_{name}")
    self = make_list(dtype, low=0.25) if name == "pow" else make_list(dtype)
    check(functional, self, binary_other(kind, dtype))
    check(getattr(torch, f"_foreach_{name}_"), self, binary_other(kind, dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("name,kind", [("add", "List"), ("add", "Tensor"), ("sub", "List")])
def test_binary_alpha(name, kind, dtype):
    # the fast loop converts alpha once for the list: each tensor gets the bits of the per-tensor op
    for alpha in (-0.3, 2, 1.0000001, -0.01):
        if dtype != torch.float16:  # CPU's float16 add with alpha rounds some sums one ulp apart (its own loop)
            check(getattr(torch, f"_foreach_{name}"), make_list(dtype), binary_other(kind, dtype), alpha=alpha)
            check(getattr(torch, f"_foreach_{name}_"), make_list(dtype), binary_other(kind, dtype), alpha=alpha)
        self, other = to_tpu((make_list(dtype), binary_other(kind, dtype)))
        others = other if kind == "List" else [other] * len(self)
        expected = [getattr(torch, name)(t, o, alpha=alpha) for t, o in zip(self, others)]
        for actual, wanted in zip(getattr(torch, f"_foreach_{name}")(self, other, alpha=alpha), expected):
            assert torch.equal(actual.cpu(), wanted.cpu()) and actual.dtype == wanted.dtype


def test_scalar_list_numbers_each_reach_their_tensor():
    numbers = [0.1, -2.5, 3.0, 1e-3, -0.7]
    for dtype in (torch.float32, torch.bfloat16):
        check(torch._foreach_add_, make_list(dtype), numbers, atol=0, rtol=0)
        check(torch._foreach_sub, make_list(dtype), numbers, atol=0, rtol=0)


def test_binary_tensor_scalar_on_tpu():
    """clip_grad_norm_ multiplies by a 0-dim tpu tensor."""
    grads = make_list()
    scale = torch.tensor(0.25)
    expected = torch._foreach_mul(grads, scale)
    actual = torch._foreach_mul(to_tpu(grads), scale.to("tpu"))
    for a, e in zip(actual, expected):
        assert_close(a.cpu(), e)


def test_integer_lists_and_promotion_follow_cpu():
    check(torch._foreach_add, make_list(torch.int64), 1.5)
    check(torch._foreach_add_, make_list(torch.int64), 1.5)  # CPU raises: Float into Long
    check(torch._foreach_mul, make_list(torch.int64), make_list(torch.int64, seed=3))
    check(torch._foreach_add, make_list(torch.float32), make_list(torch.float64, seed=2))
    check(torch._foreach_mul, make_list(torch.int64), torch.tensor(2.5, dtype=torch.float64))
    check(torch._foreach_maximum_, make_list(torch.int32), 1)


def test_broadcasting_lists_follow_cpu():
    check(torch._foreach_add, [torch.randn(2, 3), torch.randn(3)], [torch.randn(3), torch.randn(3)])
    check(torch._foreach_add_, [torch.randn(2, 3)], [torch.randn(3)])


def test_nan_propagation():
    values = [torch.tensor([float("nan"), 1.0, -1.0])]
    check(torch._foreach_maximum, values, [torch.tensor([0.0, float("nan"), 0.0])])
    check(torch._foreach_clamp_min, values, 0.5)
    check(torch._foreach_clamp_max_, values, 0.5)
    check(torch._foreach_sign, values)


TERNARY_VALUES = {
    "Scalar": lambda: 0.3,
    "ScalarList": lambda: [0.5, -1.0, 2.0, 0.25, -0.5],
    "Tensor": lambda: torch.tensor([0.5, -1.0, 2.0, 0.25, -0.5]),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", list(TERNARY_VALUES))
@pytest.mark.parametrize("name", ["addcmul", "addcdiv"])
def test_addcmul_addcdiv(name, kind, dtype):
    tensor1, tensor2 = make_list(dtype, seed=1), make_list(dtype, seed=2, low=0.5, high=3.0)
    check(getattr(torch, f"_foreach_{name}"), make_list(dtype), tensor1, tensor2, TERNARY_VALUES[kind]())
    check(getattr(torch, f"_foreach_{name}_"), make_list(dtype), tensor1, tensor2, TERNARY_VALUES[kind]())


def test_addcdiv_default_value_and_integer_scalars_tensor():
    check(torch._foreach_addcdiv, make_list(), make_list(seed=1), make_list(seed=2, low=0.5))
    check(torch._foreach_addcmul_, make_list(), make_list(seed=1), make_list(seed=2),
          torch.tensor([1, 2, 3, 4, 5]))


LERP_WEIGHTS = {
    "Scalar": lambda: 0.1,
    "ScalarList": lambda: [0.1, 0.9, 0.5, -0.25, 1.5],
    "List": lambda: make_list(seed=4, low=-0.5, high=1.5),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kind", list(LERP_WEIGHTS))
def test_lerp(kind, dtype):
    weight = LERP_WEIGHTS[kind]()
    weight = [w.to(dtype) for w in weight] if kind == "List" else weight
    check(torch._foreach_lerp, make_list(dtype), make_list(dtype, seed=1), weight)
    check(torch._foreach_lerp_, make_list(dtype), make_list(dtype, seed=1), weight)


def test_lerp_is_exact_at_the_ends():
    start, end = make_list(), make_list(seed=1)
    for weight, expected in ((0.0, start), (1.0, end)):
        result = torch._foreach_lerp(to_tpu(start), to_tpu(end), weight)
        for r, e in zip(result, expected):
            assert torch.equal(r.cpu(), e)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("ord", [1, 2, 2.0, math.inf, 3, 0])
def test_norm(ord, dtype):
    tensors = [t for t in make_list(dtype) if t.numel() or ord != math.inf]
    check(torch._foreach_norm, tensors, ord)


def test_norm_dtype_and_empty_inf_error():
    check(torch._foreach_norm, make_list(torch.bfloat16), 2, dtype=torch.float32)
    check(torch._foreach_norm, [torch.ones(0)], math.inf)


def test_zero_and_copy():
    check(torch._foreach_zero_, make_list())
    check(torch._foreach_zero_, make_list(torch.int64))
    check(torch._foreach_copy_, make_list(), make_list(seed=1))
    check(torch._foreach_copy_, make_list(), make_list(torch.bfloat16, seed=1))
    check(torch._foreach_copy_, [torch.zeros(2, 3)], [torch.arange(3.0)])


def test_copy_from_cpu_sources():
    destination = to_tpu(make_list())
    source = make_list(seed=5)
    torch._foreach_copy_(destination, source)
    for d, s in zip(destination, source):
        assert_close(d.cpu(), s)


def test_a_casting_copy_is_one_launch_as_in_abstract_mode():
    """FSDP2 copies fp32 shards into bf16 all-gather inputs this way: the foreach launch is charged once,
    not once more per tensor through a dispatched copy_ (abstract mode charged it once all along)."""
    import torch_tpu

    destination = [torch.empty(3, 4, dtype=torch.bfloat16, device="tpu") for _ in range(3)]
    source = [torch.randn(3, 4, device="tpu") for _ in range(3)]
    clock = torch_tpu._C.current_chip().clock

    def launches():
        return {name: totals.count for name, totals in clock.op_totals.items()}

    before = launches()
    torch._foreach_copy_(destination, source)
    after = launches()
    assert {name: count - before.get(name, 0) for name, count in after.items() if count != before.get(name, 0)} == \
        {"_foreach_copy_": 1}
    for d, s in zip(destination, source):
        assert torch.equal(d.cpu(), s.cpu().bfloat16())


@pytest.mark.parametrize("source_device", ["tpu", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_foreach_copy_is_charged_the_bytes_of_its_copies(source_device, dtype):
    """Each pair as ``copy_`` charges it: the source read and the destination written, host memory not counted
    (its destinations were charged as read too, and CPU sources as HBM traffic)."""
    import torch_tpu

    destination = [torch.empty(n, dtype=dtype, device="tpu") for n in (1000, 24)]
    source = [torch.randn(n, device=source_device) for n in (1000, 24)]
    totals = torch_tpu._C.current_chip().clock.op_totals

    def charged(name, run):
        before = totals[name].bytes if name in totals else 0
        run()
        return totals[name].bytes - before

    foreach = charged("_foreach_copy_", lambda: torch._foreach_copy_(destination, source))
    one_by_one = charged("_copy_from", lambda: [d.copy_(s) for d, s in zip(destination, source)])
    assert foreach == one_by_one == sum(d.nbytes + (s.nbytes if source_device == "tpu" else 0)
                                        for d, s in zip(destination, source))


@pytest.mark.parametrize("op", [
    lambda tensors: torch._foreach_add_(tensors, 1.0),
    lambda tensors: torch._foreach_mul_(tensors, [2.0, 3.0]),
    lambda tensors: torch._foreach_zero_(tensors),
    lambda tensors: torch._foreach_copy_(tensors, [torch.ones(3, device=tensors[0].device)] * 2),
    lambda tensors: torch._foreach_lerp_(tensors, [torch.ones(3, device=tensors[0].device)] * 2, 0.5),
])
def test_foreach_in_place_ops_bump_versions_so_autograd_sees_the_write(op):
    """As on CPU: a tensor saved for backward, then overwritten by a foreach op, makes backward raise instead of
    differentiating through the new values (tpu's fast path wrote them unseen: a silently wrong gradient)."""
    for device in ("cpu", "tpu"):
        leaf = torch.zeros(3, device=device, requires_grad=True)
        saved = [leaf * 1, leaf * 2]
        loss = (saved[0].sin() + saved[1].sin()).sum()
        op(saved)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


@pytest.mark.parametrize("case", [
    lambda: (torch._foreach_add, make_list(), make_list()[:2]),
    lambda: (torch._foreach_add, make_list(), [1.0, 2.0]),
    lambda: (torch._foreach_mul_, make_list(), torch.ones(2)),
    lambda: (torch._foreach_addcdiv_, make_list(), make_list(), make_list(), torch.ones(3)),
    lambda: (torch._foreach_addcdiv_, make_list(), make_list(), make_list(), torch.ones(1, 5)),
    lambda: (torch._foreach_addcmul, make_list(), make_list(), make_list(), [1.0]),
    lambda: (torch._foreach_lerp, make_list(), make_list(), [0.5]),
    lambda: (torch._foreach_add, [torch.ones(2)], [torch.ones(3)]),
])
def test_errors_match_cpu(case):
    function, *arguments = case()
    check(function, *arguments)


def test_functional_results_are_new_tensors():
    tensors = to_tpu(make_list())
    results = torch._foreach_mul(tensors, 2.0)
    for t, r in zip(tensors, results):
        assert r is not t and r.shape == t.shape


def test_foreach_unary_ops_use_the_pointwise_kernels_maths():
    """One formula per op: lgamma(-inf) is inf in the pointwise kernel, so it is in the foreach one too."""
    values = torch.tensor([-math.inf, -2.5, 0.0, 0.5, 3.0, math.inf, math.nan])
    for name in _UNARY:
        expected = getattr(torch, name)(values.to("tpu"))
        (got,) = getattr(torch, f"_foreach_{name}")([values.to("tpu")])
        assert_close(got.cpu(), expected.cpu(), rtol=0, atol=0, equal_nan=True, msg=name)
    check(lambda t: torch._foreach_lgamma(t), [values])


# The fast path applies numbers itself; a bool number or alpha (or a complex alpha) must reach the per-tensor
# op, whose checks refuse it as CPU's foreach kernels do.
REFUSED_NUMBERS = {
    "sub of a bool number": lambda d: torch._foreach_sub([torch.ones(2, device=d)], True),
    "sub_ of a bool scalar list": lambda d: torch._foreach_sub_([torch.ones(2, device=d)], [True]),
    "sub of a bool 0-dim tensor": lambda d: torch._foreach_sub([torch.ones(2, device=d)], torch.tensor(True)),
    "add with a bool alpha": lambda d: torch._foreach_add([torch.ones(2, device=d)], [torch.ones(2, device=d)],
                                                          alpha=True),
    "add_ with a complex alpha": lambda d: torch._foreach_add_([torch.ones(2, device=d)], [torch.ones(2, device=d)],
                                                               alpha=1j),
}


@pytest.mark.parametrize("case", sorted(REFUSED_NUMBERS))
def test_numbers_the_per_tensor_op_refuses_are_refused(case):
    check_same_error(REFUSED_NUMBERS[case])


@pytest.mark.parametrize("number", [True, False])
def test_a_bool_number_adds_and_multiplies_as_on_cpu(number):
    tensors = make_list()
    for name in ("add", "mul"):
        fn = getattr(torch, f"_foreach_{name}")
        assert_close([t.cpu() for t in fn(to_tpu(tensors), number)], fn(tensors, number))


@pytest.mark.parametrize("name", ["maximum", "minimum", "maximum_", "minimum_"])
def test_maximum_and_minimum_of_complex_lists_refuse_in_cpus_words(name):
    """CPU's foreach maximum/minimum run clamp_min/clamp_max per tensor, whose kernel names the refusal."""
    fn = getattr(torch, f"_foreach_{name}")
    check_same_error(lambda d: fn([torch.tensor([1 + 2j], device=d)], [torch.tensor([2 + 1j], device=d)]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("exponent", [3, -2, -1, 2, [3, -1, 2, -2, 3]])
def test_pow_with_numbers_takes_pow_scalars_shortcuts_as_cpu_does(exponent, dtype):
    """CPU runs pow.Tensor_Scalar per tensor, whose shortcuts (x * x * x for 3, 1 / (x * x) for -2) round otherwise
    than pow's formula; bit for bit, -0.0 and -inf included."""
    tensors = make_list(dtype, seed=3, low=-7.0, high=7.0, shapes=[(300,), (3, 4), (), (2, 0)])
    tensors[1][0, :3] = torch.tensor([-0.0, -math.inf, math.inf])
    expected = torch._foreach_pow(tensors, exponent)
    results = torch._foreach_pow(to_tpu(tensors), exponent)
    in_place = to_tpu(tensors)
    torch._foreach_pow_(in_place, exponent)
    for want, got, mutated in zip(expected, results, in_place):
        assert torch.equal(got.cpu().reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))
        assert torch.equal(mutated.cpu().reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_results_are_laid_out_as_cpus_per_tensor_ops_lay_them_out(dtype):
    """CPU's foreach kernels run the op per tensor, so a transposed, channels-last, expanded or strided input gives
    a result laid out as TensorIterator lays it out (the input's memory order), not a contiguous one."""
    tensors = [torch.rand(4, 3).t(), torch.rand(2, 3, 4, 5).to(memory_format=torch.channels_last),
               torch.rand(3, 1).expand(3, 4), torch.rand(6)[::2], torch.rand(3, 4)]
    tensors = [t.to(dtype) for t in tensors]
    contiguous = [t.contiguous() for t in tensors]
    calls = [lambda ts, others: torch._foreach_add(ts, 1.0), lambda ts, others: torch._foreach_neg(ts),
             lambda ts, others: torch._foreach_mul(ts, others), lambda ts, others: torch._foreach_add(ts, ts, alpha=2),
             lambda ts, others: torch._foreach_addcmul(ts, others, ts, 0.5),
             lambda ts, others: torch._foreach_lerp(ts, others, 0.3)]
    for call in calls:
        expected = call(tensors, contiguous)
        got = call(to_tpu(tensors), to_tpu(contiguous))
        assert [r.stride() for r in got] == [r.stride() for r in expected]
        for want, result in zip(expected, got):
            assert torch.equal(result.cpu(), want)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("meet", ["listed twice", "swapped", "views of one tensor"])
def test_in_place_lists_whose_tensors_meet_update_in_cpus_order(meet, dtype):
    """CPU runs one in-place op per tensor, in order: a tensor listed twice is updated twice, and a target read at
    another index is read after its own update. tpu computes a list's small tensors as one flat array, which
    must not change that."""
    def run(device):
        a, b, c = (t.to(device) for t in make_list(dtype, seed=3, shapes=[(5,), (5,), (2, 5)])[:3])
        if meet == "listed twice":
            targets, others = [a, b, a], [b, c[0], c[1]]
        elif meet == "swapped":
            targets, others = [a, b], [b, a]
        else:
            targets, others = [c[0], c[1], a], [c[1], c[0], b]
        torch._foreach_add_(targets, others, alpha=2)
        torch._foreach_lerp_(targets, others, 0.25)
        torch._foreach_mul_(targets, 1.5)
        return a, b, c

    for actual, expected in zip(run("tpu"), run("cpu")):
        assert torch.equal(actual.cpu(), expected)


PARTIALLY_OVERLAPPING_ROWS = {
    "add_ alpha": lambda a: torch._foreach_add_([a[0:5]], [a[1:6]], alpha=2),
    "mul_": lambda a: torch._foreach_mul_([a[4:6], a[0:5]], [a[0:2], a[1:6]]),
    "lerp_": lambda a: torch._foreach_lerp_([a[0:5]], [a[2:7]], 0.5),
    "addcmul_": lambda a: torch._foreach_addcmul_([a[0:5]], [a[1:6]], [a[0:5].clone()], 0.5),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", PARTIALLY_OVERLAPPING_ROWS)
def test_in_place_targets_partially_overlapping_their_rows_operands_are_refused(case, dtype):
    """CPU runs one in-place op per tensor, whose TensorIterator refuses an operand that partially overlaps the
    tensor it writes."""
    check_same_error(lambda d: PARTIALLY_OVERLAPPING_ROWS[case](torch.arange(8.0, dtype=dtype, device=d)))


@pytest.mark.parametrize("dtype,exponent", [(torch.float16, 1e10), (torch.float16, 70000), (torch.float16, [3, 1e10]),
                                            (torch.int64, -2)], ids=str)
def test_pow_refuses_the_numbers_the_per_tensor_pow_refuses(dtype, exponent):
    """pow converts a number exponent to a 16-bit dtype checked, and refuses integers to negative powers: the foreach
    lists refuse what CPU's per-tensor route refuses, with its words."""
    check_same_error(lambda d: torch._foreach_pow([torch.ones(2, dtype=dtype, device=d),
                                                   torch.ones(3, dtype=dtype, device=d)], exponent))


@pytest.mark.parametrize("bound", [0.0, 0.5, math.nan, -math.nan, [0.5, math.nan]], ids=str)
@pytest.mark.parametrize("name", ["clamp_min", "clamp_max", "maximum", "minimum"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_clamps_with_numbers_store_cpus_nan_bits(dtype, name, bound):
    """CPU runs clamp_min/clamp_max per tensor on the 16-bit values: a NaN input keeps 0xFFFF in its vector lanes and
    becomes 0x7FC0 in its scalar tail; a NaN bound fills the bound (bf16: 0x7FC0). Bit for bit, in place too."""
    x = torch.tensor([1.0, -2.0, math.nan, 0.0] * 20, dtype=dtype)
    tensors = [x, x[:5], x[1:].reshape(1, 79)]
    bound = bound if not isinstance(bound, list) else bound + [0.25]
    function, in_place = getattr(torch, f"_foreach_{name}"), getattr(torch, f"_foreach_{name}_")
    expected, actual = function(tensors, bound), function(to_tpu(tensors), bound)
    mutated, mutated_tpu = [t.clone() for t in tensors], to_tpu(tensors)
    in_place(mutated, bound)
    in_place(mutated_tpu, bound)
    for want, got in zip([*expected, *mutated], [*actual, *mutated_tpu]):
        assert torch.equal(got.cpu().view(torch.int16), want.view(torch.int16))


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("name", ["add", "sub"])
def test_alpha_one_lists_are_cpus_bit_for_bit(name, dtype):
    """add/sub with alpha 1 (given, or left out: SGD's momentum ``add_``) apply the plain ufunc to each tensor:
    CPU's bits, infinities, NaN and signed zeros included, in place and into new tensors (a bf16 NaN made in a
    scalar tail is c10's 0x7FC0 on CPU, 0xFFFF in its vector lanes)."""
    self, other = make_list(dtype, seed=1), make_list(dtype, seed=2)
    self[0][0, :3] = torch.tensor([math.inf, -0.0, math.nan], dtype=dtype)
    other[0][0, :3] = torch.tensor([-math.inf, -0.0, 1.0], dtype=dtype)
    self[-1][-1, -1], other[-1][-1, -1] = math.inf, -math.inf  # the last element: in CPU's scalar tail
    for keywords in ({}, {"alpha": 1}):
        expected = getattr(torch, f"_foreach_{name}")(self, other, **keywords)
        actual = getattr(torch, f"_foreach_{name}")(to_tpu(self), to_tpu(other), **keywords)
        in_place = to_tpu(self)
        getattr(torch, f"_foreach_{name}_")(in_place, to_tpu(other), **keywords)
        for got in (actual, in_place):
            for t, want in zip(got, expected):
                assert t.dtype == want.dtype and t.stride() == want.stride()
                assert torch.equal(t.cpu().view(_BITS[dtype]), want.view(_BITS[dtype]))


_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}


# An optimizer's lists: every tensor fills its own storage (a matrix, a bias, a 0-d scale, one past the flat groups'
# size); the same shapes in another order for the other operands, so that a row's shapes still agree
OPTIMIZER_SHAPES = [(16, 8), (8,), (), (130, 130), (3, 1, 5)]
WHOLE_BUFFER_UPDATES = {
    "add_ alpha": lambda p, g, m: torch._foreach_add_(p, g, alpha=-0.01),
    "add_": lambda p, g, m: torch._foreach_add_(m, g),
    "sub_ alpha": lambda p, g, m: torch._foreach_sub_(p, m, alpha=0.3),
    "mul_ Scalar": lambda p, g, m: torch._foreach_mul_(m, 0.9),
    "mul_ List": lambda p, g, m: torch._foreach_mul_(p, g),
    "div_ ScalarList": lambda p, g, m: torch._foreach_div_(p, [0.5, 3.0, -1.5, 7.0, 0.1]),
    "addcmul_": lambda p, g, m: torch._foreach_addcmul_(p, g, m, value=-0.2),
    "addcdiv_": lambda p, g, m: torch._foreach_addcdiv_(p, g, m, value=0.7),
    "lerp_": lambda p, g, m: torch._foreach_lerp_(m, g, 0.1),
    "reciprocal_": lambda p, g, m: torch._foreach_reciprocal_(m),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("update", WHOLE_BUFFER_UPDATES)
def test_lists_of_whole_buffers_update_in_place_without_shaped_views(monkeypatch, update, dtype):
    """In place over tensors that each fill their own storage (an optimizer's), foreach reads flat views of the
    buffers (``_tensor.whole_buffer_array``), not ``as_numpy``'s shaped ones: CPU's bits, NaN, infinities and
    signed zeros included, in the flat groups and in the tensors computed alone."""
    from torch_tpu.ops import foreach

    def lists(seed):
        return make_list(dtype, seed=seed, low=0.25, high=2.0, shapes=OPTIMIZER_SHAPES)[:-1]  # not the transposed one

    cpu = [lists(1), lists(2), lists(3)]
    cpu[0][0][0, :4] = torch.tensor([math.inf, -0.0, math.nan, 0.0], dtype=dtype)
    tpu = to_tpu(cpu)
    shaped = []
    monkeypatch.setattr(foreach, "as_numpy", lambda t: shaped.append(t) or as_numpy(t))
    WHOLE_BUFFER_UPDATES[update](*cpu)
    WHOLE_BUFFER_UPDATES[update](*tpu)
    assert shaped == []
    for got, want in zip(tpu, cpu):
        for t, expected in zip(got, want):
            assert torch.equal(t.cpu().view(_BITS[dtype]), expected.view(_BITS[dtype]))


WHOLE_BUFFERS_BESIDE_OTHERS = {
    "a view": lambda a, b: ([a[1:], b], [b[:-1] * 2, a + 1]),
    "a transposed matrix": lambda a, b: ([a.view(2, 3).t(), b], [b.view(2, 3).t() + 1, a]),
    "a negated view": lambda a, b: ([a, torch._neg_view(b)], [b * 3, a + 1]),
    "shapes that differ": lambda a, b: ([a.view(2, 3), b], [b.view(3, 2), a]),
    "dtypes that differ": lambda a, b: ([a, b], [b.double(), a]),
    "a tensor listed twice": lambda a, b: ([a, b, a], [b, a, b]),
}


@pytest.mark.parametrize("case", WHOLE_BUFFERS_BESIDE_OTHERS)
def test_lists_mixing_whole_buffers_and_other_tensors_update_as_on_cpu(case):
    """A list with one tensor that is not a whole buffer of the list's dtype and its row's shape takes the general
    route for all (or raises CPU's error, for shapes that differ)."""
    def run(device):
        generator = torch.Generator().manual_seed(5)
        a, b = (torch.rand(6, generator=generator).to(device) for _ in range(2))
        targets, others = WHOLE_BUFFERS_BESIDE_OTHERS[case](a, b)
        torch._foreach_add_(targets, others, alpha=0.5)
        torch._foreach_mul_(targets, others)
        return targets

    try:
        expected = run("cpu")
    except RuntimeError as error:
        with pytest.raises(RuntimeError, match=re.escape(str(error))):
            run("tpu")
        return
    for got, want in zip(run("tpu"), expected):
        assert torch.equal(got.cpu().resolve_neg(), want.resolve_neg())
