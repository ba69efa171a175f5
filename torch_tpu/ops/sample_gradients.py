"""The gradients of gamma and Dirichlet samples (``rsample``) as ATen defines them.

``_standard_gamma_grad`` and ``_dirichlet_grad`` are the implicit reparameterisation gradient
-(dF/dalpha) / density at a sample. CPU and CUDA do not evaluate that quantity exactly: both run
ATen's ``standard_gamma_grad_one`` and ``dirichlet_grad_one`` (aten/src/ATen/native/Distributions.h),
series and fitted rational approximations good to about 4e-4 relative. Those approximations are what
PyTorch's gradients are, so tpu computes the same formulas, branch by branch, vectorised: in float64,
as CPU's kernels instantiate them (accscalar_t = double), except the two small-x Beta series, which
ATen evaluates in the tensor's own dtype. The branch limits are C++ float literals (``0.8f``), compared
in double.
"""

import numpy as np


def _as_float(literal):
    """A C++ float literal such as ``0.9f``, as a double comparison sees it."""
    return float(np.float32(literal))


_PSI_10 = 2.25175258906672110764
_DIGAMMA_ASYMPTOTIC = (8.33333333333333333333E-2, -2.10927960927960927961E-2, 7.57575757575757575758E-3,
                       -4.16666666666666666667E-3, 3.96825396825396825397E-3, -8.33333333333333333333E-3,
                       8.33333333333333333333E-2)


def _digamma(x, dtype):
    """ATen's ``digamma_one<scalar_t, double>``: the argument is stepped up to 10 in the tensor's dtype
    (each step rounds, which moves float32 results by up to 1e-6), the sum kept in double, the result
    rounded to the dtype."""
    x = np.asarray(x, dtype=dtype)
    pi = x.dtype.type(np.pi)
    negative = x < 0
    poles = (x == 0) | (negative & (x == np.floor(x)))
    reflection = np.where(negative, -pi / np.tan(pi * x), 0).astype(np.float64)
    x = np.where(negative, 1 - x, x)
    result = np.zeros(x.shape)
    while np.any(below := x < 10):
        result = result - np.where(below, 1 / x, 0)
        x = np.where(below, x + 1, x)
    z = 1.0 / (x * x).astype(np.float64)
    series = np.full(x.shape, _DIGAMMA_ASYMPTOTIC[0])
    for coefficient in _DIGAMMA_ASYMPTOTIC[1:]:
        series = series * z + coefficient
    tail = np.where(x < _as_float(1.0e17), z * series, 0.0)
    # C's logf/log, correctly rounded in practice (NumPy's SIMD float32 log is not: an ulp here moves a Dirichlet
    # gradient whose terms cancel by percents)
    logarithm = np.log(x.astype(np.float64)).astype(x.dtype)
    asymptotic = result + logarithm - 0.5 / x - tail + reflection
    value = np.where(x == 10, result + _PSI_10 + reflection, asymptotic)
    return np.where(poles, np.inf, value).astype(dtype)


# --- Gamma: standard_gamma_grad_one<scalar_t, double> --------------------------------------------------------------

_GAMMA_UV = np.array([
    [0.16009398, -0.094634809, 0.025146376, -0.0030648343, 1, 0.32668115, 0.10406089, 0.0014179084],
    [0.53487893, 0.1298071, 0.065735949, -0.0015649758, 0.16639465, 0.020070113, -0.0035938915, -0.00058392623],
    [0.040121004, -0.0065914022, -0.0026286047, -0.0013441777, 0.017050642, -0.0021309326, 0.00085092367,
     -1.5247877e-07],
])


def _gamma_small_x(alpha, x):
    """A Taylor series in x of the CDF and of its alpha derivative (x < 0.8); NaN reads as 0."""
    numer, denom = np.ones_like(x), alpha.copy()
    series1, series2 = numer / denom, numer / (denom * denom)
    for i in range(1, 6):
        numer = numer * (-x / i)
        denom = denom + 1
        series1 = series1 + numer / denom
        series2 = series2 + numer / (denom * denom)
    pow_x_alpha = np.power(x, alpha)
    pdf = np.power(x, alpha - 1) * np.exp(-x)
    cdf = pow_x_alpha * series1
    cdf_alpha = (np.log(x) - _digamma(alpha, np.float64)) * cdf - pow_x_alpha * series2
    result = -cdf_alpha / pdf
    return np.where(np.isnan(result), 0.0, result)


def _gamma_large_alpha(alpha, x):
    """Rice's saddle point expansion (alpha > 8), a polynomial within 10% of alpha."""
    numer_1 = 1 + 24 * alpha * (1 + 12 * alpha)
    numer_2 = 1440 * (alpha * alpha) + 6 * x * (53 - 120 * x) - 65 * x * x / alpha + alpha * (107 + 3600 * x)
    near_mean = numer_1 * numer_2 / (1244160 * (alpha * alpha) * (alpha * alpha))
    denom = np.sqrt(8 * alpha)
    term2 = denom / (alpha - x)
    term3 = np.power(x - alpha - alpha * np.log(x / alpha), -1.5)
    term23 = np.where(x < alpha, term2 - term3, term2 + term3)
    term1 = np.log(x / alpha) * term23 - np.sqrt(2 / alpha) * (alpha + x) / ((alpha - x) * (alpha - x))
    stirling = 1 + 1 / (12 * alpha) * (1 + 1 / (24 * alpha))
    saddle = -stirling * (x * term1) / denom
    return np.where((_as_float(0.9) * alpha <= x) & (x <= _as_float(1.1) * alpha), near_mean, saddle)


def _gamma_rational(alpha, x):
    """A bivariate rational fit in log(x / alpha) and log(alpha)."""
    u, v = np.log(x / alpha), np.log(alpha)
    coef = [_GAMMA_UV[0, i] + u * (_GAMMA_UV[1, i] + u * _GAMMA_UV[2, i]) for i in range(8)]
    p = coef[0] + v * (coef[1] + v * (coef[2] + v * coef[3]))
    q = coef[4] + v * (coef[5] + v * (coef[6] + v * coef[7]))
    return np.exp(p / q)


def standard_gamma_gradient(alpha, x):
    """dx/dalpha of standard gamma samples ``x`` (float64 arrays), as ATen approximates it."""
    with np.errstate(all="ignore"):
        return np.where(x < _as_float(0.8), _gamma_small_x(alpha, x),
                        np.where(alpha > 8, _gamma_large_alpha(alpha, x), _gamma_rational(alpha, x)))


# --- Dirichlet: dirichlet_grad_one<scalar_t, double> ---------------------------------------------------------------

_DIRICHLET_PQ = np.array([
    [[[1.003668233, -0.01061107488, -0.0657888334, 0.01201642863],
      [0.6336835991, -0.3557432599, 0.05486251648, -0.001465281033],
      [-0.03276231906, 0.004474107445, 0.002429354597, -0.0001557569013]],
     [[0.221950385, -0.3187676331, 0.01799915743, 0.01074823814],
      [-0.2951249643, 0.06219954479, 0.01535556598, 0.001550077057],
      [0.02155310298, 0.004170831599, 0.001292462449, 6.976601077e-05]],
     [[-0.05980841433, 0.008441916499, 0.01085618172, 0.002319392565],
      [0.02911413504, 0.01400243777, -0.002721828457, 0.000751041181],
      [0.005900514878, -0.001936558688, -9.495446725e-06, 5.385558597e-05]]],
    [[[1, -0.02924021934, -0.04438342661, 0.007285809825],
      [0.6357567472, -0.3473456711, 0.05454656494, -0.002407477521],
      [-0.03301322327, 0.004845219414, 0.00231480583, -0.0002307248149]],
     [[0.5925320577, -0.1757678135, 0.01505928619, 0.000564515273],
      [0.1014815858, -0.06589186703, 0.01272886114, -0.0007316646956],
      [-0.007258481865, 0.001096195486, 0.0003934994223, -4.12701925e-05]],
     [[0.06469649321, -0.0236701437, 0.002902096474, -5.896963079e-05],
      [0.001925008108, -0.002869809258, 0.0008000589141, -6.063713228e-05],
      [-0.0003477407336, 6.959756487e-05, 1.097287507e-05, -1.650964693e-06]]],
])


def _beta_alpha_small(x, alpha, beta):
    """d/dalpha of a Beta(alpha, beta) sample near 0: a Taylor series, in the tensor's dtype."""
    factor = _digamma(alpha, x.dtype) - _digamma(alpha + beta, x.dtype) - np.log(x)
    numer = np.ones_like(x)
    series = numer / alpha * (factor + 1 / alpha)
    for i in range(1, 11):
        numer = numer * ((i - beta) * x / i)
        denom = alpha + i
        series = series + numer / denom * (factor + 1 / denom)
    result = x * np.power(1 - x, -beta) * series
    return np.where(np.isnan(result), 0, result)


def _beta_beta_small(x, alpha, beta):
    """d/dbeta of a Beta(alpha, beta) sample near 0: a Taylor series, in the tensor's dtype."""
    factor = _digamma(alpha + beta, x.dtype) - _digamma(beta, x.dtype)
    numer, betas, dbetas = np.ones_like(x), np.ones_like(x), np.zeros_like(x)
    series = factor / alpha
    for i in range(1, 9):
        numer = numer * (-x / i)
        dbetas = dbetas * (beta - i) + betas
        betas = betas * (beta - i)
        series = series + numer / (alpha + i) * (dbetas + factor * betas)
    result = -np.power(1 - x, 1 - beta) * series
    return np.where(np.isnan(result), 0, result)


def _beta_alpha_mid(x, alpha, beta):
    """d/dalpha of a Beta sample when alpha and beta are both large: Rice's saddle point, in float64."""
    total = alpha + beta
    mean = alpha / total
    std = np.sqrt(alpha * beta / (total + 1)) / total
    poly = 47 * x * (beta * beta) * (beta * beta) + alpha * (
        (43 + 20 * (16 + 27 * beta) * x) * (beta * beta) * beta + alpha * (
            3 * (59 + 180 * beta - 90 * x) * (beta * beta) + alpha * (
                (453 + 1620 * beta * (1 - x) - 455 * x) * beta + alpha * (
                    8 * (1 - x) * (135 * beta - 11)))))
    prefactor_num = (1 + 12 * alpha) * (1 + 12 * beta) / (total * total)
    prefactor_den = 12960 * alpha * alpha * alpha * beta * beta * (1 + 12 * total)
    near_mean = prefactor_num / (1 - x) * poly / prefactor_den
    prefactor = -x / np.sqrt(2 * alpha * beta / total)
    stirling = ((1 + 1 / (12 * alpha) + 1 / (288 * alpha * alpha)) * (1 + 1 / (12 * beta) + 1 / (288 * beta * beta))
                / (1 + 1 / (12 * total) + 1 / (288 * total * total)))
    term1_num = 2 * (alpha * alpha) * (x - 1) + alpha * beta * (x - 1) - x * (beta * beta)
    axbx = alpha * (x - 1) + beta * x
    term1 = term1_num / (np.sqrt(2 * alpha / beta) * np.power(total, 1.5) * axbx * axbx)
    term2 = 0.5 * np.log(alpha / (total * x))
    term3 = np.sqrt(8 * alpha * beta / total) / (beta * x + alpha * (x - 1))
    term4 = np.power(beta * np.log(beta / (total * (1 - x))) + alpha * np.log(alpha / (total * x)), -1.5)
    saddle = stirling * prefactor * (term1 + term2 * (term3 + np.where(x < mean, term4, -term4)))
    return np.where((mean - 0.1 * std <= x) & (x <= mean + 0.1 * std), near_mean, saddle)


def _beta_rational(x, alpha, total, dtype):
    """A rational correction to x (digamma(total) - digamma(alpha)) / beta, in float64."""
    u = np.log(x)
    a = np.log(alpha) - u
    b = np.log(total) - a
    pow_u, pow_a = (1, u, u * u), (1, a, a * a)
    p = q = 0.0
    for i in range(3):
        for j in range(3):
            ua = pow_u[i] * pow_a[j]
            cp, cq = _DIRICHLET_PQ[0, i, j], _DIRICHLET_PQ[1, i, j]
            p = p + ua * (cp[0] + b * (cp[1] + b * (cp[2] + b * cp[3])))
            q = q + ua * (cq[0] + b * (cq[1] + b * (cq[2] + b * cq[3])))
    approx = x * (_digamma(total, dtype) - _digamma(alpha, dtype)).astype(np.float64) / (total - alpha)
    return p / q * approx


def dirichlet_gradient(x, alpha, total):
    """ATen's scaled Beta gradient -(dF/dalpha) / density / (1 - x) of Dirichlet coordinates ``x`` with
    concentration ``alpha`` of ``total``: arrays of the tensor's dtype; the result is float64."""
    dtype = x.dtype
    beta = total - alpha
    boundary = total * x * (1 - x)
    wide = [v.astype(np.float64) for v in (x, alpha, total)]
    with np.errstate(all="ignore"):
        near_zero = _beta_alpha_small(x, alpha, beta)
        near_one = -_beta_beta_small(1 - x, beta, alpha)
        mid = _beta_alpha_mid(wide[0], wide[1], wide[2] - wide[1])
        rational = _beta_rational(*wide, dtype)
        return np.where((x <= 0.5) & (boundary < 2.5), near_zero,
                        np.where((x >= 0.5) & (boundary < 0.75), near_one,
                                 np.where((alpha > 6) & (beta > 6), mid, rational)))
