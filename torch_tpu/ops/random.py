"""Random kernels, drawn from the chip's counter-based generator.

Every kernel launch takes one private NumPy Generator from the chip
(``rng.next_stream()``), so a result depends only on the seed and on how many
random kernels ran before it: ``torch.manual_seed`` and ``fork_rng`` work as
on CUDA. The values differ from torch CPU's (another generator); the
distributions, bounds, dtypes and errors follow CPU.

Explicit generators: ``torch.Generator(device="tpu")`` cannot be built for a
Python backend, and a CPU generator cannot drive the chip's stream, so a
``generator=`` argument is refused the way CUDA refuses a foreign generator.
Seed the chip with ``torch.manual_seed``, or draw on the CPU and move the
result.

Continuous draws are made in float64 for double tensors and in float32
otherwise (bf16/fp16 draw in float32 and round once on store).
"""

import math
import warnings

import numpy as np
import torch

from .. import _C, _tensor
from .._errors import cpp_type_name, failed_check, not_implemented_for, scalar_type_name
from . import sample_gradients
from ._common import as_numpy, empty, opmath_operand, prepare_out, store, write
from ._overlap import check_no_internal_overlap
from ._registry import register

_FLOAT_DIGITS = {torch.float16: 11, torch.bfloat16: 8, torch.float32: 24, torch.float64: 53}
_RANDOM_INT_DTYPES = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
# CPU's bounded kernel (random_(from, to), randint) also has loops for these; plain random_() has not.
_BAREBONES_UNSIGNED = (torch.uint16, torch.uint32, torch.uint64)
# random_(-2**63, None): CPU's kernel has loops for these, and draws only for int64/float64/float32/bfloat16.
_FULL_64_BIT_RANGE_LOOPS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float32,
                            torch.float64, torch.bfloat16)
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


# --- generator and filling -------------------------------------------------------------------------------------


def _stream(generator):
    if generator is not None:
        raise RuntimeError(
            f"Expected a 'tpu' device type for generator but found '{generator.device.type}'. "
            "torch.Generator(device='tpu') cannot be created for torch_tpu; seed the tpu generator with "
            "torch.manual_seed (or torch.tpu.manual_seed), or draw on the CPU and move the result to tpu."
        )
    return _C.current_chip().rng.next_stream()


def _draw_dtype(dtype):
    return np.float64 if dtype in (torch.float64, torch.complex128) else np.float32


def _fill(self, generator, draw):
    """Store ``draw(rng, shape, draw_dtype)`` into ``self``; a complex tensor gets independent real and imag parts."""
    check_no_internal_overlap(self)  # before the draw: a refused call leaves the generator where it was
    rng = _stream(generator)
    if self.numel() == 0:
        return self
    shape, dtype = tuple(self.shape), _draw_dtype(self.dtype)
    if self.is_complex():  # built apart, then written: complex32's storage has no .real/.imag to fill
        values = np.empty(shape, np.result_type(dtype, np.complex64))
        values.real, values.imag = draw(rng, shape, dtype), draw(rng, shape, dtype)
        return write(self, values)
    return write(self, draw(rng, shape, dtype))


def _check_floating(self, kernel, allow_complex=False):
    if not (self.is_floating_point() or (allow_complex and self.is_complex())):
        raise not_implemented_for(kernel, self.dtype)


def _check_continuous(self, distribution):
    if not self.is_floating_point():
        raise RuntimeError(
            f"{distribution} distribution is a continuous probability distribution. dtype must be a floating "
            f"point but you specified {scalar_type_name(self.dtype)}"
        )


def _check(condition, message):
    if not condition:
        raise RuntimeError(message)


# --- continuous distributions ----------------------------------------------------------------------------------


def _check_uniform_bounds(self, low, high):
    finfo = torch.finfo(self.dtype if self.is_floating_point() else self.dtype.to_real())
    for name, value in (("from", low), ("to", high)):
        _check(finfo.min <= value <= finfo.max, f"{name} is out of bounds for {cpp_type_name(self.dtype)}")
    _check(low <= high, f"uniform_ expects to return a [from, to) range, but found from={low:g} > to={high:g}")
    _check(
        high - low <= finfo.max,
        f"uniform_ expects to-from <= std::numeric_limits<{scalar_type_name(self.dtype)}>::max(), but found "
        f"to={high:g} and from={low:g} which result in to-from to exceed the limit",
    )


@register("uniform_")
def uniform_(self, low=0.0, high=1.0, *, generator=None):
    _check_floating(self, "check_uniform_bounds", allow_complex=True)
    _check_uniform_bounds(self, low, high)
    return _fill(self, generator, lambda rng, shape, dtype: low + (high - low) * rng.random(shape, dtype))


def _standard_normal(mean, std):
    return lambda rng, shape, dtype: mean + std * rng.standard_normal(shape, dtype)


@register("normal_")
def normal_(self, mean=0.0, std=1.0, *, generator=None):
    _check_floating(self, "normal_kernel_cpu", allow_complex=True)
    _check(std >= 0.0, f"normal expects std >= 0.0, but found std {std:g}")
    if self.is_complex():
        std = std / math.sqrt(2)  # split between the real and imaginary parts, as CPU does
    return _fill(self, generator, _standard_normal(mean, std))


def _normal_into(out, mean, std, generator):
    """out = mean + std * z, with mean and std tensors or numbers broadcast together."""
    _check_floating(out, "normal_kernel_cpu")
    if isinstance(std, torch.Tensor):
        _check(bool(np.all(opmath_operand(std) >= 0)), "normal expects all elements of std >= 0.0")
    else:
        _check(std >= 0.0, f"normal expects std >= 0.0, but found std {std:g}")
    mean_array, std_array = (opmath_operand(v) if isinstance(v, torch.Tensor) else v for v in (mean, std))
    shape = np.broadcast_shapes(np.shape(mean_array), np.shape(std_array))
    prepare_out(out, shape, distinct=[v for v in (mean, std) if isinstance(v, torch.Tensor)])
    return _fill(out, generator, lambda rng, shape, dtype: mean_array + std_array * rng.standard_normal(shape, dtype))


@register("normal.Tensor_float", "normal.Tensor_Tensor")
def normal_from_tensor_mean(mean, std=1.0, *, generator=None):
    _check_floating(mean, "normal_kernel_cpu")
    return _normal_into(empty((0,), mean.dtype), mean, std, generator)


@register("normal.float_Tensor")
def normal_from_tensor_std(mean, std, *, generator=None):
    _check_floating(std, "normal_kernel_cpu")
    return _normal_into(empty((0,), std.dtype), mean, std, generator)


@register("normal.Tensor_float_out", "normal.Tensor_Tensor_out", "normal.float_Tensor_out")
def normal_out(mean, std=1.0, *, generator=None, out):
    return _normal_into(out, mean, std, generator)


@register("exponential_")
def exponential_(self, lambd=1.0, *, generator=None):
    _check_continuous(self, "Exponential")
    _check(lambd > 0.0, f"exponential_ expects lambda > 0.0, but found lambda={lambd:g}")
    return _fill(self, generator, lambda rng, shape, dtype: rng.standard_exponential(shape, dtype) / lambd)


@register("log_normal_")
def log_normal_(self, mean=1.0, std=2.0, *, generator=None):
    _check_floating(self, "log_normal_cpu")
    _check(std > 0.0, f"log_normal_ expects std > 0.0, but found std={std:g}")
    return _fill(self, generator, lambda rng, shape, dtype: rng.lognormal(mean, std, shape))


@register("cauchy_")
def cauchy_(self, median=0.0, sigma=1.0, *, generator=None):
    _check_continuous(self, "Cauchy")
    _check(sigma > 0.0, f"cauchy_ expects sigma > 0.0, but found sigma={sigma:g}")
    return _fill(self, generator, lambda rng, shape, dtype: median + sigma * rng.standard_cauchy(shape))


# --- the samplers behind torch.distributions (Gamma, Beta, Dirichlet, Chi2, StudentT, Poisson, Binomial) ----------
# Parameters are read and draws made in float64, as CPU draws them; each result is stored once in its dtype.


def _check_single_or_double(tensor, kernel):
    if tensor.dtype not in (torch.float32, torch.float64):
        raise not_implemented_for(kernel, tensor.dtype)


def _float64(tensor):
    return opmath_operand(tensor).astype(np.float64)


def _draw_into_new(like, generator, draw, *parameters):
    """A new tensor shaped and typed like ``like`` holding ``draw(rng, *parameters)``."""
    rng = _stream(generator)
    return store(draw(rng, *parameters), like.dtype)


def _standard_gamma_draws(rng, alpha):
    """Gamma(alpha, 1); alpha <= 0 or NaN, which NumPy refuses, draw 0 as CPU's sampler does."""
    valid = alpha > 0
    return np.where(valid, rng.standard_gamma(np.where(valid, alpha, 1.0)), 0.0)


@register("_standard_gamma")
def standard_gamma(self, generator=None):
    _check_single_or_double(self, "gamma_cpu")
    tiny = np.finfo(_tensor.numpy_dtype(self.dtype)).tiny  # CPU never returns 0: log_prob stays finite
    return _draw_into_new(self, generator, lambda rng, alpha: np.maximum(_standard_gamma_draws(rng, alpha), tiny),
                          _float64(self))


def _dirichlet_draws(rng, alpha, dtype):
    """Normalised gamma draws, kept strictly inside (0, 1) in ``dtype`` as CPU keeps them."""
    gammas = np.maximum(_standard_gamma_draws(rng, alpha), np.finfo(np.float64).tiny)
    ratios = gammas / gammas.sum(axis=-1, keepdims=True) if gammas.ndim else gammas / gammas
    limits = np.finfo(dtype)
    return np.clip(ratios, limits.tiny, np.nextafter(dtype.type(1), dtype.type(0)))


@register("_sample_dirichlet")
def sample_dirichlet(self, generator=None):
    _check_single_or_double(self, "dirichlet")
    dtype = _tensor.numpy_dtype(self.dtype)
    return _draw_into_new(self, generator, lambda rng, alpha: _dirichlet_draws(rng, alpha, dtype), _float64(self))


@register("poisson")
def poisson(self, generator=None):
    _check_floating(self, "poisson_cpu")
    rates = _float64(self)
    _check(bool(np.all(rates >= 0)), "invalid Poisson rate, expected rate to be non-negative")
    return _draw_into_new(self, generator, lambda rng, rates: rng.poisson(rates), rates)


def _binomial_draws(rng, trials, probability):
    """Counts of successes; a negative count draws 0 and a NaN parameter gives NaN, as on CPU."""
    valid = np.isfinite(trials) & (trials >= 0) & (probability >= 0) & (probability <= 1)
    draws = rng.binomial(np.where(valid, trials, 0).astype(np.int64), np.where(valid, probability, 0))
    return np.where(valid, draws, np.where(np.isnan(trials) | np.isnan(probability), np.nan, 0))


@register("binomial")
def binomial(count, prob, generator=None):
    if not count.is_floating_point():
        raise ValueError(
            f"binomial only supports floating-point dtypes for count, got: {scalar_type_name(count.dtype)}")
    _check_single_or_double(count, "binomial_cpu")
    trials = _float64(count)
    probability = np.broadcast_to(_float64(prob), trials.shape)
    return _draw_into_new(count, generator, _binomial_draws, trials, probability)


# --- gradients of those samples (rsample): ATen's approximations (sample_gradients.py) ---------------------------


@register("_standard_gamma_grad")
def standard_gamma_grad(self, output):
    _check_single_or_double(self, "_standard_gamma_grad_cpu")
    alpha, x = np.broadcast_arrays(_float64(self), _float64(output))
    return store(sample_gradients.standard_gamma_gradient(alpha, x), self.dtype)


@register("_dirichlet_grad")
def dirichlet_grad(x, alpha, total):
    _check_single_or_double(x, "_dirichlet_grad_cpu")
    operands = np.broadcast_arrays(*(opmath_operand(t) for t in (x, alpha, total)))
    return store(sample_gradients.dirichlet_gradient(*operands), x.dtype)


# --- discrete distributions ------------------------------------------------------------------------------------


@register("geometric_")
def geometric_(self, p, *, generator=None):
    if self.dtype == torch.bool or self.is_complex():
        raise not_implemented_for("geometric_cpu", self.dtype)
    _check(0 < p < 1, f"geometric_ expects p to be in (0, 1), but got p={p:g}")
    return _fill(self, generator, lambda rng, shape, dtype: rng.geometric(p, shape))


def bernoulli_draw(rng, shape, p):
    """A Bernoulli(p) bool array from the stream ``rng`` (``p`` a number or an array of probabilities). Dropout
    draws its keep mask here too, so that CPU's two dropout paths (native_dropout, and the in-place
    ``empty_like(x).bernoulli_(1 - p)``) keep the same elements under one seed on tpu as on the CPU, and compiled
    programs run ``bernoulli`` whole (its decomposition draws float32 uniforms: another mask)."""
    return rng.random(shape) < p


@register("bernoulli_.float")
def bernoulli_float_(self, p=0.5, *, generator=None):
    _check(0 <= p <= 1, f"bernoulli_ expects p to be in [0, 1], but got p={p:g}")
    return _fill(self, generator, lambda rng, shape, dtype: bernoulli_draw(rng, shape, p))


@register("bernoulli_.Tensor")
def bernoulli_tensor_(self, p, *, generator=None):
    _check_floating(p, "bernoulli_tensor_cpu_p_")
    probabilities = opmath_operand(p.expand(self.shape))  # expand gives CPU's size error
    if not np.all((probabilities >= 0) & (probabilities <= 1)):
        raise failed_check("p_in >= 0 && p_in <= 1")
    return _fill(self, generator, lambda rng, shape, dtype: bernoulli_draw(rng, shape, probabilities))


@register("bernoulli.out")
def bernoulli_out(self, *, generator=None, out):
    prepare_out(out, self.shape, inputs=(self,))
    return bernoulli_tensor_(out, self, generator=generator)


# --- random_: integers, bounded like CPU's ---------------------------------------------------------------------


def _dtype_limits(dtype):
    if dtype == torch.bool:
        return 0, 1
    if dtype.is_floating_point:
        finfo = torch.finfo(dtype)
        return finfo.min, finfo.max
    iinfo = torch.iinfo(dtype)
    return iinfo.min, iinfo.max


def _check_random_dtype(self):
    if not (self.dtype in _FLOAT_DIGITS or self.dtype in _RANDOM_INT_DTYPES):
        raise not_implemented_for("random_kernel_cpu", self.dtype)


def _largest_exact_integer(dtype):
    """The top of random_'s default range: 2**digits for floats, the maximum for integers."""
    if dtype in _FLOAT_DIGITS:
        return min(2 ** _FLOAT_DIGITS[dtype], _INT64_MAX)
    if dtype == torch.bool:
        return 1
    maximum = torch.iinfo(dtype).max
    return maximum if maximum <= _INT64_MAX else maximum - 2**64  # CPU's static_cast<int64_t>: uint64 gives -1


def _round_trip(value, dtype):
    """``value`` cast to ``dtype`` and back to an integer, as C++'s static_casts do."""
    with np.errstate(over="ignore"):
        rounded = float(_tensor.numpy_dtype(dtype).type(float(value)))
    return int(rounded) if math.isfinite(rounded) else value


def _exact_from(low, dtype):
    """CPU's update_from: move ``low`` up to the next integer the float dtype represents."""
    low_plus_1 = _round_trip(low + 1, dtype)
    if low_plus_1 < low:
        exponent = max(abs(low + 1).bit_length() - 1, 0)
        low = low_plus_1 + (1 << (exponent - _FLOAT_DIGITS[dtype] + 1))
    return low


def _exact_to(high, dtype):
    """CPU's update_to: move the exclusive ``high`` down to an integer the float dtype represents."""
    high_minus_1 = _round_trip(high - 1, dtype)
    if high_minus_1 >= high:
        exponent = max(abs(high - 1).bit_length() - 1, 0)
        high = high_minus_1 - (1 << (exponent - _FLOAT_DIGITS[dtype] + 1))
    return high


def _check_range_fits(low, high_inclusive, dtype):
    minimum, maximum = _dtype_limits(dtype)
    type_name = cpp_type_name(dtype)
    for name, value in (("from", low), ("to - 1", high_inclusive)):
        _check(minimum <= value <= maximum, f"{name} is out of bounds for {type_name}")
        digits = _FLOAT_DIGITS.get(dtype)
        if digits is not None and not -(2**digits) <= value <= 2**digits:
            warnings.warn(
                f"{name} is out of bounds [-(2^{digits}), 2^{digits}]. Due to precision limitations {type_name} "
                "can support discrete uniform distribution only within this range. This warning will become an "
                "error in version 1.7 release, please fix the code in advance",
                stacklevel=3,
            )


def _fill_integers(self, low, high_inclusive, generator):
    return _fill(self, generator, lambda rng, shape, dtype: rng.integers(
        low, high_inclusive, shape, dtype=np.int64, endpoint=True))


@register("random_.from")
def random_from_(self, low, high=None, *, generator=None):
    full_64_bit_range = high is None and low == _INT64_MIN
    if self.is_complex() and not full_64_bit_range:
        checker = "check_random_bounds" if high is not None else "random_from_to_impl"
        raise RuntimeError(f"{checker} handles only integral, floating-point and boolean types")
    if self.dtype.is_floating_point and self.dtype not in _FLOAT_DIGITS and not full_64_bit_range:  # FP8
        raise not_implemented_for("random_update_from_to" if high is not None else "random_from_to_range_calc",
                                  self.dtype)
    floating = self.dtype in _FLOAT_DIGITS
    if high is not None:
        _check(low < high, f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
        if floating:
            low, high = _exact_from(low, self.dtype), _exact_to(high, self.dtype)
            _check(low < high, "random_ expects 'from' casted to dtype to be less than 'to' casted to dtype, "
                               f"but got from={low} >= to={high}")
        _check_range_fits(low, high - 1, self.dtype)
        return _fill_integers(self, low, high - 1, generator)
    if full_64_bit_range:
        if self.dtype not in _FULL_64_BIT_RANGE_LOOPS:
            raise not_implemented_for("random_full_64_bits_range_kernel_cpu", self.dtype)
        _check(self.dtype in (torch.int64, torch.float64, torch.float32, torch.bfloat16),
               "random_full_64_bits_range_kernel_cpu handles only int64, double, float and bfloat16")
        return _fill_integers(self, _INT64_MIN, _INT64_MAX, generator)
    high_inclusive = _largest_exact_integer(self.dtype)
    if floating:
        low = _exact_from(low, self.dtype)
        _check(low < high_inclusive, "random_ expects 'from' casted to dtype to be less than or equal to 'to_inc' "
                                     f"casted to dtype, but got from={low} > to_inc={high_inclusive}")
    _check_range_fits(low, high_inclusive, self.dtype)
    return _fill_integers(self, low, high_inclusive, generator)


@register("random_.to")
def random_to_(self, high, *, generator=None):
    return random_from_(self, 0, high, generator=generator)


@register("random_")
def random_(self, *, generator=None):
    _check_random_dtype(self)
    return _fill_integers(self, 0, _largest_exact_integer(self.dtype), generator)


# --- permutations and sampling ---------------------------------------------------------------------------------

# Floats represent every integer of a permutation only up to 2**digits + 1 elements.
_RANDPERM_FLOAT_LIMIT = {torch.float16: (2049, "2049"), torch.float32: (2**24 + 1, "2^24+1"),
                         torch.float64: (2**53 + 1, "2^53+1")}


def _check_randperm(n, dtype):
    _check(n >= 0, f"n must be non-negative, got{n}")
    if dtype == torch.bool or dtype.is_complex:
        raise not_implemented_for("randperm", dtype)
    if dtype in _RANDPERM_FLOAT_LIMIT:
        limit, text = _RANDPERM_FLOAT_LIMIT[dtype]
        _check(n <= limit, f"n cannot be greater than {text} for {scalar_type_name(dtype)} type.")
    elif not dtype.is_floating_point:
        _check(max(n - 1, 0) <= torch.iinfo(dtype).max,
               f"value cannot be converted to type {_tensor.numpy_dtype(dtype).name}_t without overflow")


@register("randperm.generator_out")
def randperm_out(n, *, generator=None, out):
    _check_randperm(n, out.dtype)
    prepare_out(out, (n,))
    rng = _stream(generator)
    return write(out, rng.permutation(n))


def _check_multinomial(self, num_samples, replacement):
    _check(self.dim() in (1, 2), "prob_dist must be 1 or 2 dim")
    _check(self.is_floating_point(),
           f"multinomial only supports floating-point dtypes for input, got: {scalar_type_name(self.dtype)}")
    _check(num_samples > 0, "cannot sample n_sample <= 0 samples")
    _check(replacement or num_samples <= self.shape[-1],
           "cannot sample n_sample > prob_dist.size(-1) samples without replacement")
    _check(self.shape[-1] <= 2**24, "number of categories cannot exceed 2^24")


def _check_probabilities(probabilities):
    _check(bool(np.all(np.isfinite(probabilities) & (probabilities >= 0))),
           "probability tensor contains either `inf`, `nan` or element < 0")
    _check(bool(np.all(probabilities.sum(axis=-1) > 0)),
           "invalid multinomial distribution (sum of probabilities <= 0)")


def _sample_with_replacement(rng, probabilities, num_samples):
    """Inverse-CDF sampling; side='right' never lands on a zero-probability category."""
    cumulative = np.cumsum(probabilities, axis=-1)
    draws = rng.random((len(probabilities), num_samples)) * cumulative[:, -1:]
    rows = [np.searchsorted(row, row_draws, side="right") for row, row_draws in zip(cumulative, draws)]
    return np.minimum(np.stack(rows), probabilities.shape[-1] - 1)


def _sample_without_replacement(rng, probabilities, num_samples):
    """CPU's exponential trick: the top-k of p / q with q ~ Exp(1) is a draw without replacement."""
    keys = probabilities / rng.standard_exponential(probabilities.shape)
    return np.argsort(-keys, axis=-1, kind="stable")[:, :num_samples]


def _multinomial_into(out, self, num_samples, replacement, generator):
    _check_multinomial(self, num_samples, replacement)
    _check(out.dtype == torch.int64, f"multinomial expects Long tensor out, got: {scalar_type_name(out.dtype)}")
    prepare_out(out, (*self.shape[:-1], num_samples), distinct=(self,))
    rng = _stream(generator)
    if self.numel() == 0:
        return out
    probabilities = np.atleast_2d(as_numpy(self).astype(np.float64))
    _check_probabilities(probabilities)
    sample = _sample_with_replacement if replacement and num_samples > 1 else _sample_without_replacement
    return write(out, sample(rng, probabilities, num_samples).reshape(out.shape))


@register("multinomial")
def multinomial(self, num_samples, replacement=False, *, generator=None):
    return _multinomial_into(empty((0,), torch.int64), self, num_samples, replacement, generator)


@register("multinomial.out")
def multinomial_out(self, num_samples, replacement=False, *, generator=None, out):
    return _multinomial_into(out, self, num_samples, replacement, generator)


# --- rrelu --------------------------------------------------------------------------------------------------------


def _rrelu_with_noise_into(output, self, noise, lower, upper, training, generator):
    """Training: each element <= 0 gets a slope drawn from U(lower, upper), recorded in ``noise``
    (1 elsewhere). Evaluation: leaky_relu with the mean slope, ``noise`` untouched."""
    if self.shape != noise.shape:
        raise RuntimeError(f"noise tensor shape must match self tensor shape. Got self.shape = {list(self.shape)} "
                           f"noise.shape = {list(noise.shape)}")
    if not training:
        return torch.ops.aten.leaky_relu.out(self, (float(lower) + float(upper)) / 2, out=output)
    if not self.dtype.is_floating_point:
        raise not_implemented_for("rrelu_with_noise_out_cpu", self.dtype)
    rng = _stream(generator)
    values = opmath_operand(self)
    negative = values <= 0
    slopes = np.ones(values.shape, values.dtype)
    slopes[negative] = rng.uniform(float(lower), float(upper), int(negative.sum())).astype(values.dtype)
    result = values * slopes  # times 1 leaves the other elements unchanged
    write(noise, slopes)
    return write(output, result)


@register("rrelu_with_noise")
def rrelu_with_noise(self, noise, lower=0.125, upper=1 / 3, training=False, generator=None):
    output = empty(self.shape, self.dtype)
    return _rrelu_with_noise_into(output, self, noise, lower, upper, training, generator)


@register("rrelu_with_noise.out")
def rrelu_with_noise_out(self, noise, lower=0.125, upper=1 / 3, training=False, generator=None, *, out):
    return _rrelu_with_noise_into(prepare_out(out, self.shape, self.dtype, inputs=(self,), distinct=(noise,)), self, noise,
                                  lower, upper, training, generator)


@register("rrelu_with_noise_")
def rrelu_with_noise_(self, noise, lower=0.125, upper=1 / 3, training=False, generator=None):
    return _rrelu_with_noise_into(self, self, noise, lower, upper, training, generator)
