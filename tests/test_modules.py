"""ModuleInfo conformance: PyTorch's module_db modules on tpu, each compared with the CPU.

For every ModuleInfo (float32, in the train and eval modes its ModuleInfo asks
for) and every sample of its ``module_inputs_func``, the module is built on
the CPU, deep-copied to tpu, and both copies run the same inputs. Compared:
the forward outputs, the gradients of the inputs and of every parameter under
one fixed random cotangent, and the buffers after the forward (BatchNorm's
running statistics), and an eval-mode forward under ``no_grad``, which is
where nn.MultiheadAttention and nn.TransformerEncoderLayer take their fused
fast paths.

module_db has no sampling modules, so ``SAMPLING_MODULES`` adds ModuleInfos
for nn.Upsample, nn.Unfold, nn.Fold and nn.PixelShuffle in the same format.

The default run covers ``FAST_MODULES``; ``-m modules_full`` runs them all.
Known failures live in ``EXPECTED_FAILURES`` below. They are strict: a listed
module that passes every sample fails, so that a fix removes its entry.
"""

import copy
import itertools
from functools import partial

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence
from torch.testing import make_tensor
from torch.testing._internal.common_device_type import instantiate_device_type_tests
from torch.testing._internal.common_modules import FunctionInput, ModuleInfo, ModuleInput, module_db, modules
from torch.testing._internal.common_utils import TestCase, freeze_rng_state, set_rng_seed
from torch.utils._pytree import tree_flatten, tree_map

import opinfo_support as support

POLICY = support.Policy(*support.BASE_TOLERANCE[torch.float32])
TRAIN, EVAL = "train", "eval"


# ------------------------------------------------------ sampling modules ----


def _sampling_inputs(constructor_and_shapes, module_info, device, dtype, requires_grad, training, **kwargs):
    make_input = partial(make_tensor, device=device, dtype=dtype, requires_grad=requires_grad)
    return [
        ModuleInput(constructor_input=FunctionInput(**constructor), forward_input=FunctionInput(make_input(shape)))
        for constructor, shape in constructor_and_shapes
    ]


def _upsample_cases():
    sizes = {1: (2, 3, 5), 2: (2, 3, 4, 5), 3: (1, 2, 3, 4, 3)}
    modes = {"nearest": (1, 2, 3), "nearest-exact": (1, 2, 3), "linear": (1,), "bilinear": (2,),
             "bicubic": (2,), "trilinear": (3,)}
    for mode, dims in modes.items():
        for ndim, scale in itertools.product(dims, (2.0, 0.6, 1.7)):
            yield {"mode": mode, "scale_factor": scale}, sizes[ndim]
            if mode not in ("nearest", "nearest-exact"):
                yield {"mode": mode, "scale_factor": scale, "align_corners": True}, sizes[ndim]
        for ndim in dims:
            yield {"mode": mode, "size": (7, 3, 4)[:ndim]}, sizes[ndim]


UPSAMPLE_CASES = list(_upsample_cases())
UNFOLD_CASES = [
    ({"kernel_size": 2}, (2, 3, 4, 5)),
    ({"kernel_size": (2, 3), "dilation": (1, 2), "padding": 1, "stride": (2, 1)}, (2, 3, 5, 6)),
    ({"kernel_size": 3, "padding": 1}, (3, 4, 4)),
]
FOLD_CASES = [
    ({"output_size": (4, 5), "kernel_size": 2}, (2, 12, 12)),
    ({"output_size": (5, 6), "kernel_size": (2, 3), "dilation": (1, 2), "padding": 1, "stride": (2, 1)}, (2, 18, 12)),
    ({"output_size": 4, "kernel_size": 3, "padding": 1}, (36, 16)),
]
PIXEL_SHUFFLE_CASES = [({"upscale_factor": 2}, (2, 8, 3, 4)), ({"upscale_factor": 3}, (9, 2, 2))]
PIXEL_UNSHUFFLE_CASES = [({"downscale_factor": 2}, (2, 2, 4, 6)), ({"downscale_factor": 3}, (1, 6, 3))]

SAMPLING_MODULES = [
    ModuleInfo(module_cls, module_inputs_func=partial(_sampling_inputs, cases))
    for module_cls, cases in (
        (torch.nn.Upsample, UPSAMPLE_CASES),
        (torch.nn.Unfold, UNFOLD_CASES),
        (torch.nn.Fold, FOLD_CASES),
        (torch.nn.PixelShuffle, PIXEL_SHUFFLE_CASES),
        (torch.nn.PixelUnshuffle, PIXEL_UNSHUFFLE_CASES),
    )
]
ALL_MODULES = [*module_db, *SAMPLING_MODULES]

# The default run: one or two modules of every family.
FAST_MODULES = (
    "nn.Linear", "nn.Conv2d", "nn.BatchNorm2d", "nn.LayerNorm", "nn.GroupNorm", "nn.Embedding",
    "nn.MaxPool2d", "nn.AdaptiveAvgPool2d", "nn.CrossEntropyLoss", "nn.CTCLoss", "nn.GELU",
    "nn.LSTM", "nn.GRUCell", "nn.TransformerEncoderLayer", "nn.MultiheadAttention",
    "nn.ReflectionPad2d", "nn.Upsample", "nn.Unfold", "nn.Fold", "nn.PixelShuffle",
)

# (module name, mode) -> why it fails. Mode is "train", or "eval" for modules
# whose ModuleInfo also asks for eval mode.
EXPECTED_FAILURES = {}


def _mode(training):
    return TRAIN if training else EVAL


# --------------------------------------------------------- moving inputs ----


def _to_tpu(value):
    """Tensors become exact tpu copies (requires_grad kept); a PackedSequence keeps its
    batch sizes on the CPU, as PyTorch requires."""
    if isinstance(value, PackedSequence):
        return value._replace(data=support.tensor_to_tpu(value.data).requires_grad_(value.data.requires_grad))
    if isinstance(value, torch.Tensor):
        return support.tensor_to_tpu(value)
    return copy.deepcopy(value)


def _is_leaf_value(value):
    return isinstance(value, PackedSequence)


def inputs_to_tpu(function_input):
    """The forward arguments on tpu. A tensor passed twice (KLDivLoss's input and target)
    stays one tensor, so that its gradient is the sum over both uses, as on the CPU."""
    copies = {}

    def move(value):
        if id(value) not in copies:
            copies[id(value)] = _to_tpu(value)
        return copies[id(value)]

    return tree_map(move, (function_input.args, function_input.kwargs), is_leaf=_is_leaf_value)


# --------------------------------------------------------------- checks ----


def _tensors(tree):
    return [leaf for leaf in tree_flatten(tree)[0] if isinstance(leaf, torch.Tensor)]


def _differentiable(outputs):
    return [t for t in _tensors(outputs) if t.requires_grad and t.dtype.is_floating_point]


def _cotangents(outputs):
    generator = torch.Generator().manual_seed(support.SEED)
    return [torch.randn(o.shape, dtype=o.dtype, generator=generator).to(o.device) for o in outputs]


def _gradients(outputs, inputs, parameters):
    """Gradients of the inputs and parameters under one fixed random cotangent per output."""
    differentiable = _differentiable(outputs)
    wrt = inputs + parameters
    if not differentiable or not wrt:
        return [], []
    grads = torch.autograd.grad(differentiable, wrt, _cotangents(differentiable), allow_unused=True)
    return list(grads[: len(inputs)]), list(grads[len(inputs):])


def run_module(module, args, kwargs):
    """Everything the CPU and tpu copies must agree on after one forward and backward."""
    outputs = module(*args, **kwargs)
    inputs = [t for t in _tensors((args, kwargs)) if t.requires_grad]
    parameters = [p for p in module.parameters() if p.requires_grad]
    input_grads, parameter_grads = _gradients(outputs, inputs, parameters)
    return {"outputs": outputs, "input_grads": input_grads, "parameter_grads": parameter_grads,
            "buffers": dict(module.named_buffers()), "inference_outputs": inference(module, args, kwargs)}


def inference(module, args, kwargs):
    """The eval-mode forward without autograd: where nn.MultiheadAttention and the
    Transformer layers take their fused fast paths."""
    training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return module(*args, **kwargs)
    finally:
        module.train(training)


def build_modules(module_info, module_input, training):
    """The module on the CPU and an exact tpu copy of it (parameters and buffers)."""
    constructor = module_input.constructor_input
    cpu_module = module_info.module_cls(*constructor.args, **constructor.kwargs).to(torch.float32)
    cpu_module.train(training)
    if module_info.is_lazy:  # parameters exist only after a first forward
        with torch.no_grad(), freeze_rng_state():
            cpu_module(*module_input.forward_input.args, **module_input.forward_input.kwargs)
    return cpu_module, copy.deepcopy(cpu_module).to(support.DEVICE)


def check_sample(module_info, module_input, training):
    tpu_args, tpu_kwargs = inputs_to_tpu(module_input.forward_input)  # before the CPU run mutates anything
    cpu_module, tpu_module = build_modules(module_info, module_input, training)
    forward = module_input.forward_input
    return support._judged(
        lambda: run_module(cpu_module, forward.args, forward.kwargs),
        lambda: run_module(tpu_module, tpu_args, tpu_kwargs),
        POLICY,
    )


def module_inputs(module_info, training):
    set_rng_seed(support.SEED)
    return module_info.module_inputs_func(
        module_info, device="cpu", dtype=torch.float32, requires_grad=True, training=training
    )


def run(module_info, training):
    """One Outcome per sample; a failure to build the samples is one failed outcome."""
    try:
        samples = module_inputs(module_info, training)
    except Exception as error:
        yield support.Outcome(support.FAILED, f"sample generation failed: {support.first_line(error)}")
        return
    for module_input in samples:
        set_rng_seed(support.SEED)
        try:
            yield check_sample(module_info, module_input, training)
        except Exception as error:  # building the module or moving it to tpu
            yield support.Outcome(support.FAILED, support.first_line(error))


# ---------------------------------------------------------------- tests ----


class TestModuleParity(TestCase):
    def check(self, module_info, training):
        key = (module_info.name, _mode(training))
        support.judge(list(run(module_info, training)), EXPECTED_FAILURES.get(key), key, "EXPECTED_FAILURES")

    @modules([m for m in ALL_MODULES if m.name in FAST_MODULES], allowed_dtypes=(torch.float32,))
    def test_parity(self, device, dtype, module_info, training):
        self.check(module_info, training)

    @pytest.mark.modules_full
    @pytest.mark.slow
    @modules(ALL_MODULES, allowed_dtypes=(torch.float32,))
    def test_parity_full(self, device, dtype, module_info, training):
        self.check(module_info, training)


instantiate_device_type_tests(TestModuleParity, globals(), only_for="privateuse1")


def test_fast_modules_exist():
    assert set(FAST_MODULES) <= {m.name for m in ALL_MODULES}


def test_expected_failures_name_real_checks():
    checks = {
        (m.name, mode) for m in ALL_MODULES for mode in ((TRAIN, EVAL) if m.train_and_eval_differ else (TRAIN,))
    }
    assert not set(EXPECTED_FAILURES) - checks


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize(
    "options",
    [{}, {"need_weights": False}, {"average_attn_weights": False}, {"key_padding_mask": "padding"},
     {"key_padding_mask": "all_padding"}, {"key_padding_mask": "all_padding", "need_weights": False}],
    ids=["weights", "no_weights", "per_head_weights", "padding_mask", "all_masked", "all_masked_no_weights"],
)
def test_multihead_attention_fast_path(batch_first, options):
    """Batched self-attention in eval mode without autograd: _native_multi_head_attention.
    (module_db's MultiheadAttention samples are unbatched, which the fast path skips.)
    A sequence whose keys are all padding gets NaN from CPU's masked softmax, and so from tpu's."""
    torch.manual_seed(support.SEED)
    module = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    x = torch.randn(2, 5, 8) if batch_first else torch.randn(5, 2, 8)
    if "key_padding_mask" in options:
        first = [True] * 5 if options["key_padding_mask"] == "all_padding" else [False] * 4 + [True]
        options = {**options, "key_padding_mask": torch.tensor([first, [False] * 5])}
    tpu_x, tpu_options = inputs_to_tpu(FunctionInput(x, **options))[0][0], inputs_to_tpu(FunctionInput(**options))[1]
    expected = inference(module, (x, x, x), options)
    actual = inference(copy.deepcopy(module).to(support.DEVICE), (tpu_x, tpu_x, tpu_x), tpu_options)
    support.compare(actual, expected, POLICY)


class _WrongGradientOnTpu(torch.nn.Linear):
    """Same forward on both devices, a weight gradient 1.5 times too large on tpu."""

    def forward(self, x):
        scale = 1.5 if self.weight.device.type == support.DEVICE else 1.0
        weight = self.weight.detach() + scale * (self.weight - self.weight.detach())
        return torch.nn.functional.linear(x, weight, self.bias)


def test_a_wrong_gradient_fails():
    linear = [({"in_features": 3, "out_features": 2}, (4, 3))]
    info = ModuleInfo(_WrongGradientOnTpu, module_inputs_func=partial(_sampling_inputs, linear))
    outcome = check_sample(info, module_inputs(info, True)[0], True)
    assert outcome.status == support.FAILED and "not close" in outcome.reason
