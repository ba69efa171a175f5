"""Random kernels: reproducible under torch.manual_seed, right distributions and bounds, CPU's errors.

The tpu generator is not CPU's, so values are compared with statistics, not with CPU's draws.
"""

import math

import pytest
import torch

from differential import check_same_error

N = 20_000  # samples per statistical check; tolerances are about 5 standard errors


def tpu_empty(*shape, dtype=torch.float32):
    return torch.empty(*shape, dtype=dtype, device="tpu")


def check_moments(sample, mean, std, sigmas=5.0):
    sample = sample.cpu().double()
    assert abs(sample.mean().item() - mean) < sigmas * std / math.sqrt(sample.numel())
    assert abs(sample.std().item() - std) < sigmas * std * math.sqrt(2 / sample.numel()) + 0.01 * std


# --- generator state -------------------------------------------------------------------------------------------


def test_manual_seed_reproduces_and_seeds_differ():
    torch.manual_seed(123)
    first = torch.randn(100, device="tpu").cpu()
    torch.manual_seed(123)
    again = torch.randn(100, device="tpu").cpu()
    torch.manual_seed(124)
    other = torch.randn(100, device="tpu").cpu()
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_consecutive_draws_differ():
    assert not torch.equal(torch.rand(100, device="tpu").cpu(), torch.rand(100, device="tpu").cpu())


def test_fork_rng_restores_tpu_state():
    torch.manual_seed(7)
    with torch.random.fork_rng(device_type="tpu"):
        inside = torch.rand(10, device="tpu").cpu()
    after = torch.rand(10, device="tpu").cpu()
    assert torch.equal(inside, after)


def test_get_set_rng_state_replays():
    state = torch.tpu.get_rng_state()
    first = torch.randint(0, 1000, (50,), device="tpu").cpu()
    torch.tpu.set_rng_state(state)
    assert torch.equal(torch.randint(0, 1000, (50,), device="tpu").cpu(), first)


def test_rng_state_is_set_out_of_sight_of_torch_function_modes():
    """As CPU's generator takes its state: torch.testing's freeze_rng_state restores the device's state
    inside a strict TorchRefsMode, which refuses the Tensor.detach of a Python-level conversion."""
    from torch._prims.context import TorchRefsMode
    state = torch.tpu.get_rng_state()
    first = torch.rand(10, device="tpu").cpu()
    with TorchRefsMode(strict=True):
        torch.set_rng_state(torch.get_rng_state())
        torch.tpu.set_rng_state(state)
    assert torch.equal(torch.rand(10, device="tpu").cpu(), first)


def test_rng_state_is_got_and_set_out_of_sight_of_dispatch_modes():
    """LocalTensorMode (PyTorch's one-process simulation of every rank) saves and sets each rank's device state while
    DTensor propagates a sharding under a FakeTensorMode, which refuses a real tensor's detach and would make the
    saved state fake; CPU's generator gives and takes a real one."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    state = torch.tpu.get_rng_state()
    first = torch.rand(10, device="tpu").cpu()
    with FakeTensorMode():
        torch.set_rng_state(torch.get_rng_state())
        torch.tpu.set_rng_state(state)
        saved = torch.tpu.get_rng_state()
    assert torch.equal(torch.rand(10, device="tpu").cpu(), first)
    assert type(saved) is torch.Tensor and torch.equal(saved, state)


def test_explicit_cpu_generator_is_refused():
    generator = torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match="tpu"):
        torch.rand(3, device="tpu", generator=generator)
    with pytest.raises(RuntimeError, match="tpu"):
        tpu_empty(3).normal_(generator=generator)


# --- continuous distributions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_uniform_bounds_and_moments(dtype):
    sample = tpu_empty(N, dtype=dtype).uniform_(-2.0, 3.0)
    assert sample.dtype == dtype
    values = sample.cpu().double()
    assert values.min().item() >= -2.0 and values.max().item() <= 3.0
    if dtype in (torch.float32, torch.float64):
        assert values.max().item() < 3.0
    check_moments(sample, 0.5, 5 / math.sqrt(12))


def test_rand_and_rand_like_are_in_unit_interval():
    sample = torch.rand(4, N // 4, device="tpu")
    like = torch.rand_like(sample)
    for values in (sample, like):
        assert values.shape == (4, N // 4) and values.device.type == "tpu"
        assert 0 <= values.min().item() and values.max().item() < 1
    check_moments(sample, 0.5, 1 / math.sqrt(12))


def test_uniform_fills_only_the_view():
    base = torch.zeros(6, 8, device="tpu")
    base[:, ::2].t().uniform_(1.0, 2.0)
    values = base.cpu()
    assert torch.all(values[:, 1::2] == 0)
    assert torch.all(values[:, ::2] >= 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_normal_moments(dtype):
    sample = tpu_empty(N, dtype=dtype).normal_(1.5, 2.0)
    assert sample.dtype == dtype
    check_moments(sample, 1.5, 2.0)


def test_randn_bfloat16_rounds_float32_draws():
    sample = torch.randn(N, device="tpu", dtype=torch.bfloat16)
    assert sample.dtype == torch.bfloat16
    check_moments(sample, 0.0, 1.0)
    assert sample.cpu().unique().numel() > 1000


def test_normal_tensor_mean_and_std_broadcast():
    mean = torch.tensor([[-10.0], [10.0]])
    std = torch.tensor([0.5, 1.0, 2.0])
    sample = torch.normal(mean.to("tpu").expand(2, N).contiguous(), 3.0)
    assert sample.shape == (2, N)
    check_moments(sample[0], -10.0, 3.0)
    check_moments(sample[1], 10.0, 3.0)
    both = torch.normal(mean.to("tpu"), std.to("tpu"))
    assert both.shape == (2, 3)
    from_std = torch.normal(2.0, torch.full((N,), 0.5, device="tpu"))
    check_moments(from_std, 2.0, 0.5)
    out = torch.empty(1, device="tpu")
    torch.normal(torch.zeros(N, device="tpu"), 1.0, out=out)
    assert out.shape == (N,)
    check_moments(out, 0.0, 1.0)


def test_normal_float_float_factory():
    sample = torch.normal(3.0, 0.5, size=(N,), device="tpu")
    check_moments(sample, 3.0, 0.5)


def test_complex_normal_splits_variance():
    sample = tpu_empty(N, dtype=torch.complex64).normal_()
    values = sample.cpu()
    check_moments(values.real, 0.0, 1 / math.sqrt(2))
    check_moments(values.imag, 0.0, 1 / math.sqrt(2))


def test_exponential_moments():
    check_moments(tpu_empty(N).exponential_(4.0), 0.25, 0.25)


def test_geometric_moments_and_support():
    sample = tpu_empty(N, dtype=torch.int64).geometric_(0.25)
    assert sample.cpu().min().item() >= 1
    check_moments(sample, 4.0, math.sqrt(0.75) / 0.25)


def test_log_normal_is_exp_of_normal():
    sample = tpu_empty(N, dtype=torch.float64).log_normal_(0.5, 0.25)
    assert sample.cpu().min().item() > 0
    check_moments(sample.cpu().log(), 0.5, 0.25)


def test_cauchy_median_and_quartiles():
    values = tpu_empty(N).cauchy_(1.0, 2.0).cpu()
    quartiles = torch.quantile(values.double(), torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
    assert_close_tuple(quartiles.tolist(), [-1.0, 1.0, 3.0], 0.15)


def assert_close_tuple(actual, expected, tolerance):
    assert all(abs(a - e) < tolerance for a, e in zip(actual, expected)), (actual, expected)


# --- bernoulli -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.int64, torch.bool])
def test_bernoulli_float_p(dtype):
    sample = tpu_empty(N, dtype=dtype).bernoulli_(0.3)
    values = sample.cpu().double()
    assert set(values.unique().tolist()) <= {0.0, 1.0}
    check_moments(values, 0.3, math.sqrt(0.21))


def test_bernoulli_tensor_p_and_functional():
    p = torch.tensor([0.0, 0.2, 0.9, 1.0], device="tpu").repeat(N // 4)
    for sample in (tpu_empty(N).bernoulli_(p), torch.bernoulli(p)):
        values = sample.cpu().view(-1, 4)
        assert torch.all(values[:, 0] == 0) and torch.all(values[:, 3] == 1)
        check_moments(values[:, 1], 0.2, 0.4)
        check_moments(values[:, 2], 0.9, 0.3)
    functional_p = torch.bernoulli(torch.zeros(N, device="tpu"), p=0.7)
    check_moments(functional_p, 0.7, math.sqrt(0.21))
    out = torch.empty(0, device="tpu")
    torch.bernoulli(p, out=out)
    assert out.shape == p.shape and torch.all(out.cpu().view(-1, 4)[:, 3] == 1)


def test_bernoulli_tensor_p_broadcasts():
    sample = tpu_empty(3, N // 10).bernoulli_(torch.tensor([[0.0], [0.5], [1.0]], device="tpu"))
    values = sample.cpu()
    assert torch.all(values[0] == 0) and torch.all(values[2] == 1)


# --- random_ and randint ---------------------------------------------------------------------------------------

DEFAULT_RANGE = {
    torch.uint8: 255, torch.int8: 127, torch.int16: 2**15 - 1, torch.int32: 2**31 - 1, torch.bool: 1,
    torch.float16: 2**11, torch.bfloat16: 2**8, torch.float32: 2**24,
}


@pytest.mark.parametrize("dtype", list(DEFAULT_RANGE))
def test_random_default_range(dtype):
    values = tpu_empty(N, dtype=dtype).random_().cpu().double()
    top = DEFAULT_RANGE[dtype]
    assert values.min().item() >= 0 and values.max().item() <= top
    assert values.max().item() > 0.9 * top  # the whole range is reached, not a corner of it
    assert values.min().item() < 0.1 * top + 1


def test_random_default_int64_is_non_negative_and_large():
    values = tpu_empty(1000, dtype=torch.int64).random_().cpu()
    assert values.min().item() >= 0 and values.max().item() > 2**62


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.uint8, torch.float32, torch.bfloat16])
def test_random_from_to(dtype):
    values = tpu_empty(N, dtype=dtype).random_(3, 10).cpu()
    assert set(values.double().unique().tolist()) == set(range(3, 10))
    counts = torch.bincount(values.long())[3:]
    assert counts.min().item() > N / 7 * 0.85


def test_random_to_and_from_only():
    assert set(tpu_empty(N, dtype=torch.int16).random_(5).cpu().unique().tolist()) == set(range(5))
    values = tpu_empty(N, dtype=torch.int8).random_(-100, None).cpu()
    assert values.min().item() < -90 and values.max().item() > 117
    full = tpu_empty(1000, dtype=torch.int64).random_(-(2**63), None).cpu()
    assert full.min().item() < -(2**62) and full.max().item() > 2**62


@pytest.mark.parametrize("dtype", [torch.uint16, torch.uint32, torch.uint64])
def test_bounded_random_of_unsigned_dtypes(dtype):
    # CPU's bounded kernel has loops for these (make_tensor draws them with randint); random_() has not
    values = torch.randint(3, 10, (N,), device="tpu", dtype=dtype)
    assert values.dtype == dtype and set(values.cpu().long().unique().tolist()) == set(range(3, 10))
    wide = tpu_empty(1000, dtype=dtype).random_(0, 2**16)
    assert wide.cpu().long().max().item() > 2**15


def test_randint_and_randint_like():
    values = torch.randint(-5, 5, (N,), device="tpu")
    assert values.dtype == torch.int64
    assert set(values.cpu().unique().tolist()) == set(range(-5, 5))
    like = torch.randint_like(torch.empty(N, device="tpu"), 3)
    assert like.dtype == torch.float32 and set(like.cpu().unique().tolist()) == {0.0, 1.0, 2.0}
    check_moments(values, -0.5, math.sqrt((10**2 - 1) / 12))


# --- randperm and multinomial ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.float32, torch.float16, torch.uint8])
def test_randperm_is_a_permutation(dtype):
    n = 200
    values = torch.randperm(n, device="tpu", dtype=dtype)
    assert values.dtype == dtype and values.device.type == "tpu"
    assert torch.equal(values.cpu().long().sort().values, torch.arange(n))
    assert not torch.equal(values.cpu().long(), torch.arange(n))


def test_randperm_out_and_empty():
    out = torch.empty(3, dtype=torch.int64, device="tpu")
    torch.randperm(10, out=out)
    assert out.shape == (10,) and sorted(out.cpu().tolist()) == list(range(10))
    assert torch.randperm(0, device="tpu").shape == (0,)


def test_randperm_positions_are_uniform():
    first = torch.stack([torch.randperm(4, device="tpu")[0] for _ in range(400)]).cpu()
    assert torch.bincount(first, minlength=4).min().item() > 60


def test_multinomial_with_replacement_frequencies():
    probabilities = torch.tensor([0.1, 0.0, 0.6, 0.3], device="tpu") * 7  # unnormalised weights are fine
    draws = torch.multinomial(probabilities, N, replacement=True).cpu()
    frequencies = torch.bincount(draws, minlength=4).double() / N
    assert frequencies[1].item() == 0
    assert torch.allclose(frequencies, torch.tensor([0.1, 0.0, 0.6, 0.3], dtype=torch.float64), atol=0.02)


def test_multinomial_without_replacement():
    weights = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.0]] * 500, device="tpu")
    draws = torch.multinomial(weights, 4).cpu()
    assert draws.shape == (500, 4) and draws.dtype == torch.int64
    assert all(sorted(row) == [0, 1, 2, 3] for row in draws.tolist())  # distinct; never the zero weight
    first = torch.bincount(draws[:, 0], minlength=4).double() / 500
    assert torch.allclose(first, torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), atol=0.07)


def test_multinomial_single_sample_bf16_and_out():
    weights = torch.tensor([0.0, 1.0, 0.0], device="tpu", dtype=torch.bfloat16)
    assert torch.multinomial(weights, 1).cpu().tolist() == [1]
    out = torch.empty(0, dtype=torch.int64, device="tpu")
    torch.multinomial(weights.float(), 3, replacement=True, out=out)
    assert out.cpu().tolist() == [1, 1, 1]


# --- errors: the same exception class as CPU -------------------------------------------------------------------

ERROR_CASES = {
    "uniform_reversed": lambda d: torch.empty(3, device=d).uniform_(2, 1),
    "uniform_inf": lambda d: torch.empty(3, device=d).uniform_(0, float("inf")),
    "uniform_int": lambda d: torch.empty(3, device=d, dtype=torch.int64).uniform_(),
    "normal_negative_std": lambda d: torch.empty(3, device=d).normal_(0, -1),
    "normal_tensor_negative_std": lambda d: torch.normal(torch.zeros(3, device=d), -torch.ones(3, device=d)),
    "normal_int": lambda d: torch.empty(3, device=d, dtype=torch.int64).normal_(),
    "bernoulli_p": lambda d: torch.empty(3, device=d).bernoulli_(1.5),
    "bernoulli_tensor_p": lambda d: torch.empty(3, device=d).bernoulli_(torch.tensor([0.5, 1.5, 0.2], device=d)),
    "bernoulli_shape": lambda d: torch.empty(3, device=d).bernoulli_(torch.tensor([0.5, 0.5], device=d)),
    "exponential_lambda": lambda d: torch.empty(3, device=d).exponential_(0),
    "exponential_int": lambda d: torch.empty(3, device=d, dtype=torch.int64).exponential_(),
    "geometric_p": lambda d: torch.empty(3, device=d).geometric_(1),
    "geometric_bool": lambda d: torch.empty(3, device=d, dtype=torch.bool).geometric_(0.5),
    "log_normal_std": lambda d: torch.empty(3, device=d).log_normal_(1, 0),
    "log_normal_int": lambda d: torch.empty(3, device=d, dtype=torch.int64).log_normal_(),
    "cauchy_sigma": lambda d: torch.empty(3, device=d).cauchy_(0, -1),
    "random_reversed": lambda d: torch.empty(3, device=d).random_(5, 3),
    "random_from_out_of_bounds": lambda d: torch.empty(3, device=d, dtype=torch.uint8).random_(-1, 3),
    "random_to_out_of_bounds": lambda d: torch.empty(3, device=d, dtype=torch.uint8).random_(0, 257),
    "random_bool_to": lambda d: torch.empty(3, device=d, dtype=torch.bool).random_(0, 3),
    "random_half_to": lambda d: torch.empty(3, device=d, dtype=torch.float16).random_(0, 70000),
    "random_complex": lambda d: torch.empty(3, device=d, dtype=torch.complex64).random_(),
    "random_float_from_too_big": lambda d: torch.empty(3, device=d).random_(2**30, None),
    "random_full_range_int8": lambda d: torch.empty(3, device=d, dtype=torch.int8).random_(-(2**63), None),
    "random_full_range_half": lambda d: torch.empty(3, device=d, dtype=torch.float16).random_(-(2**63), None),
    "random_full_range_uint32": lambda d: torch.empty(3, device=d, dtype=torch.uint32).random_(-(2**63), None),
    "random_unsigned_default": lambda d: torch.empty(3, device=d, dtype=torch.uint16).random_(),
    "random_uint64_to_inc": lambda d: torch.empty(3, device=d, dtype=torch.uint64).random_(5, None),
    "random_uint16_to_out_of_bounds": lambda d: torch.empty(3, device=d, dtype=torch.uint16).random_(0, 2**32),
    "random_complex_from_to": lambda d: torch.empty(3, device=d, dtype=torch.complex64).random_(0, 3),
    "random_complex_from": lambda d: torch.empty(3, device=d, dtype=torch.complex64).random_(3, None),
    "random_fp8_from_to": lambda d: torch.empty(3, device=d, dtype=torch.float8_e4m3fn).random_(0, 3),
    "randperm_uint8_overflow": lambda d: torch.randperm(300, device=d, dtype=torch.uint8),
    "randperm_half_too_long": lambda d: torch.randperm(3000, device=d, dtype=torch.float16),
    "randperm_bool": lambda d: torch.randperm(3, device=d, dtype=torch.bool),
    "multinomial_too_many": lambda d: torch.multinomial(torch.ones(3, device=d), 4),
    "multinomial_zero_samples": lambda d: torch.multinomial(torch.ones(3, device=d), 0),
    "multinomial_3d": lambda d: torch.multinomial(torch.ones(2, 2, 2, device=d), 1),
    "multinomial_int": lambda d: torch.multinomial(torch.ones(3, device=d, dtype=torch.int64), 1),
    "multinomial_negative": lambda d: torch.multinomial(torch.tensor([1.0, -1.0], device=d), 1),
    "multinomial_nan": lambda d: torch.multinomial(torch.tensor([1.0, float("nan")], device=d), 1, True),
    "multinomial_zero_row": lambda d: torch.multinomial(torch.tensor([[0.0, 0.0], [1.0, 1.0]], device=d), 1),
    "standard_gamma_half": lambda d: torch._standard_gamma(torch.ones(3, device=d, dtype=torch.float16)),
    "dirichlet_bfloat16": lambda d: torch._sample_dirichlet(torch.ones(3, device=d, dtype=torch.bfloat16)),
    "poisson_negative_rate": lambda d: torch.poisson(torch.tensor([1.0, -1.0], device=d)),
    "poisson_int": lambda d: torch.poisson(torch.ones(3, device=d, dtype=torch.int64)),
    "binomial_int_count": lambda d: torch.binomial(torch.ones(3, device=d, dtype=torch.int64), torch.ones(3, device=d)),
    "gamma_grad_half": lambda d: torch._standard_gamma_grad(*[torch.ones(3, device=d, dtype=torch.float16)] * 2),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_errors_match_cpu(name):
    check_same_error(ERROR_CASES[name])


@pytest.mark.parametrize("fill", [
    lambda t: t.uniform_(), lambda t: t.normal_(), lambda t: t.bernoulli_(0.5), lambda t: t.random_(0, 3),
    lambda t: t.exponential_(), lambda t: t.geometric_(0.5), lambda t: t.log_normal_(), lambda t: t.cauchy_(),
])
def test_empty_tensors(fill):
    assert fill(tpu_empty(0, 3)).shape == (0, 3)


# --- rrelu ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_rrelu_with_noise_eval_is_leaky_relu_with_the_mean_slope(dtype):
    x = torch.randn(4, 5).to(dtype)
    noise, tpu_noise = torch.full_like(x, 7.0), torch.full_like(x, 7.0, device="tpu")
    expected = torch.ops.aten.rrelu_with_noise(x, noise, 0.1, 0.3, False)
    actual = torch.ops.aten.rrelu_with_noise(x.to("tpu"), tpu_noise, 0.1, 0.3, False)
    torch.testing.assert_close(actual.cpu(), expected, atol=0, rtol=0)
    assert torch.equal(tpu_noise.cpu(), noise)  # untouched in evaluation


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rrelu_with_noise_training_draws_slopes_in_range(dtype):
    x = torch.cat([torch.linspace(-3, 3, N), torch.tensor([0.0, float("nan")])]).to(dtype).to("tpu")
    noise = torch.empty_like(x)
    torch.manual_seed(5)
    out = torch.ops.aten.rrelu_with_noise(x, noise, 0.1, 0.3, True).cpu()
    x, noise = x.cpu(), noise.cpu()
    negative = x <= 0
    assert torch.all(noise[~negative] == 1) and torch.equal(out[x > 0], x[x > 0]) and out[-1].isnan()
    slopes = noise[negative].float()
    lower, upper = torch.tensor([0.1, 0.3]).to(dtype).tolist()  # the bounds as the noise dtype holds them
    assert slopes.min() >= lower and slopes.max() <= upper
    check_moments(slopes, 0.2, 0.2 / math.sqrt(12), sigmas=6)  # uniform on [0.1, 0.3]
    # as on CPU, the output is x times the float32 slope, which noise holds rounded to dtype
    exact = {"atol": 0, "rtol": 0} if dtype == torch.float32 else {}
    torch.testing.assert_close(out[negative], (x[negative].float() * slopes).to(dtype), **exact)
    torch.manual_seed(5)
    again = torch.ops.aten.rrelu_with_noise(x.to("tpu"), torch.empty_like(x, device="tpu"), 0.1, 0.3, True)
    torch.testing.assert_close(again.cpu(), out, atol=0, rtol=0, equal_nan=True)  # seeded: reproducible


def test_rrelu_trains_and_backpropagates_through_the_noise():
    x = torch.randn(3, 4, device="tpu", requires_grad=True)
    y = torch.nn.functional.rrelu(x, training=True)
    y.sum().backward()
    slopes = torch.where(x.detach() > 0, torch.ones_like(x), y.detach() / x.detach())
    torch.testing.assert_close(x.grad, slopes)
    with pytest.raises(RuntimeError):
        torch.ops.aten.rrelu_with_noise(x.detach(), torch.empty(3, device="tpu"), 0.1, 0.3, True)


# --- the samplers behind torch.distributions ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("alpha", [0.5, 2.0, 7.5])
def test_standard_gamma_moments(dtype, alpha):
    sample = torch._standard_gamma(torch.full((N,), alpha, dtype=dtype, device="tpu"))
    assert sample.dtype == dtype and bool((sample > 0).all())
    check_moments(sample, alpha, math.sqrt(alpha))


def test_standard_gamma_never_returns_zero():
    """Tiny concentrations underflow; CPU stores the smallest normal float instead, so log_prob stays finite."""
    sample = torch._standard_gamma(torch.full((1000,), 1e-3, device="tpu"))
    assert bool((sample >= torch.finfo(torch.float32).tiny).all())
    assert torch.isfinite(torch.distributions.Gamma(1e-3, 1.0).log_prob(sample)).all()


def assert_close_to(actual, expected, rtol):
    assert torch.allclose(actual.cpu(), expected, rtol=rtol, atol=0), (actual, expected)


def test_dirichlet_rows_lie_on_the_simplex_with_the_right_means():
    concentration = torch.tensor([1.0, 2.0, 5.0])
    sample = torch._sample_dirichlet(concentration.expand(N, 3).contiguous().to("tpu")).cpu().double()
    assert bool(((sample > 0) & (sample < 1)).all())
    assert_close_to(sample.sum(-1), torch.ones(N, dtype=torch.float64), 1e-6)
    for i, mean in enumerate((concentration / concentration.sum()).tolist()):
        check_moments(sample[:, i], mean, math.sqrt(mean * (1 - mean) / 9))


@pytest.mark.parametrize("rate", [0.0, 3.0, 80.0])
def test_poisson_moments(rate):
    sample = torch.poisson(torch.full((N,), rate, device="tpu"))
    assert bool((sample == sample.round()).all())
    if rate:
        check_moments(sample, rate, math.sqrt(rate))


def test_binomial_moments_and_broadcast_probability():
    count = torch.tensor([0.0, 10.0, 50.0]).expand(N, 3).contiguous().to("tpu")
    sample = torch.binomial(count, torch.tensor([0.5, 0.3, 0.9], device="tpu")).cpu()
    assert bool((sample[:, 0] == 0).all())
    check_moments(sample[:, 1], 3.0, math.sqrt(10 * 0.3 * 0.7))
    check_moments(sample[:, 2], 45.0, math.sqrt(50 * 0.9 * 0.1))


def _gamma_samples(dtype):
    """Concentrations and standard gamma samples across ATen's three branches: x < 0.8 (Taylor series),
    alpha > 8 (saddle point, with the polynomial within 10% of alpha) and the rational fit."""
    generator = torch.Generator().manual_seed(0)
    alpha = torch.cat([torch.rand(500, generator=generator) * 0.5 + 0.01, torch.rand(500, generator=generator) * 10,
                       torch.rand(500, generator=generator) * 300 + 8]).to(dtype)
    return alpha, torch._standard_gamma(alpha, generator=generator).clamp(min=1e-30)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gamma_rsample_gradient_is_atens_approximation(dtype):
    """dx/dalpha of gamma samples, as CPU and CUDA compute it: ATen's approximations, which stand up to 4e-4
    from the exact implicit gradient (tpu computed the exact one before, so Gamma, Beta, StudentT and Chi2
    rsample gradients were 1e-4 off CPU's). float32 is CPU's bit for bit (ATen computes it in double)."""
    alpha, x = _gamma_samples(dtype)
    tpu = torch._standard_gamma_grad(alpha.to("tpu"), x.to("tpu")).cpu()
    expected = torch._standard_gamma_grad(alpha, x)
    if dtype == torch.float32:
        assert torch.equal(tpu, expected)
    else:
        assert_close_to(tpu, expected, 1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dirichlet_rsample_gradient_is_atens_approximation(dtype):
    """Dirichlet's scaled Beta gradient through ATen's four branches (x near 0, x near 1, both concentrations
    over 6, the rational correction). ATen runs the small-x series in float32 for float32 tensors, where
    its own result moves by 1e-5 with each rounding; tpu follows the same steps to 5e-5."""
    generator = torch.Generator().manual_seed(0)
    concentration = torch.cat([torch.rand(300, 3, generator=generator) * 0.5 + 0.02,
                               torch.rand(300, 3, generator=generator) * 5,
                               torch.rand(300, 3, generator=generator) * 50 + 6]).to(dtype)
    point = torch._sample_dirichlet(concentration, generator=generator).clamp(1e-12, 1 - 1e-7)
    total = concentration.sum(-1, True).expand_as(concentration).contiguous()
    tpu = torch._dirichlet_grad(point.to("tpu"), concentration.to("tpu"), total.to("tpu"))
    assert_close_to(tpu, torch._dirichlet_grad(point, concentration, total), 5e-5 if dtype == torch.float32 else 1e-11)


def test_dirichlet_gradient_whose_digammas_cancel_takes_cs_logarithm():
    """With one concentration tiny against the other, ATen's rational branch is ``digamma(total) -
    digamma(alpha)``: NumPy's SIMD float32 log, an ulp off C's logf, moved it by 4% (review16b). And digamma's
    poles are read before the argument is stepped up: a concentration of 0 gives ATen's infinities."""
    point, alpha, total = (torch.tensor([value]) for value in (0.8978355526924133, 23.438779830932617,
                                                                23.438913345336914))
    on_tpu = torch._dirichlet_grad(point.to("tpu"), alpha.to("tpu"), total.to("tpu"))
    assert torch.equal(on_tpu.cpu(), torch._dirichlet_grad(point, alpha, total))
    for dtype in (torch.float32, torch.float64):
        point, alpha, total = (torch.tensor([value], dtype=dtype) for value in (0.7, 0.0, 1.0))
        on_tpu = torch._dirichlet_grad(point.to("tpu"), alpha.to("tpu"), total.to("tpu"))
        assert torch.equal(on_tpu.cpu(), torch._dirichlet_grad(point, alpha, total))
        zero, half = torch.zeros(1, dtype=dtype), torch.full((1,), 0.5, dtype=dtype)
        assert torch.equal(torch._standard_gamma_grad(zero.to("tpu"), half.to("tpu")).cpu(),
                           torch._standard_gamma_grad(zero, half))


def test_rsample_gradients_at_the_edges_match_cpu():
    """A sample of 0 (the series' NaN read as 0), tiny and huge concentrations."""
    alpha = torch.tensor([0.05, 0.3, 1.0, 2.5, 7.0, 30.0, 200.0, 1.0])
    x = torch.tensor([1e-20, 0.1, 0.8, 3.0, 5.0, 33.0, 190.0, 0.0])
    on_tpu = torch._standard_gamma_grad(alpha.to("tpu"), x.to("tpu"))
    assert torch.equal(on_tpu.cpu(), torch._standard_gamma_grad(alpha, x))
    concentration = torch.tensor([[0.3, 1.0, 2.5], [7.0, 0.05, 30.0]], dtype=torch.float64)
    point = torch.tensor([[0.2, 0.5, 0.3], [0.2, 1e-6, 0.8 - 1e-6]], dtype=torch.float64)
    total = concentration.sum(-1, True).expand_as(concentration)
    tpu = torch._dirichlet_grad(point.to("tpu"), concentration.to("tpu"), total.to("tpu"))
    assert_close_to(tpu, torch._dirichlet_grad(point, concentration, total), 1e-12)


@pytest.mark.parametrize("make", [
    lambda c: torch.distributions.Gamma(c, 2.0), lambda c: torch.distributions.Beta(c, c + 1),
    lambda c: torch.distributions.Dirichlet(c), lambda c: torch.distributions.StudentT(c),
    lambda c: torch.distributions.Chi2(c),
], ids=["Gamma", "Beta", "Dirichlet", "StudentT", "Chi2"])
def test_reparameterised_distributions_train(make):
    concentration = torch.tensor([0.5, 2.0, 4.0], device="tpu", requires_grad=True)
    distribution = make(concentration)
    sample = distribution.rsample((64,))
    log_prob = distribution.log_prob(sample)
    (sample.sum() + log_prob.sum()).backward()
    assert sample.device.type == "tpu" and torch.isfinite(log_prob).all()
    assert torch.isfinite(concentration.grad).all() and bool((concentration.grad != 0).any())


@pytest.mark.parametrize("make", [
    lambda r: torch.distributions.Poisson(r), lambda r: torch.distributions.Binomial(10, probs=r / 5),
    lambda r: torch.distributions.NegativeBinomial(5, probs=r / 5),
], ids=["Poisson", "Binomial", "NegativeBinomial"])
def test_discrete_distributions_sample(make):
    distribution = make(torch.tensor([0.5, 2.0, 4.0], device="tpu"))
    sample = distribution.sample((64,))
    assert sample.device.type == "tpu" and torch.isfinite(distribution.log_prob(sample)).all()
