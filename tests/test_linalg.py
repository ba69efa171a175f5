"""The matmul family and torch.linalg on tpu, differential against torch CPU, and the MXU numerics."""

import ml_dtypes
import numpy as np
import pytest
import torch

from torch_tpu._C import mxu

from differential import check, check_grads, check_same_error, make, to_tpu


L = torch.linalg
BF16_TOLERANCE = dict(atol=2e-2, rtol=1.6e-2)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


# --- matmul family ---------------------------------------------------------------------------

DTYPE_TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float64: {},
    torch.complex64: dict(atol=1e-5, rtol=1e-5),
    torch.bfloat16: BF16_TOLERANCE,
    torch.float16: dict(atol=1e-2, rtol=1e-3),
    torch.int64: {},
    torch.int32: {},
    torch.uint8: {},
}


@pytest.mark.parametrize("dtype", list(DTYPE_TOLERANCE), ids=str)
def test_mm_family_dtypes(dtype):
    tolerance = DTYPE_TOLERANCE[dtype]
    a, b, c = make(5, 7, dtype=dtype), make(7, 3, dtype=dtype), make(5, 3, dtype=dtype)
    batch1, batch2 = make(4, 5, 7, dtype=dtype), make(4, 7, 3, dtype=dtype)
    check(torch.mm, a, b, **tolerance)
    check(torch.bmm, batch1, batch2, **tolerance)
    check(torch.mv, a, b[:, 0], **tolerance)
    check(torch.dot, a[0], b[:, 0], **tolerance)
    scalars = dict(beta=2, alpha=3)
    check(torch.addmm, c, a, b, **tolerance, **scalars)
    check(torch.baddbmm, c, batch1, batch2, **tolerance, **scalars)
    check(torch.addbmm, c, batch1, batch2, **tolerance, **scalars)
    check(torch.addmv, c[:, 0], a, b[:, 0], **tolerance, **scalars)
    check(torch.addr, c, c[:, 0], c[0], **tolerance, **scalars)


def test_float_scalars_and_vdot():
    a, b, c = make(5, 7), make(7, 3), make(3)
    check(torch.addmm, c, a, b, beta=0.5, alpha=-1.5, **DTYPE_TOLERANCE[torch.float32])
    x, y = make(6, dtype=torch.complex64), make(6, dtype=torch.complex64)
    check(torch.vdot, x, y)
    integers = [make(2, 2, dtype=torch.int64) for _ in range(3)]
    check(torch.addmm, *integers, alpha=2.7, beta=1.5)  # CPU truncates the scalars
    check(torch.dot, x, y)


def test_non_contiguous_operands():
    a, b = make(7, 5).t(), make(3, 7).t()  # transposed views
    check(torch.mm, a, b)
    check(torch.mm, make(5, 14)[:, ::2], make(7, 6)[:, 1::2])
    check(torch.bmm, make(5, 4, 7).transpose(0, 1), make(4, 3, 7).transpose(1, 2))
    check(torch.addmm, make(3, 5).t(), a, b, beta=0.5)


@pytest.mark.parametrize("shapes", [
    ((3,), (3,)), ((2, 3), (3,)), ((3,), (3, 4)), ((5, 2, 3), (3, 4)), ((2, 3), (5, 3, 4)),
    ((2, 1, 2, 3), (4, 3, 5)), ((0, 3), (3, 4)), ((2, 0), (0, 4)), ((3, 2, 0), (0, 5)), ((4, 2, 3), (4, 3, 0)),
], ids=str)
def test_matmul_broadcasting_and_empty(shapes):
    check(torch.matmul, *(make(*shape) for shape in shapes))


def test_composites_reach_the_mxu():
    check(torch.einsum, "bij,bjk->bik", make(2, 3, 4), make(2, 4, 5))
    check(torch.nn.functional.linear, make(3, 4), make(5, 4), make(5))
    check(torch.nn.functional.linear, make(2, 3, 4), make(5, 4), make(5))
    check(torch.tensordot, make(3, 4, 5), make(4, 5, 2), dims=2)
    check(L.multi_dot, [make(3, 4), make(4, 5), make(5, 2)])


def test_addmm_beta_zero_ignores_nan_and_alpha_zero_ignores_product():
    bias = torch.full((2, 3), float("nan"))
    check(torch.addmm, bias, make(2, 4), make(4, 3), beta=0)
    mat1 = torch.tensor([[float("nan"), 1.0]])
    check(torch.addmm, make(1, 2), mat1, make(2, 2), alpha=0)


def test_out_variants_and_in_place():
    a, b = make(3, 4), make(4, 5)
    out = torch.empty(0, device="tpu")
    result = torch.mm(to_tpu(a), to_tpu(b), out=out)
    assert result is out and out.shape == (3, 5)
    torch.testing.assert_close(out.cpu(), a @ b)
    c = make(3, 5)
    expected = c.clone().addmm_(a, b, alpha=2)
    actual = to_tpu(c).addmm_(to_tpu(a), to_tpu(b), alpha=2)
    torch.testing.assert_close(actual.cpu(), expected)
    batch1, batch2 = make(2, 3, 4), make(2, 4, 5)
    torch.testing.assert_close(to_tpu(c).addbmm_(to_tpu(batch1), to_tpu(batch2)).cpu(), c.clone().addbmm_(batch1, batch2))
    square = make(4, 4)
    aliased = to_tpu(square)
    torch.mm(aliased, aliased, out=aliased)
    torch.testing.assert_close(aliased.cpu(), square @ square)


@pytest.mark.parametrize("call", [
    lambda d: torch.mm(torch.ones(2, 3, device=d), torch.ones(4, 5, device=d)),
    lambda d: torch.mm(torch.ones(2, 3, device=d), torch.ones(3, device=d)),
    lambda d: torch.mm(torch.ones(2, 3, device=d), torch.ones(3, 5, device=d, dtype=torch.float64)),
    lambda d: torch.mm(torch.ones(2, 2, device=d, dtype=torch.bool), torch.ones(2, 2, device=d, dtype=torch.bool)),
    lambda d: torch.bmm(torch.ones(2, 2, 3, device=d), torch.ones(3, 3, 5, device=d)),
    lambda d: torch.addmm(torch.ones(3, 3, device=d), torch.ones(2, 3, device=d), torch.ones(3, 5, device=d)),
    lambda d: torch.mv(torch.ones(2, 3, device=d), torch.ones(4, device=d)),
    lambda d: torch.dot(torch.ones(3, device=d), torch.ones(4, device=d)),
    lambda d: torch.mm(torch.ones(2, 3, device=d), torch.ones(3, 5, device=d),
                       out=torch.empty(0, device=d, dtype=torch.float64)),
], ids=lambda _: "")
def test_errors_match_cpu(call):
    check_same_error(call)


def test_cpu_operand_is_a_device_error():
    with pytest.raises(RuntimeError, match="same device"):
        torch.mm(torch.ones(2, 2, device="tpu"), torch.ones(2, 2))


def test_gradients_match_cpu():
    weights = [make(3, 4), make(3), make(2, 5, 5), make(2, 3, 5)]
    x = make(2, 5, 4)

    def loss(w, b, batch, other, x):
        hidden = torch.nn.functional.linear(x, w, b)  # (2, 5, 3)
        return torch.bmm(batch, hidden) + torch.matmul(other.transpose(1, 2), torch.eye(3, device=x.device) * 2)

    grads = {}
    for device in ("cpu", "tpu"):
        leaves = [w.detach().to(device).requires_grad_() for w in weights]
        out = loss(*leaves, x.to(device))
        out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(device))
        grads[device] = [leaf.grad.cpu() for leaf in leaves]
    torch.testing.assert_close(grads["tpu"], grads["cpu"])


def test_float64_matmul_computes_in_float64_and_warns():
    from torch_tpu.ops import linalg

    linalg._warn_float64.cache_clear()
    a, b = make(3, 4, dtype=torch.float64), make(4, 2, dtype=torch.float64)
    with pytest.warns(UserWarning, match="float64"):
        actual = to_tpu(a) @ to_tpu(b)
    torch.testing.assert_close(actual.cpu(), a @ b, atol=0, rtol=1e-15)


# --- float32 matmul precision and the MXU numerics ----------------------------------------------


def _bf16(x):
    return x.astype(ml_dtypes.bfloat16).astype(np.float64)


def reference_passes(a, b, passes):
    """An independent float64 model: split into bf16 pieces, multiply the pieces exactly."""
    pieces = {1: 1, 3: 2, 6: 3}[passes]
    splits = []
    for x in (a.astype(np.float64), b.astype(np.float64)):
        parts, rest = [], x
        for _ in range(pieces):
            parts.append(_bf16(rest.astype(np.float32)))
            rest = rest - parts[-1]
        splits.append(parts)
    (ah, *alo), (bh, *blo) = splits
    products = {1: [(0, 0)], 3: [(0, 0), (0, 1), (1, 0)],
                6: [(0, 0), (0, 1), (1, 0), (0, 2), (1, 1), (2, 0)]}[passes]
    return sum(splits[0][i] @ splits[1][j] for i, j in products)


@pytest.mark.parametrize("passes", [1, 3, 6])
def test_mxu_passes_match_an_independent_float64_model(passes):
    rng = np.random.default_rng(passes)
    a = rng.standard_normal((16, 300)).astype(np.float32)
    b = rng.standard_normal((300, 8)).astype(np.float32)
    model = reference_passes(a, b, passes)
    actual = mxu.matmul(a, b, precision_passes=passes)
    assert actual.dtype == np.float32
    # Only the float32 accumulation separates the chip from the model: a few ulps of the sum of |terms|.
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)
    assert np.all(np.abs(actual - model) <= 8 * 2.0 ** -24 * scale)


def test_mxu_passes_trade_precision_as_documented():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 256)).astype(np.float32)
    b = rng.standard_normal((256, 32)).astype(np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    scale = np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64)

    def relative_error(passes):
        return np.max(np.abs(mxu.matmul(a, b, precision_passes=passes) - exact) / scale)

    one, three, six, exact32 = (relative_error(p) for p in (1, 3, 6, mxu.EXACT))
    assert 2.0 ** -12 < one < 2.0 ** -7  # inputs rounded to 8 significant bits
    assert three < 2.0 ** -15 and six < 2.0 ** -20 and exact32 < 2.0 ** -20
    assert one > three > six


def test_mxu_bf16_and_fp8_products_are_exact_with_float32_accumulation():
    rng = np.random.default_rng(1)
    for fmt in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2):
        a = rng.standard_normal((8, 64)).astype(fmt)
        b = rng.standard_normal((64, 4)).astype(fmt)
        exact = a.astype(np.float64) @ b.astype(np.float64)
        accumulated = mxu.matmul(a, b)
        assert accumulated.dtype == np.float32
        scale = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
        assert np.all(np.abs(accumulated - exact) <= 64 * 2.0 ** -24 * scale)
        out = np.empty((8, 4), ml_dtypes.bfloat16)
        mxu.matmul(a, b, out)  # rounded once to the output
        np.testing.assert_array_equal(out, accumulated.astype(ml_dtypes.bfloat16))


def test_mxu_integers_accumulate_exactly_and_wrap_on_store():
    a = np.full((2, 3), 100, np.int8)
    b = np.full((3, 2), 100, np.int8)
    assert mxu.matmul(a, b).dtype == np.int64
    np.testing.assert_array_equal(mxu.matmul(a, b), np.full((2, 2), 30000))
    out = np.empty((2, 2), np.int8)
    np.testing.assert_array_equal(mxu.matmul(a, b, out), np.full((2, 2), 30000).astype(np.int8))
    with pytest.raises(ValueError, match="precision_passes"):
        mxu.matmul(a, b, precision_passes=2)


@pytest.mark.parametrize("precision, passes", [("highest", None), ("high", 3), ("medium", 1)])
def test_float32_matmul_precision_selects_passes(precision, passes):
    a, b = make(8, 64), make(64, 8)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        actual = (to_tpu(a) @ to_tpu(b)).cpu().numpy()
    finally:
        torch.set_float32_matmul_precision(previous)
    if passes is None:
        torch.testing.assert_close(torch.from_numpy(actual), a @ b, atol=1e-5, rtol=1e-5)
    else:
        np.testing.assert_array_equal(actual, mxu.matmul(a.numpy(), b.numpy(), precision_passes=passes))
        assert not np.array_equal(actual, mxu.matmul(a.numpy(), b.numpy()))


# --- torch.linalg ------------------------------------------------------------------------------


def spd(*batch, n=4, dtype=torch.float64):
    a = make(*batch, n, n, dtype=dtype)
    return a @ a.mH + n * torch.eye(n, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex128], ids=str)
def test_factorizations_and_solves(dtype):
    tolerance = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else {}
    a, s, b = make(2, 4, 4, dtype=dtype), spd(2, dtype=dtype), make(2, 4, 3, dtype=dtype)
    for f, args in [
        (L.cholesky, (s,)), (L.cholesky_ex, (s,)), (lambda x: L.cholesky(x, upper=True), (s,)),
        (L.inv, (a,)), (L.inv_ex, (a,)), (L.det, (a,)), (L.slogdet, (a,)), (torch.logdet, (s,)),
        (L.lu_factor, (a,)), (L.lu_factor_ex, (a[:, :3],)),
        (L.solve, (a, b)), (L.solve, (a, b[..., 0])), (L.solve, (a[0], b)), (lambda x, y: L.solve(x, y, left=False), (a, b.mT)),
        (lambda x, y: L.lu_solve(*L.lu_factor(x), y), (a, b)),
        (lambda x, y: L.lu_solve(*L.lu_factor(x), y, left=False, adjoint=True), (a, b.mT)),
        (L.qr, (make(2, 5, 3, dtype=dtype),)), (lambda x: L.qr(x, mode="complete"), (make(5, 3, dtype=dtype),)),
        (L.eigvalsh, (s,)), (L.svdvals, (make(2, 5, 3, dtype=dtype),)),
        (lambda x, y: L.solve_triangular(x.triu(), y, upper=True), (a, b)),
        (lambda x, y: L.solve_triangular(x.tril(), y, upper=False, left=False, unitriangular=True), (a, b.mT)),
        (lambda y, x: torch.triangular_solve(y, x.triu(), transpose=True), (b, a)),
        (L.matrix_exp, (a,)),
    ]:
        check(f, *args, **tolerance)


def test_pinv():
    check(L.pinv, make(2, 5, 3, dtype=torch.float64))


def test_decompositions_reconstruct_their_input():
    s, a, r = spd(2), make(4, 4, dtype=torch.float64), make(2, 5, 3, dtype=torch.float64)
    values, vectors = (t.cpu() for t in L.eigh(to_tpu(s)))
    torch.testing.assert_close(vectors @ torch.diag_embed(values) @ vectors.mT, s)
    u, sv, vh = (t.cpu() for t in L.svd(to_tpu(r), full_matrices=False))
    torch.testing.assert_close(u @ torch.diag_embed(sv) @ vh, r)
    torch.testing.assert_close(sv, L.svdvals(r))
    values, vectors = (t.cpu() for t in L.eig(to_tpu(a)))
    assert values.dtype == torch.complex128
    torch.testing.assert_close(vectors @ torch.diag_embed(values) @ L.inv(vectors), a.to(torch.complex128))
    torch.testing.assert_close(L.eigvals(to_tpu(a)).cpu().abs().sort().values, L.eigvals(a).abs().sort().values)


def test_empty_matrices():
    check(L.inv, torch.empty(0, 3, 3))
    check(L.det, torch.empty(2, 0, 0))
    check(L.cholesky, torch.empty(0, 0))


@pytest.mark.parametrize("call", [
    lambda d: L.inv(torch.zeros(3, 3, device=d)),
    lambda d: L.inv(torch.zeros(2, 3, device=d)),
    lambda d: L.inv(torch.eye(3, device=d, dtype=torch.bfloat16)),
    lambda d: L.cholesky(-torch.eye(3, device=d)),
    lambda d: L.cholesky(torch.stack([torch.eye(2), -torch.eye(2)]).to(d)),
    lambda d: L.solve(torch.zeros(2, 3, 3, device=d), torch.zeros(2, 3, device=d)),
    lambda d: L.lu_factor(torch.eye(3, device=d), pivot=False),
], ids=lambda _: "")
def test_linalg_errors_match_cpu(call):
    check_same_error(call)


def test_linalg_gradients_match_cpu():
    a, s, b = make(3, 3, dtype=torch.float64), spd(n=3), make(3, 2, dtype=torch.float64)
    grads = {}
    for device in ("cpu", "tpu"):
        leaves = [t.detach().to(device).requires_grad_() for t in (a, s, b)]
        x, y, z = leaves
        out = L.solve(x, z).sum() + L.inv(x).sum() + L.det(x) + L.cholesky(y).sum() + L.eigvalsh(y).sum()
        out.backward()
        grads[device] = [leaf.grad.cpu() for leaf in leaves]
    torch.testing.assert_close(grads["tpu"], grads["cpu"])


# --- least squares, LU/QR/Cholesky/LDL pieces, distances ----------------------------------------


LAPACK_TOLERANCE = {torch.float32: dict(atol=1e-4, rtol=1e-4), torch.float64: {},
                    torch.complex64: dict(atol=1e-4, rtol=1e-4), torch.complex128: {}}


@pytest.mark.parametrize("driver", [None, "gelsy", "gelsd", "gelss", "gels"])
@pytest.mark.parametrize("dtype", list(LAPACK_TOLERANCE), ids=str)
def test_lstsq_drivers_and_outputs(driver, dtype):
    tolerance = LAPACK_TOLERANCE[dtype]
    for a_shape, b_shape in [((5, 3), (5, 2)), ((3, 5), (3, 2)), ((2, 5, 3), (2, 5)), ((2, 5, 3), (1, 5, 2)),
                             ((0, 3), (0, 2)), ((5, 0), (5, 2)), ((4, 4), (4, 1))]:
        check(L.lstsq, make(*a_shape, dtype=dtype), make(*b_shape, dtype=dtype), driver=driver, **tolerance)
    deficient = make(5, 3, dtype=dtype)
    deficient[:, 2] = deficient[:, 1]
    if driver != "gels":  # rank, and no residuals for rank-deficient gelsd/gelss
        check(L.lstsq, deficient, make(5, 2, dtype=dtype), driver=driver, **tolerance)
        check(L.lstsq, deficient, make(5, 2, dtype=dtype), 0.1, driver=driver, **tolerance)


def test_lstsq_gradients():
    check_grads(lambda a, b: L.lstsq(a, b).solution, make(2, 5, 3, dtype=torch.float64), make(2, 5, 2, dtype=torch.float64))


@pytest.mark.parametrize("dtype", list(LAPACK_TOLERANCE), ids=str)
def test_lu_qr_pieces(dtype):
    tolerance = LAPACK_TOLERANCE[dtype]
    for shape in [(4, 4), (2, 3, 5), (5, 3), (0, 3), (2, 0, 0)]:
        a = make(*shape, dtype=dtype)
        check(L.lu, a, **tolerance)
        check(torch.geqrf, a, **tolerance)
        if a.numel():
            for unpack_data, unpack_pivots in [(True, True), (False, True), (True, False)]:
                check(torch.lu_unpack, *L.lu_factor(a), unpack_data, unpack_pivots, **tolerance)
    reflectors, tau = torch.geqrf(make(2, 5, 3, dtype=dtype))
    check(L.householder_product, reflectors, tau, **tolerance)
    check(L.householder_product, reflectors, tau[..., :2], **tolerance)
    for left, transpose in [(True, False), (True, True), (False, False), (False, True)]:
        other = make(2, 5, 4, dtype=dtype) if left else make(2, 4, 5, dtype=dtype)
        check(torch.ormqr, reflectors, tau, other, left, transpose, **tolerance)
    check(torch.ormqr, make(2, 5, 0, dtype=dtype), tau[..., :0], make(2, 5, 4, dtype=dtype))  # no reflectors


@pytest.mark.parametrize("dtype", list(LAPACK_TOLERANCE), ids=str)
def test_cholesky_and_ldl_pieces(dtype):
    tolerance = LAPACK_TOLERANCE[dtype]
    s = spd(2, dtype=dtype)
    for upper in (False, True):
        factor = L.cholesky(s, upper=upper)
        check(torch.cholesky_inverse, factor, upper, **tolerance)
        check(torch.cholesky_inverse, factor[0], upper, **tolerance)
        check(torch.cholesky_solve, make(2, 4, 3, dtype=dtype), factor, upper, **tolerance)
        check(torch.cholesky_solve, make(4, 3, dtype=dtype), factor, upper, **tolerance)  # broadcast
    check(torch.cholesky_inverse, torch.zeros(0, 3, 3, dtype=dtype))
    indefinite = make(6, 6, dtype=dtype)
    indefinite = indefinite + indefinite.mT
    indefinite[0, 0] = indefinite[1, 1] = 0  # forces 2x2 pivots
    for hermitian, matrix in [(False, indefinite), (True, s), (False, s + s.mT)]:
        check(lambda m: L.ldl_factor_ex(m, hermitian=hermitian), matrix, **tolerance)
        ld, pivots = L.ldl_factor(matrix, hermitian=hermitian)
        rhs = make(*matrix.shape[:-1], 3, dtype=dtype)
        check(lambda *args: L.ldl_solve(*args, hermitian=hermitian), ld, pivots, rhs, **tolerance)
        check(lambda *args: L.ldl_solve(*args, hermitian=hermitian), ld, pivots, rhs[..., -1, :, :] if rhs.dim() > 2
              else rhs, **tolerance)
    check(L.ldl_factor_ex, torch.zeros(3, 3, dtype=dtype))  # info > 0
    check(L.ldl_factor_ex, torch.zeros(2, 0, 0, dtype=dtype))


def test_factorization_gradients():
    s, a = spd(2, n=3), make(2, 4, 3, dtype=torch.float64)
    check_grads(lambda x: L.lu(x), a)
    check_grads(lambda x: torch.lu_unpack(*L.lu_factor(x)), make(3, 3, dtype=torch.float64))
    check_grads(lambda x: torch.cholesky_inverse(L.cholesky(x)), s)
    check_grads(lambda x, b: torch.cholesky_solve(b, L.cholesky(x)), s, make(2, 3, 2, dtype=torch.float64))
    reflectors, tau = torch.geqrf(a)
    check_grads(L.householder_product, reflectors, tau)
    check_grads(lambda r, t, c: torch.ormqr(r, t, c), reflectors, tau, make(2, 4, 2, dtype=torch.float64))


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, float("inf")])
def test_cdist_and_pdist(p):
    modes = ["use_mm_for_euclid_dist_if_necessary", "use_mm_for_euclid_dist", "donot_use_mm_for_euclid_dist"]
    x1, x2 = make(2, 30, 5, dtype=torch.float64), make(1, 7, 5, dtype=torch.float64)
    x2[0, 0] = x1[0, 0]  # a zero distance: its gradient is 0 by convention
    for mode in modes:
        check(torch.cdist, x1, x2, p=p, compute_mode=mode)
        check_grads(lambda a, b: torch.cdist(a, b, p=p, compute_mode=mode), x1, x2)
    check(torch.cdist, make(5, 3).t(), make(4, 10)[:, ::2], p=p, atol=1e-5, rtol=1e-4)  # views
    check(torch.cdist, make(0, 5), make(3, 5), p=p)
    check_grads(lambda a, b: torch.cdist(a, b, p=p), make(4, 0, dtype=torch.float64), make(3, 0, dtype=torch.float64))
    rows = make(7, 5, dtype=torch.float64)
    rows[3] = rows[1]
    check(torch.nn.functional.pdist, rows, p=p)
    check_grads(lambda x: torch.nn.functional.pdist(x, p=p), rows)
    check(torch.nn.functional.pdist, make(1, 5), p=p)


def test_out_overloads_and_addr_alpha_zero():
    a = make(3, 3, dtype=torch.float64)
    for values_dtype in (torch.complex128,):
        values, vectors = torch.empty(0, dtype=values_dtype, device="tpu"), torch.empty(0, dtype=values_dtype, device="tpu")
        L.eig(to_tpu(a), out=(values, vectors))
        torch.testing.assert_close(values.cpu(), L.eig(a)[0])
        out = torch.empty(0, dtype=values_dtype, device="tpu")
        torch.testing.assert_close(L.eigvals(to_tpu(a), out=out).cpu(), L.eigvals(a))
    out = torch.empty(0, dtype=torch.float64, device="tpu")
    torch.testing.assert_close(torch.ops.aten.linalg_matrix_exp.out(to_tpu(a), out=out).cpu(), L.matrix_exp(a))
    nan = torch.tensor([float("nan")])
    check(torch.addr, torch.zeros(1, 1), nan, nan, beta=0.0, alpha=0.0)  # 0 * NaN is NaN
    check(L.cross, make(4, 3), make(1, 3))
    check(torch.cross, make(3, 4), make(3, 4), dim=0)


ADDR_SCALARS_CPU_REFUSES = [  # (dtype, beta, alpha): bool scalars for a non-bool result, floats for an integral one
    (torch.int32, 2.0, 1), (torch.int64, 2, 1.5), (torch.uint8, True, 1), (torch.int16, 2, True),
    (torch.float32, True, 1), (torch.float64, 2, True), (torch.complex64, True, 1.0), (torch.float32, 0.5j, 1),
]


@pytest.mark.parametrize("dtype, beta, alpha", ADDR_SCALARS_CPU_REFUSES, ids=str)
def test_addr_refuses_the_scalars_cpu_refuses_in_cpus_words(dtype, beta, alpha):
    vec = make(3).to(dtype)
    check_same_error(lambda device: torch.addr(
        vec.to(device)[:, None].expand(3, 3), vec.to(device), vec.to(device), beta=beta, alpha=alpha))


ADDR_PROMOTIONS = [  # (self, vec1, vec2) dtypes: CPU's addr is elementwise, so its operands promote
    (torch.float32, torch.int64, torch.float64), (torch.int32, torch.bool, torch.uint8),
    (torch.bool, torch.float16, torch.bool), (torch.complex64, torch.float64, torch.int8),
    (torch.bfloat16, torch.float16, torch.bfloat16),
]


@pytest.mark.parametrize("dtypes", ADDR_PROMOTIONS, ids=str)
def test_addr_promotes_mixed_operands_as_cpu_does(dtypes):
    self, vec1, vec2 = ((make(4, 3) * 3).to(dtypes[0]), (make(4) * 3).to(dtypes[1]), (make(3) * 3).to(dtypes[2]))
    result = check(torch.addr, self, vec1, vec2, beta=2, alpha=3, atol=1e-2, rtol=1e-2)
    assert result.dtype == torch.promote_types(torch.promote_types(*dtypes[:2]), dtypes[2])
    # out= takes any dtype the result casts to (TensorIterator's rule, not the matmuls' exact dtype)
    wide = torch.empty(0, dtype=torch.complex128)
    check(lambda *args: torch.addr(*args, beta=2, alpha=3, out=wide.to(args[0].device)), self, vec1, vec2,
          atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("beta, alpha", [(1, 1), (0.3, 1.7), (0, 2.1), (1, 0), (2, 60000.0)])
@pytest.mark.parametrize("self_shape", [(17, 33), (33,), ()])
def test_16_bit_addr_rounds_every_step_as_cpus_elementwise_kernel_does(dtype, beta, alpha, self_shape):
    """Bit for bit against CPU: ``beta * self + (alpha * vec1) * vec2``, each operation rounded to the 16-bit
    format (a rounded-once outer product differed in about a quarter of the elements; an fp16 alpha * vec1 that
    overflows makes NaN where vec2 is 0)."""
    generator = torch.Generator().manual_seed(3)
    self, vec1, vec2 = (torch.randn(shape, generator=generator).to(dtype) for shape in (self_shape, (17,), (33,)))
    vec2[::5] = 0
    expected = torch.addr(self, vec1, vec2, beta=beta, alpha=alpha)
    actual = torch.addr(self.to("tpu"), vec1.to("tpu"), vec2.to("tpu"), beta=beta, alpha=alpha).cpu()
    assert torch.equal(actual.view(torch.int16), expected.view(torch.int16))


@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("out_dtype", [torch.float32, torch.float64, torch.complex64], ids=str)
def test_addr_into_an_out_of_another_dtype_computes_in_the_promoted_dtype(dtype, out_dtype):
    """TensorIterator computes in the operands' dtype and casts into out (bool: logically, so True + True is
    True, not 2), exactly what the functional result cast to out's dtype gives."""
    self, vec1, vec2 = ((make(4, 3) * 3).to(dtype), (make(4) * 3).to(dtype), (make(3) * 3).to(dtype))
    scalars = {} if dtype is torch.bool else {"beta": 2, "alpha": 3}
    on_tpu = [t.to("tpu") for t in (self, vec1, vec2)]
    into_out = torch.addr(*on_tpu, **scalars, out=torch.empty(0, dtype=out_dtype, device="tpu"))
    assert torch.equal(into_out.cpu(), torch.addr(*on_tpu, **scalars).cpu().to(out_dtype))
    if dtype in (torch.bool, torch.int64):  # exact on CPU too
        assert torch.equal(into_out.cpu(), torch.addr(self, vec1, vec2, **scalars, out=torch.empty(0, dtype=out_dtype)))

EX_FACTORIZATIONS = {  # op: the dtypes of its outputs before info, its last one
    L.cholesky_ex: (torch.float32,),
    L.inv_ex: (torch.float32,),
    L.lu_factor_ex: (torch.float32, torch.int32),
    L.ldl_factor_ex: (torch.float32, torch.int32),
}


@pytest.mark.parametrize("shape", [(0, 0), (2, 0, 0), (0, 3, 3)], ids=str)
@pytest.mark.parametrize("factorization", list(EX_FACTORIZATIONS), ids=lambda op: op.__name__)
def test_ex_factorizations_of_empty_batches_report_success_in_info(factorization, shape):
    """An empty batch factors without error: info is zeroed, whatever its out= tensor held before."""
    def outputs_after(device):
        outputs = [torch.empty(0, dtype=dtype, device=device) for dtype in EX_FACTORIZATIONS[factorization]]
        info = torch.full(shape[:-2], 7, dtype=torch.int32, device=device)
        return factorization(torch.empty(shape, device=device), out=(*outputs, info))

    on_tpu, on_cpu = outputs_after("tpu"), outputs_after("cpu")
    torch.testing.assert_close(on_tpu[-1].cpu(), on_cpu[-1])
    assert [t.shape for t in on_tpu] == [t.shape for t in on_cpu]  # out= factors take the batch's shape
    assert torch.linalg.cholesky(torch.empty(shape, device="tpu")).shape == shape


@pytest.mark.parametrize("out_dtype", [torch.float64, torch.float16, torch.complex64, torch.int32], ids=str)
def test_cholesky_inverse_takes_any_out_the_result_safely_casts_to(out_dtype):
    factor = torch.linalg.cholesky(torch.tensor([[2.0, 1.0], [1.0, 3.0]]))
    check(lambda f: torch.cholesky_inverse(f, out=torch.empty(0, dtype=out_dtype, device=f.device)), factor,
          atol=1e-3, rtol=1e-3)
    if out_dtype == torch.int32:
        check_same_error(lambda device: torch.cholesky_inverse(
            factor.to(device), out=torch.empty(0, dtype=out_dtype, device=device)))


@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("out", {
    "empty": lambda: torch.empty(0),
    "transposed": lambda: torch.zeros(2, 2).t(),
    "of a wider dtype": lambda: torch.empty(0, dtype=torch.float64),
    "complex": lambda: torch.empty(0, dtype=torch.complex64),
    "to resize": lambda: torch.ones(3),
}.items(), ids=lambda item: item[0])
def test_cholesky_out_takes_any_out_the_result_safely_casts_to(out, upper):
    """cholesky.out (deprecated torch.cholesky with out=): CPU's linalg out rule, values into out's own strides."""
    check(lambda a, o: torch.cholesky(a, upper=upper, out=o), torch.tensor([[4.0, 2.0], [2.0, 3.0]]), out[1]())


def test_empty_solves():
    check(L.solve, torch.empty(0, 0), torch.empty(0, 2))
    check(L.solve_triangular, torch.empty(3, 3), torch.empty(3, 0), upper=True)
    check(lambda a, b: L.lu_solve(*L.lu_factor(a), b), make(3, 3), torch.empty(3, 0))


@pytest.mark.parametrize("call", [
    lambda d: L.lstsq(torch.ones(5, 3, device=d), torch.ones(5, 2, device=d), driver="foo"),
    lambda d: L.lstsq(torch.ones(5, 3, device=d), torch.ones(5, 2, device=d, dtype=torch.float64)),
    lambda d: L.lstsq(torch.ones(5, 3, device=d), torch.ones(2, 5, 2, device=d)),
    lambda d: L.lstsq(torch.ones(3, 5, 3, device=d), torch.ones(5, 2, device=d)),
    lambda d: L.lstsq(torch.ones(3, 3, device=d, dtype=torch.int64), torch.ones(3, 3, device=d, dtype=torch.int64)),
    lambda d: L.lu(torch.eye(3, device=d), pivot=False),
    lambda d: L.householder_product(torch.ones(3, 5, device=d), torch.ones(3, device=d)),
    lambda d: torch.ormqr(torch.ones(5, 3, device=d), torch.ones(3, device=d), torch.ones(4, 4, device=d)),
    lambda d: torch.ormqr(torch.ones(5, 3, device=d), torch.ones(2, device=d), torch.ones(5, 4, device=d)),
    lambda d: torch.cholesky_inverse(torch.zeros(3, 3, device=d)),
    lambda d: torch.cholesky_inverse(torch.ones(2, 3, device=d)),
    lambda d: torch.geqrf(torch.ones(3, 3, device=d, dtype=torch.bfloat16)),
    lambda d: L.ldl_factor(torch.zeros(3, 3, device=d)),
    lambda d: torch.cdist(torch.ones(3, 5, device=d), torch.ones(3, 4, device=d)),
    lambda d: torch.cdist(torch.ones(3, 5, device=d), torch.ones(3, 5, device=d), p=-1),
    lambda d: torch.cdist(torch.ones(3, 5, device=d, dtype=torch.bfloat16), torch.ones(3, 5, device=d, dtype=torch.bfloat16)),
    lambda d: torch.nn.functional.pdist(torch.ones(2, 3, 5, device=d)),
    lambda d: L.eig(torch.ones(3, 3, device=d), out=(torch.empty(0, device=d), torch.empty(0, device=d))),
    lambda d: torch.ops.aten.linalg_matrix_exp.out(torch.ones(3, 3, device=d), out=torch.empty(0, device=d, dtype=torch.int64)),
], ids=lambda _: "")
def test_new_linalg_errors_match_cpu(call):
    check_same_error(call)


# --- regressions from the OpInfo sweep ----------------------------------------------------------------------------


@pytest.mark.parametrize("left, transpose", [(True, False), (True, True), (False, False), (False, True)])
def test_ormqr_both_sides(left, transpose):
    reflectors, tau = torch.geqrf(make(2, 5, 3))
    other = make(2, 5, 4) if left else make(2, 4, 5)
    check(torch.ormqr, reflectors, tau, other, left, transpose, atol=1e-5, rtol=1e-5)
    wide, wide_tau = torch.geqrf(make(3, 5))  # fewer rows than columns: 3 reflectors
    check(torch.ormqr, wide, wide_tau, make(3, 4) if left else make(4, 3), left, transpose,
          atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3), (3, 5), (2, 5, 3), (0, 4, 2), (4, 0)], ids=str)
def test_geqrf_returns_column_major_reflectors_as_cpu_does(shape):
    a = make(*shape)
    reflectors, tau = check(torch.geqrf, a, atol=1e-5, rtol=1e-5)
    cpu_reflectors, cpu_tau = torch.geqrf(a)
    assert (reflectors.stride(), tau.stride()) == (cpu_reflectors.stride(), cpu_tau.stride())


@pytest.mark.parametrize("shapes", [
    ((5, 3), (2,), (5, 2)),  # tau must have min(rows of other, columns) entries
    ((5, 3), (3,), (4, 2)),  # other's rows must match
    ((3, 3), (3,), (3,)),  # other must be a matrix
    ((2, 5, 3), (3, 3), (2, 5, 2)),  # batch mismatch
], ids=str)
def test_ormqr_errors_match_cpu(shapes):
    args = [make(*shape) for shape in shapes]
    with pytest.raises(RuntimeError) as on_cpu:
        torch.ormqr(*args)
    with pytest.raises(RuntimeError) as on_tpu:
        torch.ormqr(*map(to_tpu, args))
    assert str(on_tpu.value) == str(on_cpu.value)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_addbmm_narrow_dtypes_round_the_running_sum_per_batch(dtype):
    """CPU runs one addmm_ per batch, so the sum is rounded to the output dtype after each batch."""
    torch.manual_seed(0)
    bias, batch1, batch2 = make(5, 6, dtype=dtype), make(7, 5, 4, dtype=dtype), make(7, 4, 6, dtype=dtype)
    exact = dict(atol=0, rtol=0)
    check(torch.addbmm, bias, batch1, batch2, beta=0.5, alpha=1.5, **exact)
    check(torch.addbmm, bias[0], batch1, batch2, **exact)  # broadcast bias
    check(torch.addbmm, bias, batch1, batch2, beta=0, **exact)
    check(torch.addbmm, bias, batch1[:0], batch2[:0], beta=2, **exact)  # no batches: beta * bias
    expected = bias.clone().addbmm_(batch1, batch2)
    torch.testing.assert_close(to_tpu(bias).addbmm_(to_tpu(batch1), to_tpu(batch2)).cpu(), expected, **exact)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64, torch.int64])
def test_cross_rounds_like_cpu(dtype):
    """CPU multiplies in the operands' own dtype (reduced floats round each product) and, for float32
    and float64, fuses the first product into the subtraction."""
    a, b = make(6, 3, 5, dtype=dtype) * 4, make(1, 3, 5, dtype=dtype) * 4
    exact = dict(atol=0, rtol=0)
    check(lambda x, y: L.cross(x, y, dim=1), a, b, **exact)
    check(lambda x, y: torch.cross(x, y, dim=0), a.transpose(0, 1), b.expand(6, 3, 5).transpose(0, 1),
          **exact)
    out = torch.empty(0, dtype=dtype)
    check(lambda x, y, o: L.cross(x, y, dim=-2, out=o), a, b, out, **exact)


@pytest.mark.parametrize("call", [
    lambda t: L.cross(t(torch.randn(4, 3)), t(torch.randn(4, 3).double())),
    lambda t: L.cross(t(torch.ones(4, 3, dtype=torch.bool)), t(torch.ones(4, 3, dtype=torch.bool))),
    lambda t: L.cross(t(torch.randn(4, 3)), t(torch.randn(3))),
    lambda t: L.cross(t(torch.randn(4, 3)), t(torch.randn(4, 3)), dim=0),
    lambda t: L.cross(t(torch.randn(4, 3)), t(torch.randn(4, 3)), out=t(torch.empty(0, dtype=torch.float64))),
])
def test_cross_errors_match_cpu(call):
    check_same_error(call, on_cpu=lambda v: v, on_tpu=to_tpu)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_matrix_exp_of_reduced_floats_is_the_float32_exponential_rounded_once(dtype):
    """CPU accepts these dtypes but its bf16 result is wrong (its float64 Taylor coefficients are read
    as bf16 bytes), so the reference is CPU's float32 exponential of the same values, within a rounding."""
    a = (make(3, 5, 5) * 0.7).to(dtype)
    one_rounding = dict(atol=1e-3, rtol=2 ** -7 if dtype == torch.bfloat16 else 2 ** -10)
    for view in (lambda t: t, lambda t: t.transpose(-2, -1)):
        expected = L.matrix_exp(view(a.float())).to(dtype)
        torch.testing.assert_close(L.matrix_exp(view(to_tpu(a))).cpu(), expected, **one_rounding)


# --- _compute_linear_combination (CPU's helper of matrix_exp) ---------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.complex64, torch.float16, torch.int32],
                         ids=str)
def test_linear_combination_adds_as_cpus_loop_adds(dtype):
    """out[i] = sum_j coefficients[i, j] * input[j] with real coefficients, added one j at a time in the input's
    dtype: bit for bit with CPU, contiguous for a transposed input, over the first coefficients.size(1) inputs."""
    inputs = (make(5, 4, 3, dtype=dtype) * 3).transpose(1, 2)
    coefficients = make(6, 5, dtype=dtype.to_real()) * 3
    result = check(torch._compute_linear_combination, inputs, coefficients, atol=0, rtol=0)
    assert result.is_contiguous()
    check(torch._compute_linear_combination, inputs, coefficients[:, :3], atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=str)
def test_linear_combination_into_out_adds_to_outs_values(dtype):
    """CPU's out= form accumulates into ``out`` (the functional form starts from zeros) and keeps its strides."""
    inputs, coefficients = make(4, 2, 3, dtype=dtype), make(5, 4, dtype=dtype.to_real())
    out = make(5, 3, 2, dtype=dtype).transpose(1, 2)
    result = check(lambda x, c, out: torch._compute_linear_combination(x, c, out=out), inputs, coefficients, out,
                   atol=0, rtol=0)
    assert result.stride() == out.stride()


def test_linear_combination_of_an_infinite_complex_input_multiplies_part_by_part():
    check(torch._compute_linear_combination, torch.tensor([[complex(float("inf"), 1.0)]]), torch.ones(1, 1),
          atol=0, rtol=0)


@pytest.mark.parametrize("inputs, coefficients, message", [
    (torch.randn(3, 2), torch.randn(2, 3, dtype=torch.float64), "coefficients of dtype torch.float64"),
    (torch.randn(3, 2, dtype=torch.complex64), torch.randn(2, 3, dtype=torch.complex64),
     "CPU reads coefficients as torch.float32"),
    (torch.randn(3, 2), torch.randn(2, 4), "combine 4 inputs, but input has 3"),
    (torch.randn(3, 2), torch.randn(3), "must be a matrix"),
], ids=["coefficient dtype", "complex coefficients", "too many inputs", "1-d coefficients"])
def test_linear_combination_refuses_what_cpu_would_read_as_other_bytes(inputs, coefficients, message):
    with pytest.raises(RuntimeError, match=message):
        torch._compute_linear_combination(inputs.to("tpu"), coefficients.to("tpu"))


def test_linear_combination_errors_match_cpu():
    check_same_error(lambda device: torch._compute_linear_combination(
        torch.empty(0, 2, device=device), torch.empty(3, 0, device=device)))
    with pytest.raises(RuntimeError):  # CPU never resizes out= either (its words depend on the shapes)
        torch._compute_linear_combination(torch.ones(3, 2), torch.ones(2, 3), out=torch.ones(3, 2))
    with pytest.raises(RuntimeError, match=r"out has shape \[3, 2\], the result's is \[2, 2\]"):
        torch._compute_linear_combination(torch.ones(3, 2, device="tpu"), torch.ones(2, 3, device="tpu"),
                                          out=torch.ones(3, 2, device="tpu"))
