"""Fake quantization on tpu (quantization-aware training), bit for bit against the CPU: the per-tensor and
per-channel kernels, the fused moving-average observer of QAT's default qconfigs, a QAT training step, and
the clear refusal of real quantized tensors."""

import warnings

import pytest
import torch
import torch.nn.functional as F

from differential import assert_identical, check, check_same_error, noncontiguous

aten = torch.ops.aten
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def awkward(*shape, dtype):
    """Normal values spread over several grid widths, with infinities and a NaN (the clamp's corner cases)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3)) * 4
    x.view(-1)[:4] = torch.tensor([float("inf"), -float("inf"), float("nan"), 1e30])
    return x.to(dtype)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("scale, zero_point, quant_min, quant_max", [(0.1, 3, -128, 127), (0.037, 200, 0, 255),
                                                                      (1e-3, 0, -8, 7)])
def test_per_tensor_values_and_mask_equal_the_cpus(dtype, scale, zero_point, quant_min, quant_max):
    x = awkward(4, 5, 3, dtype=dtype)
    check(lambda x: aten.fake_quantize_per_tensor_affine_cachemask(x, scale, zero_point, quant_min, quant_max), x,
          atol=0, rtol=0)
    qparams = (torch.tensor([scale]), torch.tensor([zero_point], dtype=torch.int32))
    for enabled in (0, 1):
        check(lambda x, s, z, e: aten._fake_quantize_per_tensor_affine_cachemask_tensor_qparams(x, s, z, e, quant_min,
                                                                                                  quant_max),
              x, *qparams, torch.tensor([enabled]), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("zero_point_dtype", [torch.int32, torch.float32, torch.float16])
@pytest.mark.parametrize("axis", [0, 2])
def test_per_channel_values_and_mask_equal_the_cpus(dtype, zero_point_dtype, axis):
    x = awkward(4, 5, 3, dtype=dtype)
    channels = x.shape[axis]
    scale = torch.rand(channels, generator=torch.Generator().manual_seed(1)) * 0.2 + 0.01
    zero_point = (torch.randn(channels, generator=torch.Generator().manual_seed(2)) * 4).to(zero_point_dtype)
    check(lambda x, s, z: aten.fake_quantize_per_channel_affine_cachemask(x, s, z, axis, -128, 127), x, scale,
          zero_point, atol=0, rtol=0)


def test_a_strided_input_and_the_gradient_through_the_mask():
    x = noncontiguous(6, 4).mul(3).requires_grad_()
    twin = x.detach().to("tpu").requires_grad_()
    expected = torch.fake_quantize_per_tensor_affine(x, 0.05, 10, 0, 63)
    got = torch.fake_quantize_per_tensor_affine(twin, 0.05, 10, 0, 63)
    weights = torch.randn(6, 4)
    (expected * weights).sum().backward()
    (got * weights.to("tpu")).sum().backward()
    assert_identical(got, expected)
    assert_identical(twin.grad, x.grad)


@pytest.mark.parametrize("call", [
    lambda d: torch.fake_quantize_per_tensor_affine(torch.ones(3, device=d), 0.1, 0, 5, 2),
    lambda d: torch.fake_quantize_per_tensor_affine(torch.ones(3, device=d), 0.1, 300, 0, 255),
    lambda d: torch.fake_quantize_per_tensor_affine(torch.ones(3, dtype=torch.int32, device=d), 0.1, 0, 0, 255),
    lambda d: torch.fake_quantize_per_channel_affine(torch.ones(2, 3, device=d), torch.ones(2, device=d),
                                                     torch.zeros(2, dtype=torch.int64, device=d), 0, 0, 255),
    lambda d: torch.fake_quantize_per_channel_affine(torch.ones(2, 3, device=d), torch.ones(3, device=d),
                                                     torch.zeros(3, dtype=torch.int32, device=d), 0, 0, 255),
], ids=["range", "zero_point", "integer_input", "long_zero_point", "channels"])
def test_bad_arguments_give_the_cpus_error(call):
    check_same_error(call)


def fused_state(device, per_row):
    if per_row:  # the observer sizes its state on the first call
        return [torch.empty(0, device=device), torch.empty(0, device=device), torch.empty(0, device=device),
                torch.empty(0, dtype=torch.int32, device=device)]
    return [torch.tensor([float("inf")], device=device), torch.tensor([-float("inf")], device=device),
            torch.tensor([1.0], device=device), torch.tensor([0], dtype=torch.int32, device=device)]


@pytest.mark.parametrize("per_row", [False, True], ids=["per_tensor", "per_row"])
@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
@pytest.mark.parametrize("magnitude", [1e-6, 1.0, 300.0])
def test_fused_observer_and_fake_quant_follow_the_cpu_step_by_step(per_row, symmetric, magnitude):
    """Running min/max, the chosen scale and zero point (small scales raised, zero nudged onto the grid) and
    the fake-quantized values, over steps with the observer and the fake quantization switched on in turn."""
    states = {device: fused_state(device, per_row) for device in ("cpu", "tpu")}
    generator = torch.Generator().manual_seed(5)
    for step, (observing, quantizing) in enumerate([(1, 0), (1, 1), (0, 1), (1, 1)]):
        x = torch.randn(3, 5, 2, generator=generator) * magnitude + magnitude / 3
        results = {device: torch.ops.aten._fused_moving_avg_obs_fq_helper(
            x.to(device), torch.tensor([observing], device=device), torch.tensor([quantizing], device=device),
            *states[device], 0.01, 0, 255 if symmetric else 15, 0, per_row, symmetric) for device in states}
        for got, expected in zip(results["tpu"], results["cpu"]):
            assert_identical(got, expected)
        compared = states["cpu"] if step else states["cpu"][:2]  # scale and zero point are set once quantizing
        for got, expected in zip(states["tpu"], compared):
            assert_identical(got, expected)


@pytest.mark.parametrize("symmetric", [False, True], ids=["affine", "symmetric"])
def test_per_row_parameters_of_many_kinds_of_channel_equal_the_cpus(symmetric):
    """One channel of each kind the CPU's parameter choice branches on, chosen for all channels at once:
    zero, tiny (scale raised), one-signed either way, straddling zero, huge, and ordinary ones."""
    generator = torch.Generator().manual_seed(7)
    rows = [torch.zeros(6), torch.full((6,), 1e-7), -torch.rand(6, generator=generator) * 1e-6,
            torch.rand(6, generator=generator) * 1e-6, -torch.rand(6, generator=generator) - 1,
            torch.rand(6, generator=generator) + 1, torch.randn(6, generator=generator) * 1e-5,
            torch.randn(6, generator=generator) * 1e20]
    x = torch.cat([torch.stack(rows), torch.randn(56, 6, generator=generator) * 10 ** torch.randint(-6, 4, (56, 1), generator=generator)])
    states = {device: fused_state(device, True) for device in ("cpu", "tpu")}
    results = {device: torch.ops.aten._fused_moving_avg_obs_fq_helper(
        x.to(device), torch.tensor([1], device=device), torch.tensor([1], device=device), *states[device], 0.01,
        -128 if symmetric else 0, 127 if symmetric else 255, 0, True, symmetric) for device in states}
    for got, expected in zip([*results["tpu"], *states["tpu"]], [*results["cpu"], *states["cpu"]]):
        assert_identical(got, expected)


def qat_model():
    from torch.ao import quantization

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant, self.dequant = quantization.QuantStub(), quantization.DeQuantStub()
            self.conv, self.fc = torch.nn.Conv2d(2, 4, 3), torch.nn.Linear(4 * 4 * 4, 3)

        def forward(self, x):
            x = F.relu(self.conv(self.quant(x)))
            return self.dequant(self.fc(x.flatten(1)))

    return Net(), quantization


@pytest.mark.parametrize("backend", ["x86", "qnnpack"])
def test_quantization_aware_training_steps_match_the_cpu(backend):
    """prepare_qat's fake-quantize modules (the fused observer for x86, FakeQuantize with a moving-average
    observer for qnnpack) train on tpu as on the CPU."""
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notice
        model, quantization = qat_model()
        model.qconfig = quantization.get_default_qat_qconfig(backend)
        quantization.prepare_qat(model.train(), inplace=True)
    generator = torch.Generator().manual_seed(1)
    batches = [(torch.randn(4, 2, 6, 6, generator=generator), torch.randint(0, 3, (4,), generator=generator))
               for _ in range(3)]
    runs = {}
    for device in ("cpu", "tpu"):
        twin = qat_model()[0]
        twin.qconfig = model.qconfig
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantization.prepare_qat(twin.train(), inplace=True)
        twin.load_state_dict(model.state_dict())
        twin.to(device)
        optimizer = torch.optim.SGD(twin.parameters(), lr=0.1)
        losses = []
        for x, y in batches:
            optimizer.zero_grad()
            loss = F.cross_entropy(twin(x.to(device)), y.to(device))
            loss.backward()
            optimizer.step()
            losses.append(loss.detach())
        runs[device] = (torch.stack(losses), twin.state_dict())
    torch.testing.assert_close(runs["tpu"][0].cpu(), runs["cpu"][0], rtol=1e-6, atol=1e-6)  # a conv's sum order
    for name, expected in runs["cpu"][1].items():
        torch.testing.assert_close(runs["tpu"][1][name].cpu(), expected, rtol=1e-6, atol=1e-7, msg=name)


def test_converting_to_real_quantized_tensors_is_refused_clearly():
    """convert() makes quantized weights, which tpu does not hold: the error says so and what to use instead."""
    with pytest.raises(NotImplementedError, match="quantized tensors .* not supported on tpu.*quantize on the CPU"):
        torch.quantize_per_channel(torch.randn(3, 2, device="tpu"), torch.ones(3, device="tpu"),
                                   torch.zeros(3, dtype=torch.int64, device="tpu"), 0, torch.qint8)
