"""``flex_attention`` in eager mode on tpu (torch_tpu/_flex_attention.py).

Oracles: CPU's eager ``flex_attention`` for values (CPU refuses its backward), and CPU's
``scaled_dot_product_attention`` with the same score modification written as a float mask for gradients.
"""

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

B, H, KV_HEADS, L, E = 2, 4, 2, 16, 8


def relative_position(score, batch, head, query, key):
    return score + (query - key) * 0.1


def causal(batch, head, query, key):
    return query >= key


def as_float_mask(length):
    """relative_position and causal as the additive mask SDPA takes."""
    query, key = torch.arange(length)[:, None], torch.arange(length)[None, :]
    return torch.where(query >= key, (query - key) * 0.1, float("-inf"))


def inputs(device, requires_grad=False):
    generator = torch.Generator().manual_seed(0)
    shapes = ((B, H, L, E), (B, KV_HEADS, L, E), (B, KV_HEADS, L, E))
    return [torch.randn(shape, generator=generator).to(device).requires_grad_(requires_grad) for shape in shapes]


def flex(query, key, value):
    mask = create_block_mask(causal, B=None, H=None, Q_LEN=L, KV_LEN=L, device=query.device)
    return flex_attention(query, key, value, score_mod=relative_position, block_mask=mask, enable_gqa=True,
                          return_lse=True)


def test_flex_attention_runs_on_tpu_with_cpus_values():
    with torch.no_grad():
        expected_out, expected_lse = flex(*inputs("cpu"))
        out, lse = flex(*inputs("tpu"))
    assert out.device.type == "tpu"
    torch.testing.assert_close(out.cpu(), expected_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(lse.cpu(), expected_lse, atol=1e-5, rtol=1e-5)


def test_flex_attention_backward_on_tpu_gives_sdpas_gradients():
    tpu_inputs, cpu_inputs = inputs("tpu", requires_grad=True), inputs("cpu", requires_grad=True)
    out, _ = flex(*tpu_inputs)
    out.square().sum().backward()
    expected = F.scaled_dot_product_attention(*cpu_inputs, attn_mask=as_float_mask(L), enable_gqa=True)
    expected.square().sum().backward()
    torch.testing.assert_close(out.detach().cpu(), expected.detach(), atol=1e-5, rtol=1e-5)
    for tpu_input, cpu_input in zip(tpu_inputs, cpu_inputs):
        torch.testing.assert_close(tpu_input.grad.cpu(), cpu_input.grad, atol=1e-5, rtol=1e-4)
