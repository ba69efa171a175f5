"""Batched horizontal launches (torch_tpu/compile/batching.py): a compiled optimizer step that runs each
op once over all parameters equals the unrolled one bit for bit, charges the chip the same and holds the
same HBM; kernels that are not isomorphic stay unrolled and correct."""

import functools
import re
import types

import numpy as np
import pytest
import torch
from torch.testing import assert_close

import torch_tpu
from differential import assert_identical
from torch_tpu.compile import batching, codegen, debug, lowering

pytestmark = [pytest.mark.filterwarnings("ignore:Profiler record function"),
              pytest.mark.usefixtures("paused_collector")]  # the steps' HBM is compared byte for byte

BATCHED = "one call per op over"  # what the generated source says where a launch runs batched
HOST_BATCHED = "host scalars"  # ... and where one foreach op's host scalars (step counts, bias corrections) do
SHAPES = [(4, 3), (3,), (5, 4), (2, 2, 3)]


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    debug.clear()
    yield
    torch._dynamo.reset()


def train(make_optimizer, dtypes, batched, monkeypatch, steps=3, skew_step=False, moved=False, history_steps=0,
          shapes=SHAPES, after_first_step=None):
    """Parameters, optimizer state, chip seconds, HBM (peak, kept) and the program sources after ``steps``
    compiled optimizer steps on fixed gradients, batched or unrolled (with ``moved``, the second parameter gets
    new memory, ``.data =`` a copy, after the first step; memory history recorded over the first
    ``history_steps``; ``after_first_step(optimizer)`` called after the first step)."""
    torch._dynamo.reset()
    debug.clear()
    with monkeypatch.context() as patch:
        if not batched:
            patch.setattr(codegen, "plan_batches", lambda *args: [])
            patch.setattr(codegen, "plan_host_batches", lambda *args: {})
        generator = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(shape, generator=generator).to(dtype).to("tpu"))
                  for shape, dtype in zip(shapes, dtypes)]
        optimizer = make_optimizer(params)
        step = torch.compile(optimizer.step, backend="tpu")
        chip = torch_tpu._C.current_chip()
        torch.tpu.synchronize()
        start_seconds, start_bytes = chip.clock.busy_seconds, torch.tpu.memory_allocated()
        torch.tpu.reset_peak_memory_stats()
        for index in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator).to(p.dtype).to("tpu")
            recording = index < history_steps
            if recording:
                torch.tpu.memory._record_memory_history()
            try:
                step()
            finally:
                if recording:
                    torch.tpu.memory._record_memory_history(enabled=None)
            if skew_step and index == 0:  # one parameter's step count differs from the others' from now on
                optimizer.state[params[0]]["step"] += 3
            if moved and index == 0:
                params[1].data = params[1].data.clone()
            if after_first_step is not None and index == 0:
                after_first_step(optimizer)
        torch.tpu.synchronize()
        sources = [program.source for program in torch_tpu.compile.last_programs()]
        costs = [[(name, cost.bytes_read, cost.bytes_written, cost.vpu_ops) for name, _, cost in program.kernels]
                 for program in torch_tpu.compile.last_programs()]
        memory = (torch.tpu.max_memory_allocated() - start_bytes, torch.tpu.memory_allocated() - start_bytes)
        state = [value for p in params for value in optimizer.state[p].values() if isinstance(value, torch.Tensor)]
        return params, state, chip.clock.busy_seconds - start_seconds, memory, sources, costs


OPTIMIZERS = {
    "adamw": functools.partial(torch.optim.AdamW, lr=1e-2, weight_decay=0.1, foreach=True),
    "sgd_momentum": functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, weight_decay=0.01, foreach=True),
    "adam_amsgrad": functools.partial(torch.optim.Adam, lr=1e-2, amsgrad=True, weight_decay=0.01, foreach=True),
}


def assert_same_step(batched, unrolled):
    params, state, seconds, memory, _, costs = batched
    want_params, want_state, want_seconds, want_memory, _, want_costs = unrolled
    for got, want in zip(params + state, want_params + want_state, strict=True):
        assert_identical(got, want)
    # the same charge reaches the chip's clock (each run subtracts a different running total: rounding only)
    assert seconds == pytest.approx(want_seconds, rel=1e-9)
    assert memory == want_memory  # and the same HBM is held, at the peak and after
    assert costs == want_costs


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_batched_step_equals_unrolled_step_bit_for_bit(name, monkeypatch):
    dtypes = [torch.float32] * len(SHAPES)
    batched = train(OPTIMIZERS[name], dtypes, True, monkeypatch)
    unrolled = train(OPTIMIZERS[name], dtypes, False, monkeypatch)
    assert any(BATCHED in source for source in batched[4]), "the launch did not run batched"
    assert not any(BATCHED in source or HOST_BATCHED in source for source in unrolled[4])
    # Adam's step counts and bias corrections run as one call per op as well (SGD has none)
    assert any(HOST_BATCHED in source for source in batched[4]) == name.startswith("adam")
    assert_same_step(batched, unrolled)


def test_unequal_step_counts_fall_back_to_the_unrolled_kernels(monkeypatch):
    dtypes = [torch.float32] * len(SHAPES)
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch, skew_step=True)
    unrolled = train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch, skew_step=True)
    assert any("same_scalars(" in source for source in batched[4])
    # the host scalars stay batched: unequal step counts are just different elements of one array
    assert any(HOST_BATCHED in source for source in batched[4])
    assert_same_step(batched, unrolled)


def test_step_scalars_are_checked_over_their_host_batch_in_one_call(monkeypatch):
    """AdamW's per-parameter bias corrections are one host batch: the batched launch checks its flat array, not
    one array per parameter; unequal step counts still fall back (the test above)."""
    batched = train(OPTIMIZERS["adamw"], [torch.float32] * len(SHAPES), True, monkeypatch)
    checks = [line for source in batched[4] for line in source.splitlines() if "same_scalars(" in line]
    assert checks and all(re.search(r"same_scalars\((flat_\d+, )*flat_\d+\)", line) for line in checks), checks


@pytest.mark.parametrize("skew_step", [False, True])
def test_new_step_counts_are_stored_from_their_host_batch_in_one_line(skew_step, monkeypatch):
    """AdamW's step counts (0-d CPU tensors) get their new values from the host batch's flat array in one
    ``copy_each`` line, not one copy kernel per parameter; each count lands in its own tensor (the copies come in
    another order than the batch's members, and unequal counts show a mix-up)."""
    batched = train(OPTIMIZERS["adamw"], [torch.float32] * len(SHAPES), True, monkeypatch, skew_step=skew_step)
    program = next(source for source in batched[4] if "copy_each(" in source)
    assert program.count("copy_each(") == 1 and "k_copy_" not in program
    steps = [state for state in batched[1] if state.device.type == "cpu"]
    assert [float(s) for s in steps] == [6.0 if skew_step else 3.0] + [3.0] * (len(SHAPES) - 1)


def host_copies_graph():
    """Two host scalars t1, t2 get new values m1, m2 (one host batch) by two copy_ nodes; a batched launch of kernels
    ``a`` (before the first copy, reading t2) and ``b`` (between the copies) runs where ``b`` stands. As the arguments
    of plan_host_copies, without the launches."""
    graph = torch.fx.Graph()
    aten = torch.ops.aten
    t1, t2 = graph.placeholder("t1"), graph.placeholder("t2")
    m1, m2 = (graph.call_function(aten.add.Tensor, (t, 1)) for t in (t1, t2))
    a = graph.call_function(aten.neg.default, (t2,))
    copy1 = graph.call_function(aten.copy_.default, (t1, m1))
    b = graph.call_function(aten.neg.default, (m1,))
    copy2 = graph.call_function(aten.copy_.default, (t2, m2))
    nodes = list(graph.nodes)
    for node in nodes:
        node.meta["val"] = torch.zeros(())
    lowered = {node: types.SimpleNamespace(writes=None, inputs=list(node.args)) for node in nodes}
    lowered[copy1] = types.SimpleNamespace(writes=t1, inputs=[m1])
    lowered[copy2] = types.SimpleNamespace(writes=t2, inputs=[m2])
    batch = batching.HostBatch([m1, m2], np.zeros(2, np.float32), [np.zeros((), np.float32)] * 2)
    position = {node: index for index, node in enumerate(nodes)}
    arguments = (nodes, lowered, {copy1: "inplace", copy2: "inplace"}, position, lambda node: node,
                 {m1: batch, m2: batch})
    launch = batching.BatchPlan([[a], [b]], position[a], position[b], {t2}, set(), [])
    return arguments, launch, (copy1, copy2)


def test_host_copies_stay_apart_when_a_batched_launch_between_them_reads_a_later_copys_target():
    """The stores all happen where the first copy stands; the launch, emitted at ``b`` after it, would read t2's new
    value where ``a`` read its old one."""
    arguments, launch, copies = host_copies_graph()
    assert set(batching.plan_host_copies(*arguments, [])) == set(copies)  # without the launch: one store line
    assert batching.plan_host_copies(*arguments, [launch]) == {}
    written = batching.BatchPlan(launch.members, launch.start, launch.end, set(), launch.reads, [])
    assert batching.plan_host_copies(*arguments, [written]) == {}  # the stores would come before its write


def test_host_copies_batch_when_a_launch_reading_their_targets_runs_before_them():
    arguments, launch, copies = host_copies_graph()
    before = batching.BatchPlan(launch.members[:1], launch.start, launch.start, launch.reads, set(), [])  # at ``a``
    assert set(batching.plan_host_copies(*arguments, [before])) == set(copies)


def test_copy_each_stores_the_bits_as_they_are():
    targets = tuple(np.zeros((), np.float32) for _ in range(3))
    flat = np.array([0x7fa00001, 0x80000000, 0x3f800000], np.uint32).view(np.float32)  # signalling NaN, -0.0, 1
    batching.copy_each(targets, flat)
    assert [int(t.view(np.uint32)) for t in targets] == [0x7fa00001, 0x80000000, 0x3f800000]


@pytest.mark.parametrize("values, same", [([2.5, 2.5, 2.5], True), ([2.5, 2.5, 3.0], False),
                                          ([0.0, -0.0, 0.0], False), ([float("nan")] * 3, True)])
def test_same_scalars_compares_a_flat_array_byte_for_byte(values, same):
    flat = np.array(values, np.float32)
    members = tuple(flat[i:i + 1] for i in range(flat.size))
    assert batching.same_scalars(flat) == batching.same_scalars(members) == same
    quiet, payload = np.array([np.nan, np.nan], np.float32), np.array([0x7fc00000, 0x7fc00001], np.uint32)
    assert batching.same_scalars(quiet) and not batching.same_scalars(payload.view(np.float32))


def test_mixed_dtype_parameters_stay_correct(monkeypatch):
    dtypes = [torch.bfloat16, torch.float32, torch.bfloat16, torch.float32]
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch)
    unrolled = train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch)
    # one launch over both dtypes: each dtype's kernels batch on their own
    assert sum(source.count(BATCHED) for source in batched[4]) == 2
    assert_same_step(batched, unrolled)
    assert {p.dtype for p in batched[0]} == {torch.bfloat16, torch.float32}


def foreach_update(tensors):
    torch._foreach_mul_(tensors, 0.5)
    torch._foreach_add_(tensors, 1.25)


@pytest.mark.parametrize("dtypes, batched", [((torch.float32, torch.float32), True),
                                             ((torch.bfloat16, torch.float32), False)])
def test_a_launch_batches_only_when_its_kernels_are_isomorphic(dtypes, batched):
    generator = torch.Generator().manual_seed(0)
    cpu = [torch.randn(shape, generator=generator).to(dtype) for shape, dtype in zip(SHAPES, dtypes)]
    eager, compiled = [t.to("tpu") for t in cpu], [t.to("tpu") for t in cpu]
    foreach_update(eager)
    foreach_update(cpu)
    torch.compile(foreach_update, backend="tpu")(compiled)
    assert any(BATCHED in p.source for p in torch_tpu.compile.last_programs()) == batched
    for got, want, reference in zip(compiled, eager, cpu):
        assert_identical(got, want)
        assert_close(got.cpu(), reference, rtol=0, atol=0)


def test_a_launch_reuses_its_flat_arrays_once_their_last_reader_ran(monkeypatch):
    """AdamW's batched launch writes a later op's result (or gathered input) into the flat array of a value no op
    reads any more (fewer arrays, still in cache), never into one of the op's own operands; the step's bits are
    unchanged (the test above)."""
    train(OPTIMIZERS["adamw"], [torch.float32] * len(SHAPES), True, monkeypatch)
    program = next(record.program for record in torch_tpu.compile.last_programs() if BATCHED in record.source)
    namespace = program.generated.namespace
    flat_names = {name for name in namespace if re.fullmatch(r"(batched|gathered)_\d+", name)}
    assert len({id(namespace[name]) for name in flat_names}) < len(flat_names)
    for line in program.source.splitlines():
        names = re.findall(r"\b(?:batched|gathered)_\d+\b", line)
        written = re.search(r"out=((?:batched|gathered)_\d+)|k_batched_\w+\((batched_\d+)", line)
        if written is None:
            continue
        target = next(group for group in written.groups() if group)
        operands = [name for name in names if name != target]
        assert all(namespace[name] is not namespace[target] for name in operands), line


def assert_side_by_side(tensors):
    """Each tensor's memory right after the one before it, at the next 64-byte boundary (as every allocation's)."""
    for before, after in zip(tensors, tensors[1:]):
        assert after.data_ptr() % 64 == 0
        assert after.data_ptr() == before.data_ptr() + -(-before.nbytes // 64) * 64


def test_an_optimizer_updates_its_parameters_and_moments_where_they_live(monkeypatch):
    """From its second call on, the batched AdamW launch runs over its parameters' and moments' own memory: the
    first call lays each group's HBM buffers side by side in one host array (``batching.Colocation``; nothing is
    allocated or freed), so the launch neither gathers them nor copies its results back; the bits, charges and
    HBM are the unrolled step's (``assert_same_step``)."""
    dtypes = [torch.float32] * len(SHAPES)
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch)
    assert_same_step(batched, train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch))
    params, state = batched[0], batched[1]
    moments = [[s for s in state if s.device.type == "tpu"][k::2] for k in (0, 1)]  # exp_avg, exp_avg_sq
    for group in [params] + moments:
        assert_side_by_side(group)  # (SHAPES' first parameter, 12 floats, leaves a gap of 16 bytes)
    program = next(source for source in batched[4] if BATCHED in source)
    assert ".holds((" in program and "copyto(colocated_" not in program.split(".holds((")[1].split("else:")[0]


def test_a_parameter_given_new_memory_after_the_layout_is_gathered_and_laid_out_again(monkeypatch):
    dtypes = [torch.float32] * len(SHAPES)
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch, moved=True)
    assert_same_step(batched, train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch, moved=True))
    assert_side_by_side(batched[0])  # the call after the .data = gathered, then moved the new memory into its part


def test_a_part_still_backing_a_live_tensor_is_not_given_to_another(monkeypatch):
    """A parameter given new memory by ``.data =`` while its old tensor is still held keeps its new memory: the
    layout does not move it into the part backing the old one (both would share one block), and the old tensor
    keeps its values."""
    kept = []  # per run, the old tensor and its values (each run's own: the HBM held is compared)

    def replace_keeping_the_old(optimizer):
        param = optimizer.param_groups[0]["params"][1]
        kept.append((param.data, param.data.cpu()))
        param.data = param.data.clone()

    dtypes = [torch.float32] * len(SHAPES)
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch, after_first_step=replace_keeping_the_old)
    assert_same_step(batched, train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch,
                                    after_first_step=replace_keeping_the_old))
    old, value = kept[0]
    assert_identical(old, value.to("tpu"))
    assert batched[0][1].data_ptr() != old.data_ptr()


def test_an_empty_parameter_leaves_the_others_laid_out(monkeypatch):
    """A parameter with no elements has no memory to move: the others are laid out and updated where they live
    (an empty one refused the whole layout, and its part could never hold it, so every call gathered)."""
    shapes = [(4, 3), (0,), (5, 4), (2, 2, 3)]
    dtypes = [torch.float32] * len(shapes)
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch, shapes=shapes)
    program = next(record.program for record in torch_tpu.compile.last_programs() if BATCHED in record.source)
    assert_same_step(batched, train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch, shapes=shapes))
    params = batched[0]
    assert_side_by_side([params[0], params[2], params[3]])
    colocation = next(value for name, value in program.generated.namespace.items() if name.startswith("colocation_"))
    assert colocation.holds(tuple(params))


def test_rehoming_an_allocation_moves_its_bytes_and_nothing_else(memory_baseline):
    hbm = torch_tpu._C.current_chip().hbm
    tensor = torch.arange(6, dtype=torch.float32, device="tpu")
    buffer = tensor.untyped_storage()._tpu_hbm_buffer
    stats, events = torch.tpu.memory_stats(), len(hbm.events)
    home = np.empty(buffer.nbytes, np.uint8)
    assert not hbm.rehome(buffer, home[:-4])  # not its size
    assert hbm.rehome(buffer, home)
    assert tensor.data_ptr() == home.ctypes.data
    assert torch.tpu.memory_stats() == stats and len(hbm.events) == events  # no allocation, no free
    assert_identical(tensor, torch.arange(6, dtype=torch.float32, device="tpu"))


def test_a_rehomed_block_is_not_pooled_when_its_tensor_dies(memory_baseline):
    """A moved block is a part of a program's flat array: pooled, the next allocation of its size would get an
    unaligned address and keep the whole array alive."""
    hbm = torch_tpu._C.current_chip().hbm
    tensor = torch.zeros(3, 4, device="tpu")
    home = np.empty(tensor.nbytes + 16, np.uint8)[16:]  # as a part at an unaligned offset of a flat array
    assert hbm.rehome(tensor.untyped_storage()._tpu_hbm_buffer, home)
    cached = hbm.pool.cached_bytes
    del tensor
    assert hbm.pool.cached_bytes == cached
    assert torch.empty(4, 3, device="tpu").data_ptr() % 64 == 0


def test_a_layout_refused_while_memory_history_is_recorded_is_made_once_it_stops(monkeypatch):
    """Recording memory history over the first step (a common way to look at it) refuses the move of the inputs'
    memory (its frees must name the addresses its allocations did); the steps after the recording stops run where
    the inputs live, with the unrolled step's bits."""
    dtypes = [torch.float32] * len(SHAPES)
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch, history_steps=1)
    assert_same_step(batched, train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch, history_steps=1))
    assert_side_by_side(batched[0])


def test_two_programs_over_the_same_parameters_do_not_take_them_from_each_other_every_call(monkeypatch):
    """A second compiled optimizer over the same parameters (or a recompiled step) takes the memory the first laid
    out once; called in turn, neither moves it again (each call moved every parameter back and forth), and both
    steps keep the unrolled steps' bits."""
    moves = []
    rehome = torch_tpu._C.hbm.HBM.rehome
    monkeypatch.setattr(torch_tpu._C.hbm.HBM, "rehome",
                        lambda hbm, buffer, block: moves.append(1) or rehome(hbm, buffer, block))

    def run(batched):
        torch._dynamo.reset()
        with monkeypatch.context() as patch:
            if not batched:
                patch.setattr(codegen, "plan_batches", lambda *args: [])
                patch.setattr(codegen, "plan_host_batches", lambda *args: {})
            generator = torch.Generator().manual_seed(0)
            params = [torch.nn.Parameter(torch.randn(shape, generator=generator).to("tpu")) for shape in SHAPES]
            for param in params:
                param.grad = torch.randn(param.shape, generator=generator).to("tpu")
            steps = [torch.compile(optimizer.step, backend="tpu")
                     for optimizer in (torch.optim.AdamW(params, lr=1e-2, foreach=True),
                                       torch.optim.SGD(params, lr=0.1, momentum=0.9, foreach=True))]
            moved = []
            for _ in range(5):
                moves.clear()
                for step in steps:
                    step()
                moved.append(len(moves))
            return [param.detach().cpu() for param in params], moved

    batched, moved = run(True)
    for got, want in zip(batched, run(False)[0]):
        assert torch.equal(got, want)
    assert moved[0] > 0 and moved[-2:] == [0, 0], moved


@pytest.mark.parametrize("dtype, computed_into", [(torch.float32, True), (torch.float64, False)])
def test_a_result_is_computed_into_its_input_only_with_its_dtype(dtype, computed_into):
    """``copy_`` casts: a result of another dtype computed straight into the float32 input's flat array would be
    rounded at each step of its kernel, not once by the copy (``codegen._written_in_place`` has the same guard).
    Two kernels, each a pointwise op over its input and the ``copy_`` of its result into it."""
    graph = torch.fx.Graph()
    lowered, members = {}, []
    for k in range(2):
        held, made = graph.placeholder(f"held{k}"), graph.placeholder(f"made{k}")
        held.meta["val"], made.meta["val"] = torch.empty(3), torch.empty(3, dtype=dtype)
        copy_ = graph.placeholder(f"copy{k}")
        lowered[made] = types.SimpleNamespace(writes=None, inputs=[held], kind=lowering.POINTWISE)
        lowered[copy_] = types.SimpleNamespace(writes=held, inputs=[made], kind=lowering.POINTWISE)
        members.append([made, copy_])
    first = members[0]
    operands_of = [batching._operands(i, node, members, lowered) for i, node in enumerate(first)]
    homes = {tuple(lowered[copy_].writes for _, copy_ in members): "colocated_1"}
    into = batching._computed_into(first, lowered, members, homes, batching._last_reads(first, lowered, operands_of))
    assert into == ({0: "colocated_1"} if computed_into else {})


def warm_started_steps(make_optimizer, start, batched, monkeypatch, steps=3):
    """(compiled parameters and state, eager twins' parameters and state) after each of ``steps`` optimizer steps,
    the compiled step traced with the state already present: after one eager step (``start`` "eager_step") or
    after ``load_state_dict`` of a checkpoint (Dynamo then moves the CPU step counts to the device), and the
    compiled steps' HBM (peak and kept) and the program sources."""
    torch._dynamo.reset()
    debug.clear()
    generator = torch.Generator().manual_seed(0)
    values = [torch.randn(shape, generator=generator) for shape in SHAPES]
    twins = [[torch.nn.Parameter(value.to("tpu")) for value in values] for _ in range(2)]
    optimizers = [make_optimizer(params) for params in twins]

    def set_grads():
        grads = [torch.randn(value.shape, generator=generator) for value in values]
        for params in twins:
            for p, grad in zip(params, grads):
                p.grad = grad.to("tpu")

    if start == "eager_step":
        set_grads()
        for optimizer in optimizers:
            optimizer.step()
    else:  # a checkpoint of an optimizer that took one step on CPU
        donors = [torch.nn.Parameter(value.clone()) for value in values]
        donor = make_optimizer(donors)
        for p in donors:
            p.grad = torch.randn(p.shape, generator=generator)
        donor.step()
        for optimizer in optimizers:
            optimizer.load_state_dict(donor.state_dict())
    eager = optimizers[1]  # the oracle runs the maths Dynamo traces: capturable, its step counts on the device
    for group in eager.param_groups:
        group["capturable"] = True
    for p, state in eager.state.items():
        if "step" in state:
            state["step"] = state["step"].to(p.device)
    history, memory = [], []  # per compiled step: HBM at its peak and kept, over what was held before it
    with monkeypatch.context() as patch:
        if not batched:
            patch.setattr(codegen, "plan_batches", lambda *args: [])
        step = torch.compile(optimizers[0].step, backend="tpu")
        for _ in range(steps):
            set_grads()
            torch.tpu.synchronize()
            before = torch.tpu.memory_allocated()
            torch.tpu.reset_peak_memory_stats()
            step()
            memory.append((torch.tpu.max_memory_allocated() - before, torch.tpu.memory_allocated() - before))
            eager.step()
            history.append([[t.clone() for p in params for t in [p] + [v for v in optimizer.state[p].values()
                                                                      if isinstance(v, torch.Tensor)]]
                            for params, optimizer in zip(twins, optimizers)])
    return history, memory, [program.source for program in torch_tpu.compile.last_programs()]


@pytest.mark.parametrize("start", ["eager_step", "load_state_dict"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_a_step_traced_with_its_state_present_is_batched_and_equals_eager(name, start, monkeypatch):
    """Traced with its state present, an optimizer step reads its step counts as device tensors (Dynamo moves them
    there) and its bias corrections as one-element device tensors: the launch batches all the same, and every step
    equals eager's."""
    history, memory, sources = warm_started_steps(OPTIMIZERS[name], start, True, monkeypatch)
    assert any(BATCHED in source for source in sources), "the launch did not run batched"
    for compiled, eager in history:
        for got, want in zip(compiled, eager, strict=True):
            assert_identical(got, want)
    assert memory == warm_started_steps(OPTIMIZERS[name], start, False, monkeypatch)[1]  # as unrolled holds it


def test_a_launch_over_more_elements_than_the_host_cache_holds_batches_in_runs(monkeypatch):
    """Kernels of more than ``BATCH_ELEMENTS`` elements together batch in consecutive runs of at most that many (the
    float64 temporaries of a larger run leave the host's L2), each run bit for bit the unrolled kernels."""
    shapes = [(4, 3), (3,), (4, 3), (3,), (20,)]
    dtypes = [torch.float32] * len(shapes)
    monkeypatch.setattr(batching, "BATCH_ELEMENTS", 15)  # (4, 3) and (3,) together; (20,) alone, unrolled
    batched = train(OPTIMIZERS["adamw"], dtypes, True, monkeypatch, shapes=shapes)
    launches = [line for source in batched[4] for line in source.splitlines() if BATCHED in line]
    assert len(launches) == 2 and all("over the 2 kernels" in line for line in launches)
    assert_same_step(batched, train(OPTIMIZERS["adamw"], dtypes, False, monkeypatch, shapes=shapes))
