"""python -m torch_tpu.plan: per-chip memory equal to closed forms, step FLOPs equal to 6·N·tokens plus
attention, the roofline's verdicts on serving, the CLI's JSON, and the user's own models."""

import contextlib
import dataclasses
import gc
import json
import math
import os
import warnings

import pytest
import torch

import torch_tpu
from torch_tpu.plan import models, serving, training
from torch_tpu.plan.serving import ServingJob, plan_serving
from torch_tpu.plan.training import TrainingJob, candidate_meshes, parse_mesh, plan_training, sweep

from conftest import finish_python, start_python

TESTS = os.path.dirname(__file__)
FP32 = 4


@pytest.mark.parametrize("name, published", [
    ("llama3-8b", 8.03e9), ("llama3-70b", 70.55e9), ("llama3-405b", 405.85e9), ("llama3-1b", 1.236e9),
    ("llama3-3b", 3.21e9), ("llama2-7b", 6.74e9), ("llama2-70b", 68.98e9), ("gpt3-175b", 174.6e9),
])
def test_builtin_models_have_the_published_sizes(name, published):
    config = models.CONFIGS[name]
    with torch.device("meta"):
        model = models.build(name)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == config.parameter_count()
    assert counted == pytest.approx(published, rel=2e-3)


@pytest.mark.parametrize("name", ["llama3-8b", "gpt3-1.3b"])
def test_cached_decoding_equals_the_whole_forward(name):
    import dataclasses

    config = dataclasses.replace(models.CONFIGS[name], dim=64, layers=2, heads=4, kv_heads=2 if "llama" in name else 4,
                                 ffn_dim=96, vocab=50)
    torch.manual_seed(0)
    model = models.Decoder(config, 64).eval()
    tokens = torch.randint(0, 50, (2, 10))
    with torch.no_grad():
        whole = model(tokens)
        caches = models.kv_caches(config, 2, 16, torch.float32)
        prefill = model(tokens[:, :6], caches=caches, position=0)
        steps = [model(tokens[:, i:i + 1], caches=caches, position=i) for i in range(6, 10)]
    torch.testing.assert_close(prefill[:, 0], whole[:, 5], rtol=1e-5, atol=1e-5)
    for position, step in zip(range(6, 10), steps):
        torch.testing.assert_close(step[:, 0], whole[:, position], rtol=1e-5, atol=1e-5)


def test_70b_state_per_chip_is_its_size_over_the_shards():
    """fp32 master weights, fp32 gradients and AdamW's two fp32 moments of a 70B model over 64 chips."""
    result = plan_training(TrainingJob(model="llama3-70b", chips=64, batch=64, seq=128))
    parameters = models.CONFIGS["llama3-70b"].parameter_count()
    memory = result["hbm_per_chip"]
    assert result["params"] == parameters
    assert memory["params"] == memory["grads"] == parameters * FP32 // 64
    assert memory["optimizer"] == 2 * parameters * FP32 // 64
    assert memory["peak"] > memory["params"] + memory["grads"] + memory["optimizer"]
    # one chip's step FLOPs: 6 per weight per token of its batch, plus attention
    config, tokens = models.CONFIGS["llama3-70b"], 1 * 128
    attention = 12 * 128 * config.heads * config.head_dim * config.layers * tokens
    assert result["step"]["hardware_flops_per_chip"] == pytest.approx(6 * parameters * tokens + attention, rel=0.05)
    # 3 x the forward's; a flash attention backward recomputes its scores, so the chip does a little more
    assert result["step"]["model_flops_per_chip"] <= result["step"]["hardware_flops_per_chip"]
    assert result["step"]["model_flops_per_chip"] == pytest.approx(6 * parameters * tokens + attention, rel=0.05)


def _shard_bytes(shape, shards, itemsize=FP32):
    """FSDP2 gives every rank ceil(rows / shards) rows (the last ones padded)."""
    return -(-shape[0] // shards) * math.prod(shape[1:]) * itemsize


def test_fsdp_times_tp_shards_as_the_closed_form():
    from plan_user_model import TINY_LLAMA

    result = plan_training(TrainingJob(model="plan_user_model:tiny_llama", chips=4, mesh=parse_mesh("fsdp=2,tp=2"),
                                       batch=4, seq=64))
    with torch.device("meta"):
        model = models.Decoder(TINY_LLAMA, 64)
    columns = ("attention.q", "attention.k", "attention.v", "mlp.gate", "mlp.up", "head")
    rows = ("attention.o", "mlp.down")
    expected = 0
    for name, parameter in model.named_parameters():
        shape = list(parameter.shape)
        if any(f"{part}.weight" in name for part in columns):
            shape[0] //= 2
        elif any(f"{part}.weight" in name for part in rows):
            shape[1] //= 2
        expected += _shard_bytes(shape, 2)
    memory = result["hbm_per_chip"]
    assert memory["params"] == memory["grads"] == expected
    assert memory["optimizer"] == 2 * expected
    assert result["step"]["ici_s"] > 0  # FSDP's gathers and reductions and TP's all-reduces


def test_activation_checkpointing_recomputes_the_layers_and_keeps_less():
    from plan_user_model import TINY_LLAMA as config

    job = TrainingJob(model="plan_user_model:tiny_llama", chips=2, batch=4, seq=256)
    plain = plan_training(job)
    checkpointed = plan_training(TrainingJob(**{**job.__dict__, "checkpoint": True}))
    tokens = 2 * 256
    layer_weights = config.matmul_weights() - config.vocab * config.dim
    # QK^T and PV in the forward, over the causal triangle's 256 * 257 / 2 pairs the fused kernel computes
    attention = 4 * config.heads * config.head_dim * config.layers * 2 * (256 * 257 // 2)
    assert plain["step"]["model_flops_per_chip"] == 3 * (2 * config.matmul_weights() * tokens + attention)
    recomputed = checkpointed["step"]["hardware_flops_per_chip"] - plain["step"]["hardware_flops_per_chip"]
    # every layer's projections and attention run again in the backward (the output head is outside the
    # checkpoints), except the MLP's down projection: non-reentrant checkpointing stops recomputing once it
    # has what the backward needs, and the down projection's backward needs only its input
    down_projections = config.layers * config.ffn_dim * config.dim
    assert recomputed == 2 * (layer_weights - down_projections) * tokens + attention
    assert checkpointed["hbm_per_chip"]["activations"] < plain["hbm_per_chip"]["activations"] / 2
    assert checkpointed["step"]["model_flops_per_chip"] == plain["step"]["model_flops_per_chip"]


def test_planned_activations_hold_no_score_matrix():
    """With the fused attention kernel, activations grow linearly with the sequence; PyTorch's math path
    keeps at least one bf16 L x L score matrix per layer and head for the backward."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from plan_user_model import TINY_LLAMA as config

    def activations(seq, backend=SDPBackend.OVERRIDEABLE):
        with sdpa_kernel(backend):
            job = TrainingJob(model="plan_user_model:tiny_llama", chips=1, batch=2, seq=seq)
            return plan_training(job)["hbm_per_chip"]["activations"]

    fused = activations(256)
    assert activations(512) == pytest.approx(2 * fused, rel=1e-5)
    scores = config.layers * 2 * config.heads * 256 * 256
    assert activations(256, SDPBackend.MATH) - fused >= 2 * scores


def test_fp8_matmuls_take_half_the_mxu_time():
    job = TrainingJob(model="plan_user_model:tiny_llama", chips=1, batch=64, seq=64)  # the projections dominate
    bf16 = plan_training(job)
    fp8 = plan_training(TrainingJob(**{**job.__dict__, "dtype": "fp8"}))
    assert fp8["step"]["compute_s"] < 0.75 * bf16["step"]["compute_s"]
    assert fp8["hbm_per_chip"]["params"] == bf16["hbm_per_chip"]["params"]


def test_a_users_module_is_planned_from_module_function():
    result = plan_training(TrainingJob(model="plan_user_model:mlp_language_model", chips=2, batch=8, seq=32))
    with torch.device("meta"):
        from plan_user_model import ResidualMLPLanguageModel

        parameters = sum(p.numel() for p in ResidualMLPLanguageModel().parameters())
    assert result["params"] == parameters
    assert result["hbm_per_chip"]["optimizer"] == 2 * result["hbm_per_chip"]["params"]
    assert result["hbm_per_chip"]["fits"] and result["step"]["time_s"] > 0


def test_a_dict_of_outputs_is_planned_with_its_loss_as_hugging_face_models_return_it():
    job = TrainingJob(model="plan_user_model:outputs_with_loss", chips=1, batch=4, seq=16)
    assert_planned_alike(job, "plan_user_model:outputs_with_loss_taken_by_a_function")
    assert_planned_alike(job, "plan_user_model:keyword_batch_dataclass_outputs")  # model(**batch) -> a dataclass
    with pytest.raises(TypeError, match="output is a str, not a tensor.*return 'loss'"):
        plan_training(dataclasses.replace(job, model="plan_user_model:outputs_without_a_tensor"))
    with pytest.raises(TypeError, match="output is a dict, not a tensor.*return 'loss'"):  # was a bare StopIteration
        plan_training(dataclasses.replace(job, model="plan_user_model:outputs_nothing"))
    with pytest.raises(TypeError, match="output is a dict, not a tensor.*return 'loss'"):  # was "a NoneType"
        plan_training(dataclasses.replace(job, model="plan_user_model:outputs_only_nones"))


def test_an_empty_batch_dict_calls_the_model_with_no_arguments():
    """A dict batch is always keywords: {} is model(), not model({})."""
    result = plan_training(TrainingJob(model="plan_user_model:weight_decay_only", chips=1, batch=4, seq=8))
    assert result["params"] == 64 * 32
    assert result["hbm_per_chip"]["grads"] == 4 * 64 * 32


def _planned_with_values(monkeypatch, job):
    """The planner's own step run for real: eager kernels on real bytes (zero tokens, uninitialised weights)."""
    monkeypatch.setattr(training, "abstract", contextlib.nullcontext)
    monkeypatch.setattr(training, "_on_tpu", lambda value: torch.zeros_like(value, device="tpu"))
    return plan_training(job)


@pytest.mark.parametrize("model, chips, checkpoint, master_dtype", [
    ("plan_user_model:fixed_capacity_moe", 1, False, "fp32"), ("plan_user_model:mlp_language_model", 2, True, "fp32"),
    ("plan_user_model:small_resnet", 2, False, "fp32"),  # BatchNorm kept float32, as FSDP1's mixed precision keeps it
    ("plan_user_model:small_resnet", 1, False, "bf16"),  # ... even when the master copy is bf16 (running stats too)
    ("plan_user_model:encoder_decoder", 1, False, "fp32"), ("plan_user_model:frozen_embedding_model", 1, False, "fp32"),
])
def test_the_planned_step_equals_the_same_step_run_with_values(monkeypatch, model, chips, checkpoint, master_dtype):
    """Abstract mode is a faithful stand-in: the step run on real bytes allocates, peaks and takes the
    simulated time the plan says (on 2 chips FSDP's fp32-to-bf16 all-gather inputs once cost more in eager)."""
    job = TrainingJob(model=model, chips=chips, batch=4, seq=32, checkpoint=checkpoint, master_dtype=master_dtype)
    planned = plan_training(job)
    real = _planned_with_values(monkeypatch, job)
    assert real["hbm_per_chip"] == planned["hbm_per_chip"]
    for key in ("roofline_s", "compute_s", "hbm_s", "ici_s", "hardware_flops_per_chip"):
        assert real["step"][key] == pytest.approx(planned["step"][key], rel=1e-12), key


def test_a_plans_peak_does_not_depend_on_when_python_collected_garbage():
    """An earlier plan's modules and FSDP state are garbage cycles holding HBM until Python's collector
    runs: with the collector off they once added a whole model's parameters to the third plan's peak."""
    job = TrainingJob(model="plan_user_model:mlp_language_model", chips=2, batch=4, seq=32)
    gc.disable()
    try:
        peaks = [plan_training(job)["hbm_per_chip"]["peak"] for _ in range(3)]
    finally:
        gc.enable()
    assert peaks[0] == peaks[1] == peaks[2]


def test_planning_keeps_the_callers_own_gc_freeze():
    """A pre-forking server freezes its heap (gc.freeze) before it plans: the planner once unfroze it. Planning
    under the caller's freeze makes full collections instead, and plans the same peak."""
    job = TrainingJob(model="plan_user_model:mlp_language_model", chips=2, batch=4, seq=32)
    unfrozen = plan_training(job)["hbm_per_chip"]
    gc.freeze()
    try:
        frozen = plan_training(job)["hbm_per_chip"]
        assert gc.get_freeze_count() > 0  # gc.unfreeze() leaves none frozen
    finally:
        gc.unfreeze()
    assert frozen == unfrozen


def test_a_frozen_parameter_has_no_gradient_and_no_optimizer_state():
    """AdamW(model.parameters()) keeps state only for parameters that get gradients: a frozen embedding has
    neither (the planner once gave every parameter AdamW's two moments). Its buffers are the chip's too."""
    memory = plan_training(TrainingJob(model="plan_user_model:frozen_embedding_model", chips=1, batch=4,
                                       seq=32))["hbm_per_chip"]
    with torch.device("meta"):
        from plan_user_model import FrozenEmbeddingModel

        model = FrozenEmbeddingModel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert memory["params"] == sum(p.numel() for p in model.parameters()) * FP32
    assert memory["grads"] == trainable * FP32 and memory["optimizer"] == 2 * trainable * FP32


def test_fixed_capacity_moe_plans_the_flops_of_uniform_routing():
    """Top-2 routing over 4 experts with capacity tokens x 2 / 4: the experts multiply exactly 2 x tokens
    rows, so the step's FLOPs are the router's, the experts' at uniform routing and the head's, x 3."""
    result = plan_training(TrainingJob(model="plan_user_model:fixed_capacity_moe", chips=1, batch=4, seq=32))
    tokens, width, hidden, experts, vocabulary, blocks = 4 * 32, 64, 128, 4, 256, 2
    forward = blocks * (2 * tokens * width * experts + 2 * tokens * 3 * 2 * width * hidden) + 2 * tokens * width * vocabulary
    assert result["step"]["model_flops_per_chip"] == 3 * forward == result["step"]["hardware_flops_per_chip"]
    memory = result["hbm_per_chip"]
    assert memory["params"] == memory["grads"] == result["params"] * FP32 and memory["optimizer"] == 2 * memory["params"]


def test_value_dependent_routing_is_refused_naming_the_op_and_the_way_out():
    with pytest.raises(torch_tpu.NoValuesError, match="aten.nonzero") as caught:
        plan_training(TrainingJob(model="plan_user_model:where_routed_moe", chips=1, batch=4, seq=32))
    notes = "\n".join(caught.value.__notes__)
    assert "plan_user_model:where_routed_moe" in notes and "fixed capacity" in notes
    assert "(in the forward of blocks.0 (WhereRoutedMoE))" in notes  # the module, by name and class


def test_a_transformer_reading_its_masks_values_is_refused_with_the_argument_that_avoids_it():
    with pytest.raises(torch_tpu.NoValuesError, match="item") as caught:
        plan_training(TrainingJob(model="plan_user_model:encoder_decoder_with_an_unlabelled_mask", chips=1, batch=2,
                                  seq=8))
    notes = "\n".join(caught.value.__notes__)
    assert "(in the forward of transformer.decoder (TransformerDecoder))" in notes and "tgt_is_causal=True" in notes


def test_an_error_a_parent_caught_leaves_the_module_path():
    """A module whose forward raised is off the path once its parent catches the error: the next error names
    its own module (it once named "Linear (Linear)", the caught module's stack entry still in the way)."""
    with pytest.raises(RuntimeError, match="same reduction dim") as caught:  # the head's, in abstract mode
        plan_training(TrainingJob(model="plan_user_model:falling_back_language_model", chips=1, batch=2, seq=8))
    assert "(in the forward of head (Linear))" in caught.value.__notes__


def test_the_planners_own_warnings_are_silenced_and_the_users_are_not():
    """FSDP2 warns that the root module it wraps returns a view, Dynamo that a compiled module meets the
    planner's global module hooks: the planner's doing, not the user's code."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plan_training(TrainingJob(model="plan_user_model:warning_language_model", chips=2, batch=4, seq=8))
        plan_training(TrainingJob(model="plan_user_model:compiled_block", chips=1, batch=4, seq=8))
    messages = [str(warning.message) for warning in caught]
    assert "the user's own warning" in messages
    assert not any("FSDP2-wrapped module" in message or "global hooks" in message for message in messages), messages


def assert_planned_alike(job, model):
    """``job`` and the same job with ``model`` plan the same HBM and step time."""
    planned, other = plan_training(job), plan_training(dataclasses.replace(job, model=model))
    assert planned["hbm_per_chip"] == other["hbm_per_chip"]
    assert planned["step"]["roofline_s"] == pytest.approx(other["step"]["roofline_s"], rel=1e-12)


def test_a_compiled_block_is_planned_as_its_eager_program():
    assert_planned_alike(TrainingJob(model="plan_user_model:compiled_block", chips=2, batch=4, seq=32),
                         "plan_user_model:mlp_language_model")


def test_tensor_parallelism_over_global_head_counts_gets_a_hint():
    with pytest.raises(RuntimeError, match="invalid for input") as caught:
        plan_training(TrainingJob(model="plan_user_model:tiny_llama_reshaped_by_heads", chips=2,
                                  mesh=parse_mesh("tp=2"), batch=2, seq=16))
    assert any("reshape by head size" in note for note in caught.value.__notes__)


def test_every_byte_of_a_one_layer_plan_has_a_closed_form():
    """fp32 master weights, their gradients and AdamW's two moments; between forward and backward only the
    bf16 copy of the input FSDP's mixed precision makes (the linear saves it; its unsharded weight is
    FSDP's, not an activation) and the 4-byte loss."""
    batch, seq, features, outputs = 8, 4, 64, 32
    memory = plan_training(TrainingJob(model="plan_user_model:one_linear", chips=1, batch=batch, seq=seq))["hbm_per_chip"]
    weights = features * outputs
    assert (memory["params"], memory["grads"], memory["optimizer"]) == (weights * FP32, weights * FP32, 2 * weights * FP32)
    assert memory["activations"] == batch * seq * features * 2 + FP32


def test_a_model_without_sequences_reports_samples_per_second():
    import torch_tpu.plan as plan  # the Python API as docs/planning.md shows it

    result = plan.plan_training(plan.TrainingJob(model="plan_user_model:patch_classifier", chips=2, batch=8))
    assert result["seq"] is None and result["tokens_per_s_per_chip"] is None
    assert result["samples_per_s_per_chip"] == pytest.approx(8 / 2 / result["step"]["time_s"])
    table = plan.table(result)
    assert "batch 8 samples" in table and "samples/s per chip" in table and "tokens" not in table


def test_a_mesh_that_does_not_cover_the_chips_is_refused():
    with pytest.raises(ValueError, match="has 8 chips, not --chips 16"):
        plan_training(TrainingJob(model="llama3-8b", chips=16, mesh=parse_mesh("fsdp=4,tp=2")))
    with pytest.raises(ValueError, match="--mesh"):
        parse_mesh("fsdp=4,pp=2")
    with pytest.raises(ValueError, match="does not split"):
        plan_training(TrainingJob(model="llama3-8b", chips=4, batch=6))
    with pytest.raises(ValueError, match="fp8 with tensor parallelism"):
        plan_training(TrainingJob(model="llama3-8b", chips=4, mesh=parse_mesh("fsdp=2,tp=2"), dtype="fp8"))


def test_sweep_tries_meshes_and_ranks_those_that_fit_first():
    job = TrainingJob(model="plan_user_model:tiny_llama", chips=4, batch=8, seq=64)
    meshes = candidate_meshes(job)
    assert (("fsdp", 4),) in meshes and len(meshes) <= 8
    ranked = sweep(job)
    assert len(ranked) == len(meshes)
    fitting = [r for r in ranked if r["hbm_per_chip"]["fits"]]
    assert [r["step"]["time_s"] for r in fitting] == sorted(r["step"]["time_s"] for r in fitting)


def test_decode_is_hbm_bound_and_prefill_compute_bound():
    """A decode step reads every weight for a handful of tokens; a long prefill multiplies each weight by
    thousands of tokens, far past the chip's ridge point (313 FLOP/byte for bf16 on Ironwood)."""
    result = plan_serving(ServingJob(model="llama3-8b", prompt=512, generate=16, batch=32))
    assert result["decode_bound"] == "hbm" and result["prefill_bound"] == "compute"
    config = models.CONFIGS["llama3-8b"]
    memory = result["hbm_per_chip"]
    assert memory["weights"] == config.parameter_count() * 2
    assert memory["kv_cache"] == 2 * config.layers * 32 * config.kv_heads * (512 + 16) * config.head_dim * 2
    # a decode step cannot beat reading the weights once from HBM
    assert result["decode_step_roofline_s"] >= memory["weights"] / 7380e9
    assert result["tokens_per_s"] < result["decode_tokens_per_s"]


def test_fp8_kv_cache_is_half_the_bytes_and_tensor_parallel_splits_the_weights():
    bf16 = plan_serving(ServingJob(model="llama3-8b", chips=4, prompt=256, generate=8, batch=4))
    fp8 = plan_serving(ServingJob(model="llama3-8b", chips=4, prompt=256, generate=8, batch=4, kv_dtype="fp8"))
    assert fp8["hbm_per_chip"]["kv_cache"] * 2 == bf16["hbm_per_chip"]["kv_cache"]
    config = models.CONFIGS["llama3-8b"]
    unsplit = 2 * config.vocab * config.dim + (2 * config.layers + 1) * config.dim  # embedding, head, norms
    assert bf16["hbm_per_chip"]["weights"] == 2 * (unsplit + (config.parameter_count() - unsplit) // 4)


@pytest.mark.parametrize("chips", [1, 2])
def test_a_users_cached_decoder_is_served_from_module_function(chips):
    from plan_user_model import TINY_LLAMA as config

    batch, prompt, generate = 2, 32, 4
    result = plan_serving(ServingJob(model="plan_user_model:served_tiny_llama", chips=chips, prompt=prompt,
                                     generate=generate, batch=batch))
    memory = result["hbm_per_chip"]
    assert result["params"] == config.parameter_count()
    unsplit = 2 * config.vocab * config.dim + (2 * config.layers + 1) * config.dim  # embedding, head, norms
    assert memory["weights"] == 2 * (unsplit + (config.parameter_count() - unsplit) // chips)
    assert memory["kv_cache"] == 2 * config.layers * batch * (config.kv_heads // chips) * (prompt + generate) \
        * config.head_dim * 2
    assert result["decode_step_roofline_s"] >= memory["weights"] / 7380e9


def test_a_model_without_a_cache_reads_its_whole_sequence_at_every_step():
    """plan_user_model's MLP language model returns (model, tokens): each decode step runs it on the
    sequence so far, so its matmul FLOPs are 2 x weights x the tokens of that sequence."""
    batch, prompt, generate = 2, 16, 4
    result = plan_serving(ServingJob(model="plan_user_model:mlp_language_model", prompt=prompt, generate=generate,
                                     batch=batch))
    width, vocabulary, blocks = 128, 512, 3
    weights = blocks * 2 * width * 4 * width + width * vocabulary
    assert result["hbm_per_chip"]["kv_cache"] == 0
    assert result["prefill"]["flops"] == 2 * weights * batch * prompt
    first, last = prompt + 1, prompt + generate
    assert result["decode_step"]["flops"] == 2 * weights * batch * (first + last) / 2


def test_planned_serving_equals_the_same_requests_run_with_values(monkeypatch):
    job = ServingJob(model="plan_user_model:served_tiny_llama", chips=2, prompt=16, generate=4, batch=2)
    planned = plan_serving(job)
    monkeypatch.setattr(serving, "abstract", contextlib.nullcontext)
    real = plan_serving(job)
    assert real["hbm_per_chip"] == planned["hbm_per_chip"]
    for phase in ("prefill", "decode_step"):
        for key in ("seconds", "compute_s", "hbm_s", "flops"):
            assert real[phase][key] == pytest.approx(planned[phase][key], rel=1e-12), (phase, key)


def test_serving_a_users_model_asks_for_what_it_lacks():
    with pytest.raises(ValueError, match="no tensor-parallel plan"):
        plan_serving(ServingJob(model="plan_user_model:mlp_language_model", chips=2, prompt=8, generate=2))
    with pytest.raises(ValueError, match="unknown model"):
        plan_serving(ServingJob(model="llama3-9b"))


TRAINING_KEYS = {"params", "hbm_per_chip", "step", "mfu", "tokens_per_s_per_chip"}
MEMORY_KEYS = {"params", "grads", "optimizer", "activations", "peak", "capacity", "fits"}
STEP_KEYS = {"time_s", "roofline_s", "compute_s", "hbm_s", "ici_exposed_s", "model_flops_per_chip"}
SERVING_KEYS = {"params", "hbm_per_chip", "prefill_s", "prefill_bound", "decode_step_s", "decode_bound", "tokens_per_s"}


CLI_RUNS = {
    "8b on v5e": ("--model", "llama3-8b", "--chip", "v5e", "--batch", "1", "--seq", "64", "--json"),
    "serving": ("--model", "llama3-1b", "--serve", "--prompt", "128", "--generate", "4", "--batch", "2", "--json"),
    "user table": ("--model", "plan_user_model:mlp_language_model", "--chips", "2", "--batch", "4", "--seq", "32"),
    "unknown model": ("--model", "llama3-9b"),
}


@pytest.fixture(scope="module")
def cli():
    """Every command line these tests read, run at once in fresh interpreters (start-up dominates)."""
    started = {name: start_python(f"""
        import sys
        from torch_tpu.plan.__main__ import main
        sys.exit(main({list(arguments)!r}))
    """, env={"PYTHONPATH": TESTS}) for name, arguments in CLI_RUNS.items()}
    return {name: finish_python(process, check=False) for name, process in started.items()}


def test_json_of_a_plan_that_does_not_fit_names_the_largest_consumer(cli):
    """8B parameters with AdamW on one 16 GiB v5e: 128 GB of weights, gradients and moments."""
    process = cli["8b on v5e"]
    assert process.returncode == 0, process.stderr
    result = json.loads(process.stdout)
    assert TRAINING_KEYS <= result.keys()
    assert MEMORY_KEYS <= result["hbm_per_chip"].keys() and STEP_KEYS <= result["step"].keys()
    memory = result["hbm_per_chip"]
    assert memory["capacity"] == 16 << 30 and not memory["fits"]
    assert memory["largest_consumer"] == "optimizer"
    assert memory["optimizer"] == 2 * models.CONFIGS["llama3-8b"].parameter_count() * FP32


def test_serving_json_and_the_readable_table(cli):
    process = cli["serving"]
    assert process.returncode == 0, process.stderr
    result = json.loads(process.stdout)
    assert SERVING_KEYS <= result.keys()
    assert {"weights", "kv_cache", "peak", "capacity", "fits"} <= result["hbm_per_chip"].keys()
    assert result["prefill_bound"] in ("compute", "hbm") and result["decode_bound"] == "hbm"
    table = cli["user table"]
    assert table.returncode == 0, table.stderr
    for line in ("HBM per chip", "optimizer state", "fits", "exposed ICI", "MFU", "tokens/s per chip"):
        assert line in table.stdout


def test_bad_arguments_are_one_clear_line(cli):
    process = cli["unknown model"]
    assert process.returncode == 2 and "unknown model 'llama3-9b'" in process.stderr
    assert "Traceback" not in process.stderr


def test_the_cli_serves_a_users_model_and_refuses_value_dependent_shapes_in_one_message(capsys):
    """In this process (the interpreters above already show start-up and exit codes)."""
    from torch_tpu.plan.__main__ import main

    assert main(["--model", "plan_user_model:served_tiny_llama", "--serve", "--chips", "2", "--prompt", "16",
                 "--generate", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["hbm_per_chip"]["kv_cache"] > 0
    assert main(["--model", "plan_user_model:where_routed_moe", "--batch", "1", "--seq", "8"]) == 2
    refused = capsys.readouterr().err
    assert "Traceback" not in refused and "aten.nonzero" in refused and "fixed capacity" in refused
