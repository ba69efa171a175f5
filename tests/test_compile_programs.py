"""Compiled user programs, round two: what torch.compile(backend="tpu") must do for the programs users write
(docs/compile.md, "Compiled user programs"). Each compiled run is compared with tpu eager from the same state;
a call eager refuses is refused compiled, with the same error."""

import pytest
import torch
import torch.nn.functional as F

pytestmark = [pytest.mark.filterwarnings("ignore:Profiler record function"), pytest.mark.usefixtures("fresh_dynamo")]


def _outcome(function, *args):
    """What a call gives: its result, or the class and message of the error it raises."""
    try:
        return function(*args)
    except Exception as error:  # noqa: BLE001 - the compiled call must raise what eager raises
        return type(error), str(error).splitlines()[0]


def _refused_alike(function, *args):
    eager = _outcome(function, *args)
    compiled = _outcome(torch.compile(function, backend="tpu"), *args)
    assert isinstance(eager, tuple), "eager accepted the call: the case tests nothing"
    assert isinstance(compiled, tuple) and issubclass(compiled[0], eager[0]) and eager[1] in compiled[1], compiled


def _nll(scores, target, weight):
    return F.nll_loss(scores, target, weight=weight)


def _nll_gradient(scores, target, weight):
    return torch.autograd.grad(F.nll_loss(scores, target, weight=weight), scores)[0]


@pytest.mark.parametrize("loss", [_nll, _nll_gradient, F.cross_entropy])
@pytest.mark.parametrize("input_dtype,weight_dtype", [(torch.float32, torch.float64), (torch.bfloat16, torch.float32),
                                                      (torch.float32, torch.bfloat16)])
def test_nll_loss_refuses_the_weight_dtypes_eager_refuses(loss, input_dtype, weight_dtype):
    scores = torch.randn(4, 5).log_softmax(1).to(input_dtype).to("tpu").requires_grad_()
    target, weight = torch.tensor([0, 1, 2, 3]).to("tpu"), torch.rand(5).to(weight_dtype).to("tpu")
    _refused_alike(lambda s, t, w: loss(s, t, weight=w) if loss is F.cross_entropy else loss(s, t, w),
                   scores, target, weight)


@pytest.mark.parametrize("scores,target", [(torch.ones(4, 5, dtype=torch.int64), torch.tensor([0, 1, 2, 3])),
                                           (torch.randn(4, 5), torch.tensor([0, 1, 2, 3], dtype=torch.int32))])
def test_nll_loss_refuses_the_input_and_target_dtypes_eager_refuses(scores, target):
    _refused_alike(F.nll_loss, scores.to("tpu"), target.to("tpu"))
