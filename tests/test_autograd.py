"""Autograd beyond loss.backward(): torch.func, forward-mode AD, double backward, reparametrised modules.

Each program runs on CPU and on tpu from the same inputs and must give the same numbers.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, vmap
from torch.nn.utils import parametrizations
from torch.testing import assert_close
from torch.utils._pytree import tree_map


def inputs(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def same_on_both(program, atol=1e-5, rtol=1e-4):
    """``program(device)`` gives the same tensors on tpu as on CPU."""
    expected = program("cpu")
    actual = program("tpu")
    on_cpu = tree_map(lambda t: t.detach().cpu() if isinstance(t, torch.Tensor) else t, actual)
    assert_close(on_cpu, expected, atol=atol, rtol=rtol)


def mlp(device):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).to(device)


# Forward-mode AD and autograd.functional ask for zero tangents with _efficientzerotensor.
@pytest.mark.parametrize("transform", [
    lambda f, x: jacfwd(f)(x),
    lambda f, x: hessian(lambda v: f(v).sum())(x),
    lambda f, x: torch.autograd.functional.jacobian(f, x),
    lambda f, x: torch.autograd.functional.hessian(lambda v: f(v).sum(), x, vectorize=True,
                                                   outer_jacobian_strategy="forward-mode"),
], ids=["jacfwd", "hessian", "autograd.functional.jacobian", "forward_over_reverse_hessian"])
def test_jacobians_and_hessians(transform):
    def program(device):
        weight = inputs(3, 4, seed=1).to(device)
        return transform(lambda x: torch.tanh(weight @ x) * x[:3], inputs(4).to(device))

    same_on_both(program)


def test_per_sample_gradients_with_functional_call():
    def program(device):
        model = mlp(device)
        params = {name: p.detach() for name, p in model.named_parameters()}

        def loss(p, x, y):
            return F.mse_loss(functional_call(model, p, (x.unsqueeze(0),)), y.unsqueeze(0))

        return vmap(grad(loss), in_dims=(None, 0, 0))(params, inputs(6, 4).to(device), inputs(6, 1, seed=1).to(device))

    same_on_both(program)


def test_jacrev_of_a_module():
    same_on_both(lambda device: jacrev(mlp(device))(inputs(4).to(device)))


def test_forward_ad_dual_numbers():
    import torch.autograd.forward_ad as forward_ad

    def program(device):
        with forward_ad.dual_level():
            x = forward_ad.make_dual(inputs(3, 4).to(device), inputs(3, 4, seed=1).to(device))
            y = F.softmax(x, -1) @ x.T + F.layer_norm(x, (4,)).sum()
            return forward_ad.unpack_dual(y).tangent

    same_on_both(program)


@pytest.mark.parametrize("dim", [0, -1])
def test_glu_forward_mode_and_forward_over_reverse(dim):
    """glu has its own jvp kernels (glu_jvp, glu_backward_jvp)."""
    same_on_both(lambda device: jacfwd(lambda x: F.glu(x, dim))(inputs(4, 6).to(device)))
    same_on_both(lambda device: hessian(lambda x: F.glu(x, dim).sin().sum())(inputs(2, 4).to(device)))


def test_double_backward_gradient_penalty():
    def program(device):
        model = mlp(device)
        x = inputs(5, 4).to(device).requires_grad_()
        (gradient,) = torch.autograd.grad(model(x).sum(), x, create_graph=True)
        gradient.pow(2).sum().backward()
        return gradient, [p.grad for p in model.parameters()]

    same_on_both(program)


@pytest.mark.parametrize("make, shape, dim", [
    (lambda: torch.nn.Linear(4, 3), (2, 4), 0),
    (lambda: torch.nn.Conv1d(2, 3, 3), (2, 2, 6), 0),
    (lambda: torch.nn.Linear(4, 3), (2, 4), 1),
    (lambda: torch.nn.Linear(4, 3), (2, 4), None),
])
def test_weight_norm_trains(make, shape, dim):
    """The fused weight-norm backward (_weight_norm_interface_backward) runs on tpu."""
    def program(device):
        torch.manual_seed(0)
        module = parametrizations.weight_norm(make(), dim=dim).to(device)
        loss = module(inputs(*shape).to(device)).pow(2).sum()
        loss.backward()
        weight = module.parametrizations.weight
        return loss, weight.original0.grad, weight.original1.grad

    same_on_both(program)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_activation_checkpointing(use_reentrant):
    def program(device):
        model = mlp(device)
        x = inputs(3, 4).to(device).requires_grad_()
        torch.utils.checkpoint.checkpoint(model, x, use_reentrant=use_reentrant).sum().backward()
        return x.grad, [p.grad for p in model.parameters()]

    same_on_both(program)


@pytest.mark.parametrize("use_reentrant", [False, True])
def test_checkpoint_recomputes_the_same_dropout_mask(use_reentrant):
    """checkpoint restores the device RNG before recomputing, but only for an initialised device module;
    without that, dropout drew a new mask and the gradients were silently wrong."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 64), torch.nn.Dropout(0.5), torch.nn.Linear(64, 1)).to("tpu")
    x = inputs(16, 8).to("tpu").requires_grad_()
    gradients = []
    for run in (model, lambda v: torch.utils.checkpoint.checkpoint(model, v, use_reentrant=use_reentrant)):
        torch.manual_seed(5)
        run(x).sum().backward()  # reentrant checkpoint refuses autograd.grad
        gradients.append(x.grad.cpu())
        x.grad = None
    assert torch.equal(*gradients)


def _raising_hook(*args):
    raise ValueError("a hook refused its gradient")


def _backward_through(kind, device):
    weight = torch.nn.Parameter(torch.ones(2, 3, device=device))
    product = weight * 2
    if kind == "leaf tensor":
        weight.register_hook(_raising_hook)
    elif kind == "post-accumulate":
        weight.register_post_accumulate_grad_hook(_raising_hook)
    elif kind == "non-leaf tensor":
        product.register_hook(_raising_hook)
    elif kind == "node":
        product.grad_fn.register_hook(_raising_hook)
    elif kind == "node pre":
        product.grad_fn.register_prehook(_raising_hook)
    else:
        linear = torch.nn.Linear(3, 2).to(device)
        linear.register_full_backward_hook(_raising_hook)
        product = linear(weight)
    product.sum().backward()


@pytest.mark.parametrize("kind", ["leaf tensor", "post-accumulate", "non-leaf tensor", "node", "node pre", "module"])
def test_an_exception_in_a_backward_hook_reaches_the_caller_as_on_cpu(kind):
    """torch's autograd leaves a hook's Python error pending while C++ unwinds through a stream guard whose
    destructor calls the Python device guard: the process ended (std::terminate); now the hook's exception is
    raised, and the device works on."""
    for device in ("cpu", "tpu"):
        with pytest.raises(ValueError, match="a hook refused its gradient"):
            _backward_through(kind, device)
    weight = torch.nn.Parameter(torch.ones(3, device="tpu"))
    (weight * 3).sum().backward()
    assert torch.equal(weight.grad.cpu(), torch.full((3,), 3.0))
