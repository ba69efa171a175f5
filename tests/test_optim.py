"""Fused optimizer steps (Adam/AdamW/SGD/Adagrad with fused=True) on tpu, differential against torch CPU."""

import pytest
import torch

SHAPES = [(5, 4), (7,), (3, 2, 2), (40,)]  # 40 elements: full CPU vector chunks plus a tail
STEPS = 4


def run(optimizer_class, device, dtype, *, fused=True, **options):
    """Parameters after STEPS steps with fixed random gradients, then every optimizer state tensor."""
    torch.manual_seed(0)
    params = [torch.randn(shape, dtype=dtype).to(device).requires_grad_() for shape in SHAPES]
    optimizer = optimizer_class(params, fused=fused, **options)
    for _ in range(STEPS):
        for param in params:
            param.grad = torch.randn(param.shape, dtype=dtype).to(device)
        optimizer.step()
    states = [value.cpu() for state in optimizer.state.values() for value in state.values()
              if isinstance(value, torch.Tensor)]
    return [param.detach().cpu() for param in params] + states


CASES = [
    (torch.optim.Adam, dict(lr=0.01)),
    (torch.optim.Adam, dict(lr=0.01, weight_decay=0.1, betas=(0.3, 0.8))),  # lerp weight > 0.5
    (torch.optim.Adam, dict(lr=0.01, amsgrad=True, maximize=True)),
    (torch.optim.Adam, dict(lr=torch.tensor(0.01))),  # the tensor_lr overload
    (torch.optim.AdamW, dict(lr=0.01)),
    (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.5, amsgrad=True)),
    (torch.optim.AdamW, dict(lr=torch.tensor(0.02), maximize=True)),
    (torch.optim.SGD, dict(lr=0.1)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)),
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, dampening=0.1, maximize=True)),
    (torch.optim.SGD, dict(lr=torch.tensor(0.1), momentum=0.5)),
    (torch.optim.Adagrad, dict(lr=0.1)),
    (torch.optim.Adagrad, dict(lr=0.1, lr_decay=0.01, weight_decay=0.1, maximize=True)),
    (torch.optim.Adagrad, dict(lr=torch.tensor(0.05), initial_accumulator_value=0.5)),
]


def _case_id(case):
    optimizer_class, options = case
    return optimizer_class.__name__ + "-" + "-".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_fused_steps_match_cpu_fused_and_unfused(case, dtype):
    optimizer_class, options = case
    actual = run(optimizer_class, "tpu", dtype, **options)
    torch.testing.assert_close(actual, run(optimizer_class, "cpu", dtype, **options))
    torch.testing.assert_close(actual, run(optimizer_class, "cpu", dtype, fused=False, **options))


@pytest.mark.parametrize("case", [c for c in CASES if c[0] in (torch.optim.Adam, torch.optim.AdamW)], ids=_case_id)
def test_fused_adam_bfloat16_is_bitwise_cpu_fused(case):
    """float32 opmath, each state rounded once on store: exactly CPU's fused kernel."""
    optimizer_class, options = case
    torch.testing.assert_close(run(optimizer_class, "tpu", torch.bfloat16, **options),
                               run(optimizer_class, "cpu", torch.bfloat16, **options), atol=0, rtol=0)


@pytest.mark.parametrize("options", [c[1] for c in CASES if c[0] is torch.optim.SGD], ids=str)
def test_fused_sgd_bfloat16_matches_unfused(options):
    """CPU's fused bf16 SGD skips the parameter store in its vectorized loop (a PyTorch bug), so the
    reference is the unfused step, which the fused formulas equal up to one bf16 rounding."""
    actual = run(torch.optim.SGD, "tpu", torch.bfloat16, **options)
    torch.testing.assert_close(actual, run(torch.optim.SGD, "cpu", torch.bfloat16, fused=False, **options),
                               atol=1e-2, rtol=1.6e-2)


@pytest.mark.parametrize("options", [c[1] for c in CASES if c[0] is torch.optim.Adagrad], ids=str)
def test_fused_adagrad_bfloat16_matches_cpu_to_a_rounding(options):
    """CPU's vectorised bf16 Adagrad rounds lr, eps and weight_decay to bf16 while its scalar tail keeps
    them in float32; the tpu keeps float32 throughout, so the two agree to one bf16 rounding."""
    actual = run(torch.optim.Adagrad, "tpu", torch.bfloat16, **options)
    torch.testing.assert_close(actual, run(torch.optim.Adagrad, "cpu", torch.bfloat16, **options),
                               atol=1e-2, rtol=1.6e-2)


def _fused_call(op, device, grad_scale, found_inf, **hyper):
    torch.manual_seed(1)
    tensors = [[torch.randn(6).to(device) for _ in range(2)] for _ in range(5)]
    steps = [torch.tensor(3.0).to(device) for _ in range(2)]
    scale = None if grad_scale is None else torch.tensor(grad_scale).to(device)
    inf = None if found_inf is None else torch.tensor(found_inf).to(device)
    if op is torch._fused_sgd_:
        params, grads, buffers = tensors[:3]
        op(params, grads, buffers, grad_scale=scale, found_inf=inf, **hyper)
        return [t.cpu() for t in params + grads + buffers]
    tensors[3] = [t.abs() for t in tensors[3]]  # exp_avg_sq
    tensors[4] = [t.abs() for t in tensors[4]]  # max_exp_avg_sq
    op(*tensors, steps, grad_scale=scale, found_inf=inf, **hyper)
    return [t.cpu() for group in tensors for t in group]


ADAM = dict(lr=0.01, beta1=0.9, beta2=0.999, weight_decay=0.1, eps=1e-8, amsgrad=True, maximize=False)
SGD = dict(weight_decay=0.1, momentum=0.9, lr=0.1, dampening=0.0, nesterov=False, maximize=False, is_first_step=False)


@pytest.mark.parametrize("op, hyper", [(torch._fused_adam_, ADAM), (torch._fused_adamw_, ADAM), (torch._fused_sgd_, SGD)],
                         ids=["adam", "adamw", "sgd"])
@pytest.mark.parametrize("grad_scale, found_inf", [(None, None), (8.0, 0.0), (8.0, 1.0), (None, 1.0)], ids=str)
def test_grad_scale_and_found_inf(op, hyper, grad_scale, found_inf):
    """The grads are unscaled in place; a found inf skips the whole step, unscaling included."""
    expected = _fused_call(op, "cpu", grad_scale, found_inf, **hyper)
    torch.testing.assert_close(_fused_call(op, "tpu", grad_scale, found_inf, **hyper), expected)


def test_grad_scaler_drives_fused_adam_like_cpu():
    results = {}
    for device in ("cpu", "tpu"):
        torch.manual_seed(0)
        weight = torch.randn(4, 3).to(device).requires_grad_()
        optimizer = torch.optim.Adam([weight], lr=0.1, fused=True)
        scaler = torch.amp.GradScaler(device, init_scale=1024.0)
        for value in (1.0, float("inf"), 2.0):  # the inf step is skipped and halves the scale
            loss = (weight * value).sum() if value != float("inf") else weight.sum() * value
            optimizer.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        results[device] = (weight.detach().cpu(), scaler.get_scale())
    torch.testing.assert_close(results["tpu"], results["cpu"])


def test_fused_is_accepted_for_tpu_by_backend_name():
    """PyTorch lists the PrivateUse1 backend's name among the fused-capable devices."""
    assert "tpu" in torch.utils._foreach_utils._get_fused_kernels_supported_devices()
