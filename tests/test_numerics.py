"""Ironwood numerics through torch ops, checked against references built independently of the
emulator: ml_dtypes rounding, explicit bf16 pass decompositions in float64, torch CPU."""

import json
import warnings

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from differential import to_tpu
from torch_tpu._C import chips

BF16 = ml_dtypes.bfloat16


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


@pytest.fixture
def matmul_precision():
    """Set torch.set_float32_matmul_precision for one test and restore it afterwards."""
    previous = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(previous)


# --- low-precision MXU products: exact products, float32 accumulation, one rounding ---------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_narrow_matmul_rounds_the_exact_result_once(dtype):
    """Eighths in [-8, 8]: products and float32 sums are exact, so only the final rounding is left."""
    a = (torch.randint(-64, 65, (24, 96)) / 8).to(dtype)
    b = (torch.randint(-64, 65, (96, 40)) / 8).to(dtype)
    exact = a.float().numpy().astype(np.float64) @ b.float().numpy().astype(np.float64)
    rounded_once = exact.astype(np.float32).astype(BF16 if dtype == torch.bfloat16 else np.float16)
    actual = (to_tpu(a) @ to_tpu(b)).cpu()
    expected = torch.from_numpy(rounded_once.astype(np.float32)).to(dtype)
    assert torch.equal(actual, expected)
    assert torch.equal(actual, a @ b)  # and torch CPU agrees


def _accumulate_in(dtype, products):
    """Sum ``products`` left to right, rounding the running total to ``dtype`` after every add."""
    total = dtype(0)
    for product in products:
        total = dtype(np.float32(total) + np.float32(product))
    return float(total)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_float32_accumulation_differs_from_narrow_accumulation(dtype):
    """4096 products of 1/256: float32 accumulation gives 16; a narrow running sum gets stuck."""
    a = torch.ones(1, 4096, dtype=dtype)
    b = torch.full((4096, 1), 2.0 ** -8, dtype=dtype)
    narrow = BF16 if dtype == torch.bfloat16 else np.float16
    naive = _accumulate_in(narrow, np.full(4096, 2.0 ** -8, dtype=np.float32))
    actual = (to_tpu(a) @ to_tpu(b)).item()
    assert actual == 16.0 == (a @ b).item()
    assert naive <= 8.0  # a narrow running sum stalls once 1/256 is half an ulp of the total


def test_bf16_products_are_exact_in_float32():
    """bf16 x bf16 has at most 16 significant bits: a depth-1 product is exact, then rounded once."""
    a = torch.randn(64, 1).bfloat16()
    b = torch.randn(1, 64).bfloat16()
    exact = a.float().numpy().astype(np.float64) * b.float().numpy().astype(np.float64)
    assert np.array_equal(exact.astype(np.float32), exact)  # exact in float32
    actual = (to_tpu(a).float() @ to_tpu(b).float()).cpu().numpy()
    assert np.array_equal(actual, exact.astype(np.float32))


# --- float32 matmul precision modes -----------------------------------------------------------


def _bf16_pieces(x, count):
    """x = hi + mid + lo..., each piece the bf16 rounding (ml_dtypes) of what is left, in float64."""
    pieces, rest = [], x.astype(np.float32)
    for _ in range(count):
        piece = rest.astype(BF16).astype(np.float32)
        pieces.append(piece.astype(np.float64))
        rest = rest - piece
    return pieces


PASS_PRODUCTS = {  # XLA's bf16 pass decompositions: (lhs piece, rhs piece) products that are summed
    1: [(0, 0)],
    3: [(0, 0), (0, 1), (1, 0)],
    6: [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (2, 0)],
}
PRECISION_PASSES = {"medium": 1, "high": 3}


def _passes_reference(a, b, passes):
    """The pass decomposition summed exactly in float64: what the MXU computes up to float32 accumulation."""
    count = max(max(pair) for pair in PASS_PRODUCTS[passes]) + 1
    a_pieces, b_pieces = _bf16_pieces(a, count), _bf16_pieces(b, count)
    return sum(a_pieces[i] @ b_pieces[j] for i, j in PASS_PRODUCTS[passes])


def _relative_error(actual, reference):
    return np.abs(actual - reference).max() / np.abs(reference).max()


MEASURED_ERROR_BOUNDS = {  # max |error| / max |reference| on 256x256 randn, see docs/numerics.md
    "highest": (0, 2e-6),
    "high": (1e-6, 3e-5),
    "medium": (5e-4, 1e-2),
}


@pytest.mark.parametrize("mode", ["highest", "high", "medium"])
def test_float32_precision_modes(mode, matmul_precision):
    a, b = torch.randn(256, 256), torch.randn(256, 256)
    exact = a.double().numpy() @ b.double().numpy()
    matmul_precision(mode)
    actual = (to_tpu(a) @ to_tpu(b)).cpu().numpy().astype(np.float64)
    low, high = MEASURED_ERROR_BOUNDS[mode]
    assert low <= _relative_error(actual, exact) < high
    if mode in PRECISION_PASSES:  # and the error is the pass decomposition's, not anything else's
        reference = _passes_reference(a.numpy(), b.numpy(), PRECISION_PASSES[mode])
        assert _relative_error(actual, reference) < 1e-6
    else:  # "highest" is a plain float32 matmul, as on CPU
        torch.testing.assert_close(torch.from_numpy(actual).float(), a @ b, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("mode", ["high", "medium"])
def test_precision_mode_reaches_every_matmul_op(mode, matmul_precision):
    a, b, bias = torch.randn(32, 48), torch.randn(48, 16), torch.randn(16)
    matmul_precision(mode)
    reference = _passes_reference(a.numpy(), b.numpy(), PRECISION_PASSES[mode])
    results = {
        "mm": torch.mm(to_tpu(a), to_tpu(b)),
        "matmul": to_tpu(a) @ to_tpu(b),
        "linear": F.linear(to_tpu(a), to_tpu(b).t()),
        "bmm": torch.bmm(to_tpu(a)[None], to_tpu(b)[None])[0],
        "addmm": torch.addmm(to_tpu(bias), to_tpu(a), to_tpu(b)) - to_tpu(bias),
    }
    for name, result in results.items():
        assert _relative_error(result.cpu().numpy().astype(np.float64), reference) < 1e-6, name


def test_six_pass_decomposition_of_the_mxu():
    """Not reachable from torch's knob ("highest" is exact float32), but the chip has it: ~22 bits."""
    from torch_tpu._C import mxu

    a, b = np.random.default_rng(0).standard_normal((2, 128, 128), dtype=np.float32)
    exact = a.astype(np.float64) @ b.astype(np.float64)
    six = mxu.matmul(a, b, precision_passes=6).astype(np.float64)
    assert _relative_error(six, _passes_reference(a, b, 6)) < 1e-6
    assert _relative_error(six, exact) < 2e-6


@pytest.mark.parametrize("passes", [None, 1, 3, 6])
@pytest.mark.parametrize("dtypes", [(np.float32, np.float32), (BF16, BF16), (np.float64, np.float64),
                                    (BF16, np.float32)], ids=["float32", "bfloat16", "float64", "mixed"])
def test_a_bound_multiplier_gives_the_bits_of_matmul(passes, dtypes):
    """mxu.multiplier (a recurrent layer's weight, checked and split once for every step) is mxu.matmul."""
    from torch_tpu._C import mxu

    rng = np.random.default_rng(0)
    b = rng.standard_normal((16, 12)).astype(dtypes[1])
    multiply = mxu.multiplier(np.dtype(dtypes[0]), b, precision_passes=passes)
    for rows in (1, 5):
        a = rng.standard_normal((rows, 16)).astype(dtypes[0])
        expected = mxu.matmul(a, b, precision_passes=passes)
        actual = multiply(a)
        assert actual.dtype == expected.dtype
        np.testing.assert_array_equal(actual, expected)


# --- autocast("tpu") --------------------------------------------------------------------------


def test_autocast_default_dtype_is_bf16():
    assert torch.get_autocast_dtype("tpu") == torch.bfloat16
    with torch.amp.autocast("tpu"):
        assert torch.is_autocast_enabled("tpu")
        assert (to_tpu(torch.randn(4, 4)) @ to_tpu(torch.randn(4, 4))).dtype == torch.bfloat16
    assert torch.tpu.is_bf16_supported()
    assert torch.bfloat16 in torch.tpu.get_amp_supported_dtype()


def test_autocast_matmul_like_ops_run_in_bf16():
    a, b, bias = torch.randn(8, 16), torch.randn(16, 4), torch.randn(4)
    images, kernel = torch.randn(1, 2, 6, 6), torch.randn(3, 2, 3, 3)
    with torch.autocast("tpu"):
        outputs = {
            "mm": torch.mm(to_tpu(a), to_tpu(b)),
            "matmul": to_tpu(a) @ to_tpu(b),
            "linear": F.linear(to_tpu(a), to_tpu(b).t(), to_tpu(bias)),
            "addmm": torch.addmm(to_tpu(bias), to_tpu(a), to_tpu(b)),
            "bmm": torch.bmm(to_tpu(a)[None], to_tpu(b)[None]),
            "conv2d": F.conv2d(to_tpu(images), to_tpu(kernel)),
        }
    for name, output in outputs.items():
        assert output.dtype == torch.bfloat16, name
    expected = F.linear(a.bfloat16(), b.t().bfloat16(), bias.bfloat16())  # casts first, then the bf16 op
    assert torch.equal(outputs["linear"].cpu(), expected)


def test_autocast_precision_sensitive_ops_run_in_float32():
    x = to_tpu(torch.randn(4, 10)).bfloat16()
    target = to_tpu(torch.randint(0, 10, (4,)))
    with torch.autocast("tpu"):
        logits = x @ x.t()  # bf16 under autocast
        outputs = {
            "softmax": torch.softmax(logits, dim=-1),
            "log_softmax": F.log_softmax(logits, dim=-1),
            "layer_norm": F.layer_norm(x, (10,)),
            "cross_entropy": F.cross_entropy(x, target),
            "mse_loss": F.mse_loss(x, x * 2),
            "exp": torch.exp(x),
            "sum": x.sum(),
        }
        added = torch.addcmul(to_tpu(torch.randn(4, 10)), x, x)  # promote: widest input type
    assert logits.dtype == torch.bfloat16
    for name, output in outputs.items():
        assert output.dtype == torch.float32, name
    assert added.dtype == torch.float32
    expected = torch.softmax(logits.cpu().float(), dim=-1)
    torch.testing.assert_close(outputs["softmax"].cpu(), expected)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_autocast_cross_entropy_is_float32_throughout_as_on_cpu_and_xla(label_smoothing):
    """cross_entropy's log_softmax runs in float32 on bf16 logits, as CPU's and torch_xla's autocast lists have it
    (CUDA's composite passes the logits' own dtype to log_softmax: the loss was 3e-4 off CPU's)."""
    generator = torch.Generator().manual_seed(0)
    logits, target = torch.randn(64, 4, generator=generator).bfloat16(), torch.randint(0, 4, (64,), generator=generator)
    losses = {}
    for device in ("cpu", "tpu"):
        with torch.autocast(device, dtype=torch.bfloat16):
            losses[device] = F.cross_entropy(logits.to(device), target.to(device), label_smoothing=label_smoothing)
    assert losses["tpu"].dtype == torch.float32
    torch.testing.assert_close(losses["tpu"].cpu(), losses["cpu"], rtol=1e-6, atol=0)


@pytest.mark.filterwarnings("ignore:tpu. float64 matmul")
def test_autocast_leaves_float64_alone_and_can_be_nested_off():
    a = to_tpu(torch.randn(4, 4, dtype=torch.float64))
    f = to_tpu(torch.randn(4, 4))
    with torch.autocast("tpu"):
        assert (a @ a).dtype == torch.float64
        with torch.autocast("tpu", enabled=False):
            assert (f @ f).dtype == torch.float32
        with torch.autocast("tpu", dtype=torch.float16):
            assert (f @ f).dtype == torch.float16


def test_autocast_bans_binary_cross_entropy_like_cuda():
    p = to_tpu(torch.rand(4))
    with torch.autocast("tpu"), pytest.raises(RuntimeError, match="binary_cross_entropy_with_logits"):
        F.binary_cross_entropy(p, p)


# --- GradScaler("tpu") ------------------------------------------------------------------------


def _scaled_training(device, steps, poison_step=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 10, growth_interval=2)
    inputs, targets = torch.randn(32, 8), torch.randn(32, 1)
    scales, skipped = [], []
    for step in range(steps):
        loss = F.mse_loss(model(inputs.to(device)), targets.to(device))
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        if step == poison_step:
            model[0].weight.grad[0, 0] = float("inf")
        before = model[0].weight.detach().cpu().clone()
        scaler.step(optimizer)
        scaler.update()
        skipped.append(torch.equal(before, model[0].weight.detach().cpu()))
        scales.append(scaler.get_scale())
    return [p.detach().cpu() for p in model.parameters()], scales, skipped


def test_grad_scaler_trains_like_cpu():
    expected, expected_scales, _ = _scaled_training("cpu", steps=5, poison_step=2)
    actual, scales, skipped = _scaled_training("tpu", steps=5, poison_step=2)
    assert scales == expected_scales == [2.0 ** 10, 2.0 ** 11, 2.0 ** 10, 2.0 ** 10, 2.0 ** 11]
    assert skipped == [False, False, True, False, False]  # the overflowing step is skipped
    for actual_parameter, expected_parameter in zip(actual, expected):
        torch.testing.assert_close(actual_parameter, expected_parameter)


def test_grad_scaler_unscale_matches_cpu():
    grads = {}
    for device in ("cpu", "tpu"):
        parameter = torch.nn.Parameter(torch.arange(6.0).to(device))
        optimizer = torch.optim.SGD([parameter], lr=1.0)
        scaler = torch.amp.GradScaler(device, init_scale=8.0)
        scaler.scale((parameter ** 2).sum()).backward()
        scaler.unscale_(optimizer)
        grads[device] = parameter.grad.cpu()
    torch.testing.assert_close(grads["tpu"], grads["cpu"])
    torch.testing.assert_close(grads["tpu"], 2 * torch.arange(6.0))


@pytest.mark.parametrize("initial_scale, found_inf, growth_factor, backoff_factor", [
    (1e38, 0.0, 2.0 ** 4, 0.5),  # the grown scale would be inf: CPU keeps the old one
    (3.0, 0.0, 1.1, 0.5),  # a factor float32 cannot hold: the product is taken in double and rounded once
    (3.0, 1.0, 2.0, 0.3),
    (1e-44, 1.0, 2.0, 0.3),  # a subnormal scale backed off
])
def test_grad_scaler_update_takes_cpus_rule_and_rounding(initial_scale, found_inf, growth_factor, backoff_factor):
    states = {}
    for device in ("cpu", "tpu"):
        scale = torch.full((1,), initial_scale, device=device)
        tracker = torch.zeros(1, dtype=torch.int32, device=device)
        torch._amp_update_scale_(scale, tracker, torch.full((1,), found_inf, device=device),
                                 growth_factor, backoff_factor, 1)
        states[device] = (scale.cpu().view(torch.int32).item(), tracker.item())
    assert states["tpu"] == states["cpu"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_grad_scaler_unscales_16_bit_gradients_in_float32_as_cpu_does(dtype):
    gradients = torch.randn(4096, generator=torch.Generator().manual_seed(0)).mul(1000).to(dtype)
    unscaled = {}
    for device in ("cpu", "tpu"):
        grad, found_inf = gradients.to(device, copy=True), torch.zeros(1, device=device)
        torch._amp_foreach_non_finite_check_and_unscale_([grad], found_inf, torch.full((1,), 1 / 3, device=device))
        unscaled[device] = grad.cpu()
    assert torch.equal(unscaled["tpu"], unscaled["cpu"])


# bf16 NaNs (quiet and signalling, either sign) and their fp16 counterparts, at positions CPU's cpu_kernel_vec converts
# in its vectors (0xFFFF) and in its scalar tail (0x7FC0)
NAN_BITS = {torch.bfloat16: (0x7FC0, 0xFFC0, 0x7F81, 0xFF81, 0x7FC1), torch.float16: (0x7E00, 0xFE00, 0x7D00, 0xFD01)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("n", [3, 40, 100, 1000])
def test_grad_scaler_unscale_stores_nans_with_cpus_bits_and_no_warning(dtype, n):
    raw = torch.full((n,), 1.0, dtype=dtype).view(torch.int16)
    for i, pattern in enumerate(NAN_BITS[dtype]):
        raw[i * 7 % n], raw[-1 - i * 13 % n] = pattern - 0x10000 * (pattern >= 0x8000), 0x7FC0
    results = {}
    for device in ("cpu", "tpu"):
        grad, found_inf = raw.view(dtype).to(device, copy=True), torch.zeros(1, device=device)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            torch._amp_foreach_non_finite_check_and_unscale_([grad], found_inf, torch.full((1,), 0.5, device=device))
        results[device] = (grad.cpu().view(torch.int16), found_inf.item())
    assert torch.equal(results["tpu"][0], results["cpu"][0]) and results["tpu"][1] == results["cpu"][1] == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_grad_scaler_unscales_a_0d_gradient_as_cpu(dtype):
    """A scalar parameter's gradient failed to broadcast against the one-element inv_scale."""
    results = {}
    for device in ("cpu", "tpu"):
        grad, found_inf = torch.tensor(3.0, dtype=dtype, device=device), torch.zeros(1, device=device)
        torch._amp_foreach_non_finite_check_and_unscale_([grad], found_inf, torch.full((1,), 0.5, device=device))
        results[device] = (grad.cpu(), found_inf.item())
    assert torch.equal(results["tpu"][0], results["cpu"][0]) and results["tpu"][0].shape == ()


# --- chip selection ---------------------------------------------------------------------------
# A chip is chosen once per process, so other chips are checked in fresh interpreters. The same
# interpreter checks that a float64 matmul runs (on the host, as on CPU) and warns exactly once.

CHIP_REPORT = """
    import json, warnings, torch
    a, b = torch.randn(8, 8, dtype=torch.float64), torch.randn(8, 8, dtype=torch.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        products = [(a.to("tpu") @ b.to("tpu")).cpu() for _ in range(2)]
    torch.testing.assert_close(products[0], a @ b)
    props = torch.tpu.get_device_properties()
    free, total = torch.tpu.mem_get_info()
    print(json.dumps({"name": props.name, "total_memory": props.total_memory, "mem_total": total,
                      "peak_flops": dict(props.peak_flops), "bf16": torch.tpu.is_bf16_supported(),
                      "device_name": torch.tpu.get_device_name(),
                      "float64_warnings": sum("float64" in str(w.message) for w in caught)}))
"""


def check_chip_report(report, chip, hbm_bytes):
    spec = chips.CHIPS[chip]
    assert report["name"] == chip and chip in report["device_name"]
    assert report["total_memory"] == report["mem_total"] == hbm_bytes
    assert report["peak_flops"] == spec.peak_flops and report["bf16"]
    assert ("float8_e4m3fn" in report["peak_flops"]) == (chip != "v5e")


@pytest.mark.parametrize("chip, environment, hbm_bytes", [
    ("v5e", {}, chips.CHIPS["v5e"].hbm_bytes),
    ("v5p", {"TORCH_TPU_HBM_BYTES": "1e9"}, 10 ** 9),
], ids=["v5e", "v5p_hbm_override"])
def test_chip_selection_follows_the_table(chip, environment, hbm_bytes, python_subprocess):
    process = python_subprocess(CHIP_REPORT, env={"TORCH_TPU_CHIP": chip, **environment})
    report = json.loads(process.stdout.strip().splitlines()[-1])
    check_chip_report(report, chip, hbm_bytes)
    assert report["float64_warnings"] == 1


def test_this_process_chip_follows_the_table():
    props = torch.tpu.get_device_properties()
    report = {"name": props.name, "total_memory": props.total_memory, "mem_total": torch.tpu.mem_get_info()[1],
              "peak_flops": dict(props.peak_flops), "bf16": torch.tpu.is_bf16_supported(),
              "device_name": torch.tpu.get_device_name()}
    check_chip_report(report, props.name, chips.hbm_capacity_from_environment(chips.CHIPS[props.name]))


def test_unknown_chip_is_refused(monkeypatch):
    monkeypatch.setenv("TORCH_TPU_CHIP", "v9z")
    with pytest.raises(ValueError, match="v9z.*ironwood"):
        chips.chip_from_environment()
