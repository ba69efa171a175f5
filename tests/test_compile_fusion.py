"""Fusion decisions, their cost on the chip's clock, and golden program dumps of small graphs.

Each case compiles a tiny function and checks which nodes share a kernel (and why others do not),
what the chip is charged (one launch per kernel; HBM bytes only at its boundary), and that the
results equal tpu eager.
"""

import expecttest
import pytest
import torch
from torch.testing import assert_close

import torch_tpu
from torch_tpu.compile import codegen, debug

pytestmark = [pytest.mark.filterwarnings("ignore:Profiler record function"), pytest.mark.usefixtures("fresh_dynamo")]


def compiled_program(fn, *args):
    """Run ``fn`` compiled on tpu copies of ``args``; returns (result, eager result, the inference program)."""
    tpu_args = [a.to("tpu") for a in args]
    result = torch.compile(fn, backend="tpu", fullgraph=True)(*tpu_args)
    assert_close(torch_tpu_to_cpu(result), torch_tpu_to_cpu(fn(*tpu_args)), rtol=0, atol=0)
    (program,) = torch_tpu.compile.last_programs()
    return program


def torch_tpu_to_cpu(result):
    return tuple(r.cpu() for r in result) if isinstance(result, tuple) else result.cpu()


def kernel_nodes(program):
    return [nodes for _, nodes, _ in program.kernels]


def clock_charges(fn, *args):
    """(launches, HBM bytes) the chip is charged for one call of ``fn`` on tpu ``args``."""
    clock = torch_tpu._C.current_chip().clock
    launches, moved = clock.kernels_run, sum(t.bytes for t in clock.op_totals.values())
    fn(*args)
    return clock.kernels_run - launches, sum(t.bytes for t in clock.op_totals.values()) - moved


def test_loop_fusion_makes_an_elementwise_chain_one_kernel():
    program = compiled_program(lambda x: torch.tanh(x * 2 + 1), torch.randn(64, 32))
    assert kernel_nodes(program) == [["mul", "add", "tanh"]]
    assert program.program.generated.homes["mul"] == program.program.generated.homes["add"] == "scratch"


def test_input_fusion_puts_the_producer_into_its_reduction():
    program = compiled_program(lambda x, y: (x * y).sum(1), torch.randn(16, 8), torch.randn(16, 8))
    assert kernel_nodes(program) == [["mul", "sum_1"]]


def test_output_fusion_puts_bias_activation_and_residual_into_the_matmul():
    program = compiled_program(lambda x, w, r: torch.relu(x @ w + 1) + r,
                               torch.randn(8, 16), torch.randn(16, 4), torch.randn(8, 4))
    assert kernel_nodes(program) == [["mm", "add", "relu", "add_1"]]


def test_a_reduction_ends_its_kernel_and_a_matmul_starts_one():
    program = compiled_program(lambda x, w: ((x * 3).sum(1, keepdim=True) * x) @ w,
                               torch.randn(8, 16), torch.randn(16, 4))
    assert kernel_nodes(program) == [["mul", "sum_1"], ["mul_1"], ["mm"]]
    reasons = {(consumer, reason) for consumer, _, reason in program.refusals}
    assert ("mul_1", "a reduction ends its kernel: its consumers start a new one") in reasons


def test_a_value_two_kernels_read_is_computed_once_and_written_out():
    """exp feeds its reduction and the kernel after it: it runs once, and its kernel writes it to HBM."""

    def softmax_like(x):
        e = torch.exp(x)
        return e / e.sum(1, keepdim=True)

    program = compiled_program(softmax_like, torch.randn(8, 16))
    assert kernel_nodes(program) == [["exp", "sum_1"], ["div"]]
    assert program.program.generated.homes["exp"] == "buffer"
    assert program.source.count("exp_") == 1  # one call of the ufunc in the whole program


def test_sibling_kernels_reading_one_value_run_as_one_kernel_that_reads_it_once():
    """Rule 8: two matmuls reading the same computed value (a backward's weight and input gradients)."""

    def siblings(x, w1, w2):
        y = torch.tanh(x)
        return y @ w1, y @ w2, y.sum(0)

    x, w1, w2 = torch.randn(8, 16), torch.randn(16, 4), torch.randn(16, 3)
    program = compiled_program(siblings, x, w1, w2)
    assert sorted(kernel_nodes(program)) == [["mm", "mm_1"], ["tanh", "sum_1"]]
    (matmuls,) = [cost for _, nodes, cost in program.kernels if nodes == ["mm", "mm_1"]]
    assert matmuls.bytes_read == x.nbytes + w1.nbytes + w2.nbytes  # tanh's result read once for both


def test_a_kernel_depending_on_its_sibling_through_a_third_does_not_merge():
    def chained(x, w1, w2):
        y = torch.tanh(x)
        return torch.relu(y @ w1) @ w2.T, y * 2

    program = compiled_program(chained, torch.randn(8, 16), torch.randn(16, 4), torch.randn(3, 4))
    assert ["mm", "relu"] in kernel_nodes(program) and ["mm_1"] in kernel_nodes(program)


def test_row_wise_ops_end_the_kernel_that_produces_their_input():
    """Rule 9: log-softmax over a matmul's rows, layer norm over its epilogue; a reduction's consumer is refused."""
    program = compiled_program(lambda x, w: torch.log_softmax(x @ w, 1), torch.randn(8, 16), torch.randn(16, 4))
    assert kernel_nodes(program) == [["mm", "_log_softmax"]]
    assert program.kernels[0][2].bytes_written == 8 * 4 * 4  # the logits never reach HBM
    debug.clear()
    program = compiled_program(lambda x, w, b: torch.nn.functional.layer_norm(x @ w + 1, (4,), b, b),
                               torch.randn(8, 16), torch.randn(16, 4), torch.randn(4))
    assert kernel_nodes(program) == [["mm", "add", "native_layer_norm"]]
    debug.clear()
    program = compiled_program(lambda x: torch.softmax(x.sum(1), 1), torch.randn(8, 16, 4))
    assert kernel_nodes(program) == [["sum_1"], ["_softmax"]]


def test_relu_backward_is_one_masked_pass_in_the_kernel_of_the_matmul_producing_its_gradient():
    """ReLU's backward is kept whole (not le + fill + where, three kernels and a bool mask in HBM): it joins the
    matmul that computes its incoming gradient as that matmul's epilogue, and equals eager's gradients bit for bit."""
    x, w1, w2 = torch.randn(8, 16), torch.randn(16, 32), torch.randn(32, 4)
    leaves = [t.to("tpu").requires_grad_() for t in (x, w1, w2)]

    def loss(x, w1, w2):
        return (torch.relu(x @ w1) @ w2).square().sum()

    torch.compile(loss, backend="tpu", fullgraph=True)(*leaves).backward()
    compiled = [t.grad.cpu() for t in leaves]
    backward = next(p for p in torch_tpu.compile.last_programs() if p.kind == "backward")
    assert any(nodes[0].startswith("mm") and nodes[-1] == "threshold_backward" for nodes in kernel_nodes(backward))
    assert not any(name in ("le", "where", "scalar_tensor") for nodes in kernel_nodes(backward) for name in nodes)
    for t in leaves:
        t.grad = None
    loss(*leaves).backward()
    for got, expected in zip(compiled, (t.grad.cpu() for t in leaves)):
        assert_close(got, expected, rtol=0, atol=0)


def test_different_iteration_spaces_do_not_loop_fuse():
    program = compiled_program(lambda x, y: (x + 1, y * 2), torch.randn(8, 16), torch.randn(5))
    assert kernel_nodes(program) == [["add"], ["mul"]]


def test_a_fused_kernel_is_one_launch_charged_only_at_its_boundary():
    x = torch.randn(1000).to("tpu")

    def chain(x):
        return torch.tanh(x * 2 + 1)

    compiled = torch.compile(chain, backend="tpu")
    compiled(x)
    assert clock_charges(compiled, x) == (1, 2 * x.nbytes)  # x read once, the result written once
    launches, moved = clock_charges(chain, x)
    assert launches == 3 and moved == 6 * x.nbytes  # eager: every op reads and writes HBM


def test_matmul_flops_are_charged_with_the_fused_epilogue():
    x, w = torch.randn(8, 16).to("tpu"), torch.randn(16, 4).to("tpu")
    compiled = torch.compile(lambda x, w: torch.relu(x @ w), backend="tpu")
    compiled(x, w)
    chip = torch_tpu._C.current_chip()
    before = chip.clock.total_flops
    compiled(x, w)
    assert chip.clock.total_flops - before == 2 * 8 * 16 * 4


def test_planned_buffers_are_reused_by_a_value_of_the_same_size_born_just_after():
    assignment, buffers = codegen.plan_buffers({"a": (0, 2, 64), "b": (3, 5, 64), "c": (4, 9, 64), "d": (20, 21, 64)})
    assert assignment == {"a": 0, "b": 0, "c": 1, "d": 2}
    assert buffers == [(64, 0, 5), (64, 4, 9), (64, 20, 21)]


class GoldenDump(expecttest.TestCase):
    def test_program_dump_of_a_small_graph(self):
        torch._dynamo.reset()
        debug.clear()
        x, w = torch.randn(4, 8).to("tpu"), torch.randn(8, 2).to("tpu")
        torch.compile(lambda x, w: torch.relu(x @ w + 1).sum(), backend="tpu")(x, w)
        (program,) = torch_tpu.compile.last_programs()
        self.assertExpectedInline(program.dump().replace(program.name, "PROGRAM"), """\
== PROGRAM (inference): 2 kernels, 0 eager nodes, buffers 32 bytes
kernel fused_mm_add_relu: mm, add, relu; read 192 B, written 32 B, 128 FLOPs
kernel sum: sum_1; read 32 B, written 4 B
not fused: sum_1 into fused_mm_add_relu: a reduction does not fuse into a matmul kernel
def PROGRAM(args):
    token = ignore_fp_errors()
    try:
        clock = chip.clock; recording = clock.recorders  # a profiler wants each kernel's record
        t_arg0_1 = args[0]
        v_arg0_1 = input_view(t_arg0_1, input_views, 0)
        t_arg1_1 = args[1]
        v_arg1_1 = input_view(t_arg1_1, input_views, 1)
        args.clear()  # AOTAutograd hands its references over: inputs die at their last use
        v_mm = scratch_1
        k_mm_2(v_mm, v_arg0_1, v_arg1_1)
        del t_arg0_1, v_arg0_1
        del t_arg1_1, v_arg1_1
        v_add = scratch_3
        add_5(v_mm, c_4, out=v_add)
        b0 = new_buffer(32, home_7); B0 = b0.array
        v_relu = at_home_8 if B0 is block_6 else ndarray(*slot_9, B0)
        k_relu_10(v_relu, v_add)
        if recording: clock.charge(cost_11, clock.current_stream)
        t_sum_1, v_sum_1 = new_output(shape_12, dtype_13)
        k_sum_1_14(v_sum_1, v_relu)
        if recording: clock.charge(cost_15, clock.current_stream)
        del b0, B0
        if not recording: clock.run_program(program_cost_16, clock.current_stream)
        return [t_sum_1]
    finally:
        restore_fp_errors(token)
""")


    def test_forward_and_backward_kernel_summaries(self):
        torch._dynamo.reset()
        debug.clear()
        x = torch.randn(4, 8).to("tpu")
        w = torch.randn(8, 3).to("tpu").requires_grad_()
        torch.compile(lambda x, w: torch.tanh(x @ w).sum(), backend="tpu")(x, w).backward()
        summaries = "\n".join(p.dump(source=False).replace(p.name, p.kind.upper()) for p in torch_tpu.compile.last_programs())
        self.assertExpectedInline(summaries, """\
== FORWARD (forward): 2 kernels, 0 eager nodes, buffers 48 bytes
kernel fused_mm_tanh: mm, tanh; read 224 B, written 96 B, 192 FLOPs
kernel sum: sum_1; read 48 B, written 4 B
not fused: sum_1 into fused_mm_tanh: a reduction does not fuse into a matmul kernel
== BACKWARD (backward): 2 kernels, 0 eager nodes, buffers 48 bytes
kernel fused_tanh_tanh_backward: tanh, tanh_backward; read 52 B, written 48 B
kernel mm: mm_1; read 176 B, written 96 B, 192 FLOPs""")


def test_the_profiler_shows_each_fused_kernel_as_one_event_named_after_what_it_fuses():
    x, w = torch.randn(8, 16).to("tpu"), torch.randn(16, 4).to("tpu")
    compiled = torch.compile(lambda x, w: torch.relu(x @ w + 1), backend="tpu")
    compiled(x, w)
    with torch_tpu.profiler.profile() as prof:
        compiled(x, w)
    (record,) = prof.kernel_records
    assert record.cost.name == "fused_mm_add_relu"
    assert record.cost.flops == 2 * 8 * 16 * 4
    assert (record.cost.bytes_read, record.cost.bytes_written) == (x.nbytes + w.nbytes, 8 * 4 * 4)  # the scalar 1 is no HBM read
    assert record.end > record.start


def test_the_per_tensor_kernels_of_foreach_ops_launch_as_one_kernel_as_eager_foreach_does():
    """Rule 7: unrolling an optimizer-style foreach update into per-tensor kernels adds no launches."""
    def update(a, b, c, d):
        params = [a, b, c]
        torch._foreach_mul_(params, 0.9)
        torch._foreach_add_(params, [d[:4], d[:6].view(2, 3), d[:1]], alpha=0.1)
        return params

    shapes = [(4,), (2, 3), (1,)]
    args = [torch.randn(shape, device="tpu") for shape in shapes] + [torch.randn(8, device="tpu")]
    eager_launches, eager_bytes = clock_charges(update, *[a.clone() for a in args])
    compiled = torch.compile(update, backend="tpu", fullgraph=True)
    compiled(*[a.clone() for a in args])  # compile outside the measurement
    compiled_launches, compiled_bytes = clock_charges(compiled, *[a.clone() for a in args])
    (program,) = torch_tpu.compile.last_programs()
    (name, nodes, cost) = program.kernels[0]
    assert len(program.kernels) == 1 and name.endswith("_x3") and len(nodes) == 9  # mul, add, write-back each
    assert compiled_launches < eager_launches  # eager: one launch per foreach op; compiled: one for both
    assert compiled_bytes <= eager_bytes
    assert_close([r.cpu() for r in compiled(*[a.clone() for a in args])],
                 [r.cpu() for r in update(*[a.clone() for a in args])], rtol=0, atol=0)


@pytest.mark.slow
def test_the_benchmark_gpt_step_moves_at_most_0_6x_eager_hbm_bytes():
    """Issue 9's HBM target on benchmarks/compile.py's GPT-style step (a figure of the emulated chip, not of the host)."""
    import os
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "benchmarks"))
    from compile import MODELS, chip_figures, training_step

    make_model, make_batch = next(factories for name, factories in MODELS.items() if name.startswith("GPT"))
    eager, compiled = training_step(make_model, make_batch, "tpu"), training_step(make_model, make_batch, "tpu", backend="tpu")
    compiled()  # compile outside the measurement
    (_, eager_bytes, eager_peak), (_, compiled_bytes, compiled_peak) = chip_figures(eager), chip_figures(compiled)
    assert compiled_bytes <= 0.6 * eager_bytes
    assert compiled_peak <= eager_peak
    assert not [name for p in torch_tpu.compile.last_programs() for name, _, _ in p.eager_nodes]
