"""Every reduce op of the "ici" group's reductions against gloo's, in one process.

A simulated world (``torch_tpu.simulate``) gives the values a collective would have if every rank held this
rank's tensors. gloo itself is the oracle: ``WORLD`` gloo ranks run as threads of this process, each holding a
copy of the same CPU tensor. For each reduction, reduce op and dtype gloo computes, the tpu result must equal
gloo's rank 0 bit for bit, and where gloo refuses (a bitwise op on a floating tensor, an average of integers),
the "ici" group must refuse too, with gloo's error class and words, before anything moves. Each reduction is
counted once under its c10d op by CommDebugMode, whatever its reduce op. DDP's options that need the C++
hooks' pinned memory are refused with a clear error (``torch_tpu/distributed/data_parallel.py``).
"""

import threading

import pytest
import torch
import torch.distributed as dist
from torch.distributed.tensor.debug import CommDebugMode

import torch_tpu

c10d = torch.ops.c10d
OPS = [dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.PRODUCT, dist.ReduceOp.MIN, dist.ReduceOp.MAX,
       dist.ReduceOp.BAND, dist.ReduceOp.BOR, dist.ReduceOp.BXOR]
DTYPES = [torch.float32, torch.float64, torch.int64, torch.int32, torch.int8, torch.uint8, torch.bool]


def _input(dtype):
    return torch.tensor([3, 0, 1, 2, 5, 7]).to(dtype)


def _gloo_options(kind, op):
    options = {"all_reduce": dist.AllreduceOptions, "reduce_scatter_tensor": dist.ReduceScatterOptions,
               "reduce": dist.ReduceOptions}[kind]()
    options.reduceOp = op
    return options


def _gloo_call(backend, kind, tensor, op, world):
    """``kind`` on one gloo rank; returns that rank's result."""
    options = _gloo_options(kind, op)
    if kind == "all_reduce":
        backend.allreduce([tensor], options).wait()
        return tensor
    if kind == "reduce":
        options.rootRank = 0
        backend.reduce([tensor], options).wait()
        return tensor
    output = torch.empty(tensor.numel() // world, dtype=tensor.dtype)
    backend._reduce_scatter_base(output, tensor, options).wait()
    return output


def _gloo_rank_0(kind, cases, world):
    """What gloo's rank 0 gets for each (tensor, op) of ``cases`` when all ``world`` ranks hold the tensor: its
    result, or its exception (a refusal moves nothing, so the ranks go on to the next case)."""
    store, results = dist.HashStore(), [None] * world

    def rank_main(rank):
        backend, mine = dist.ProcessGroupGloo(store, rank, world), []
        for tensor, op in cases:
            try:
                mine.append(_gloo_call(backend, kind, tensor.clone(), op, world))
            except RuntimeError as failure:
                mine.append(failure)
        results[rank] = mine

    threads = [threading.Thread(target=rank_main, args=(rank,)) for rank in range(world)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results[0]


def _ici_call(kind, tensor, op, world):
    """``kind`` on rank 0 of the simulated world, on tpu; returns the result on the CPU."""
    if kind == "all_reduce":
        dist.all_reduce(tensor, op=op)
    elif kind == "reduce":
        dist.reduce(tensor, dst=0, op=op)
    else:
        output = torch.empty(tensor.numel() // world, dtype=tensor.dtype, device="tpu")
        dist.reduce_scatter_tensor(output, tensor, op=op)
        tensor = output
    return tensor.cpu()


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("kind", ["all_reduce", "reduce_scatter_tensor", "reduce"])
def test_every_reduce_op_and_dtype_as_gloo_computes_or_refuses_it(kind, world):
    cases = [(_input(dtype), op) for dtype in DTYPES for op in OPS]
    with torch_tpu.simulate(world):
        for (tensor, op), expected in zip(cases, _gloo_rank_0(kind, cases, world), strict=True):
            case = f"{kind} {op} {tensor.dtype} over {world} ranks"
            if isinstance(expected, RuntimeError):
                with pytest.raises(RuntimeError) as refused:
                    _ici_call(kind, tensor.to("tpu"), op, world)
                assert str(expected) in str(refused.value), (case, str(refused.value))
                assert kind in str(refused.value), case  # the error names the collective
            else:
                got = _ici_call(kind, tensor.to("tpu"), op, world)
                assert got.dtype == expected.dtype and torch.equal(got, expected), (case, got, expected)


def test_refused_reduce_ops_name_the_tensors_own_dtype_before_anything_moves():
    with torch_tpu.simulate(2):
        tensor = torch.ones(4, dtype=torch.bfloat16, device="tpu")
        with pytest.raises(RuntimeError, match="Cannot use ReduceOp.BXOR with non-integral dtype"):
            dist.all_reduce(tensor, op=dist.ReduceOp.BXOR)
        assert tensor.cpu().tolist() == [1.0] * 4  # untouched
        with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Short"):
            dist.all_reduce(torch.ones(4, dtype=torch.int16, device="tpu"), op=dist.ReduceOp.AVG)
        dist.all_reduce(torch.ones(4, dtype=torch.int16, device="tpu"), op=dist.ReduceOp.BOR)  # bitwise on ints: fine


@pytest.mark.parametrize("op", OPS)
def test_each_reduce_op_is_counted_once_under_the_collectives_op(op):
    dtype = torch.int64 if op in (dist.ReduceOp.BAND, dist.ReduceOp.BOR, dist.ReduceOp.BXOR) else torch.float32
    with torch_tpu.simulate(2), CommDebugMode() as mode:
        dist.all_reduce(_input(dtype).to("tpu"), op=op)
        dist.reduce_scatter_tensor(torch.empty(3, dtype=dtype, device="tpu"), _input(dtype).to("tpu"), op=op)
        dist.reduce(_input(dtype).to("tpu"), dst=0, op=op)
    assert mode.get_comm_counts() == {c10d.allreduce_: 1, c10d._reduce_scatter_base_: 1, c10d.reduce_: 1}


@pytest.mark.parametrize("option", ["find_unused_parameters", "static_graph"])
def test_ddp_refuses_the_options_that_need_pinned_memory_on_tpu(option):
    from torch.nn.parallel import DistributedDataParallel

    with torch_tpu.simulate(2):
        with pytest.raises(NotImplementedError, match=rf"DistributedDataParallel\({option}=True\) on tpu"):
            DistributedDataParallel(torch.nn.Linear(4, 4).to("tpu"), **{option: True})
        DistributedDataParallel(torch.nn.Linear(4, 4), **{option: True})  # CPU parameters: gloo's business


def test_ddp_refuses_turning_static_graph_on_later_on_tpu():
    from torch.nn.parallel import DistributedDataParallel

    with torch_tpu.simulate(2):
        model = DistributedDataParallel(torch.nn.Linear(4, 4).to("tpu"))
        with pytest.raises(NotImplementedError, match=r"DistributedDataParallel\(static_graph=True\) on tpu"):
            model._set_static_graph()
        assert not model.static_graph
        on_cpu = DistributedDataParallel(torch.nn.Linear(4, 4))
        on_cpu._set_static_graph()  # CPU parameters: gloo's business
        assert on_cpu.static_graph


def _ddp_and_one_device_gradients(hook=None):
    """A Linear's weight gradient under DDP on two simulated chips (with its comm ``hook``), and on one CPU device
    from the same weights and inputs (equal ranks: the averaged gradient is one device's)."""
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    reference = torch.nn.Linear(4, 3)
    inputs = torch.randn(5, 4)
    with torch_tpu.simulate(2):
        model = DistributedDataParallel(torch.nn.Linear(4, 3).to("tpu"))
        model.module.load_state_dict(reference.state_dict())
        if hook is not None:
            model.register_comm_hook(None, hook)
            with pytest.raises(TypeError, match="BF16 all reduce communication hook required"):
                DistributedDataParallel(torch.nn.Linear(4, 3)).register_comm_hook(None, hook)  # CPU: PyTorch's refusal
        model(inputs.to("tpu")).square().sum().backward()
    reference(inputs).square().sum().backward()
    return model.module.weight.grad.cpu(), reference.weight.grad


def test_ddp_without_them_trains_on_tpu_as_one_device():
    torch.testing.assert_close(*_ddp_and_one_device_gradients())


@pytest.mark.parametrize("wrapped", [False, True])
def test_ddp_takes_the_bf16_compression_hooks_on_tpu(wrapped):
    """DDP refuses them without NCCL 2.10+ or XCCL (on CPU too: gloo has no bf16 all-reduce); "ici" has one."""
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    hook = (default_hooks.bf16_compress_wrapper(default_hooks.allreduce_hook) if wrapped
            else default_hooks.bf16_compress_hook)
    on_tpu, on_one_device = _ddp_and_one_device_gradients(hook)
    # each rank sends its gradient in bf16, halved; two equal halves add up to the bf16 gradient
    torch.testing.assert_close(on_tpu, on_one_device.bfloat16().float(), rtol=0, atol=0)
