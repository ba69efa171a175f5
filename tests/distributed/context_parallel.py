"""Worker (run under torchrun): ``context_parallel`` (ring attention) over the "ici" group.

Each rank computes attention of the whole sequence on its own chip (the reference), then the same attention
inside ``context_parallel``, where every chip keeps its part of the sequence: the result must be this chip's
part (not the whole sequence), and the gathered output and the gradients of query, key and value must equal
the reference's. Causal attention runs with PyTorch's load balancing (head-tail chunks), the other without
(PyTorch's ring refuses load balancing there); dropout is refused. Prints "context parallel ok" per rank.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor.experimental import context_parallel
from torch.distributed.tensor.experimental._attention import _cp_options, context_parallel_unshard

import torch_tpu  # noqa: F401

SEQUENCE = 2


def reference(query, key, value, is_causal):
    leaves = [t.detach().clone().requires_grad_() for t in (query, key, value)]
    output = F.scaled_dot_product_attention(*leaves, is_causal=is_causal)
    output.backward(torch.ones_like(output))
    return output.detach(), [t.grad for t in leaves]


def ring(mesh, query, key, value, is_causal):
    _cp_options.enable_load_balance = is_causal
    parts = [t.detach().clone() for t in (query, key, value)]
    with context_parallel(mesh, buffers=parts, buffer_seq_dims=[SEQUENCE] * 3, no_restore_buffers=set(parts)):
        for part in parts:
            part.requires_grad_()
        output = F.scaled_dot_product_attention(*parts, is_causal=is_causal)
        assert output.shape == parts[0].shape, f"{output.shape} is not this chip's part {parts[0].shape}"
        output.backward(torch.ones_like(output))
    everything = context_parallel_unshard(mesh, [output.detach(), *(p.grad for p in parts)], [SEQUENCE] * 4)
    return everything[0], everything[1:]


def refuses_dropout(mesh, query, key, value):
    """Each ring step would draw its own dropout mask, which the backward cannot replay: refused, not wrong."""
    _cp_options.enable_load_balance = True
    parts = [t.detach().clone() for t in (query, key, value)]
    with context_parallel(mesh, buffers=parts, buffer_seq_dims=[SEQUENCE] * 3, no_restore_buffers=set(parts)):
        try:
            F.scaled_dot_product_attention(*parts, dropout_p=0.5, is_causal=True)
        except NotImplementedError as error:
            assert "dropout" in str(error), error
        else:
            raise AssertionError("dropout in context parallel attention was not refused")


def main():
    dist.init_process_group()
    world = dist.get_world_size()
    mesh = init_device_mesh("tpu", (world,))
    torch.manual_seed(0)
    query, key, value = (torch.randn(2, 4, 8 * world, 16).to("tpu") for _ in range(3))
    for is_causal in (True, False):
        want_output, want_grads = reference(query, key, value, is_causal)
        got_output, got_grads = ring(mesh, query, key, value, is_causal)
        torch.testing.assert_close(got_output, want_output, rtol=1e-5, atol=1e-6)
        for name, got, want in zip("qkv", got_grads, want_grads):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"d{name}, causal {is_causal}")
    refuses_dropout(mesh, query, key, value)
    dist.destroy_process_group()
    print("context parallel ok", flush=True)


if __name__ == "__main__":
    main()
