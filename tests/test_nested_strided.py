"""Strided nested tensors (``layout=torch.strided``) on tpu against the same calls on CPU: nn.TransformerEncoder's
inference fast path with a padding mask, and the entry points a user meets (construction, padding, unbinding,
moving, printing)."""

import copy

import pytest
import torch

from differential import assert_identical, compare

TOLERANCE = {torch.float32: dict(atol=2e-5, rtol=2e-5), torch.bfloat16: dict(atol=3e-2, rtol=2e-2)}
LEFT_ALIGNED = [[False] * 6, [False] * 4 + [True] * 2, [False] + [True] * 5]
WITH_GAPS = [[False] * 6, [False, True, False, False, True, True], [True] * 3 + [False] * 3]


def sequences(lengths=(2, 5, 1), width=4, dtype=torch.float32):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(n, width, generator=generator).to(dtype) for n in lengths]


def encoder(dtype, batch_first=True, norm_first=False, layers=2, **options):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=batch_first, norm_first=norm_first)
    return torch.nn.TransformerEncoder(layer, layers, **options).to(dtype).eval()


def run_on_both(module, source, *args, **kwargs):
    """The module's output on CPU and on a tpu copy with the same weights and inputs, under no_grad."""
    on_tpu = copy.deepcopy(module).to("tpu")
    moved = lambda value: value.to("tpu") if isinstance(value, torch.Tensor) else value  # noqa: E731
    with torch.no_grad():
        expected = module(source, *args, **kwargs)
        actual = on_tpu(source.to("tpu"), *map(moved, args), **{k: moved(v) for k, v in kwargs.items()})
    return actual, expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("norm_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize("padding", [LEFT_ALIGNED, WITH_GAPS], ids=["left_aligned", "with_gaps"])
@pytest.mark.parametrize("mask_check", [True, False], ids=["mask_check", "no_mask_check"])
def test_the_encoder_with_a_padding_mask_equals_cpu_at_every_position(dtype, batch_first, norm_first, padding,
                                                                       mask_check):
    """Left-aligned with post-norm layers and batch_first is the nested fast path (its padding comes back as
    exact zeros); with gaps and mask_check=False the fast path takes CPU's lengths from the mask's counts."""
    module = encoder(dtype, batch_first, norm_first, mask_check=mask_check)
    source = torch.randn(3, 6, 16).to(dtype)
    mask = torch.tensor(padding)
    actual, expected = run_on_both(module, source if batch_first else source.transpose(0, 1),
                                   src_key_padding_mask=mask)
    compare(actual, expected, **TOLERANCE[dtype])
    assert torch.equal(actual.cpu() == 0, expected == 0)  # the zeros CPU's fast path gives padded positions


def test_the_fast_path_runs_the_nested_kernel_on_tpu():
    """The zeros at padded positions are the mark of the nested path: the dense path computes them."""
    module = encoder(torch.float32)
    actual, expected = run_on_both(module, torch.randn(3, 6, 16), src_key_padding_mask=torch.tensor(LEFT_ALIGNED))
    padded = torch.tensor(LEFT_ALIGNED)
    assert (expected[padded] == 0).all() and (actual.cpu()[padded] == 0).all()
    compare(actual, expected, **TOLERANCE[torch.float32])


def test_nn_transformer_with_padding_masks_equals_cpu():
    torch.manual_seed(0)
    model = torch.nn.Transformer(16, 4, 2, 1, 32, dropout=0.0, batch_first=True).eval()
    padding = torch.tensor(LEFT_ALIGNED)
    actual, expected = run_on_both(model, torch.randn(3, 6, 16), torch.randn(3, 5, 16),
                                   src_key_padding_mask=padding, memory_key_padding_mask=padding)
    compare(actual, expected, **TOLERANCE[torch.float32])


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_an_encoder_layer_given_a_nested_tensor_equals_cpu(activation):
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, activation=activation, batch_first=True).eval()
    parts = sequences((3, 0, 5), width=16)  # an empty sequence too
    actual, expected = run_on_both(layer, torch.nested.nested_tensor(parts))
    assert actual.is_nested and torch.equal(actual._nested_tensor_size(), expected._nested_tensor_size())
    compare(actual.to_padded_tensor(0.0), expected.to_padded_tensor(0.0), **TOLERANCE[torch.float32])


def cpu_error(program, *inputs):
    """The error class and message CPU raises for ``program`` of the inputs."""
    try:
        program(*inputs)
    except Exception as error:  # noqa: BLE001 - whichever CPU raises is the oracle
        return type(error), str(error)
    raise AssertionError("CPU accepted it")


def assert_refused_as_on_cpu(program, *inputs):
    """tpu raises CPU's error class with CPU's words (on tpu copies of the input tensors and modules)."""
    kind, message = cpu_error(program, *inputs)
    with pytest.raises(kind) as refusal:
        program(*(copy.deepcopy(value).to("tpu") if isinstance(value, torch.nn.Module) else value.to("tpu")
                  for value in inputs))
    assert str(refusal.value) == message


ENCODER_WIDTHS = {"narrower": (8, 8), "wider": (32, 32), "unequal": (8, 16), "unequal_with_the_layers": (8, 32)}


@pytest.mark.parametrize("widths", ENCODER_WIDTHS.values(), ids=ENCODER_WIDTHS.keys())
def test_an_encoder_layer_refuses_components_of_another_width_as_cpu_does(widths):
    """Once the buffer was cut into rows of the layer's width, whatever the components' widths."""
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    parts = [torch.randn(2, widths[0]), torch.randn(1, widths[1])]

    def program(module, nested):
        with torch.no_grad():
            return module(nested)

    assert_refused_as_on_cpu(program, layer, torch.nested.nested_tensor(parts))


def test_the_encoder_leaves_no_hbm_behind(memory_baseline):
    module = encoder(torch.float32).to("tpu")
    source, mask = torch.randn(3, 6, 16, device="tpu"), torch.tensor(LEFT_ALIGNED, device="tpu")
    before = torch.tpu.memory_allocated()
    with torch.no_grad():
        output = module(source, src_key_padding_mask=mask)
    assert torch.tpu.memory_allocated() - before == output.nbytes
    del module, source, mask, output


def test_a_nested_tensor_holds_its_buffer_in_hbm(memory_baseline):
    parts = [part.to("tpu") for part in sequences()]
    before = torch.tpu.memory_allocated()
    nested = torch.nested.nested_tensor(parts)
    assert torch.tpu.memory_allocated() - before == sum(part.nbytes for part in parts)
    del nested
    assert torch.tpu.memory_allocated() == before
    del parts


@pytest.mark.parametrize("make", [torch.nested.nested_tensor, torch.nested.as_nested_tensor],
                         ids=["nested_tensor", "as_nested_tensor"])
def test_construction_padding_and_unbinding_equal_cpu(make):
    parts = sequences()
    nested, expected = make([part.to("tpu") for part in parts]), make(parts)
    assert nested.is_nested and nested.device.type == "tpu" and nested.layout == torch.strided
    assert torch.equal(nested._nested_tensor_size(), expected._nested_tensor_size())
    compare(nested.to_padded_tensor(-1.5), expected.to_padded_tensor(-1.5), atol=0, rtol=0)
    compare(nested.to_padded_tensor(0.0, (3, 7, 4)), expected.to_padded_tensor(0.0, (3, 7, 4)), atol=0, rtol=0)
    compare(nested.unbind(), expected.unbind(), atol=0, rtol=0)


def test_to_tpu_and_back_and_printing():
    expected = torch.nested.nested_tensor(sequences())
    on_tpu = expected.to("tpu")
    assert on_tpu.device.type == "tpu" and on_tpu.is_nested
    back = on_tpu.cpu()
    assert back.is_nested and torch.equal(back.to_padded_tensor(0.0), expected.to_padded_tensor(0.0))
    assert str(on_tpu) == str(expected).replace("])", "], device='tpu:0')")
    compare(torch.nested.nested_tensor(sequences(), device="tpu").to_padded_tensor(0.0),
            expected.to_padded_tensor(0.0), atol=0, rtol=0)


@pytest.mark.parametrize("op", ["relu", "neg", "abs", "tanh", "sin", "clone", "detach"])
def test_unary_ops_equal_cpu(op):
    expected = torch.nested.nested_tensor(sequences())
    result = getattr(expected.to("tpu"), op)()
    assert result.is_nested
    compare(result.to_padded_tensor(0.0), getattr(expected, op)().to_padded_tensor(0.0),
            **TOLERANCE[torch.float32])


@pytest.mark.parametrize("op", ["sqrt", "isinf", "isposinf", "isneginf", "isnan"])
def test_unary_ops_of_special_values_are_cpus_bits_and_refuse_a_transposed_input(op):
    special = torch.tensor([[4.0, -1.0, float("inf")], [float("-inf"), float("nan"), 0.0]])
    expected = torch.nested.nested_tensor([special, torch.tensor([[2.0, -0.0, 9.0]])])
    result = getattr(torch, op)(expected.to("tpu"))
    assert result.is_nested
    assert_identical(result.to_padded_tensor(0), getattr(torch, op)(expected).to_padded_tensor(0))
    with pytest.raises(RuntimeError, match="NestedTensor must be contiguous to get buffer."):
        getattr(torch, op)(expected.to("tpu").transpose(1, 2))


BINARY_PROGRAMS = {
    "add": lambda x, mask: x + x * 2, "sub": lambda x, mask: x - x * 0.1, "mul": lambda x, mask: x * x,
    "div": lambda x, mask: x / (x.abs() + 1), "div_scalar": lambda x, mask: x / 4,
    "add_": lambda x, mask: x.clone().add_(x, alpha=2), "add_number_": lambda x, mask: x.clone().add_(3),
    "mul_": lambda x, mask: x.clone().mul_(x), "mul_number_": lambda x, mask: x.clone().mul_(2),
    "mul_0d": lambda x, mask: x * torch.tensor(0.1, device=x.device),
    "masked_fill": lambda x, mask: x.masked_fill(mask, -1),
    "masked_fill_by_a_comparison": lambda x, mask: x.masked_fill(x > 0, -1),
    "gt_number": lambda x, mask: x > 0, "ge_number": lambda x, mask: x >= 3, "eq_number": lambda x, mask: x == 0,
    "eq_0d": lambda x, mask: x == torch.tensor(0, device=x.device),
}
SOFTMAX_PROGRAMS = {"softmax": lambda x: x.softmax(-1), "softmax_ragged": lambda x: x.softmax(1)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int32], ids=str)
@pytest.mark.parametrize("program", BINARY_PROGRAMS.values(), ids=BINARY_PROGRAMS.keys())
def test_binary_ops_equal_cpu_bit_for_bit(program, dtype):
    parts = [(part * 10).to(dtype) for part in sequences()]
    expected = torch.nested.nested_tensor(parts)
    mask = torch.nested.nested_tensor([part > 0 for part in parts])
    result = program(expected.to("tpu"), mask.to("tpu"))
    assert result.is_nested
    compare(result.to_padded_tensor(0), program(expected, mask).to_padded_tensor(0), atol=0, rtol=0)


@pytest.mark.parametrize("program", SOFTMAX_PROGRAMS.values(), ids=SOFTMAX_PROGRAMS.keys())
def test_softmax_per_component_equals_cpu(program):
    """Each component's softmax is tpu's dense one (its float32 exp is not CPU's vectorised one bit for bit)."""
    expected = torch.nested.nested_tensor(sequences())
    compare(program(expected.to("tpu")).to_padded_tensor(0), program(expected).to_padded_tensor(0),
            **TOLERANCE[torch.float32])


LAYER_PROGRAMS = {  # components of shape (n, 3, 4), or (n, 4) for linear (CPU's takes 3-d nested tensors only)
    "layer_norm": (torch.nn.LayerNorm(4), lambda module, x: module(x), (3, 4)),
    "layer_norm_2d": (torch.nn.LayerNorm((3, 4)), lambda module, x: module(x), (3, 4)),
    "layer_norm_of_a_view": (torch.nn.LayerNorm(4), lambda module, x: module(x.transpose(1, 2).transpose(1, 2)),
                             (3, 4)),
    "transpose": (torch.nn.Identity(), lambda module, x: x.transpose(1, 2).contiguous(), (3, 4)),
    "linear": (torch.nn.Linear(4, 5), lambda module, x: module(x), (4,)),
}


@pytest.mark.parametrize("module, program, shape", LAYER_PROGRAMS.values(), ids=LAYER_PROGRAMS.keys())
def test_layer_norm_linear_and_transpose_equal_cpu(module, program, shape):
    generator = torch.Generator().manual_seed(0)
    expected = torch.nested.nested_tensor([torch.randn(n, *shape, generator=generator) for n in (2, 5)])
    with torch.no_grad():
        cpu_result = program(module, expected)
        result = program(copy.deepcopy(module).to("tpu"), expected.to("tpu"))
    compare(result.to_padded_tensor(0), cpu_result.to_padded_tensor(0), **TOLERANCE[torch.float32])


def test_layer_norm_refuses_what_cpu_refuses():
    for device in ("cpu", "tpu"):
        nested = torch.nested.nested_tensor(sequences(), device=device)
        with pytest.raises(ValueError, match="NestedTensor layer_norm requires weight and bias"):
            torch.nn.functional.layer_norm(nested, (4,))
        with pytest.raises(RuntimeError, match="The shape at dimension 0of normalized_shape doesn't match the input"):
            torch.nn.functional.layer_norm(nested, (5,), torch.ones(5, device=device), torch.zeros(5, device=device))
        ragged = torch.nested.nested_tensor([torch.ones(2, 3), torch.ones(2, 5)], device=device)
        with pytest.raises(RuntimeError, match="normalized_shape extends into irregular dimensions"):
            torch.nn.functional.layer_norm(ragged, (3,), torch.ones(3, device=device), torch.zeros(3, device=device))


NOT_CONTIGUOUS_PROGRAMS = {
    "mul_number_": lambda x: x.transpose(1, 2).mul_(2),
    "add_number_": lambda x: x.transpose(1, 2).add_(1),
    "layer_norm": lambda x: torch.nn.functional.layer_norm(x.transpose(1, 2), (2,), torch.ones(2, device=x.device),
                                                           torch.zeros(2, device=x.device)),
}


@pytest.mark.parametrize("program", NOT_CONTIGUOUS_PROGRAMS.values(), ids=NOT_CONTIGUOUS_PROGRAMS.keys())
def test_ops_on_a_transposed_nested_tensor_refuse_what_cpu_refuses(program):
    assert_refused_as_on_cpu(program, torch.nested.nested_tensor(sequences((2, 3), width=2)))


@pytest.mark.parametrize("normalized_shape", [(3,), (3, 4)], ids=["1d", "2d"])
def test_layer_norm_of_no_components_refuses_what_cpu_refuses(normalized_shape):
    def program(nested):
        return torch.nn.functional.layer_norm(nested, normalized_shape, torch.ones(normalized_shape,
                                              device=nested.device), torch.zeros(normalized_shape, device=nested.device))

    assert_refused_as_on_cpu(program, torch.nested.nested_tensor([]))


def test_select_gives_a_component():
    expected = torch.nested.nested_tensor(sequences())
    compare(expected.to("tpu")[1], expected[1], atol=0, rtol=0)


def test_an_unsupported_op_names_itself_and_the_workaround():
    nested = torch.nested.nested_tensor(sequences(), device="tpu")
    with pytest.raises(NotImplementedError, match=r"aten::_transform_bias_rescale_qkv.*not implemented for the tpu "
                                                  r"device.*to_padded_tensor\(\) and dense ops"):
        torch._transform_bias_rescale_qkv(nested, torch.zeros(4, device="tpu"), 2)


def components(nested):
    return [component.cpu() for component in nested.unbind()]


def matrices(shapes, dtype=torch.float32):
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(*shape, generator=generator).to(dtype) for shape in shapes]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("op", [torch.bmm, torch.matmul], ids=["bmm", "matmul"])
def test_batched_matmul_of_two_nested_tensors_is_cpus(op, dtype):
    left = torch.nested.nested_tensor(sequences(dtype=dtype))
    right = torch.nested.nested_tensor(matrices([(4, 3), (4, 6), (4, 1)], dtype))
    actual = op(left.to("tpu"), right.to("tpu"))
    assert actual.is_nested and actual.device.type == "tpu"
    for got, expected in zip(components(actual), components(op(left, right))):
        torch.testing.assert_close(got, expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("program", [
    lambda left, right: torch.bmm(left, right),  # a pair that cannot be multiplied
    lambda left, right: torch.matmul(left, right.unbind()[0]),  # a nested tensor with a dense one
], ids=["bmm_mismatched", "matmul_nested_dense"])
def test_batched_matmul_refuses_as_cpu_does(program):
    left = torch.nested.nested_tensor(sequences())
    right = torch.nested.nested_tensor(matrices([(4, 3), (5, 6), (4, 1)]))
    assert_refused_as_on_cpu(program, left, right)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
                                   torch.int64], ids=str)
def test_sum_over_the_last_dim_has_cpus_bits(dtype):
    """CPU's nested sum adds each row left to right in the element type (float16 rounds at every step)."""
    generator = torch.Generator().manual_seed(0)
    parts = [(torch.randn(*shape, generator=generator) * 30).to(dtype) for shape in ((2, 3, 300), (4, 1, 7), (1, 2, 0))]
    expected = torch.nested.nested_tensor(parts).sum(-1, keepdim=True)
    actual = torch.nested.nested_tensor(parts, device="tpu").sum(-1, keepdim=True)
    assert actual.is_nested and actual.is_contiguous()
    for got, want in zip(components(actual), components(expected)):
        assert_identical(got, want)


@pytest.mark.parametrize("program", [
    lambda nested: nested.sum(-1),
    lambda nested: nested.sum(1, keepdim=True),
    lambda nested: nested.sum((1, 2), keepdim=True),
    lambda nested: nested.sum(3, keepdim=True),
    lambda nested: nested.sum(-1, keepdim=True, dtype=torch.float64),
    lambda nested: nested.transpose(1, 2).sum(-1, keepdim=True),
    lambda nested: (nested > 0).sum(-1, keepdim=True),
], ids=["no_keepdim", "ragged_dim", "two_dims", "out_of_range", "dtype", "noncontiguous", "bool"])
def test_sum_refuses_as_cpu_does(program):
    assert_refused_as_on_cpu(program, torch.nested.nested_tensor(sequences()))


def test_sum_in_abstract_mode_gives_the_sizes_and_bytes(paused_collector):
    import torch_tpu

    with torch_tpu.abstract():
        nested = torch.nested.nested_tensor(sequences(), device="tpu")
        before = torch.tpu.memory_allocated()
        summed = nested.sum(-1, keepdim=True)
        assert summed._nested_tensor_size().tolist() == [[2, 1], [5, 1], [1, 1]]
        assert torch.tpu.memory_allocated() - before == (2 + 5 + 1) * 4


def test_sum_of_no_components_is_the_input():
    empty = torch.nested.nested_tensor([], device="tpu")
    assert empty.sum(-1, keepdim=True) is empty


INDEXING = {"first": lambda n: n[0], "last": lambda n: n[-1], "element_row": lambda n: n[1, 2],
            "last_dim": lambda n: n[..., 1], "first_row": lambda n: n.select(1, 0)}


@pytest.mark.parametrize("index", INDEXING.values(), ids=INDEXING.keys())
def test_indexing_selects_as_on_cpu(index):
    expected = index(torch.nested.nested_tensor(sequences()))
    actual = index(torch.nested.nested_tensor(sequences(), device="tpu"))
    assert actual.is_nested == expected.is_nested
    for got, want in zip(*((components(t) if t.is_nested else [t.cpu()]) for t in (actual, expected))):
        assert_identical(got, want)


def test_select_along_a_negative_dim_is_select_along_its_positive_dim():
    """CPU's select_nested leaves the offsets uninitialised for a negative dim (garbage values in torch 2.13); tpu
    wraps the dim first, as dense select does."""
    nested = torch.nested.nested_tensor(sequences())
    actual = nested.to("tpu").select(-1, 3)
    assert actual._nested_tensor_storage_offsets().tolist() == nested.select(2, 3)._nested_tensor_storage_offsets().tolist()
    for got, want in zip(components(actual.contiguous()), components(nested.select(2, 3).contiguous())):
        assert_identical(got, want)


RESHAPED = {
    "view": lambda n: n.view(3, -1, 2, 2), "reshape": lambda n: n.reshape(3, -1, 1, 4), "unsqueeze": lambda n: n.unsqueeze(1),
    "squeeze": lambda n: n.unsqueeze(-1).squeeze(-1), "chunk": lambda n: n.chunk(2, -1)[1],
    "split": lambda n: n.split([1, 3], -1)[1], "cat": lambda n: torch.cat([n, n * 2], 0),
    "dropout_eval": lambda n: torch.nn.functional.dropout(n, 0.5, training=False),
    "squeeze_dims": lambda n: n.unsqueeze(-1).squeeze((-1,)), "narrow": lambda n: n.narrow(0, 1, 2),
    "where": lambda n: torch.where(n > 0, torch.tensor(-1.0, device=n.device), n), "ones_like": torch.ones_like, "all": lambda n: (n > -1).all(-1),
}


@pytest.mark.parametrize("reshape", RESHAPED.values(), ids=RESHAPED.keys())
def test_views_cat_and_dropout_are_cpus(reshape):
    expected = reshape(torch.nested.nested_tensor(sequences()))
    actual = reshape(torch.nested.nested_tensor(sequences(), device="tpu"))
    assert actual.is_nested and actual.device.type == "tpu"
    assert actual._nested_tensor_size().tolist() == expected._nested_tensor_size().tolist()
    for got, want in zip(components(actual), components(expected)):
        assert_identical(got, want)


def test_dropout_in_training_zeroes_or_scales_each_element():
    nested = torch.nested.nested_tensor(sequences(lengths=(40, 70)), device="tpu")
    dropped = torch.nn.functional.dropout(nested, 0.5, training=True)
    for got, source in zip(components(dropped), components(nested)):
        kept = got != 0
        assert_identical(got[kept], source[kept] * 2)
        assert 0 < kept.float().mean() < 1


F = torch.nn.functional
TRAINED = {
    "sum": lambda nested, weights: nested.sum(-1, keepdim=True),
    "bmm": lambda nested, weights: torch.bmm(nested, torch.nested.as_nested_tensor(weights)),
    "matmul": lambda nested, weights: torch.matmul(nested, torch.nested.as_nested_tensor(weights)),
    "softmax": lambda nested, weights: nested.softmax(-1),
    "relu": lambda nested, weights: nested.relu(),
    "gelu": lambda nested, weights: F.gelu(nested),
    "linear": lambda nested, weights: F.linear(nested, weights[0].t(), weights[1][0]),
    "layer_norm": lambda nested, weights: F.layer_norm(nested, (4,), weights[0][:, 0], weights[1][:, 0]),
    "mul": lambda nested, weights: nested * nested / 3,
    "select": lambda nested, weights: nested[1],
    "view": lambda nested, weights: nested.view(3, -1, 2, 2),
    "split": lambda nested, weights: nested.split([1, 3], -1)[1].contiguous(),
    "unsqueeze": lambda nested, weights: nested.unsqueeze(1),
}


@pytest.mark.parametrize("forward", TRAINED.values(), ids=TRAINED.keys())
def test_autograd_through_as_nested_tensor_gives_cpus_gradients(forward):
    """as_nested_tensor of tensors that require grad records the construction, as on CPU; each op's backward
    reaches the components and the other operands."""
    def gradients(device):
        parts = [t.to(device).requires_grad_() for t in sequences()]
        weights = [t.to(device).requires_grad_() for t in matrices([(4, 3), (4, 3), (4, 3)])]
        result = forward(torch.nested.as_nested_tensor(parts), weights)
        padded = torch.nested.to_padded_tensor(result, 0.0) if result.is_nested else result
        (padded * torch.arange(padded.numel(), dtype=padded.dtype, device=device).view(padded.shape)).sum().backward()
        return [None if t.grad is None else t.grad.cpu() for t in parts + weights]

    expected, actual = gradients("cpu"), gradients("tpu")
    assert [g is None for g in actual] == [g is None for g in expected]
    for got, want in zip(actual, expected):
        if want is not None:
            torch.testing.assert_close(got, want, **TOLERANCE[torch.float32])



NESTED_REFUSALS = {
    "squeeze_without_a_dim": lambda n: n.squeeze(), "narrow_a_ragged_dim": lambda n: n.narrow(1, 0, 1),
    "narrow_transposed": lambda n: n.transpose(1, 2).narrow(0, 0, 1), "where_nested_self": lambda n: torch.where(n > 0, n, n * 2),
    "attention_with_a_mask": lambda n: torch.nn.functional.scaled_dot_product_attention(n, n, n, attn_mask=n > 0),
    "causal_attention": lambda n: torch.nn.functional.scaled_dot_product_attention(n, n, n, is_causal=True),
}


@pytest.mark.parametrize("program", NESTED_REFUSALS.values(), ids=NESTED_REFUSALS.keys())
def test_squeeze_narrow_where_and_attention_refuse_what_cpu_refuses(program):
    assert_refused_as_on_cpu(program, torch.nested.nested_tensor(sequences()))


def test_narrow_of_the_components_is_a_view_of_the_input():
    nested = torch.nested.nested_tensor(sequences(), device="tpu")
    narrowed = nested.narrow(0, 1, 2)
    assert narrowed._base is nested
    narrowed.unbind()[0].fill_(7.0)
    assert_identical(nested.unbind()[1], torch.full((5, 4), 7.0))


@pytest.mark.parametrize("dims", [3, 4], ids=["3d", "4d"])
def test_attention_of_nested_tensors_is_cpus(dims):
    shapes = {3: [[(2, 8), (3, 8)], [(3, 8), (4, 8)]], 4: [[(2, 2, 8), (3, 3, 8)], [(2, 3, 8), (3, 4, 8)]]}[dims]
    query, key, value = (torch.nested.nested_tensor(matrices(shapes[index > 0])) for index in range(3))
    expected = torch.nn.functional.scaled_dot_product_attention(query, key, value * 2)
    actual = torch.nn.functional.scaled_dot_product_attention(query.to("tpu"), key.to("tpu"), value.to("tpu") * 2)
    assert actual.is_nested and actual.device.type == "tpu"
    for got, want in zip(components(actual), components(expected)):
        torch.testing.assert_close(got, want, **TOLERANCE[torch.float32])


def test_randn_like_draws_the_buffer_as_a_dense_tensor_of_its_size():
    nested = torch.nested.nested_tensor(sequences(), device="tpu")
    torch.manual_seed(3)
    drawn = torch.randn_like(nested)
    torch.manual_seed(3)
    dense = torch.randn(32, device="tpu")
    assert drawn._nested_tensor_size().tolist() == nested._nested_tensor_size().tolist()
    assert_identical(drawn.values(), dense)
