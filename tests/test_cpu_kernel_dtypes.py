"""Ops whose tpu maths would compute any dtype refuse the dtypes CPU's kernels are not compiled for,
with CPU's own error class and wording; the dtypes CPU takes still compute (checked against CPU)."""

import pytest
import torch
import torch.nn.functional as F

from differential import check_same_error

DTYPES = [torch.bool, torch.uint8, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32,
          torch.float64, torch.complex64]


def _ones(device, shape, dtype):
    return torch.ones(shape, dtype=dtype, device=device)


CALLS = {
    "layer_norm": lambda d, t: F.layer_norm(_ones(d, (2, 3), t), (3,)),
    "group_norm": lambda d, t: F.group_norm(_ones(d, (2, 4, 3), t), 2),
    "batch_norm_training": lambda d, t: F.batch_norm(_ones(d, (2, 3), t), None, None, training=True),
    "batch_norm_evaluation": lambda d, t: F.batch_norm(_ones(d, (2, 3), t), _ones(d, 3, t) * 0, _ones(d, 3, t)),
    "instance_norm": lambda d, t: F.instance_norm(_ones(d, (2, 3, 4), t)),
    "conv2d": lambda d, t: F.conv2d(_ones(d, (1, 1, 3, 3), t), _ones(d, (1, 1, 2, 2), t)),
    "conv1d_dilated": lambda d, t: F.conv1d(_ones(d, (1, 1, 5), t), _ones(d, (1, 1, 2), t), dilation=2),
    "conv3d": lambda d, t: F.conv3d(_ones(d, (1, 1, 2, 3, 3), t), _ones(d, (1, 1, 1, 2, 2), t)),
    "conv_transpose2d": lambda d, t: F.conv_transpose2d(_ones(d, (1, 1, 3, 3), t), _ones(d, (1, 1, 2, 2), t)),
    "reflection_pad2d": lambda d, t: F.pad(_ones(d, (1, 1, 3, 3), t), (1, 1, 1, 1), mode="reflect"),
    "replication_pad1d": lambda d, t: F.pad(_ones(d, (1, 2, 3), t), (1, 2), mode="replicate"),
    "replication_pad3d_out": lambda d, t: torch.ops.aten.replication_pad3d.out(
        _ones(d, (1, 1, 2, 2, 2), t), [1, 1, 1, 1, 1, 1], out=torch.empty(0, dtype=t, device=d)),
    "multi_margin_loss": lambda d, t: F.multi_margin_loss(_ones(d, (2, 3), t), torch.tensor([1, 0], device=d)),
    "multilabel_margin_loss": lambda d, t: F.multilabel_margin_loss(
        _ones(d, (2, 3), t), torch.tensor([[1, -1, 0], [0, -1, 2]], device=d)),
    "ctc_loss": lambda d, t: F.ctc_loss(_ones(d, (3, 1, 2), t), torch.tensor([[1]], device=d), [3], [1]),
}


def _refused_on_cpu(call, dtype):
    try:
        call("cpu", dtype)
    except (RuntimeError, NotImplementedError):
        return True
    return False


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("call", CALLS)
def test_dtypes_cpu_refuses_get_cpus_error_and_the_rest_compute(call, dtype):
    run = CALLS[call]
    if _refused_on_cpu(run, dtype):
        check_same_error(lambda device: run(device, dtype))
    else:
        torch.testing.assert_close(run("tpu", dtype).cpu(), run("cpu", dtype), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("mixed", ["target", "grad_output"])
@pytest.mark.parametrize("out", [False, True])
def test_huber_loss_backward_takes_one_dtype_as_on_cpu(mixed, out):
    """CPU's huber_loss_backward iterates its operands in one dtype (mse and smooth_l1 promote instead)."""
    def call(device):
        dtypes = {"grad_output": torch.float32, "target": torch.float32, mixed: torch.float64}
        arguments = (torch.ones((), dtype=dtypes["grad_output"], device=device), torch.randn(3, device=device),
                     torch.randn(3, dtype=dtypes["target"], device=device), 1, 1.0)
        if out:
            return torch.ops.aten.huber_loss_backward.out(*arguments, grad_input=torch.empty(3, device=device))
        return torch.ops.aten.huber_loss_backward(*arguments)

    check_same_error(call)
