"""grid_sampler_2d/3d (forward, backward) and affine_grid on tpu, differential against torch CPU."""

import itertools

import pytest
import torch
import torch.nn.functional as F

from differential import check_same_error

MODES_2D = ("bilinear", "nearest", "bicubic")
MODES_3D = ("bilinear", "nearest")
PADDINGS = ("zeros", "border", "reflection")


def sample(dims, dtype, seed=0, grid_range=2.5):
    generator = torch.Generator().manual_seed(seed)
    spatial = (5, 6, 7)[:dims]
    x = torch.randn(2, 3, *spatial, generator=generator) * 3
    grid = torch.rand(2, *(4, 3, 5)[:dims], dims, generator=generator) * 2 * grid_range - grid_range
    return x.to(dtype), grid.to(dtype)


def run(x, grid, mode, padding, align_corners, device, grad_output=None):
    x = x.to(device).detach().requires_grad_(grad_output is not None)
    grid = grid.to(device).detach().requires_grad_(grad_output is not None)
    out = F.grid_sample(x, grid, mode=mode, padding_mode=padding, align_corners=align_corners)
    if grad_output is None:
        return out.cpu()
    out.backward(grad_output.to(device))
    return out.cpu(), x.grad.cpu(), grid.grad.cpu()


CASES = [(2, *c) for c in itertools.product(MODES_2D, PADDINGS, (False, True))] + [
    (3, *c) for c in itertools.product(MODES_3D, PADDINGS, (False, True))]


@pytest.mark.parametrize("dims,mode,padding,align_corners", CASES)
def test_forward_and_gradients_float32(dims, mode, padding, align_corners):
    x, grid = sample(dims, torch.float32)
    grad_output = torch.randn(2, 3, *grid.shape[1:-1], generator=torch.Generator().manual_seed(1))
    expected = run(x, grid, mode, padding, align_corners, "cpu", grad_output)
    actual = run(x, grid, mode, padding, align_corners, "tpu", grad_output)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("dims,mode,padding,align_corners", CASES)
def test_bfloat16_forward_matches_cpu_bit_for_bit(dims, mode, padding, align_corners):
    # the CPU rounds every step to bf16 (even nearest picks other pixels than fp32 would)
    x, grid = sample(dims, torch.bfloat16)
    expected = run(x, grid, mode, padding, align_corners, "cpu")
    torch.testing.assert_close(run(x, grid, mode, padding, align_corners, "tpu"), expected, atol=0, rtol=0)


def test_bfloat16_gradients_close_to_cpu():
    x, grid = sample(2, torch.bfloat16)
    grad_output = torch.randn(2, 3, 4, 3, generator=torch.Generator().manual_seed(1)).bfloat16()
    expected = run(x, grid, "bilinear", "border", False, "cpu", grad_output)
    actual = run(x, grid, "bilinear", "border", False, "tpu", grad_output)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, atol=0.1, rtol=0.05)


def test_grad_input_only_when_requested():
    x, grid = sample(2, torch.float32)
    grad_output = torch.ones(2, 3, 4, 3)
    cpu = torch.ops.aten.grid_sampler_2d_backward(grad_output, x, grid, 0, 0, False, [False, True])
    tpu = torch.ops.aten.grid_sampler_2d_backward(grad_output.to("tpu"), x.to("tpu"), grid.to("tpu"), 0, 0, False,
                                                  [False, True])
    assert cpu[0] is None and tpu[0] is None
    torch.testing.assert_close(tpu[1].cpu(), cpu[1])


def test_non_contiguous_inputs_and_grid():
    x = torch.randn(3, 2, 7, 6).transpose(0, 1)  # (2, 3, 7, 6), channels strided
    grid = (torch.rand(2, 5, 4, 2) * 3 - 1.5).transpose(1, 2)  # (2, 4, 5, 2)
    for mode in MODES_2D:
        expected = run(x, grid, mode, "reflection", False, "cpu")
        torch.testing.assert_close(run(x, grid, mode, "reflection", False, "tpu"), expected, atol=2e-5, rtol=1e-5)


def test_grid_points_far_outside_and_on_borders():
    x = torch.randn(1, 2, 4, 4)
    grid = torch.tensor([-1.0, 1.0, 0.0, 1e4, -1e4, 3.0, -3.0, 0.5]).reshape(1, 2, 2, 2)
    grid = torch.stack([grid, grid.flip(-1)], 2).reshape(1, 2, 4, 2)
    for mode, padding, align_corners in itertools.product(MODES_2D, PADDINGS, (False, True)):
        expected = run(x, grid, mode, padding, align_corners, "cpu", torch.ones(1, 2, 2, 4))
        actual = run(x, grid, mode, padding, align_corners, "tpu", torch.ones(1, 2, 2, 4))
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e, atol=1e-4, rtol=1e-5)


def test_single_pixel_input_reflection():
    x, grid = torch.randn(1, 1, 1, 1, 1), torch.rand(1, 2, 2, 2, 3) * 4 - 2
    for align_corners in (False, True):
        expected = run(x, grid, "bilinear", "reflection", align_corners, "cpu", torch.ones(1, 1, 2, 2, 2))
        actual = run(x, grid, "bilinear", "reflection", align_corners, "tpu", torch.ones(1, 1, 2, 2, 2))
        for a, e in zip(actual, expected):
            torch.testing.assert_close(a, e)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (2, 0, 4, 4)])
def test_empty_batch_or_channels(shape):
    x, grid = torch.randn(shape), torch.rand(shape[0], 3, 2, 2)
    out = torch.grid_sampler_2d(x.to("tpu"), grid.to("tpu"), 0, 0, False)
    assert out.shape == torch.grid_sampler_2d(x, grid, 0, 0, False).shape


def test_out_variant():
    x, grid = sample(2, torch.float32)
    out = torch.empty(0, device="tpu")
    torch.ops.aten.grid_sampler_2d.out(x.to("tpu"), grid.to("tpu"), 2, 1, True, out=out)
    torch.testing.assert_close(out.cpu(), torch.grid_sampler_2d(x, grid, 2, 1, True), atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("call", [
    lambda d: torch.grid_sampler_2d(torch.randn(1, 1, 3, 3, device=d), torch.randn(2, 2, 2, 2, device=d), 0, 0, False),
    lambda d: torch.grid_sampler_2d(torch.randn(1, 1, 3, 3, device=d), torch.randn(1, 2, 2, 3, device=d), 0, 0, False),
    lambda d: torch.grid_sampler_2d(torch.randn(1, 1, 0, 3, device=d), torch.randn(1, 2, 2, 2, device=d), 0, 0, False),
    lambda d: torch.grid_sampler_3d(torch.randn(1, 1, 3, 3, 3, device=d), torch.randn(1, 2, 2, 2, 3, device=d), 2, 0,
                                    False),
])
def test_errors_match_cpu(call):
    with pytest.raises(RuntimeError) as cpu_error:
        call("cpu")
    with pytest.raises(RuntimeError, match=str(cpu_error.value)[:40].replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        call("tpu")


@pytest.mark.parametrize("size", [(2, 3, 5, 4), (2, 3, 3, 5, 4)])
@pytest.mark.parametrize("align_corners", [False, True])
def test_affine_grid_and_gradient(size, align_corners):
    n = len(size) - 2
    theta = torch.randn(2, n, n + 1, generator=torch.Generator().manual_seed(3))
    results = []
    for device in ("cpu", "tpu"):
        t = theta.to(device).detach().requires_grad_()
        grid = F.affine_grid(t, size, align_corners=align_corners)
        grid.backward(torch.ones_like(grid))
        results.append((grid.cpu(), t.grad.cpu()))
    for a, e in zip(*results):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("dims", [2, 3])
def test_empty_backward(dims):
    x = torch.randn(2, 0, *[3] * dims)
    grid = torch.rand(2, *[2] * dims, dims)
    grad_output = torch.ones(2, 0, *[2] * dims)
    expected = run(x, grid, "bilinear", "zeros", False, "cpu", grad_output)
    actual = run(x, grid, "bilinear", "zeros", False, "tpu", grad_output)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("shapes", [
    ((5, 5, 5, 5, 5), (1, 1, 1, 4, 4), 2), ((5, 5, 5, 5), (1, 1, 4, 4), 3), ((1, 5, 5, 5, 5), (1, 1, 1, 4, 2), 2),
    ((1, 5, 5, 5), (1, 1, 1, 4, 2), 2), ((1, 5, 0, 5), (1, 1, 4, 2), 2), ((1, 5, 5), (1, 4, 1), 2),
], ids=str)
def test_grid_sampler_checks_its_arguments_in_cpus_order(shapes):
    """The checks common to 2-d and 3-d sampling (batch, grid's last dim against the input's rank, empty
    spatial dims) come before each one's rank check."""
    input_shape, grid_shape, spatial = shapes
    sampler = getattr(torch, f"grid_sampler_{spatial}d")
    check_same_error(lambda d: sampler(torch.ones(input_shape, device=d), torch.zeros(grid_shape, device=d), 0, 0, True))


@pytest.mark.parametrize("mode", ["nearest", "nearest-exact", "bilinear", "bicubic", "trilinear", "antialias",
                                  "nearest_3d"])
def test_upsampling_keeps_a_channels_last_input_channels_last_forward_and_backward(mode):
    """CPU allocates the output in the input's suggested memory format and grad_input in grad_output's, but
    for the bicubic and 3-d nearest backward kernels, which allocate it contiguously."""
    three_d = mode in ("trilinear", "nearest_3d")
    mode = mode.removesuffix("_3d")
    x = torch.randn(2, 3, 4, 5, 6) if three_d else torch.randn(2, 3, 4, 5)
    x = x.to(memory_format=torch.channels_last_3d if three_d else torch.channels_last).requires_grad_()
    options = dict(mode="bilinear", antialias=True) if mode == "antialias" else dict(mode=mode)

    def run(tensor):
        leaf = tensor.detach().requires_grad_()
        out = F.interpolate(leaf, scale_factor=2, **options)
        grad_input, = torch.autograd.grad(out, leaf, torch.ones_like(out))
        return out, grad_input

    expected, actual = run(x), run(x.to("tpu"))
    for got, want in zip(actual, expected):
        assert got.stride() == want.stride()
        torch.testing.assert_close(got.cpu(), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int32, torch.int64, torch.bool, torch.complex64])
@pytest.mark.parametrize("mode,spatial", [("nearest", 1), ("nearest", 2), ("nearest", 3), ("nearest-exact", 2),
                                          ("nearest-exact", 3), ("linear", 1), ("bilinear", 2), ("bicubic", 2),
                                          ("trilinear", 3)])
def test_upsampling_takes_the_dtypes_cpu_takes(mode, spatial, dtype):
    """CPU's nearest kernels dispatch floating types and uint8 only: an integer, bool or complex tensor is refused
    with the name of its kernel, where tpu used to copy its values; uint8 is resized as on CPU (plain bicubic
    within 1, see sampling.UINT8_FILTERS)."""
    def call(device):
        x = torch.arange(2 * 3 * 4 ** spatial, device=device).reshape(2, 3, *[4] * spatial) % 7
        return F.interpolate(x.to(dtype), size=[3] * spatial, mode=mode)

    if dtype == torch.uint8 and mode not in ("linear", "trilinear"):
        torch.testing.assert_close(call("tpu").cpu(), call("cpu"), atol=1, rtol=0)
    else:
        check_same_error(call)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_antialiased_resizing_refuses_16_bit_floats_as_cpu_does(mode, dtype):
    """CPU's antialiasing kernels, forward and backward, have loops for float and double only."""
    check_same_error(lambda d: F.interpolate(torch.ones(1, 2, 5, 6, dtype=dtype, device=d), size=(3, 3), mode=mode,
                                             antialias=True))
    backward = getattr(torch.ops.aten, f"_upsample_{mode}2d_aa_backward")
    check_same_error(lambda d: backward(torch.ones(1, 2, 3, 3, dtype=dtype, device=d), [3, 3], [1, 2, 5, 6], False))
