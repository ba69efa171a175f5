"""torch.compile(backend="tpu") computes what tpu eager computes.

Two oracles:
- tpu eager on the user's code: forward outputs, losses and gradients (float32) within 1e-6
  relative, bit for bit where the same arithmetic runs in the same order (the models here);
- tpu eager on the very graph AOTAutograd traced (``aot_eager`` with our decompositions): bit for
  bit, every step, optimizer included. torch's compiled Adam traces a different formula from its
  eager foreach path, so against the user's eager optimizer only the 1e-6 bound holds.
"""

import functools

import pytest
import torch
from functorch.compile import make_boxed_func
from torch.testing import assert_close

from differential import assert_identical
from models import GPT, MLP, SmallCNN, cross_entropy

pytestmark = pytest.mark.filterwarnings("ignore:Profiler record function")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def same_graph_on_eager_kernels():
    """A backend running AOTAutograd's graphs (our decompositions) on the tpu eager kernels."""
    from torch._dynamo.backends.common import aot_autograd
    from torch._functorch.partitioners import min_cut_rematerialization_partition

    from torch_tpu.compile.pipeline import decompositions

    def run_eagerly(gm, example_inputs):
        return make_boxed_func(gm.forward)

    return aot_autograd(fw_compiler=run_eagerly, bw_compiler=run_eagerly, decompositions=decompositions(),
                        partition_fn=min_cut_rematerialization_partition, keep_inference_input_mutations=True)


def gpt_tokens(batch=4, context=8, vocabulary=32):
    generator = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, vocabulary, (batch, context + 1), generator=generator).to("tpu")
    return tokens[:, :-1], tokens[:, 1:]


def twins(make_model, optimizer=None):
    """Two identical models (and optimizers) on tpu."""
    result = []
    for _ in range(2):
        torch.manual_seed(0)
        model = make_model().to("tpu")
        result.append((model, optimizer(model.parameters()) if optimizer else None))
    return result


def test_mlp_inference_is_bit_exact():
    (eager, _), (compiled, _) = twins(MLP)
    x = torch.randn(8, 12).to("tpu")
    with torch.no_grad():
        assert_identical(torch.compile(compiled, backend="tpu")(x), eager(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_mlp_training_step_gradients_are_bit_exact(dtype):
    (eager, _), (compiled, _) = twins(lambda: MLP().to(dtype=dtype))
    x, y = torch.randn(8, 12).to("tpu", dtype), torch.randint(0, 5, (8,)).to("tpu")
    step = torch.compile(lambda x, y: cross_entropy(compiled(x), y), backend="tpu")
    loss = step(x, y)
    loss.backward()
    expected = cross_entropy(eager(x), y)
    expected.backward()
    assert_identical(loss, expected)
    for got, want in zip(compiled.parameters(), eager.parameters()):
        assert_identical(got.grad, want.grad)


def test_cnn_training_steps_match_eager_with_eager_kernels_for_conv_batch_norm_and_pooling():
    """Convolution, batch norm and max pooling run their eager kernels inside the program; AOTAutograd
    decomposes batch norm's backward, so gradients agree to float32 rounding, the loss bit for bit."""
    optimizer = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9)
    (eager, eager_opt), (compiled, compiled_opt) = twins(SmallCNN, optimizer)
    step = torch.compile(lambda x, y: cross_entropy(compiled(x), y), backend="tpu")
    x, y = torch.randn(4, 3, 8, 8).to("tpu"), torch.randint(0, 4, (4,)).to("tpu")
    for _ in range(3):
        eager_opt.zero_grad()
        compiled_opt.zero_grad()
        loss, expected = step(x, y), cross_entropy(eager(x), y)
        loss.backward()
        expected.backward()
        assert_close(loss.cpu(), expected.cpu(), rtol=1e-6, atol=0)
        for got, want in zip(compiled.parameters(), eager.parameters()):
            assert_close(got.grad.cpu(), want.grad.cpu(), rtol=1e-6, atol=1e-6)
        assert_identical(compiled.norm.running_var, eager.norm.running_var)
        eager_opt.step()
        compiled_opt.step()


def test_gpt_loss_and_gradients_match_eager_every_step():
    optimizer = functools.partial(torch.optim.SGD, lr=0.1)
    (eager, eager_opt), (compiled, compiled_opt) = twins(GPT, optimizer)
    model = torch.compile(compiled, backend="tpu")
    tokens, targets = gpt_tokens()
    for _ in range(3):
        for opt in (eager_opt, compiled_opt):
            opt.zero_grad()
        loss, expected = model(tokens, targets), eager(tokens, targets)
        loss.backward()
        expected.backward()
        assert_close(loss.cpu(), expected.cpu(), rtol=1e-6, atol=0)
        for got, want in zip(compiled.parameters(), eager.parameters()):
            assert_close(got.grad.cpu(), want.grad.cpu(), rtol=1e-6, atol=1e-7)
        eager_opt.step()
        compiled_opt.step()


def test_gpt_full_train_step_with_compiled_optimizer_is_bit_exact_against_its_graph_on_eager_kernels():
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-2, foreach=True)
    (reference, reference_opt), (compiled, compiled_opt) = twins(GPT, optimizer)
    oracle = same_graph_on_eager_kernels()
    reference_model, reference_step = torch.compile(reference, backend=oracle), torch.compile(reference_opt.step, backend=oracle)
    model, step = torch.compile(compiled, backend="tpu"), torch.compile(compiled_opt.step, backend="tpu")
    tokens, targets = gpt_tokens()
    for _ in range(3):
        reference_opt.zero_grad()
        compiled_opt.zero_grad()
        expected, loss = reference_model(tokens, targets), model(tokens, targets)
        expected.backward()
        loss.backward()
        reference_step()
        step()
        assert_identical(loss, expected)
        for got, want in zip(compiled.parameters(), reference.parameters()):
            assert_identical(got, want)


def test_compiled_adamw_step_matches_eager_adamw():
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-2, foreach=True)
    (eager, eager_opt), (compiled, compiled_opt) = twins(MLP, optimizer)
    x, y = torch.randn(8, 12).to("tpu"), torch.randint(0, 5, (8,)).to("tpu")
    step = torch.compile(compiled_opt.step, backend="tpu")
    for _ in range(3):
        for model, opt in ((eager, eager_opt), (compiled, compiled_opt)):
            opt.zero_grad()
            cross_entropy(model(x), y).backward()
        eager_opt.step()
        step()
        for got, want in zip(compiled.parameters(), eager.parameters()):
            assert_close(got.cpu(), want.cpu(), rtol=1e-6, atol=1e-6)


@pytest.mark.usefixtures("paused_collector")
def test_compiled_step_frees_what_eager_frees_and_peaks_no_higher():
    (eager, _), (compiled, _) = twins(GPT)
    model = torch.compile(compiled, backend="tpu")
    tokens, targets = gpt_tokens()

    def step_peak(run):
        torch.tpu.synchronize()
        before = torch.tpu.memory_allocated()
        torch.tpu.reset_peak_memory_stats()
        run(tokens, targets).backward()
        return torch.tpu.max_memory_allocated() - before, torch.tpu.memory_allocated() - before

    model(tokens, targets).backward()  # compile outside the measurement; gradients now exist in both
    eager(tokens, targets).backward()
    eager_peak, eager_kept = step_peak(eager)
    compiled_peak, compiled_kept = step_peak(model)
    assert compiled_kept == eager_kept == 0
    assert compiled_peak <= eager_peak


def test_compiled_sum_follows_the_thread_count_set_after_compiling():
    """A compiled sum looks up its plan when the program is made (``reduction.direct_summer``); past GRAIN_SIZE
    CPU's bits follow the thread count (here 8 threads split 38 columns into runs shorter than a vector), so a
    count set afterwards (dynamo guards it: the program is made anew) gets CPU's bits for that count, not the ones
    of the count the plan was made for."""
    x = torch.randn(1100, 38, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = (x * torch.logspace(-3, 3, 38, dtype=torch.float64)).float()
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        summed = torch.compile(lambda t: t.sum(0), backend="tpu")
        one_thread = x.sum(0)
        assert torch.equal(summed(x.to("tpu")).cpu(), one_thread)
        torch.set_num_threads(8)
        eight_threads = x.sum(0)
        assert not torch.equal(eight_threads, one_thread)  # the data tells the two apart
        assert torch.equal(summed(x.to("tpu")).cpu(), eight_threads)
    finally:
        torch.set_num_threads(previous)
