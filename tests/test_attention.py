"""Fused scaled-dot-product attention (torch_tpu/ops/attention.py).

Oracles: torch CPU's ``F.scaled_dot_product_attention`` (outputs and gradients), CPU's math path fed the
tpu kernel's own dropout mask, the closed forms of the kernel's HBM bytes and FLOPs, and PyTorch's
errors. Every call is checked to have gone through the fused kernel (its launch count), not the math path.
"""

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import torch_tpu
from torch_tpu import _C
from torch_tpu.ops import attention

from differential import check_same_error, to_tpu

FORWARD = "_scaled_dot_product_fused_attention_overrideable"
BACKWARD = "_scaled_dot_product_fused_attention_overrideable_backward"
TOLERANCE = {torch.float32: dict(atol=2e-5, rtol=1e-4), torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
             torch.float16: dict(atol=2e-3, rtol=2e-3)}


def _totals():
    return _C.current_chip().clock.totals_snapshot()


@contextlib.contextmanager
def launches():
    """Counts of the fused forward and backward launched inside the block: {name: OpTotals}."""
    before, counted = _totals(), {}
    yield counted
    after = _totals()
    for name in (FORWARD, BACKWARD):
        if name in after:
            counted[name] = after[name].minus(before[name]) if name in before else after[name]


def _inputs(q_shape, k_shape, v_shape, dtype, mask=None):
    torch.manual_seed(0)
    q, k, v = (torch.randn(shape).to(dtype).requires_grad_() for shape in (q_shape, k_shape, v_shape))
    return q, k, v, mask


def _run(q, k, v, mask, grad_mask=False, **options):
    """Output and the gradients of q, k, v (and a float mask) against a fixed random projection."""
    if grad_mask:
        mask = mask.detach().requires_grad_()
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, **options)
    projection = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(out.dtype).to(out.device)
    leaves = [q, k, v] + ([mask] if grad_mask else [])
    grads = torch.autograd.grad((out * projection).sum(), leaves)
    return out, grads


def check_against_cpu(q_shape, k_shape, v_shape, dtype=torch.float32, mask=None, grad_mask=False, **options):
    q, k, v, mask = _inputs(q_shape, k_shape, v_shape, dtype, mask)
    expected = _run(q, k, v, mask, grad_mask, **options)
    with launches() as counted:
        actual = _run(*to_tpu((q, k, v, mask)), grad_mask=grad_mask, **options)
    assert counted[FORWARD].count == 1 and counted[BACKWARD].count == 1  # the fused kernel, not the math path
    torch.testing.assert_close(actual[0].cpu(), expected[0], **TOLERANCE[dtype])
    for got, want in zip(actual[1], expected[1]):
        torch.testing.assert_close(got.cpu(), want, **TOLERANCE[dtype])


SHAPES = [
    pytest.param(((2, 3, 17, 8), (2, 3, 17, 8), (2, 3, 17, 8)), id="square"),
    pytest.param(((1, 2, 37, 5), (1, 2, 53, 5), (1, 2, 53, 7)), id="odd-L!=S-Dv!=D"),
    pytest.param(((2, 2, 1, 16), (2, 2, 9, 16), (2, 2, 9, 16)), id="one-query"),
    pytest.param(((2, 2, 9, 16), (2, 2, 1, 16), (2, 2, 1, 16)), id="one-key"),
    pytest.param(((2, 2, 40, 8), (2, 2, 1100, 8), (2, 2, 1100, 8)), id="several-key-blocks"),
    pytest.param(((3, 11, 8), (3, 13, 8), (3, 13, 8)), id="3-d"),
    pytest.param(((11, 8), (13, 8), (13, 8)), id="2-d"),
]


@pytest.mark.parametrize("is_causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shapes", SHAPES)
def test_forward_and_gradients_match_cpu(shapes, is_causal):
    check_against_cpu(*shapes, is_causal=is_causal)


@pytest.mark.parametrize("queries,keys", [(50, 20), (20, 50), (600, 700)])
def test_causal_is_top_left_aligned_when_lengths_differ(queries, keys):
    check_against_cpu((1, 2, queries, 8), (1, 2, keys, 8), (1, 2, keys, 8), is_causal=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtypes(dtype):
    check_against_cpu((2, 4, 33, 16), (2, 4, 45, 16), (2, 4, 45, 16), dtype, is_causal=True)


MASK_SHAPES = [(19, 23), (2, 1, 19, 23), (1, 3, 1, 23), (2, 3, 19, 23)]


@pytest.mark.parametrize("mask_shape", MASK_SHAPES, ids=str)
def test_boolean_masks_broadcast(mask_shape):
    mask = torch.rand(mask_shape, generator=torch.Generator().manual_seed(2)) > 0.3
    check_against_cpu((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), mask=mask)


@pytest.mark.parametrize("mask_shape", MASK_SHAPES, ids=str)
def test_float_masks_broadcast_and_get_their_gradient(mask_shape):
    mask = torch.randn(mask_shape, generator=torch.Generator().manual_seed(3))
    check_against_cpu((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), mask=mask, grad_mask=True)


def test_bfloat16_float_mask():
    mask = torch.randn(19, 23, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    check_against_cpu((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), torch.bfloat16, mask=mask)


def test_rows_with_every_key_masked_give_zeros_as_the_math_path_does():
    mask = torch.ones(19, 23, dtype=torch.bool)
    mask[4] = False
    mask[:, 7] = False
    check_against_cpu((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), mask=mask)


@pytest.mark.parametrize("scale", [0.05, 2.0, -0.5])
def test_scale(scale):
    # CPU's flash kernel takes the square root of the scale (NaN when negative); its math path does not
    with sdpa_kernel(SDPBackend.MATH if scale < 0 else SDPBackend.FLASH_ATTENTION):
        expected = _run(*_inputs((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), torch.float32), is_causal=True,
                        scale=scale)
    q, k, v, _ = _inputs((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), torch.float32)
    with launches() as counted:
        actual = _run(*to_tpu((q, k, v)), None, is_causal=True, scale=scale)
    assert counted[FORWARD].count == 1
    for got, want in zip((actual[0], *actual[1]), (expected[0], *expected[1])):
        torch.testing.assert_close(got.cpu(), want, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("kv_heads", [1, 2])
def test_grouped_query_attention(kv_heads, dtype):
    check_against_cpu((2, 8, 21, 16), (2, kv_heads, 21, 16), (2, kv_heads, 21, 16), dtype, is_causal=True,
                      enable_gqa=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_results_in_multihead_attentions_layout_and_float32_ones_without_a_copy(
        dtype, monkeypatch):
    """nn.MultiheadAttention hands the kernel (N, H, L, D) views of (L, N, H * D) projections: the gradients
    and the output come in the inputs' layout (as Meta's kernels give them) with CPU's values; float32 ones are
    computed in their tensors' own memory (nothing is copied into them afterwards), other dtypes rounded into them."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(16, 4, 32).to(dtype).view(16, 16, 8).transpose(0, 1).view(4, 4, 16, 8)
               .detach().requires_grad_() for _ in range(3))
    expected = _run(q, k, v, None, is_causal=True)
    written, write = [], attention.write
    monkeypatch.setattr(attention, "write", lambda tensor, array: written.append(tensor.shape) or write(tensor, array))
    leaves = [t.detach().to("tpu").requires_grad_() for t in (q, k, v)]
    actual = _run(*leaves, None, is_causal=True)
    for got, want, leaf in zip((actual[0], *actual[1]), (expected[0], *expected[1]), leaves[:1] + leaves):
        assert got.stride() == leaf.stride()
        torch.testing.assert_close(got.cpu(), want, **TOLERANCE[dtype])
    # the output and the three gradients have q's shape; the only other result written is the forward's logsumexp
    assert written.count(q.shape) == (0 if dtype is torch.float32 else 4)


def test_empty_inputs():
    check_against_cpu((0, 2, 5, 8), (0, 2, 7, 8), (0, 2, 7, 8))
    check_against_cpu((1, 2, 0, 8), (1, 2, 7, 8), (1, 2, 7, 8))


# --- dropout ------------------------------------------------------------------------------------


def _dropout_mask(seed, offset, p, shape):
    """The kernel's keep mask, assembled from its key blocks."""
    dropout = attention.Dropout(p, seed, offset)
    blocks = [dropout.keep(number, (*shape[:-1], end - start))
              for number, start, end in attention._blocks(shape[-1], shape[-2], False)]
    return torch.from_numpy(__import__("numpy").concatenate(blocks, -1))


@pytest.mark.parametrize("keys", [23, 700], ids=["one-block", "two-blocks"])
def test_dropout_is_the_math_path_with_the_kernels_mask(keys):
    p = 0.3
    q, k, v, _ = _inputs((2, 3, 19, 8), (2, 3, keys, 8), (2, 3, keys, 8), torch.float32)
    tq, tk, tv = to_tpu((q, k, v))
    results = torch.ops.aten._scaled_dot_product_fused_attention_overrideable(tq, tk, tv, None, p)
    out, seed, offset = results[0], int(results[6]), int(results[7])
    keep = _dropout_mask(seed, offset, p, (2, 3, 19, keys))
    assert abs(keep.float().mean().item() - (1 - p)) < 0.03
    expected, _ = torch.ops.aten._scaled_dot_product_attention_math(q, k, v, None, p, False, dropout_mask=keep)
    torch.testing.assert_close(out.cpu(), expected, **TOLERANCE[torch.float32])

    grad = torch.randn(out.shape)
    expected_grads = torch.autograd.grad(expected, (q, k, v), grad)
    grads = torch.ops.aten._scaled_dot_product_fused_attention_overrideable_backward(
        grad.to("tpu"), tq, tk, tv, None, [True, True, True, False], out, results[1], None, None, 19, keys, p, False,
        results[6], results[7])
    for got, want in zip(grads[:3], expected_grads):
        torch.testing.assert_close(got.cpu(), want, **TOLERANCE[torch.float32])


def test_dropout_is_reproducible_under_manual_seed():
    q, k, v, _ = _inputs((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), torch.float32)
    tq, tk, tv = to_tpu((q, k, v))

    def run(seed):
        torch.manual_seed(seed)
        return _run(tq, tk, tv, None, dropout_p=0.4)

    first, again, other = run(5), run(5), run(6)
    for a, b in zip((first[0], *first[1]), (again[0], *again[1])):
        assert torch.equal(a.cpu(), b.cpu())
    assert not torch.equal(first[0].cpu(), other[0].cpu())
    with torch.no_grad():
        torch.manual_seed(5)
        drawn = F.scaled_dot_product_attention(tq, tk, tv, dropout_p=0.4)
        assert not torch.equal(drawn.cpu(), F.scaled_dot_product_attention(tq, tk, tv, dropout_p=0.4).cpu())


# --- backend selection ------------------------------------------------------------------------------


def test_sdpa_kernel_math_takes_the_math_path():
    q, k, v, _ = _inputs((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), torch.float32)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    with sdpa_kernel(SDPBackend.MATH), launches() as counted:
        actual = F.scaled_dot_product_attention(*to_tpu((q, k, v)), is_causal=True)
    assert FORWARD not in counted or counted[FORWARD].count == 0
    torch.testing.assert_close(actual.cpu(), expected)
    with sdpa_kernel([SDPBackend.OVERRIDEABLE]), launches() as counted:
        F.scaled_dot_product_attention(*to_tpu((q, k, v)), is_causal=True)
    assert counted[FORWARD].count == 1


def test_fused_sdp_choice_answers_as_the_kernel_chooses():
    """OpenReg's contract: a PrivateUse1 device answers ``torch._fused_sdp_choice``, OVERRIDEABLE for its fused kernel."""
    q = torch.rand(2, 2, 16, 8, dtype=torch.float16).to("tpu")
    assert torch._fused_sdp_choice(q, q, q) == SDPBackend.OVERRIDEABLE.value
    assert torch._fused_sdp_choice(q.double(), q.double(), q.double()) == SDPBackend.MATH.value  # no MXU type
    with sdpa_kernel(SDPBackend.MATH):
        assert torch._fused_sdp_choice(q, q, q) == SDPBackend.MATH.value
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        assert torch._fused_sdp_choice(q, q, q) == SDPBackend.ERROR.value
    before = _totals().get("_fused_sdp_choice")
    torch._fused_sdp_choice(q, q, q)
    assert _totals().get("_fused_sdp_choice") == before  # a host-side decision: no launch on the chip


@pytest.mark.parametrize("backend", [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                     SDPBackend.CUDNN_ATTENTION])
def test_a_backend_tpu_lacks_raises_torchs_error(backend):
    q = torch.randn(2, 3, 8, 8, device="tpu")
    with sdpa_kernel(backend), pytest.raises(RuntimeError) as error:
        F.scaled_dot_product_attention(q, q, q)
    assert str(error.value) == attention.NO_BACKEND
    if backend is not SDPBackend.FLASH_ATTENTION:  # CPU has a flash kernel, but not the others
        with sdpa_kernel(backend):
            check_same_error(lambda device: F.scaled_dot_product_attention(*(q.to(device),) * 3))


def test_bad_input_raises_torchs_errors_whichever_backend():
    q, k = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for backends in ([SDPBackend.MATH, SDPBackend.OVERRIDEABLE], [SDPBackend.OVERRIDEABLE]):
        with sdpa_kernel(backends):
            check_same_error(lambda device: F.scaled_dot_product_attention(q.to(device), k.to(device), k.to(device)))
            check_same_error(lambda device: F.scaled_dot_product_attention(
                q.to(device), q.to(device), q.to(device), attn_mask=torch.ones(8, 8, dtype=torch.bool, device=device),
                is_causal=True))


@pytest.mark.filterwarnings("ignore:tpu. float64 matmul")
def test_calls_the_fused_kernel_cannot_take_go_to_the_math_path():
    """float64 (no MXU type), and >4-D inputs: the math path, as CPU computes them."""
    for shape, dtype in (((2, 3, 9, 8), torch.float64), ((2, 2, 3, 9, 8), torch.float32)):
        q = torch.randn(shape, dtype=dtype)
        with launches() as counted:
            actual = F.scaled_dot_product_attention(*to_tpu((q, q, q)), is_causal=True)
        assert FORWARD not in counted or counted[FORWARD].count == 0
        torch.testing.assert_close(actual.cpu(), F.scaled_dot_product_attention(q, q, q, is_causal=True))


def test_a_mask_that_would_broadcast_the_output_raises_torchs_error():
    q, mask = torch.randn(9, 8), torch.rand(2, 3, 9, 9) > 0.5
    check_same_error(lambda device: F.scaled_dot_product_attention(*(q.to(device),) * 3, attn_mask=mask.to(device)))


@pytest.mark.parametrize("shape", [(2, 19, 8), (2, 3, 19, 8)])
def test_forward_mode_ad_takes_the_math_path_and_gives_cpus_tangents(shape):
    # the fused kernel has no forward derivative: torch.func.jvp/jacfwd raised NotImplementedError on tpu where CPU's
    # math path (3-D inputs) differentiates
    q, tangent = torch.randn(shape), torch.randn(shape)
    k, v = torch.randn(shape), torch.randn(shape)

    def attend(device):
        return lambda query: F.scaled_dot_product_attention(query, k.to(device), v.to(device), is_causal=True)

    with sdpa_kernel(SDPBackend.MATH):
        expected = torch.func.jvp(attend("cpu"), (q,), (tangent,))
    with launches() as counted:
        actual = torch.func.jvp(attend("tpu"), (q.to("tpu"),), (tangent.to("tpu"),))
    assert FORWARD not in counted or counted[FORWARD].count == 0
    for tpu_result, cpu_result in zip(actual, expected):
        torch.testing.assert_close(tpu_result.cpu(), cpu_result)
    with launches() as counted:  # no tangent: the fused kernel again
        F.scaled_dot_product_attention(*to_tpu((q, k, v)), is_causal=True)
    assert counted[FORWARD].count == 1


def test_inference_mode_takes_the_fused_kernel():
    q, k, v, _ = _inputs((2, 3, 19, 8), (2, 3, 23, 8), (2, 3, 23, 8), torch.float32)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    tq, tk, tv = to_tpu((q.detach(), k.detach(), v.detach()))
    with torch.inference_mode(), launches() as counted:
        actual = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    assert counted[FORWARD].count == 1
    torch.testing.assert_close(actual.cpu(), expected)


# --- HBM and the clock ----------------------------------------------------------------------------


def _nbytes(*shapes, itemsize):
    return sum(math.prod(shape) for shape in shapes) * itemsize


def test_long_sequence_holds_no_score_matrix_in_hbm(memory_baseline):
    """Peak HBM of forward and backward is q, k, v, output, logsumexp and the gradients: nothing L x S."""
    batch, heads, length, dim = 1, 2, 2048, 32
    shape = (batch, heads, length, dim)
    q, k, v = (torch.randn(shape, dtype=torch.bfloat16, device="tpu", requires_grad=True) for _ in range(3))
    inputs = torch.tpu.memory_allocated() - memory_baseline.bytes
    torch.tpu.reset_peak_memory_stats()
    out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    saved = _nbytes(shape, itemsize=2) + _nbytes((batch, heads, length), itemsize=4)  # output, logsumexp
    assert torch.tpu.max_memory_allocated() - memory_baseline.bytes == inputs + saved
    grad = torch.ones_like(out)
    torch.tpu.reset_peak_memory_stats()
    out.backward(grad)
    peak = torch.tpu.max_memory_allocated() - memory_baseline.bytes
    assert peak == inputs + saved + _nbytes(shape, itemsize=2) * 4  # grad_out, grad_q, grad_k, grad_v
    assert peak < heads * length * length  # even one byte per score would not fit
    del q, k, v, out, grad


@pytest.mark.parametrize("is_causal", [False, True])
def test_clock_charges_the_flash_formulas(is_causal):
    batch, heads, kv_heads, queries, keys, dim, value_dim = 2, 4, 2, 40, 56, 16, 8
    q = torch.randn(batch, heads, queries, dim, dtype=torch.bfloat16, device="tpu", requires_grad=True)
    k = torch.randn(batch, kv_heads, keys, dim, dtype=torch.bfloat16, device="tpu", requires_grad=True)
    v = torch.randn(batch, kv_heads, keys, value_dim, dtype=torch.bfloat16, device="tpu", requires_grad=True)
    mask = None if is_causal else torch.randn(queries, keys, dtype=torch.bfloat16, device="tpu")
    with launches() as counted:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, enable_gqa=True)
        out.backward(torch.ones_like(out))
    pairs = sum(min(i + 1, keys) for i in range(queries)) if is_causal else queries * keys
    flops = 2 * batch * heads * pairs * (dim + value_dim)
    if not is_causal:
        assert flops == 4 * batch * heads * queries * keys * (dim + value_dim) // 2
    qkv = q.nbytes + k.nbytes + v.nbytes + (0 if mask is None else mask.nbytes)
    lse = batch * heads * queries * 4
    assert (counted[FORWARD].flops, counted[FORWARD].bytes) == (flops, qkv + out.nbytes + lse)
    # backward reads grad_out, q, k, v, (mask), out, logsumexp and writes the three gradients
    grads = q.nbytes + k.nbytes + v.nbytes
    assert (counted[BACKWARD].flops, counted[BACKWARD].bytes) == (int(2.5 * flops), out.nbytes + qkv + out.nbytes + lse + grads)
    spec = _C.current_chip().spec
    expected_seconds = max(flops / spec.peak_flops["bfloat16"], (qkv + out.nbytes + lse) / spec.hbm_bandwidth)
    assert counted[FORWARD].seconds == pytest.approx(expected_seconds + _C.clock.LAUNCH_OVERHEAD_SECONDS)


# --- abstract mode and the modules -------------------------------------------------------------------


@pytest.mark.parametrize("mask_kind", ["bool", "float-with-grad", "dropout"])
@pytest.mark.usefixtures("paused_collector")
def test_abstract_mode_allocates_and_charges_as_eager(mask_kind):
    q, k, v = (torch.randn(2, 4, 24, 8, device="tpu", requires_grad=True) for _ in range(3))
    mask = {"bool": torch.rand(24, 24, device="tpu") > 0.5,
            "float-with-grad": torch.randn(24, 24, device="tpu", requires_grad=True)}.get(mask_kind)
    dropout = 0.2 if mask_kind == "dropout" else 0.0

    def charges(run_abstractly):
        before, allocated = _totals(), torch.tpu.memory_allocated()
        with torch_tpu.abstract() if run_abstractly else contextlib.nullcontext():
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            held = torch.tpu.memory_allocated() - allocated
            out.sum().backward()
            grads = [t.grad.shape for t in (q, k, v, mask) if t is not None and t.grad is not None]
        for t in (q, k, v, mask):
            if t is not None:
                t.grad = None
        after = _totals()
        launched = {name: t.minus(before[name]) if name in before else t for name, t in after.items()}
        return held, grads, {name: (t.count, t.bytes, t.flops) for name, t in launched.items() if t.count}

    eager = charges(False)
    assert FORWARD in eager[2] and BACKWARD in eager[2]
    assert charges(True) == eager


def _train_step_launches(module, *inputs):
    with launches() as counted:
        module(*inputs).float().sum().backward()
    return counted


def test_transformer_and_multihead_attention_train_through_the_fused_kernel():
    torch.manual_seed(0)
    transformer = torch.nn.Transformer(16, 2, 1, 1, 32, dropout=0.0, batch_first=True).to("tpu")
    src, tgt = torch.randn(2, 7, 16, device="tpu"), torch.randn(2, 5, 16, device="tpu")
    mask = torch.nn.Transformer.generate_square_subsequent_mask(5, device="tpu")
    counted = _train_step_launches(lambda s, t: transformer(s, t, tgt_mask=mask, tgt_is_causal=True), src, tgt)
    assert counted[FORWARD].count == counted[BACKWARD].count == 3  # encoder self, decoder self and cross attention

    attention_module = torch.nn.MultiheadAttention(16, 4, batch_first=True).to("tpu")
    x = torch.randn(2, 7, 16, device="tpu")
    counted = _train_step_launches(lambda x: attention_module(x, x, x, need_weights=False)[0], x)
    assert counted[FORWARD].count == counted[BACKWARD].count == 1


def test_the_encoder_layers_inference_fast_path_uses_the_fused_kernel():
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    x = torch.randn(2, 7, 16)
    with torch.no_grad():
        expected = layer(x)
        with launches() as counted:
            actual = layer.to("tpu")(x.to("tpu"))
    assert counted[FORWARD].count == 1
    torch.testing.assert_close(actual.cpu(), expected, atol=1e-5, rtol=1e-5)


def test_gpt_trains_through_the_fused_kernel():
    from models import GPT

    torch.manual_seed(0)
    model = GPT().to("tpu")
    tokens = torch.randint(0, 32, (2, 8), device="tpu")
    with launches() as counted:
        model(tokens, tokens).backward()
    layers = sum(1 for m in model.modules() if type(m).__name__ == "DecoderBlock")
    assert counted[FORWARD].count == counted[BACKWARD].count == layers


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("embed_dim, num_heads", [(24, 4), (40, 2), (2, 2)])  # head sizes 6, 20, 1
def test_transform_bias_rescale_qkv_splits_and_scales_as_cpu_bit_for_bit(dtype, embed_dim, num_heads):
    torch.manual_seed(0)
    qkv = torch.randn(3, 5, 3 * embed_dim, dtype=dtype) * 10
    qkv[0, -1] = -math.inf  # a padded row, as the native MHA path gets it
    bias = torch.randn(3 * embed_dim, dtype=dtype)
    with torch.inference_mode():
        expected = torch._transform_bias_rescale_qkv(qkv, bias, num_heads)
        actual = torch._transform_bias_rescale_qkv(qkv.to("tpu"), bias.to("tpu"), num_heads)
    for got, want in zip(actual, expected):
        assert (got.shape, got.stride(), got.storage_offset()) == (want.shape, want.stride(), want.storage_offset())
        torch.testing.assert_close(got.cpu(), want, atol=0, rtol=0)


@pytest.mark.parametrize("last_dim, num_heads, dtype", [(12, 3, torch.float32), (10, 1, torch.float32),
                                                       (11, 2, torch.float32), (12, 2, torch.int64)])
def test_transform_bias_rescale_qkv_refuses_what_cpu_refuses(last_dim, num_heads, dtype):
    def call(device):
        with torch.inference_mode():
            torch._transform_bias_rescale_qkv(torch.ones(2, 3, last_dim, dtype=dtype, device=device),
                                              torch.ones(last_dim, dtype=dtype, device=device), num_heads)

    check_same_error(call)
