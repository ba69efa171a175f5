"""Convolution on tpu (im2col on the MXU), forward and backward, differential against torch CPU."""

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from differential import check_grads, check_same_error

FLOAT32 = dict(atol=1e-4, rtol=1e-4)
BF16 = dict(atol=5e-2, rtol=2e-2)


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def check(f, tensors, kwargs, dtype=torch.float32, tolerance=FLOAT32):
    """Convolution ``f`` and its input, weight and bias gradients, in ``dtype``, tpu against CPU; the tpu outputs."""
    return check_grads(lambda *ts: f(*ts, **kwargs), *(None if t is None else t.to(dtype) for t in tensors),
                       **tolerance)


CASES = {
    "1d": (F.conv1d, (2, 4, 9), (6, 4, 3), dict(stride=2, padding=1)),
    "1d dilated groups": (F.conv1d, (2, 4, 11), (6, 2, 3), dict(dilation=3, groups=2)),
    "2d": (F.conv2d, (2, 3, 8, 7), (5, 3, 3, 3), dict(padding=1)),
    "2d strided asymmetric": (F.conv2d, (2, 4, 9, 8), (6, 2, 3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)),
    "2d depthwise": (F.conv2d, (1, 4, 6, 6), (4, 1, 3, 3), dict(groups=4, padding=2)),
    "2d 1x1": (F.conv2d, (3, 5, 4, 4), (7, 5, 1, 1), {}),
    "2d same": (F.conv2d, (2, 3, 7, 6), (4, 3, 4, 3), dict(padding="same", dilation=2)),
    "2d unbatched": (F.conv2d, (3, 6, 6), (4, 3, 3, 3), dict(stride=2)),
    "3d": (F.conv3d, (1, 2, 5, 6, 4), (3, 2, 2, 3, 2), dict(stride=(1, 2, 1), padding=1)),
    # stride 1 with a kernel wider than 1 after the first spatial dim: the wide-grid im2col (and its spare row)
    "3d stride 1 dilated": (F.conv3d, (2, 2, 5, 6, 7), (3, 2, 2, 3, 2), dict(padding=(1, 0, 2), dilation=(1, 2, 1))),
    "2d depthwise 7x7": (F.conv2d, (2, 6, 7, 9), (6, 1, 7, 7), dict(groups=6, padding=3)),
    # strided, every stride phase serving two kernel offsets or more: the phases' im2col (_phase_correlation)
    "2d depthwise 5x5 stride 2": (F.conv2d, (2, 6, 11, 9), (6, 1, 5, 5), dict(stride=2, padding=2, groups=6)),
    "2d 5x4 stride 2 grouped": (F.conv2d, (2, 4, 10, 9), (6, 2, 5, 4), dict(stride=2, padding=(2, 1), groups=2)),
    "2d 7x7 stride (3, 2)": (F.conv2d, (1, 3, 13, 12), (4, 3, 7, 7), dict(stride=(3, 2), padding=3)),
    "transposed 1d": (F.conv_transpose1d, (2, 4, 5), (4, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    "transposed 2d": (F.conv_transpose2d, (2, 4, 5, 6), (4, 3, 3, 2),
                      dict(stride=(2, 3), padding=(1, 0), output_padding=(1, 2), groups=2, dilation=(1, 2))),
    "transposed 3d": (F.conv_transpose3d, (1, 2, 3, 4, 3), (2, 3, 2, 2, 3), dict(stride=2)),
    "transposed 2d stride 1": (F.conv_transpose2d, (2, 4, 5, 6), (4, 3, 3, 2), dict(padding=(1, 0), dilation=(1, 2))),
    # output_padding not below the stride (allowed as it is below the dilation): rows no input reaches
    "transposed 2d output padding past the stride": (
        F.conv_transpose2d, (2, 2, 4, 4), (2, 2, 4, 5),
        dict(stride=(3, 2), padding=(1, 2), output_padding=(2, 3), groups=2, dilation=(4, 4))),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_convolution_forward_and_gradients(name, with_bias):
    f, input_shape, weight_shape, kwargs = CASES[name]
    transposed = f in (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)
    out_channels = weight_shape[1] * kwargs.get("groups", 1) if transposed else weight_shape[0]
    bias = torch.randn(out_channels) if with_bias else None
    check(f, (torch.randn(input_shape), torch.randn(weight_shape), bias), kwargs)


@pytest.mark.parametrize("name", ["2d", "transposed 2d", "1d dilated groups"])
def test_bfloat16(name):
    f, input_shape, weight_shape, kwargs = CASES[name]
    check(f, (torch.randn(input_shape), torch.randn(weight_shape)), kwargs, dtype=torch.bfloat16, tolerance=BF16)


@pytest.mark.parametrize("name,kwargs", [
    ("im2col: output padding not below the stride", dict(stride=(3, 2), padding=(1, 2), output_padding=(2, 3),
                                                         groups=2, dilation=(4, 4))),
    ("im2col, 1 x 1 stride", dict(stride=(1, 2), output_padding=(0, 1), dilation=(2, 3))),
    ("oneDNN", dict(stride=2, padding=1, output_padding=1, groups=2)),
])
@pytest.mark.parametrize("f,spatial", [(F.conv_transpose2d, (5, 6)), (F.conv_transpose3d, (3, 4, 5))])
def test_transposed_bfloat16_rounds_where_cpu_kernel_rounds(name, kwargs, f, spatial):
    """CPU's im2col kernel keeps the columns, and adds them back, in bf16; oneDNN sums in float32."""
    n = len(spatial)
    kwargs = {k: v[:n] + v[-1:] * (n - len(v)) if isinstance(v, tuple) else v for k, v in kwargs.items()}
    groups = kwargs.get("groups", 1)
    generator = torch.Generator().manual_seed(0)
    x = (torch.randn(2, 4, *spatial, generator=generator) * 3).bfloat16()
    w = (torch.randn(4, 6 // groups, *(3,) * n, generator=generator) * 3).bfloat16()
    b = torch.randn(6, generator=generator).bfloat16()
    expected = f(x.transpose(-1, -2).contiguous().transpose(-1, -2), w, b, **kwargs)
    actual = f(x.to("tpu").transpose(-1, -2).contiguous().transpose(-1, -2), w.to("tpu"), b.to("tpu"), **kwargs)
    # the tpu takes the route CPU takes on this host (a host without oneDNN bf16 sends every case to im2col)
    torch.testing.assert_close(actual.cpu(), expected, atol=0, rtol=0)


def test_float64_and_non_contiguous_input():
    x = torch.randn(2, 6, 5, 3, dtype=torch.float64).permute(0, 3, 1, 2)  # channels-last-like view
    w = torch.randn(4, 3, 2, 2, dtype=torch.float64)[:, :, :, :]
    check(F.conv2d, (x, w), dict(padding=1), dtype=torch.float64, tolerance={})


def test_weight_gradient_of_an_input_holding_inf_and_nan_matches_cpu():
    """The wide-grid weight gradient multiplies windows past each output row by zeros: an inf or NaN in the
    input would turn those into NaN where CPU has finite values, so such inputs take the exact windows."""
    x, w = torch.randn(2, 3, 6, 5), torch.randn(4, 3, 3, 3)
    x[0, 1, 0, 4], x[1, 2, 5, 0] = float("inf"), float("nan")
    grad = torch.randn(2, 4, 6, 5)
    results = {}
    for device in ("cpu", "tpu"):
        results[device] = torch.ops.aten.convolution_backward(
            grad.to(device), x.to(device), w.to(device), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
            [False, True, False])[1].cpu()
    assert results["cpu"].isfinite().any() and not results["cpu"].isfinite().all()
    torch.testing.assert_close(results["tpu"], results["cpu"], equal_nan=True, **FLOAT32)


@pytest.mark.parametrize("second_shape", [(2, 3, 6, 6), (3, 3, 5, 7)])
def test_results_outlive_the_workspaces(second_shape):
    """The im2col columns and the matmul's product live in workspaces the next convolution reuses, and the
    geometry is cached per shape: no result may alias a workspace, nor a shape take another's geometry."""
    x1, x2, w = torch.randn(2, 3, 6, 6), torch.randn(second_shape), torch.randn(4, 3, 3, 3)
    first = F.conv2d(x1.to("tpu"), w.to("tpu"), padding=1)
    second = F.conv2d(x2.to("tpu"), w.to("tpu"), padding=1)
    torch.testing.assert_close(first.cpu(), F.conv2d(x1, w, padding=1), **FLOAT32)
    torch.testing.assert_close(second.cpu(), F.conv2d(x2, w, padding=1), **FLOAT32)


def test_conv_module_training_step_matches_cpu():
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.Conv2d(4, 2, 3, stride=2))
    x = torch.randn(2, 3, 8, 8)
    grads = {}
    for device in ("cpu", "tpu"):
        replica = copy.deepcopy(model).to(device)
        replica.zero_grad()
        replica(x.to(device)).backward(torch.ones(2, 2, 3, 3, device=device))
        grads[device] = [p.grad.cpu() for p in replica.parameters()]
    torch.testing.assert_close(grads["tpu"], grads["cpu"], **FLOAT32)


def test_double_backward():
    x, w = torch.randn(1, 2, 5, 5), torch.randn(3, 2, 3, 3)
    results = {}
    for device in ("cpu", "tpu"):
        xd, wd = (t.to(device).requires_grad_() for t in (x, w))
        (gx,) = torch.autograd.grad(F.conv2d(xd, wd, padding=1), xd, torch.ones(1, 3, 5, 5, device=device),
                                    create_graph=True)
        (gw,) = torch.autograd.grad(gx, wd, torch.ones_like(gx))
        results[device] = gw.cpu()
    torch.testing.assert_close(results["tpu"], results["cpu"], **FLOAT32)


@pytest.mark.parametrize("call", [
    lambda d: F.conv2d(torch.ones(1, 2, 4, 4, device=d), torch.ones(3, 3, 3, 3, device=d)),
    lambda d: F.conv2d(torch.ones(1, 2, 2, 2, device=d), torch.ones(3, 2, 3, 3, device=d)),
    lambda d: F.conv2d(torch.ones(1, 2, 4, 4, device=d), torch.ones(3, 2, 3, 3, device=d, dtype=torch.float64)),
    lambda d: F.conv2d(torch.ones(1, 2, 4, 4, device=d), torch.ones(3, 2, 3, 3, device=d),
                       torch.ones(3, device=d, dtype=torch.float64)),
    lambda d: F.conv2d(torch.ones(1, 4, 4, 4, device=d), torch.ones(3, 2, 3, 3, device=d), groups=2),
], ids=lambda _: "")
def test_errors_match_cpu(call):
    check_same_error(call)


def _convolution_and_gradient_strides(device, spatial, transposed, dilation, channels, groups, dtype, laid_out):
    """The strides of a convolution's output, grad_input and grad_weight with the input and/or weight
    channels-last (``laid_out``), and the results themselves."""
    memory_format = torch.channels_last if spatial == 2 else torch.channels_last_3d
    generator = torch.Generator().manual_seed(0)
    x = torch.randn((2, channels) + (5,) * spatial, generator=generator, dtype=dtype)
    w = torch.randn(((channels, 4 // groups) if transposed else (4, channels // groups)) + (3,) * spatial,
                    generator=generator, dtype=dtype)
    x, w = (t.to(memory_format=memory_format) if name in laid_out else t for name, t in (("input", x), ("weight", w)))
    x, w = x.to(device), w.to(device)
    settings = ([1] * spatial, [0] * spatial, [dilation] * spatial, transposed, [0] * spatial, groups)
    out = torch.ops.aten.convolution(x, w, None, *settings)
    grad = torch.randn(out.shape, generator=generator, dtype=dtype).to(device)
    grad_input, grad_weight, _ = torch.ops.aten.convolution_backward(grad, x, w, None, *settings, [True, True, False])
    results = (out, grad_input, grad_weight)
    return [t.stride() for t in results], [t.cpu() for t in results]


@pytest.mark.parametrize("laid_out", [("input",), ("weight",)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("channels, groups", [(2, 1), (2, 2), (1, 1)], ids=["dense", "depthwise", "one_channel"])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("spatial", [2, 3])
def test_convolution_results_and_gradients_take_cpus_memory_format(spatial, transposed, dilation, channels, groups,
                                                                  dtype, laid_out):
    """A channels-last input or weight gives channels-last results on CPU (oneDNN's and CPU's own kernels
    alike; CPU's slow 3-d kernel, which float64 takes, stays contiguous): code that checks
    is_contiguous(memory_format=...) on a conv output relies on it. Strides of size-1 dims too."""
    args = (spatial, transposed, dilation, channels, groups, dtype, laid_out)
    expected_strides, expected = _convolution_and_gradient_strides("cpu", *args)
    strides, actual = _convolution_and_gradient_strides("tpu", *args)
    assert strides == expected_strides
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, **FLOAT32)


POINTWISE = {  # 1x1 kernels at stride 1, unpadded: one GEMM per image straight from the input and into the result
    "2d": (F.conv2d, (3, 8, 5, 4), (12, 8, 1, 1), {}),
    "2d grouped": (F.conv2d, (2, 6, 4, 5), (9, 2, 1, 1), dict(groups=3)),
    "2d depthwise": (F.conv2d, (2, 4, 3, 3), (8, 1, 1, 1), dict(groups=4)),
    "2d one pixel (squeeze-and-excitation)": (F.conv2d, (4, 16, 1, 1), (4, 16, 1, 1), {}),
    "2d dilated": (F.conv2d, (2, 3, 4, 4), (5, 3, 1, 1), dict(dilation=2)),
    "1d": (F.conv1d, (2, 5, 7), (3, 5, 1), {}),
    "3d": (F.conv3d, (2, 3, 2, 3, 4), (4, 3, 1, 1, 1), {}),
    "unbatched": (F.conv2d, (3, 4, 4), (6, 3, 1, 1), {}),
    "empty batch": (F.conv2d, (0, 3, 4, 4), (6, 3, 1, 1), {}),
    # the weight gradient's per-image path serves the adjoint too, unless output padding adds positions
    "transposed": (F.conv_transpose2d, (2, 6, 4, 5), (6, 2, 1, 1), dict(groups=2)),
    "transposed with output padding": (F.conv_transpose2d, (2, 3, 4, 5), (3, 4, 1, 1),
                                       dict(dilation=2, output_padding=1)),
}


@pytest.mark.parametrize("name", list(POINTWISE))
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_pointwise_convolution_matches_cpu(name, with_bias):
    f, input_shape, weight_shape, kwargs = POINTWISE[name]
    bias = torch.randn(weight_shape[1] * kwargs.get("groups", 1) if f is F.conv_transpose2d else weight_shape[0]
                       ) if with_bias else None
    outputs = check(f, (torch.randn(input_shape), torch.randn(weight_shape), bias), kwargs)
    assert outputs[0].stride() == f(torch.randn(input_shape), torch.randn(weight_shape), bias, **kwargs).stride()


@pytest.mark.parametrize("dtype, tolerance", [(torch.bfloat16, BF16), (torch.float64, {})], ids=["bf16", "float64"])
def test_pointwise_convolution_in_other_dtypes(dtype, tolerance):
    """bf16 adds the bias in the float32 accumulator and rounds once, as the im2col path stores it."""
    check(F.conv2d, (torch.randn(2, 8, 3, 4) * 4, torch.randn(6, 8, 1, 1), torch.randn(6) * 4), {}, dtype=dtype,
          tolerance=tolerance)


@pytest.mark.parametrize("layout", ["channel slice", "transposed", "channels-last"])
def test_pointwise_convolution_of_strided_inputs(layout):
    """Any input layout: a view the GEMM reads in place, one it copies first, channels-last (which keeps CPU's
    channels-last results through the im2col path)."""
    base = torch.randn(2, 10, 5, 4)
    x = {"channel slice": base[:, ::2], "transposed": base.transpose(2, 3),
         "channels-last": base.contiguous(memory_format=torch.channels_last)}[layout]
    w = torch.randn(3, x.shape[1], 1, 1)
    outputs = check(F.conv2d, (x, w, torch.randn(3)), {})
    assert outputs[0].stride() == F.conv2d(x, w).stride()


@pytest.mark.usefixtures("paused_collector")
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_pointwise_convolution_allocates_its_results_and_is_charged_as_a_convolution(with_bias):
    import torch_tpu

    clock = torch_tpu._C.current_chip().clock
    x, w = torch.randn(3, 8, 5, 4, device="tpu"), torch.randn(12, 8, 1, 1, device="tpu")
    bias = torch.randn(12, device="tpu") if with_bias else None
    grad = torch.randn(3, 12, 5, 4, device="tpu")
    settings = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    for name, call, operands in [
        ("convolution_overrideable", lambda: torch.ops.aten.convolution_overrideable(x, w, bias, *settings),
         (x, w) + ((bias,) if with_bias else ())),
        ("convolution_backward_overrideable",
         lambda: torch.ops.aten.convolution_backward_overrideable(grad, x, w, *settings, [True, True, with_bias]),
         (grad, x, w)),
    ]:
        before = clock.op_totals.get(name, torch_tpu._C.clock.OpTotals()).copy()
        allocated = torch.tpu.memory_allocated()
        torch.tpu.reset_peak_memory_stats()
        results = call()
        results = [r for r in (results if isinstance(results, tuple) else (results,)) if r is not None]
        made = sum(r.nbytes for r in results)
        assert torch.tpu.memory_allocated() == torch.tpu.max_memory_allocated() == allocated + made, name
        totals = clock.op_totals[name]
        assert totals.count == before.count + 1
        assert totals.bytes - before.bytes == sum(t.nbytes for t in operands) + made
        # each output element (and each input- and weight-gradient element's share) a dot product over 8 channels
        convolutions = 1 if name == "convolution_overrideable" else 2
        assert totals.flops - before.flops == convolutions * 2 * (3 * 12 * 5 * 4) * 8
        del results


@pytest.mark.parametrize("kernel", [1, 3])
def test_overflow_gives_inf_without_a_warning(kernel):
    """As on CPU: a bias that takes a finite product past float32's range gives inf, and NumPy's overflow
    warning stays silent."""
    x, w = torch.full((1, 2, 3, 3), 1e19), torch.full((3, 2, kernel, kernel), 1e19 / (2 * kernel * kernel))
    b = torch.full((3,), 3e38)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        actual = F.conv2d(x.to("tpu"), w.to("tpu"), b.to("tpu"), padding=kernel // 2).cpu()
    torch.testing.assert_close(actual, F.conv2d(x, w, b, padding=kernel // 2))


@pytest.mark.parametrize("kernel, groups", [(3, 1), (3, 4), (1, 1)], ids=["3x3", "depthwise", "1x1"])
def test_weight_gradient_that_overflows_matches_cpu(kernel, groups):
    """Finite inputs whose weight-gradient sums overflow: inf where CPU's are, finite elsewhere (a wide-grid
    gradient that is not all finite is computed again over the exact windows). Positive terms, so that every
    summation order overflows alike."""
    x, grad = torch.rand(2, 4, 6, 5) + 0.5, torch.rand(2, 4, 6, 5) + 0.5
    x[:, 1] *= 1e38
    w = torch.randn(4, 4 // groups, kernel, kernel)
    settings = ([1, 1], [kernel // 2] * 2, [1, 1], False, [0, 0], groups, [False, True, False])
    results = {device: torch.ops.aten.convolution_backward(grad.to(device), x.to(device), w.to(device), None,
                                                           *settings)[1].cpu() for device in ("cpu", "tpu")}
    assert not results["cpu"].isfinite().all() and results["cpu"].isfinite().any()
    torch.testing.assert_close(results["tpu"], results["cpu"], equal_nan=True, **FLOAT32)


def test_gradients_outlive_the_workspaces():
    """The weight gradient's rows, like the columns and the product, live in per-thread workspaces: a second
    backward of another shape must not change the first one's results."""
    cases = [(torch.randn(2, 3, 6, 6), torch.randn(4, 3, 3, 3)), (torch.randn(3, 3, 5, 7), torch.randn(4, 3, 3, 3))]
    outputs = {}
    for device in ("cpu", "tpu"):
        results = []
        for x, w in cases:
            grad = torch.ones(x.shape[0], 4, *x.shape[2:])
            results.append(torch.ops.aten.convolution_backward(
                grad.to(device), x.to(device), w.to(device), None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                [True, True, False]))
        outputs[device] = [[t.cpu() for t in r if t is not None] for r in results]
    torch.testing.assert_close(outputs["tpu"], outputs["cpu"], **FLOAT32)


@pytest.mark.parametrize("kernel", [1, 3])
def test_reduced_matmul_precision_rounds_the_inputs_to_bf16(kernel):
    """At float32 matmul precision "medium" the MXU takes one bf16 pass: the pointwise path and im2col alike
    give CPU's float32 convolution of the inputs rounded to bf16 (products exact, float32 sums)."""
    x, w = torch.randn(2, 3, 4, 4), torch.randn(5, 3, kernel, kernel)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        actual = F.conv2d(x.to("tpu"), w.to("tpu"), padding=kernel // 2).cpu()
    finally:
        torch.set_float32_matmul_precision(previous)
    expected = F.conv2d(x.bfloat16().float(), w.bfloat16().float(), padding=kernel // 2)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(actual, F.conv2d(x, w, padding=kernel // 2), atol=1e-5, rtol=1e-5)


def test_integer_pointwise_convolution_matches_cpu():
    x, w = torch.arange(2 * 3 * 4 * 4).reshape(2, 3, 4, 4), torch.arange(5 * 3).reshape(5, 3, 1, 1) - 7
    assert torch.equal(F.conv2d(x.to("tpu"), w.to("tpu"), torch.arange(5).to("tpu")).cpu(),
                       F.conv2d(x, w, torch.arange(5)))


@pytest.mark.parametrize("stride", [1, 2])
def test_backward_geometry_is_told_apart_by_every_size(stride):
    """Convolution's backward caches its padding geometry per shape: two inputs whose outputs have one size (7x7
    and 8x8 at stride 2) and two paddings of one input alternate, each gradient CPU's."""
    cases = [((2, 3, 7, 7), 1), ((2, 3, 8, 8), 1), ((2, 3, 7, 7), 2), ((2, 3, 8, 8), 1), ((2, 3, 7, 7), 1)]
    w, b = torch.randn(4, 3, 3, 3), torch.randn(4)
    for shape, padding in cases:
        check(F.conv2d, (torch.randn(shape), w, b), dict(stride=stride, padding=padding))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("layout", ["contiguous", "channels-last"])
@pytest.mark.parametrize("name", ["2d depthwise 7x7", "2d strided asymmetric", "3d", "transposed 2d"])
def test_bias_is_added_once_to_the_accumulated_sums(name, layout, dtype):
    """A float32/float64 convolution stores its sums first and adds the bias in the result's memory, which is exact
    there: each element is then the unbiased result plus the bias, rounded once, bit for bit, in either layout. A
    bf16 convolution adds the bias to its float32 sums before the one rounding, as CPU does (CPU's values)."""
    f, input_shape, weight_shape, kwargs = CASES[name]
    x, w = torch.randn(input_shape, dtype=dtype), torch.randn(weight_shape, dtype=dtype)
    if layout == "channels-last":
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    transposed = f is F.conv_transpose2d
    bias = torch.randn(weight_shape[1] * kwargs.get("groups", 1) if transposed else weight_shape[0], dtype=dtype)
    x, w, bias = x.to("tpu"), w.to("tpu"), bias.to("tpu")
    biased = f(x, w, bias, **kwargs)
    if dtype is torch.bfloat16:
        torch.testing.assert_close(biased.cpu(), f(x.cpu(), w.cpu(), bias.cpu(), **kwargs), **BF16)
        return
    unbiased = f(x, w, None, **kwargs)
    expected = unbiased + bias.reshape(-1, *(1,) * (unbiased.dim() - 2))
    assert torch.equal(biased.cpu(), expected.cpu())


FOLDS = {"2x2": (2, 1, 0, 1), "3x3 padded": (3, 1, 1, 1), "dilated strided": (3, 2, 1, 2),
         "uneven": ((2, 3), (1, 2), (0, 1), (2, 1))}


@pytest.mark.parametrize("geometry", FOLDS.values(), ids=FOLDS.keys())
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("batched", [True, False])
def test_fold_and_unfolds_gradient_are_cpus_col2im_bit_for_bit_in_one_launch(geometry, dtype, batched):
    """col2im adds each pixel's blocks in kernel-offset order, as CPU's loop does: ``F.fold`` and the gradient of
    ``F.unfold``, one col2im kernel each (the decomposition's accumulating index_put took 9-15x CPU's time)."""
    from torch_tpu import _C

    kernel, dilation, padding, stride = geometry
    output_size = (7, 9)
    blocks = F.unfold(torch.zeros(1, 1, *output_size), kernel, dilation, padding, stride).shape[-1]
    kernel_elements = math.prod((kernel, kernel) if isinstance(kernel, int) else kernel)
    columns = torch.randn(2, 3 * kernel_elements, blocks, dtype=dtype)[0 if not batched else slice(None)]
    image = torch.randn((2, 3, *output_size) if batched else (3, *output_size), dtype=dtype)

    def run(device):
        blocks_leaf, image_leaf = columns.to(device).requires_grad_(), image.to(device).requires_grad_()
        folded = F.fold(blocks_leaf, output_size, kernel, dilation, padding, stride)
        unfolded = F.unfold(image_leaf, kernel, dilation, padding, stride)
        (folded.square().sum() + unfolded.square().sum()).backward()
        return [t.cpu() for t in (folded, unfolded, blocks_leaf.grad, image_leaf.grad)]

    launches = _C.current_chip().clock.totals_snapshot().get("col2im")
    before = launches.count if launches else 0
    for actual, expected in zip(run("tpu"), run("cpu")):
        assert torch.equal(actual.detach(), expected.detach())
    assert _C.current_chip().clock.totals_snapshot()["col2im"].count == before + 2  # fold, unfold's gradient


@pytest.mark.parametrize("call", [
    lambda device: F.fold(torch.ones(2, 7, 12, device=device), (4, 5), 2),  # channels not a multiple of the kernel
    lambda device: F.fold(torch.ones(2, 8, 11, device=device), (4, 5), 2),  # not as many blocks as the output has
    lambda device: F.fold(torch.ones(2, 8, 12, device=device), (4, 5), 2, padding=-1),
    lambda device: F.fold(torch.ones(2, 0, 12, device=device), (4, 5), 2),
    lambda device: F.fold(torch.ones(2, 20, 12, dtype=torch.int64, device=device), (4, 5), 2),
], ids=["channels", "blocks", "negative padding", "no channels", "integers"])
def test_fold_refuses_what_cpu_refuses(call):
    check_same_error(call)


def test_fold_of_an_empty_batch():
    columns = torch.ones(0, 12, 12)
    assert F.fold(columns.to("tpu"), (4, 5), 2).shape == F.fold(columns, (4, 5), 2).shape == (0, 3, 4, 5)


PHASE_CASES = ["2d depthwise 5x5 stride 2", "2d 5x4 stride 2 grouped", "2d 7x7 stride (3, 2)"]


@pytest.mark.parametrize("name", PHASE_CASES + ["2d unbatched", "2d strided asymmetric"])
def test_strided_convolutions_with_wide_kernels_take_the_stride_phases(monkeypatch, name):
    """A 2-d correlation whose every stride phase serves two kernel offsets or more per dim (5x5 at stride 2)
    gathers its columns from the phases; a 3x3 kernel at stride 2 and a dilated one keep the strided windows.
    CPU's values either way."""
    from torch_tpu.ops import conv
    f, input_shape, weight_shape, kwargs = CASES[name]
    taken = []
    phases = conv._phase_correlation
    monkeypatch.setattr(conv, "_phase_correlation", lambda *args: taken.append(args) or phases(*args))
    x, w = torch.randn(input_shape), torch.randn(weight_shape)
    torch.testing.assert_close(f(x.to("tpu"), w.to("tpu"), **kwargs).cpu(), f(x, w, **kwargs), **FLOAT32)
    assert len(taken) == (name in PHASE_CASES)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, dict(atol=1e-12, rtol=1e-12)), (torch.bfloat16, BF16)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"])
def test_stride_phases_in_every_layout_and_dtype(layout, dtype, tolerance):
    """The phases' columns from channels-last and strided inputs, in float64 and bf16, with a bias: CPU's values,
    layout and dtype; infinities and NaN where CPU has them (the positions past each output row, which read the
    phases' zero fill, are cropped). The weight gradient too, where the zeros at those positions would make NaN of
    an inf: the exact windows then decide."""
    x, w, b = torch.randn(3, 8, 15, 13), torch.randn(8, 1, 5, 5), torch.randn(8)
    x[0, 1, 4, 4], x[1, 2, 0, 0], x[2, 3, 14, 12] = math.inf, -math.inf, math.nan
    x, w, b = (t.to(dtype) for t in (x, w, b))
    x = {"contiguous": x, "channels_last": x.contiguous(memory_format=torch.channels_last),
         "transposed": x.transpose(2, 3).contiguous().transpose(2, 3)}[layout]
    expected = F.conv2d(x, w, b, stride=2, padding=2, groups=8)
    actual = F.conv2d(x.to("tpu"), w.to("tpu"), b.to("tpu"), stride=2, padding=2, groups=8)
    assert actual.dtype == expected.dtype and actual.stride() == expected.stride()
    torch.testing.assert_close(actual.cpu(), expected, equal_nan=True, **tolerance)
    if dtype is torch.bfloat16:  # CPU's channels-last bf16 weight gradient keeps finite some sums that read an inf
        return  # (the strided windows gave NaN there before the phases too): float64 checks the phases' gradient
    grad = torch.randn(expected.shape).to(dtype)
    settings = ([8], [2, 2], [2, 2], [1, 1], False, [0, 0], 8, [False, True, False])
    weight_gradients = [torch.ops.aten.convolution_backward(grad.to(device), x.to(device), w.to(device), *settings)[1]
                        for device in ("cpu", "tpu")]
    torch.testing.assert_close(weight_gradients[1].cpu(), weight_gradients[0], equal_nan=True, **tolerance)


def test_weight_gradient_through_the_stride_phases_is_taken_where_finite(monkeypatch):
    """A 5x5 weight gradient at stride 2 correlates the target with the phases' columns (CPU's values); where an
    inf or NaN in the source makes it non-finite, the exact windows decide, as for the stride-1 wide grid."""
    from torch_tpu.ops import conv
    taken = []
    columns = conv._phase_columns
    monkeypatch.setattr(conv, "_phase_columns", lambda *args: taken.append(args) or columns(*args))
    x, w, grad = torch.randn(2, 6, 13, 11), torch.randn(6, 3, 5, 5), torch.randn(2, 6, 7, 6)
    settings = ([6], [2, 2], [2, 2], [1, 1], False, [0, 0], 2, [True, True, True])
    results = [[t.cpu() for t in torch.ops.aten.convolution_backward(grad.to(device), x.to(device), w.to(device),
                                                                    *settings)] for device in ("cpu", "tpu")]
    for actual, expected in zip(results[1], results[0]):
        torch.testing.assert_close(actual, expected, **FLOAT32)
    assert len(taken) == 1
