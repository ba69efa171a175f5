"""Compiled user programs, round two: what torch.compile(backend="tpu") must do for the programs users write
(docs/compile.md, "Compiled user programs"). Each compiled run is compared with tpu eager from the same state;
a call eager refuses is refused compiled, with the same error."""

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import torch_tpu

from differential import assert_identical
from zoo import ZOO

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


def _retyped_statistic(x):
    """The mean of a bf16 layer norm without parameters: bf16 in eager, float32 in the traced graph."""
    return torch.ops.aten.native_layer_norm(x, [6], None, None, 1e-5)[1]


_FLOAT_COLUMN, _FLOAT_ROW = torch.randn(4, 1), torch.randn(1, 3)


@pytest.mark.parametrize("use", [
    lambda mean: mean.mm(_FLOAT_ROW.to("tpu")),
    lambda mean: torch.addmm(_FLOAT_COLUMN.to("tpu"), mean, _FLOAT_ROW.to("tpu")),
    lambda mean: mean.view(1, 4, 1).bmm(_FLOAT_ROW.to("tpu").view(1, 1, 3)),
    lambda mean: torch.lerp(mean, _FLOAT_COLUMN.to("tpu"), 0.5),
    lambda mean: _FLOAT_COLUMN.to("tpu").scatter(0, torch.zeros(4, 1, dtype=torch.long).to("tpu"), mean),
], ids=["mm", "addmm", "bmm", "lerp", "scatter"])
def test_ops_after_a_retyped_bf16_statistic_refuse_the_dtype_mix_eager_refuses(use):
    x = torch.randn(4, 6).bfloat16().to("tpu")
    _refused_alike(lambda x: use(_retyped_statistic(x)), x)


def _training(name, compiled, steps=2, memory_format=torch.contiguous_format, make_optimizer=None, clip=None,
              accumulate=1):
    """Each step's loss, gradients, parameters and buffers of a zoo model trained on tpu from one initial state:
    forward, cross-entropy, backward (with ``accumulate`` micro-batches), optionally ``clip_grad_norm_``, and the
    optimizer's step, the step and the optimizer's step compiled as users compile them when ``compiled``."""
    make_model, make_batch = ZOO[name]
    torch.manual_seed(0)
    model = make_model().to("tpu").to(memory_format=memory_format)
    inputs, targets = (t.to("tpu") for t in make_batch(torch.Generator().manual_seed(1)))
    if inputs.dim() == 4:
        inputs = inputs.to(memory_format=memory_format)
    optimizer = (make_optimizer or (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)))(model.parameters())

    def step(inputs, targets):
        loss = F.cross_entropy(model(inputs), targets) / accumulate
        loss.backward()
        return loss

    optimizer_step = optimizer.step
    if compiled:
        step, optimizer_step = torch.compile(step, backend="tpu"), torch.compile(optimizer.step, backend="tpu")
    records = []
    for _ in range(steps):
        optimizer.zero_grad()
        losses = [step(part, target) for part, target in zip(inputs.chunk(accumulate), targets.chunk(accumulate))]
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        grads = [p.grad.clone() for p in model.parameters()]
        optimizer_step()
        records.append((losses, grads, [p.detach().clone() for p in model.parameters()],
                        [b.clone() for b in model.buffers()]))
    return records


def _assert_steps_identical(compiled, eager):
    for compiled_step, eager_step in zip(compiled, eager):
        for got, expected in zip(compiled_step, eager_step):
            for a, b in zip(got, expected):
                assert_identical(a, b)


TRAINING_FAST = ["ResNet", "EfficientNet", "GRU"]


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@pytest.mark.parametrize("name", [n if n in TRAINING_FAST else pytest.param(n, marks=pytest.mark.slow) for n in ZOO])
def test_zoo_training_step_with_the_optimizer_step_compiled_equals_eager_bit_for_bit(name):
    _assert_steps_identical(_training(name, compiled=True), _training(name, compiled=False))


@pytest.mark.parametrize("name", ["ResNet", "MobileNetV2", pytest.param("MobileNetV3", marks=pytest.mark.slow),
                                  pytest.param("EfficientNet", marks=pytest.mark.slow)])
def test_zoo_channels_last_training_equals_eager_bit_for_bit(name):
    """A convolution's result is channels-last in eager and contiguous in the traced graph; a fused kernel's values,
    the backward's saved values and a hardtanh backward now follow eager's layouts, so the reductions reading them
    sum in eager's order."""
    _assert_steps_identical(_training(name, compiled=True, memory_format=torch.channels_last),
                            _training(name, compiled=False, memory_format=torch.channels_last))


def _eager_nodes():
    import torch_tpu

    return [line for program in torch_tpu.compile.last_programs() for line in program.dump().splitlines()
            if line.startswith("eager ")]


def test_slices_gradient_and_index_select_lower_to_numpy_and_equal_eager():
    """Swin's and the transformers' slice gradients (slice_scatter) and relative-position selections
    (index_select) ran as eager nodes."""
    table, positions = torch.randn(9, 3).to("tpu").requires_grad_(), torch.tensor([4, 0, 8, 4]).to("tpu")
    tokens = torch.randn(2, 5, 4).to("tpu").requires_grad_()

    def step(table, tokens):
        bias = table.index_select(0, positions)
        loss = (tokens[:, 1:, :3] * bias).sum() + tokens[:, 0].square().sum()
        return torch.autograd.grad(loss, (table, tokens))

    for got, expected in zip(torch.compile(step, backend="tpu")(table, tokens), step(table, tokens)):
        assert_identical(got, expected)
    assert not [line for line in _eager_nodes() if "index_select" in line or "slice_scatter" in line]


def test_index_select_out_of_range_raises_eagers_error():
    _refused_alike(lambda x, i: x.index_select(0, i) * 2, torch.randn(3, 2).to("tpu"), torch.tensor([0, 3]).to("tpu"))


REFUSED_SELECTIONS = {
    "slice_scatter src of one row": lambda x, s: torch.slice_scatter(x, s, 0, 1, 4) * 1,
    "slice_scatter src of one dimension": lambda x, s: torch.slice_scatter(x, s[0], 0, 1, 4) * 1,
    "index_select of a scalar, two positions": lambda x, s: x[0, 0].index_select(-1, torch.tensor([0, 0]).to("tpu")),
}


@pytest.mark.parametrize("case", REFUSED_SELECTIONS)
def test_selections_eager_refuses_are_refused_compiled(case):
    """A src the slice's size differs from would be broadcast into it by NumPy, and a scalar's several positions
    reshaped: CPU raises for both."""
    _refused_alike(REFUSED_SELECTIONS[case], torch.randn(6, 5).to("tpu"), torch.randn(1, 5).to("tpu"))


@pytest.mark.parametrize("training", [False, True])
def test_a_channels_last_convolution_flattened_into_a_linear_head_equals_eager(training):
    """The program lays a convolution's result out channels-last as eager does, unless a node after it cannot take
    that layout: the graph's ``view`` of it (a classifier's flatten), which eager's ``reshape`` makes a copy."""
    torch.manual_seed(0)
    convolution, head = torch.nn.Conv2d(3, 4, 3).to("tpu"), torch.nn.Linear(144, 2).to("tpu")
    x = torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last).to("tpu").requires_grad_(training)

    def step(x):
        result = head(convolution(x).flatten(1)).square().sum()
        return torch.autograd.grad(result, (x, convolution.weight)) if training else result

    expected = step(x)
    for got, want in zip(torch.compile(step, backend="tpu")(x), expected) if training else [(
            torch.compile(step, backend="tpu")(x), expected)]:
        assert_identical(got, want)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@pytest.mark.parametrize("name", ["ViT", pytest.param("ResNet", marks=pytest.mark.slow)])
def test_zoo_training_with_clipping_and_gradient_accumulation_equals_eager_bit_for_bit(name):
    _assert_steps_identical(_training(name, compiled=True, clip=0.5, accumulate=2),
                            _training(name, compiled=False, clip=0.5, accumulate=2))


@pytest.mark.filterwarnings("ignore:enable_nested_tensor")
@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_inference_in_eval_mode_under_no_grad_equals_eager_bit_for_bit(name):
    make_model, make_batch = ZOO[name]
    torch.manual_seed(0)
    model = make_model().to("tpu").eval()
    inputs = make_batch(torch.Generator().manual_seed(1))[0].to("tpu")
    with torch.no_grad():
        assert_identical(torch.compile(model, backend="tpu")(inputs), model(inputs))


@pytest.mark.parametrize("name", ["EfficientNet", pytest.param("Swin", marks=pytest.mark.slow)])
def test_zoo_autocast_training_step_equals_eager_bit_for_bit(name):
    def gradients(compiled):
        make_model, make_batch = ZOO[name]
        torch.manual_seed(0)
        model = make_model().to("tpu")
        inputs, targets = (t.to("tpu") for t in make_batch(torch.Generator().manual_seed(1)))

        def step(inputs, targets):
            with torch.autocast("tpu", dtype=torch.bfloat16):
                logits = model(inputs)
            loss = F.cross_entropy(logits.float(), targets)
            loss.backward()
            return loss

        loss = (torch.compile(step, backend="tpu") if compiled else step)(inputs, targets)
        return [loss] + [p.grad for p in model.parameters()]

    for got, expected in zip(gradients(True), gradients(False)):
        assert_identical(got, expected)


def test_dynamic_batch_sizes_compile_once_and_equal_eager():
    make_model, make_batch = ZOO["ViT"]
    torch.manual_seed(0)
    model = make_model().to("tpu").eval()
    inputs = make_batch(torch.Generator().manual_seed(1))[0].to("tpu")
    compiled = torch.compile(model, backend="tpu", dynamic=True)
    with torch.no_grad():
        for batch in (4, 3, 2):
            assert_identical(compiled(inputs[:batch]), model(inputs[:batch]))


def test_graph_breaks_on_print_and_item_and_torch_func_under_compile_equal_eager(capsys):
    weight, x = torch.randn(5, 5).to("tpu"), torch.randn(3, 5).to("tpu")

    def with_breaks(x):
        y = (x @ weight).relu()
        print("positive:", y.norm().item() > 0)
        return y * y.sum().item()

    def loss(weight, x):
        return (x @ weight).tanh().sum()

    per_sample_gradients = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))
    for function, args in ((with_breaks, (x,)), (torch.func.grad(loss), (weight, x)),
                           (per_sample_gradients, (weight, x.view(3, 1, 5)))):
        assert_identical(torch.compile(function, backend="tpu")(*args), function(*args))
    assert capsys.readouterr().out.count("positive: True") == 2


class _CachedDecoder(torch.nn.Module):
    """One pre-norm attention block (fused attention, SiLU MLP) that decodes with a key/value cache."""

    def __init__(self, vocabulary=32, width=16, heads=2):
        super().__init__()
        self.embed, self.heads = torch.nn.Embedding(vocabulary, width), heads
        self.qkv, self.out = torch.nn.Linear(width, 3 * width), torch.nn.Linear(width, width)
        self.norm, self.head = torch.nn.LayerNorm(width), torch.nn.Linear(width, vocabulary)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(width, 4 * width), torch.nn.SiLU(),
                                       torch.nn.Linear(4 * width, width))

    def forward(self, tokens, cache=None):
        x = self.embed(tokens)
        b, t, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=cache is None)
        x = x + self.out(attended.transpose(1, 2).reshape(b, t, w))
        return self.head(x + self.mlp(x)), (k, v)


def _generated(model, prompt, steps):
    logits, cache = model(prompt)
    tokens, last_logits = [logits[:, -1].argmax(-1, keepdim=True)], [logits[:, -1]]
    for _ in range(steps):
        logits, cache = model(tokens[-1], cache)
        tokens.append(logits[:, -1].argmax(-1, keepdim=True))
        last_logits.append(logits[:, -1])
    return torch.cat(tokens, 1), torch.stack(last_logits)


@pytest.mark.parametrize("dynamic", [None, True])
def test_generation_with_a_key_value_cache_equals_eager(dynamic):
    torch.manual_seed(0)
    model = _CachedDecoder().to("tpu").eval()
    prompt = torch.randint(0, 32, (2, 5)).to("tpu")
    with torch.no_grad():
        expected = _generated(model, prompt, 5)
        got = _generated(torch.compile(model, backend="tpu", dynamic=dynamic), prompt, 5)
    for a, b in zip(got, expected):
        assert_identical(a, b)


def test_a_programs_input_views_are_reused_only_while_the_input_lies_where_it_did(monkeypatch):
    """A program keeps the NumPy views of its inputs between calls (runtime.input_view) and builds one again when
    an input's storage moved (``.data =``, ``set_``) or is another tensor's; results follow the inputs' values."""
    from torch_tpu import _tensor

    built = []
    as_numpy = _tensor.as_numpy
    monkeypatch.setattr(_tensor, "as_numpy", lambda tensor: built.append(tuple(tensor.shape)) or as_numpy(tensor))
    weight, x = torch.randn(8, 4).to("tpu"), torch.randn(3, 8).to("tpu")
    compiled = torch.compile(lambda x, w: torch.tanh(x @ w) * 2, backend="tpu")

    def views_built(x):
        """The compiled call's inputs that got a new view; its result checked against eager."""
        expected = torch.tanh(x @ weight) * 2
        built.clear()
        actual = compiled(x, weight)
        views = list(built)
        assert_identical(actual, expected)
        return views

    assert sorted(views_built(x)) == [(3, 8), (8, 4)]
    assert views_built(x) == []
    x.mul_(3)  # written in place: the same bytes, the same view
    assert views_built(x) == []
    x.data = torch.randn(3, 8).to("tpu")  # another storage of the guarded shape
    assert views_built(x) == [(3, 8)]
    weight.set_(torch.randn(40).to("tpu").untyped_storage(), 4, (8, 4), (4, 1))  # another storage, an offset
    assert views_built(x) == [(8, 4)]
    assert views_built(torch.randn(3, 8).to("tpu")) == [(3, 8)]
    x.set_(x.untyped_storage(), 0, (3, 8), (1, 3))  # the same bytes, other strides (a recompile, or a
    assert (3, 8) in views_built(x)                 # shape-specialised program's call)


def test_a_program_keeps_no_view_of_a_large_input_after_its_call(monkeypatch):
    """A kept view keeps its host block; inputs larger than runtime.CACHED_VIEW_BLOCK_LIMIT get a new view each
    call instead."""
    from torch_tpu import _tensor
    from torch_tpu.compile import runtime

    rows = runtime.CACHED_VIEW_BLOCK_LIMIT // (4 * 64) + 1
    large, small = torch.randn(rows, 64).to("tpu"), torch.randn(64).to("tpu")
    compiled = torch.compile(lambda a, b: (a * b).sum(), backend="tpu")
    assert_identical(compiled(large, small), (large * small).sum())
    built = []
    as_numpy = _tensor.as_numpy
    monkeypatch.setattr(_tensor, "as_numpy", lambda tensor: built.append(tuple(tensor.shape)) or as_numpy(tensor))
    compiled(large, small)
    assert built == [(rows, 64)]


def test_a_planned_buffer_takes_its_home_block_while_no_earlier_buffer_holds_it(memory_baseline):
    """A program's planned buffer is backed by the same host block at every call (its NumPy views made once), counted
    as any allocation and never pooled; while an earlier call's buffer still holds the block (a tensor over it
    outlived its call), the call takes a pooled block instead."""
    from torch_tpu.compile import runtime

    hbm = torch_tpu._C.current_chip().hbm
    home, start = runtime.BufferHome(256, hbm), torch.tpu.memory_allocated()
    first = runtime.new_buffer(256, home)
    assert first.array is home.block and home.block.ctypes.data % 64 == 0
    second = runtime.new_buffer(256, home)
    assert second.array is not home.block and not np.shares_memory(second.array, home.block)
    assert torch.tpu.memory_allocated() == start + 512
    del first, second
    cached = hbm.pool.cached_bytes
    third = runtime.new_buffer(256, home)
    assert third.array is home.block and torch.tpu.memory_allocated() == start + 256
    del third
    assert hbm.pool.cached_bytes == cached and torch.tpu.memory_allocated() == start


def test_a_programs_planned_buffers_live_in_their_home_blocks():
    compiled = torch.compile(lambda x, w: torch.softmax(x @ w, dim=-1) @ w.t(), backend="tpu")
    x, w = torch.randn(16, 32).to("tpu"), torch.randn(32, 32).to("tpu")
    for _ in range(3):
        assert_identical(compiled(x, w), torch.softmax(x @ w, dim=-1) @ w.t())
    namespace = torch_tpu.compile.last_programs()[-1].program.generated.namespace
    homes = [value for name, value in namespace.items() if name.startswith("home_")]
    assert homes and all(home.hbm.live.get(home.buffer_id) is None and home.buffer_id is not None for home in homes)


def test_a_compiled_floating_power_computes_as_eagers_pow():
    """pow with a tensor exponent compiles to eager's maths (C's pow: float64, rounded once), not NumPy's float32
    loop, which gives 0.9 ** 4 one unit in the last place off (an Adam step's bias correction at its fourth step)."""
    exponents = torch.arange(1.0, 9.0)
    for base in (0.9, 0.999):
        compiled = torch.compile(lambda e: torch.pow(base, e), backend="tpu")
        assert_identical(compiled(exponents.to("tpu")), torch.pow(base, exponents.to("tpu")))
        assert_identical(compiled(exponents.to("tpu")), torch.pow(base, exponents))


def test_a_view_of_a_planned_buffer_is_made_once_and_built_while_the_buffer_is_away_from_home():
    """A view of a planned buffer's value (the transposed ReLU the second matmul reads) is made when the program is
    generated, as the buffer's own array is; a call whose buffer could not take its home block (an earlier buffer
    still holds it) builds the view over the block it got."""
    from torch_tpu.compile import runtime

    def f(x, w):
        return (x @ w).relu().t() @ x

    compiled = torch.compile(f, backend="tpu")
    x, w = torch.randn(16, 32).to("tpu"), torch.randn(32, 32).to("tpu")
    for _ in range(2):
        assert_identical(compiled(x, w), f(x, w))
    program = torch_tpu.compile.last_programs()[-1]
    assert re.search(r"= at_home_\d+ if B\d+ is block_\d+ else view_\d+\(v_relu\)", program.source)
    homes = [value for name, value in program.program.generated.namespace.items() if name.startswith("home_")]
    held = [runtime.new_buffer(home.block.nbytes, home) for home in homes]  # the home blocks taken
    assert_identical(compiled(x, w), f(x, w))
    del held
