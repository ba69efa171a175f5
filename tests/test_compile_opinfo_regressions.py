"""Compiled equals eager where the OpInfo sweep (tests/test_compile_opinfo.py) found they differed.

Each case is a small graph compiled with ``backend="tpu"`` and compared with the same call on the tpu
eager kernels, bit for bit.
"""

import math

import pytest
import torch

import torch_tpu


def _compiled(function):
    return torch.compile(function, backend="tpu", fullgraph=True, dynamic=False)


def _tpu(*shape, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator).to("tpu")


def _identical(actual, expected):
    assert (actual.dtype, actual.shape, actual.stride()) == (expected.dtype, expected.shape, expected.stride())
    assert torch.equal(actual.cpu(), expected.cpu())


def test_in_place_op_returns_its_mutated_input():
    """A graph returning the input its ``copy_`` wrote: the program deleted that input before returning it."""
    eager, compiled = _tpu(3, 4), _tpu(3, 4)
    result = _compiled(lambda x: x.exp_())(compiled)
    _identical(compiled, eager.exp_())
    assert result is compiled


def test_out_variant_writes_and_returns_out():
    x, y = _tpu(5), _tpu(5, seed=1)
    eager_out, compiled_out = torch.empty(5, device="tpu"), torch.empty(5, device="tpu")
    result = _compiled(lambda a, b, out: torch.add(a, b, alpha=2, out=out))(x, y, compiled_out)
    _identical(compiled_out, torch.add(x, y, alpha=2, out=eager_out))
    assert result is compiled_out


def test_matrix_vector_products_run_on_the_mxu_as_eager_does():
    """mv and dot stay MXU products (core ATen decomposes them into a multiply and a sum, another order)."""
    matrix, vector = _tpu(64, 300), _tpu(300, seed=1)
    _identical(_compiled(torch.mv)(matrix, vector), torch.mv(matrix, vector))
    _identical(_compiled(torch.dot)(vector, vector), torch.dot(vector, vector))
    assert [name for name, _, _ in torch_tpu.compile.last_programs()[-1].kernels] == ["dot"]


def test_new_outputs_take_the_layout_eager_gives_them():
    """A channels_last copy as a graph output: eager's strides, not contiguous ones."""
    x = _tpu(2, 3, 4, 5)
    to_channels_last = lambda t: t.to(torch.float64, memory_format=torch.channels_last)  # noqa: E731
    _identical(_compiled(to_channels_last)(x), to_channels_last(x))


def test_lazy_conjugate_of_an_eager_node_is_read_conjugated():
    """hfft2's graph conjugates (``_conj``, a conj-bit view) the result of an eager FFT node and clones it; the
    clone's NumPy view read the storage without the bit, so the program lost the conjugation."""
    x = (_tpu(5, 6) + 1j * _tpu(5, 6, seed=1)).to(torch.complex64)
    _identical(_compiled(torch.fft.hfft2)(x), torch.fft.hfft2(x))


def test_vector_times_batch_runs_the_bmm_eager_runs():
    """torch's Python matmul (run while tracing whatever the decomposition table) folds a vector @ batch into an
    mv where ATen's C++ composite, which eager runs, makes a bmm: the sums differed in order."""
    vector, batch = _tpu(37), _tpu(5, 37, 29, seed=1)
    _identical(_compiled(torch.matmul)(vector, batch), torch.matmul(vector, batch))
    assert [name for name, _, _ in torch_tpu.compile.last_programs()[-1].kernels] == ["bmm"]


def test_layer_norm_statistics_take_eager_dtype():
    """A bfloat16 layer norm's mean and rstd are bfloat16 in eager (CPU's rule); the meta function says float32."""
    x, weight = _tpu(4, 8).bfloat16(), _tpu(8, seed=1).bfloat16()
    layer_norm = lambda x, w: torch.native_layer_norm(x, [8], w, None, 1e-5)  # noqa: E731
    for actual, expected in zip(_compiled(layer_norm)(x, weight), layer_norm(x, weight)):
        _identical(actual, expected)


def test_cross_product_rounds_as_eager_in_bfloat16():
    """linalg_cross's decomposition computes a bf16 cross product in float32 and rounds once; eager (CPU's kernel)
    rounds each product. Kept whole, it runs eager's kernel."""
    a, b = _tpu(50, 3).bfloat16(), _tpu(50, 3, seed=1).bfloat16()
    _identical(_compiled(torch.linalg.cross)(a, b), torch.linalg.cross(a, b))


def test_log_ndtr_and_its_gradient_for_large_negative_inputs():
    """special_log_ndtr's decomposition is another formula than eager's: 1e-5 relative in the gradient at x = -15."""
    x = (_tpu(20) * 10).requires_grad_()
    cotangent = _tpu(20, seed=1)
    compiled, eager = _compiled(torch.special.log_ndtr)(x), torch.special.log_ndtr(x)
    _identical(compiled.detach(), eager.detach())
    _identical(torch.autograd.grad(compiled, x, cotangent)[0], torch.autograd.grad(eager, x, cotangent)[0])


def test_views_of_layer_norm_statistics_keep_eager_dtype():
    """The statistics' homes take eager's bf16 while the views after them were traced as float32: a view output
    built from the traced layout read past its bf16 buffer."""
    x = _tpu(4, 6, 8).bfloat16()
    for view in (lambda mean: mean.view(-1), lambda mean: mean.squeeze(-1).t()):
        function = lambda x: view(torch.ops.aten.native_layer_norm(x, [8], None, None, 1e-5)[1])  # noqa: E731
        _identical(_compiled(function)(x), function(x))


@pytest.mark.parametrize("consumer", ["scale", "add_input", "sum", "view_scale"])
def test_ops_reading_layer_norm_statistics_compute_in_eager_dtype(consumer):
    """Ops after a bf16 layer norm's retyped mean or rstd were traced (and lowered) in the meta function's
    float32: `mean * 2` returned float32, `rstd + x` rounded once where eager rounds in bf16. The values after
    the retyped results are traced again from them."""
    consumers = {"scale": lambda stats, x: stats[1] * 2, "add_input": lambda stats, x: stats[2] + x,
                 "sum": lambda stats, x: stats[1].sum(), "view_scale": lambda stats, x: stats[2].view(-1) * 3}
    x = _tpu(4, 6, 8).bfloat16()
    function = lambda x: consumers[consumer](torch.ops.aten.native_layer_norm(x, [8], None, None, 1e-5), x)  # noqa: E731
    _identical(_compiled(function)(x), function(x))


def test_dropout_cpu_refuses_raises_its_error_compiled():
    """A keep probability outside [0, 1]: the lowering leaves the node to the eager kernel, which raises CPU's error."""
    x = _tpu(3)
    try:
        _compiled(lambda x: torch.ops.aten.native_dropout(x, 1.5, True)[0])(x)
    except RuntimeError as error:
        assert "bernoulli_ expects p to be in [0, 1], but got p=-0.5" in str(error)
    else:
        raise AssertionError("compiled dropout with p=1.5 ran")


def test_layer_norm_with_parameter_dtypes_cpu_refuses_raises_its_error_compiled():
    """A float32 input with a bf16 weight: the lowering leaves the node to the eager kernel, which raises CPU's
    error (the traced meta function accepts the mix)."""
    x = _tpu(3, 4)
    weight, bias = torch.ones(4, dtype=torch.bfloat16, device="tpu"), torch.zeros(4, device="tpu")
    try:
        _compiled(lambda x, w, b: torch.nn.functional.layer_norm(x, [4], w, b))(x, weight, bias)
    except RuntimeError as error:
        assert "mixed dtype (CPU): expect parameter to have scalar type of Float" in str(error)
    else:
        raise AssertionError("compiled layer norm of a float32 input with a bf16 weight ran")


def test_complex_add_and_sub_multiply_by_alpha_one_as_cpu_does():
    """CPU computes ``a + alpha * b`` with the complex multiplication even for alpha 1, so an infinite part of
    ``b`` gives NaN; the compiled program had shortened alpha-1 add/sub to NumPy's plain add (inf+infj where CPU
    gives nan+nanj)."""
    special = [complex(re, im) for re in (math.nan, math.inf, -math.inf, 1.0) for im in (math.nan, math.inf, 0.0)]
    for dtype in (torch.complex64, torch.complex128):
        values = torch.tensor(special, dtype=dtype)
        a, b = values[:, None].repeat(1, len(special)), values[None].repeat(len(special), 1)
        graph = lambda x, y: (x + y, x - y, torch.sub(x, y, alpha=2), (x + y) * 2)  # noqa: E731
        for actual, expected in zip(_compiled(graph)(a.to("tpu"), b.to("tpu")), graph(a, b)):
            torch.testing.assert_close(actual.cpu(), expected, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("call", [
    lambda a, b: torch.sub(a, b, alpha=1.0),  # integers with a floating alpha
    lambda a, b: torch.add(a.float(), b.float(), alpha=True),  # a bool alpha for floats
    lambda a, b: a - (b > 2),  # a bool subtracted
], ids=["int_float_alpha", "float_bool_alpha", "bool_subtraction"])
def test_compiled_pointwise_raises_the_errors_cpu_and_eager_raise(call):
    """Dynamo's fake tensors take what CPU refuses: the lowering asks the eager kernel's checks, and a refused node
    runs that kernel, which raises CPU's error (the program had computed numbers)."""
    a, b = torch.tensor([1, 2, 3, 4]), torch.tensor([4, 3, 2, 1])
    with pytest.raises(RuntimeError) as expected:
        call(a, b)
    with pytest.raises(RuntimeError) as actual:
        _compiled(call)(a.to("tpu"), b.to("tpu"))
    assert str(actual.value) == str(expected.value)


def test_compiled_hardshrink_of_integers_raises_cpus_error():
    """torch._refs decomposes hardshrink on the Autograd key, so the traced graph held the reference's where/abs,
    which took integers that CPU (and eager) refuse."""
    x = torch.tensor([-1, 0, 1, 3])
    with pytest.raises(NotImplementedError) as expected:
        torch.nn.functional.hardshrink(x, 0.5)
    with pytest.raises(NotImplementedError) as actual:
        _compiled(lambda t: torch.nn.functional.hardshrink(t, 0.5))(x.to("tpu"))
    assert str(actual.value) == str(expected.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("requires_grad", [False, True], ids=["inference", "training"])
def test_compiled_softshrink_gives_cpus_signed_zeros(dtype, requires_grad):
    """softshrink's zeros are -0.0 for negative inputs in CPU's scalar tail (the last elements of a row); the traced
    reference gave +0.0 everywhere. Compiled now equals eager and CPU bit for bit, and so does its gradient."""
    values = torch.tensor([-0.3, 0.2, -0.0, 0.0, 0.7, -0.9, float("nan")] * 5, dtype=dtype)
    x = values.to("tpu").requires_grad_(requires_grad)
    compiled = _compiled(lambda t: torch.nn.functional.softshrink(t, 0.5))(x)
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    expected = torch.nn.functional.softshrink(values, 0.5).view(bits)
    assert torch.equal(compiled.detach().cpu().view(bits), expected)
    assert torch.equal(torch.nn.functional.softshrink(x, 0.5).detach().cpu().view(bits), expected)
    if requires_grad:
        compiled.sum().backward()
        assert torch.equal(x.grad.cpu(), (values.abs() > 0.5).to(dtype))
