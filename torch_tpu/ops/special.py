"""``torch.special`` kernels with no NumPy ufunc of their own: orthogonal polynomials and Bessel functions.

The polynomials follow torch CPU's scalar code (aten/src/ATen/native/Math.h) step by step, because
their results outside the textbook domain are defined by that code, not by mathematics: the degree
``n`` is truncated to an integer as a C cast does (NaN and infinities become a negative degree),
negative degrees give 0, the endpoints of [-1, 1] have exact values, high degrees inside (-1, 1)
switch to the trigonometric closed form, and everything else runs the three-term recurrence in the
compute dtype (fused multiply-adds, as CPU's build contracts them), stopping where the value turns
NaN. The closed forms use correctly rounded acos/cos/sin; glibc's acosf can be an ulp off, which the
degree multiplies, so float32 results of degrees above 8 inside (-1, 1) can differ from CPU by ~1e-5.
The Bessel functions are scipy.special in float64, rounded once to the result dtype (torch CPU's own
float64 J0/J1/Y0/Y1 are only accurate to about 1e-6); Airy Ai is CPU's Cephes code, ported.
"""

import numpy as np
import scipy.special as scipy_special

from .pointwise import single_or_double, structured, supports, to_float
from .pointwise import arccos as _acos, cos as _cos, sin as _sin  # correctly rounded (vpu.rounded_once)

_INT64_MIN = np.iinfo(np.int64).min


def _degree(n):
    """``static_cast<int64_t>(n)`` on x86: truncation, with NaN, infinities and overflow giving INT64_MIN."""
    if n.dtype.kind in "iub":
        return n.astype(np.int64)
    representable = np.isfinite(n) & (np.abs(n) < 2.0**63)
    return np.where(representable, np.trunc(np.where(representable, n, 0)), _INT64_MIN).astype(np.int64)


def _sign_of_parity(n):
    """(-1)^n for the degrees that reach the endpoint rules (never negative there)."""
    return np.where(n % 2 == 0, 1, -1)


def _fused(a, q, b):
    """a * q - b with one rounding, as the CPU build's fused multiply-add computes the recurrences.

    float32 operands are exact in float64 products, so rounding the float64 result once more
    reproduces the FMA; float64 has no wider type to do that in and rounds twice.
    """
    if q.dtype == np.float32:
        return (a.astype(np.float64) * q - b).astype(np.float32)
    return a * q - b


def _recurrence(y, n, first, step):
    """p_n from p_0 = 1, p_1 = ``first`` and the three-term recurrence, for the elements with n >= 2.

    ``step(y, p_{j-1}, j)`` gives (a, b, d) of p_{j+1} = (a * p_j - b) / d. Elements stop at their
    degree or where the value turns NaN, as the CPU loop does.
    """
    result = np.zeros(y.shape, y.dtype)
    flat = result.reshape(-1)
    active = np.flatnonzero(n >= 2)
    y, n = y.ravel()[active], n.ravel()[active]
    p, q = np.ones_like(y), first.ravel()[active]
    j = 1
    while active.size:
        a, b, divisor = step(y, p, j)
        p, q = q, _fused(a, q, b)
        if divisor != 1:
            q = q / y.dtype.type(divisor)
        done = (n == j + 1) | np.isnan(q)
        flat[active[done]] = q[done]
        keep = ~done
        active, y, n, p, q = active[keep], y[keep], n[keep], p[keep], q[keep]
        j += 1
    return result


def _chebyshev_step(y, p, j):
    return y + y, p, 1


def _evaluated(x, n, cases, recurrence):
    """``cases`` are (condition, value) pairs in the CPU code's order; the rest is ``recurrence()``."""
    conditions, values = zip(*cases)
    return np.select(conditions, values, recurrence()).astype(x.dtype)


# --------------------------------------------------------------------------------------------------
# The Chebyshev family: T, U, V, W and their shifted forms (argument 2x - 1) share one shape of code.


def _closed_t(theta, n, y, fallback):
    return _cos(n.astype(y.dtype) * theta)


def _closed_u(theta, n, y, fallback):
    m = (n + 1).astype(y.dtype)
    return np.where(_sin(theta) != 0, _sin(m * theta) / _sin(theta), m * _cos(m * theta) / y)


def _closed_v(theta, n, y, fallback):
    half = theta / y.dtype.type(2)
    return np.where(_sin(half) != 1, _cos((n.astype(y.dtype) + y.dtype.type(0.5)) * theta) / _cos(half),
                    fallback)


def _closed_w(theta, n, y, fallback):
    half = theta / y.dtype.type(2)
    return np.where(_cos(half) != 1, _sin((n.astype(y.dtype) + y.dtype.type(0.5)) * theta) / _sin(half),
                    fallback)


# kind: (value at y = 1, value at y = -1, p_1(y), closed form)
_CHEBYSHEV = {
    "t": (lambda n: 1, _sign_of_parity, lambda y: y, _closed_t),
    "u": (lambda n: n + 1, lambda n: _sign_of_parity(n) * (n + 1), lambda y: y + y, _closed_u),
    "v": (lambda n: 1, lambda n: _sign_of_parity(n) * (n + n + 1), lambda y: y + y - 1, _closed_v),
    "w": (lambda n: n + n + 1, _sign_of_parity, lambda y: y + y + 1, _closed_w),
}
# The degree above which (-1, 1) uses the closed form, and which endpoint value the closed form falls
# back to where its denominator rounds to an extreme (CPU's shifted W falls back to the y = -1 value).
_CLOSED_FORM_FROM = {"t": 6, "u": 8, "v": 8, "w": 8}
_SHIFTED_CLOSED_FORM_FROM = {"t": 6, "u": 6, "v": 6, "w": 4}
_CLOSED_FORM_FALLBACK = {"t": 1, "u": 1, "v": -1, "w": 1}
_SHIFTED_CLOSED_FORM_FALLBACK = {"t": 1, "u": 1, "v": -1, "w": -1}


def _chebyshev(kind, shifted):
    at_one, at_minus_one, first, closed = _CHEBYSHEV[kind]
    closed_from = (_SHIFTED_CLOSED_FORM_FROM if shifted else _CLOSED_FORM_FROM)[kind]
    fallback_end = (_SHIFTED_CLOSED_FORM_FALLBACK if shifted else _CLOSED_FORM_FALLBACK)[kind]

    def polynomial(x, n):
        x, n = np.broadcast_arrays(x, _degree(n))
        one = x.dtype.type(1)
        y = x + x - one if shifted else x
        with np.errstate(all="ignore"):
            theta = _acos(y)
            end = at_one(n) if fallback_end == 1 else at_minus_one(n)
            return _evaluated(x, n, [
                (n < 0, 0),
                (y == one, at_one(n)),
                (y == -one, at_minus_one(n)),
                ((n > closed_from) & (np.abs(y) < one), closed(theta, n, y, end)),
                (n == 0, 1),
                (n == 1, first(y)),
            ], lambda: _recurrence(y, n, first(y), _chebyshev_step))

    return polynomial


# --------------------------------------------------------------------------------------------------
# Hermite, Laguerre and Legendre polynomials

_HERMITE_DEGREE_LIMIT = {np.dtype(np.float32): 128, np.dtype(np.float64): 512}


def _hermite(first, step):
    def polynomial(x, n):
        x, n = np.broadcast_arrays(x, _degree(n))
        with np.errstate(all="ignore"):
            return _evaluated(x, n, [
                (n < 0, 0),
                (n == 0, 1),
                (n == 1, first(x)),
                (n > _HERMITE_DEGREE_LIMIT[x.dtype], np.nan),
            ], lambda: _recurrence(x, n, first(x), step))

    return polynomial


def _laguerre(x, n):
    x, n = np.broadcast_arrays(x, _degree(n))
    one = x.dtype.type(1)

    def step(x, p, k):
        return (k + k) + (one - x), k * p, k + 1

    with np.errstate(all="ignore"):
        return _evaluated(x, n, [(n < 0, 0), (x == 0, 1), (n == 0, 1), (n == 1, one - x)],
                          lambda: _recurrence(x, n, one - x, step))


def _legendre_step(x, p, k):
    return (k + k + 1) * x, k * p, k + 1


def _legendre(x, n):
    x, n = np.broadcast_arrays(x, _degree(n))
    with np.errstate(all="ignore"):
        return _evaluated(x, n, [(n < 0, 0), (np.abs(x) == 1, np.where((x > 0) | (n % 2 == 0), 1, -1)),
                                 (n == 0, 1), (n == 1, x)],
                          lambda: _recurrence(x, n, x, _legendre_step))


POLYNOMIALS = {
    **{f"chebyshev_polynomial_{kind}": _chebyshev(kind, shifted=False) for kind in _CHEBYSHEV},
    **{f"shifted_chebyshev_polynomial_{kind}": _chebyshev(kind, shifted=True) for kind in _CHEBYSHEV},
    "hermite_polynomial_h": _hermite(lambda x: x + x, lambda x, p, j: (x + x, (j + j) * p, 1)),
    "hermite_polynomial_he": _hermite(lambda x: x, lambda x, p, j: (x, j * p, 1)),
    "laguerre_polynomial_l": _laguerre,
    "legendre_polynomial_p": _legendre,
}


# --------------------------------------------------------------------------------------------------
# Bessel and Airy functions


def _in_float64(function):
    def evaluate(x):
        with np.errstate(all="ignore"):
            return function(x.astype(np.float64))

    return evaluate


# Cephes' airy() as torch CPU evaluates it in the input's precision (its float64 results differ from
# scipy's by up to 2e-6 relative near x = -2.5, so scipy cannot stand in for it).
_AIRY_AN = (3.46538101525629032477e-01, 1.20075952739645805542e+01, 7.62796053615234516538e+01,
            1.68089224934630576269e+02, 1.59756391350164413639e+02, 7.05360906840444183113e+01,
            1.40264691163389668864e+01, 9.99999999999999995305e-01)
_AIRY_AD = (5.67594532638770212846e-01, 1.47562562584847203173e+01, 8.45138970141474626562e+01,
            1.77318088145400459522e+02, 1.64234692871529701831e+02, 7.14778400825575695274e+01,
            1.40959135607834029598e+01, 1.00000000000000000470e+00)
_AIRY_AFN = (-1.31696323418331795333e-01, -6.26456544431912369773e-01, -6.93158036036933542233e-01,
             -2.79779981545119124951e-01, -4.91900132609500318020e-02, -4.06265923594885404393e-03,
             -1.59276496239262096340e-04, -2.77649108155232920844e-06, -1.67787698489114633780e-08)
_AIRY_AFD = (1.33560420706553243746e+01, 3.26825032795224613948e+01, 2.67367040941499554804e+01,
             9.18707402907259625840e+00, 1.47529146771666414581e+00, 1.15687173795188044134e-01,
             4.40291641615211203805e-03, 7.54720348287414296618e-05, 4.51850092970580378464e-07)
_AIRY_AGN = (1.97339932091685679179e-02, 3.91103029615688277255e-01, 1.06579897599595591108e+00,
             9.39169229816650230044e-01, 3.51465656105547619242e-01, 6.33888919628925490927e-02,
             5.85804113048388458567e-03, 2.82851600836737019778e-04, 6.98793669997260967291e-06,
             8.11789239554389293311e-08, 3.41551784765923618484e-10)
_AIRY_AGD = (9.30892908077441974853e+00, 1.98352928718312140417e+01, 1.55646628932864612953e+01,
             5.47686069422975497931e+00, 9.54293611618961883998e-01, 8.64580826352392193095e-02,
             4.12656523824222607191e-03, 1.01259085116509135510e-04, 1.17166733214413521882e-06,
             4.91834570062930015649e-09)


def _horner(coefficients, z):
    result = np.zeros_like(z)
    for c in coefficients:
        result = result * z + z.dtype.type(c)
    return result


def _airy_ai_oscillating(x):
    """x < -2.09: the asymptotic expansion in sin and cos."""
    T = x.dtype.type
    zeta = T(-2) * x * np.sqrt(-x) / T(3)
    z = T(1) / zeta
    zz = z * z
    f = T(1) + zz * _horner(_AIRY_AFN, zz) / _horner(_AIRY_AFD, zz)
    g = z * _horner(_AIRY_AGN, zz) / _horner(_AIRY_AGD, zz)
    t = zeta + T(0.25) * T(np.pi)
    return T(5.64189583547756286948e-01) / np.sqrt(np.sqrt(-x)) * (np.sin(t) * f - np.cos(t) * g)


def _airy_ai_decaying(x):
    """x >= 2.09: the exponentially decaying expansion."""
    T = x.dtype.type
    zeta = T(2) * x * np.sqrt(x) / T(3)
    ratio = _horner(_AIRY_AN, T(1) / zeta) / _horner(_AIRY_AD, T(1) / zeta)
    return T(5.64189583547756286948e-01) * ratio / (T(2) * np.sqrt(np.sqrt(x)) * np.exp(zeta))


def _airy_ai_series(x):
    """|x| < 2.09: the Maclaurin series of the two solutions f and g, summed to machine precision."""
    T = x.dtype.type
    f, g, m, n = np.ones_like(x), x.copy(), np.ones_like(x), x.copy()
    z, k = x * x * x, np.ones_like(x)
    running = np.ones(x.shape, bool)
    while running.any():
        m, n, k = np.where(running, m * z, m), np.where(running, n * z, n), k + running
        m = np.where(running, m / k, m)
        k = k + running
        n, m = np.where(running, n / k, n), np.where(running, m / k, m)
        f, k = np.where(running, f + m, f), k + running
        n = np.where(running, n / k, n)
        g = np.where(running, g + n, g)
        running &= np.abs(m / f) > np.finfo(x.dtype).eps
    return T(0.355028053887817239260) * f - T(0.258819403792806798405) * g


def _airy_ai(x):
    asymptotic = np.isinf(x) | (x < -2.09) | (x >= 2.09)  # compared in x's precision, as CPU does
    with np.errstate(all="ignore"):
        return np.select(
            [np.isinf(x), x > 103.892, x < -2.09, x >= 2.09],
            [np.nan, 0, _airy_ai_oscillating(x), _airy_ai_decaying(x)],
            _airy_ai_series(np.where(asymptotic, 0, x).astype(x.dtype)),
        ).astype(x.dtype)


def _spherical_bessel_j0(x):
    return np.where(np.isinf(x), 0.0, scipy_special.spherical_jn(0, x))


BESSEL = {
    "bessel_j0": scipy_special.j0, "bessel_j1": scipy_special.j1,
    "bessel_y0": scipy_special.y0, "bessel_y1": scipy_special.y1,
    "modified_bessel_i0": scipy_special.i0, "modified_bessel_i1": scipy_special.i1,
    "modified_bessel_k0": scipy_special.k0, "modified_bessel_k1": scipy_special.k1,
    "scaled_modified_bessel_k0": scipy_special.k0e, "scaled_modified_bessel_k1": scipy_special.k1e,
    "spherical_bessel_j0": _spherical_bessel_j0,
}


def register_tables():
    for name, function in POLYNOMIALS.items():
        structured(f"special_{name}.out", function, operands=2, rule=to_float,
                   check=supports(single_or_double, f"{name}_cpu"))
    for name, function in BESSEL.items():
        structured(f"special_{name}.out", _in_float64(function), rule=to_float,
                   check=supports(single_or_double, f"{name}_cpu"))
    structured("special_airy_ai.out", _airy_ai, rule=to_float, check=supports(single_or_double, "airy_ai_cpu"))


register_tables()
