"""FFT primitives (_fft_r2c/_fft_c2r/_fft_c2c) through every torch.fft op, stft/istft and autograd, against CPU."""

import pytest
import torch

NORMS = [None, "forward", "ortho"]


def tpu_and_cpu(fn, *inputs):
    return fn(*(x.to("tpu") for x in inputs)), fn(*inputs)


def assert_matches(fn, *inputs, **tolerance):
    actual, expected = tpu_and_cpu(fn, *inputs)
    assert actual.device.type == "tpu"
    torch.testing.assert_close(actual.cpu(), expected, **tolerance)


REAL_INPUT = ["fft", "ifft", "rfft", "ihfft", "fft2", "ifft2", "rfft2", "ihfft2", "fftn", "ifftn", "rfftn", "ihfftn"]
COMPLEX_INPUT = ["fft", "ifft", "irfft", "hfft", "fft2", "ifft2", "irfft2", "hfft2", "fftn", "ifftn", "irfftn",
                 "hfftn"]


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", REAL_INPUT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_real_input(name, norm, dtype):
    x = torch.randn(4, 6, 5, dtype=dtype)
    assert_matches(lambda t: getattr(torch.fft, name)(t, norm=norm), x)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", COMPLEX_INPUT)
def test_complex_input(name, norm):
    x = torch.randn(4, 6, 5, dtype=torch.complex64)
    assert_matches(lambda t: getattr(torch.fft, name)(t, norm=norm), x)


def test_sizes_dims_and_views():
    x = torch.randn(6, 8, 5)
    assert_matches(lambda t: torch.fft.rfft(t.transpose(0, 2), n=7, dim=1), x)  # non-contiguous, cropped
    assert_matches(lambda t: torch.fft.irfft(torch.fft.rfft(t, dim=0), n=9, dim=0), x)  # odd last_dim_size
    assert_matches(lambda t: torch.fft.fftn(t, s=(4, 10), dim=(2, 0)), x)  # padded, unsorted dims
    assert_matches(lambda t: torch.fft.hfftn(t.to(torch.complex128), s=(3, 4)), x)
    assert_matches(lambda t: torch.fft.ifft(t[:, ::2]), x.to(torch.complex64))
    assert_matches(lambda t: torch.fft.fftshift(torch.fft.fft2(t)), x)
    assert_matches(lambda t: torch.fft.fft(t), torch.arange(8))  # int promotes to complex64


def test_out_and_empty_dim_list():
    x = torch.randn(3, 4, dtype=torch.complex64)
    out = torch.empty(0, dtype=torch.complex64, device="tpu")
    torch.ops.aten._fft_c2c.out(x.to("tpu"), [1], 2, True, out=out)
    torch.testing.assert_close(out.cpu(), torch.ops.aten._fft_c2c(x, [1], 2, True))
    assert_matches(lambda t: torch.ops.aten._fft_c2c(t, [], 0, False), x)
    out = torch.empty(0, device="tpu")
    torch.ops.aten._fft_c2r.out(x.to("tpu"), [0, 1], 1, 6, out=out)
    torch.testing.assert_close(out.cpu(), torch.ops.aten._fft_c2r(x, [0, 1], 1, 6))
    assert_matches(lambda t: torch.ops.aten._fft_r2c(t, [0, 1], 2, False), x.real.contiguous())


def test_errors_match_cpu():
    for dtype in (torch.bfloat16, torch.float16):
        with pytest.raises(RuntimeError, match="Unsupported dtype"):
            torch.fft.fft(torch.randn(4, device="tpu").to(dtype))
    with pytest.raises(RuntimeError):
        torch.ops.aten._fft_c2c(torch.randn(4, device="tpu"), [0], 0, True)


@pytest.mark.parametrize("name", ["fft", "rfft", "ihfft", "irfft", "hfft", "fftn", "rfftn", "irfftn"])
def test_gradients(name):
    x = torch.randn(5, 6, dtype=torch.float64)
    if name in ("irfft", "hfft", "irfftn"):
        x = torch.randn(5, 6, dtype=torch.complex128)

    def grad(device):
        leaf = x.to(device).requires_grad_()
        result = getattr(torch.fft, name)(leaf, norm="ortho").resolve_conj()
        weights = torch.linspace(-1, 1, result.numel(), dtype=torch.float64).reshape(result.shape).to(device)
        (torch.view_as_real(result) if result.is_complex() else result).mul(
            weights[..., None] if result.is_complex() else weights).sum().backward()
        return leaf.grad

    torch.testing.assert_close(grad("tpu").cpu(), grad("cpu"))


def test_stft_istft_roundtrip():
    signal = torch.randn(2, 200)
    window = torch.hann_window(32)
    assert_matches(lambda s, w: torch.stft(s, 32, 8, window=w, return_complex=True), signal, window)
    spectrum = torch.stft(signal, 32, 8, window=window, return_complex=True)
    assert_matches(lambda z, w: torch.istft(z, 32, 8, window=w, length=200), spectrum, window)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_kaiser_window_on_tpu_as_on_cpu(dtype):
    """ATen computes the window in a kernel only CPU and CUDA have ("DispatchStub: missing kernel for tpu")."""
    for length in (0, 1, 2, 7, 400):
        for periodic in (True, False):
            for beta in (0.0, 5.0, 12.0):
                window = torch.kaiser_window(length, periodic, beta, dtype=dtype, device="tpu")
                assert window.device.type == "tpu" and window.dtype == dtype
                torch.testing.assert_close(window.cpu(), torch.kaiser_window(length, periodic, beta, dtype=dtype))
    torch.testing.assert_close(torch.kaiser_window(9, device="tpu").cpu(), torch.kaiser_window(9))  # the short overloads
    torch.testing.assert_close(torch.kaiser_window(9, False, device="tpu").cpu(), torch.kaiser_window(9, False))


def test_a_kaiser_window_asked_for_as_jagged_is_strided_as_on_cpu():
    """CPU's kernel allocates a jagged-layout window as a strided tensor (tpu's hit the missing stub's assert)."""
    expected = torch.kaiser_window(9, layout=torch.jagged)
    window = torch.kaiser_window(9, layout=torch.jagged, device="tpu")
    assert window.layout == expected.layout == torch.strided
    torch.testing.assert_close(window.cpu(), expected)


@pytest.mark.parametrize("arguments", [dict(window_length=-1), dict(window_length=5, dtype=torch.int64),
                                       dict(window_length=5, layout=torch.sparse_coo),
                                       dict(window_length=5, dtype=torch.complex64)])
def test_kaiser_window_refuses_what_cpu_refuses(arguments):
    with pytest.raises(Exception) as cpu:
        torch.kaiser_window(**arguments)
    with pytest.raises(type(cpu.value)) as tpu:
        torch.kaiser_window(**arguments, device="tpu")
    assert str(tpu.value) == str(cpu.value).replace("device=cpu", "device=tpu")
