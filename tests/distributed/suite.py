"""Worker (one process per rank, env:// variables set): the collective, DTensor and SyncBatchNorm checks in one run.

    suite.py            every check, then destroy_process_group() must leave no thread or socket
    suite.py dead       after the checks, rank 1 dies; rank 0's next collective must raise at once

Prints "suite ok" lines (rank 0 adds the thread/socket counts, or what the dead rank's peer saw).
"""

import datetime
import gc
import os
import sys
import threading
import time

import collectives
import dtensor
import sync_batch_norm
import torch
import torch.distributed as dist

import torch_tpu  # noqa: F401


def threads_and_sockets():
    """Threads and open sockets, but the threads that live as long as the process: autograd's device
    threads and the chip's VPU workers (started by the first large kernel)."""
    threads = sum(not open(f"/proc/self/task/{t}/comm").read().startswith("pt_autograd") for t in os.listdir("/proc/self/task"))
    threads -= sum(thread.name.startswith("tpu-vpu") for thread in threading.enumerate())
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return threads, sockets


def check_mismatch_is_caught_and_recoverable(rank):
    """Different collectives on different ranks: every rank raises, naming both calls, and the group
    still works (the check runs before any byte moves)."""
    try:
        if rank == 0:
            dist.all_reduce(torch.ones(4, device="tpu"))
        else:
            dist.broadcast(torch.ones(8, device="tpu"), src=0)
    except RuntimeError as error:
        message = str(error)
    else:
        raise AssertionError("a mismatched collective did not raise")
    assert "the ranks of the group called different collectives" in message, message
    assert "rank 0: all_reduce(float32[4], op SUM)" in message and "broadcast(float32[8], root 0)" in message, message
    assert f"on rank {rank} of process group" in message, message
    recovered = torch.ones(2, device="tpu")
    dist.all_reduce(recovered)
    assert recovered.cpu().tolist() == [float(dist.get_world_size())] * 2


def check_bad_arguments_name_the_collective_and_rank(rank):
    world = dist.get_world_size()
    try:
        dist.all_gather_into_tensor(torch.empty(3, device="tpu"), torch.ones(2, device="tpu"))
    except RuntimeError as error:
        assert f"all_gather_into_tensor on rank {rank}" in str(error) and "has 3 elements" in str(error), error
    try:
        dist.reduce_scatter_tensor(torch.empty(2, device="tpu"), torch.ones(2 * world))
    except RuntimeError as error:
        assert "all tensors must be on one device, got tensors on cpu, tpu:0" in str(error), error
    try:  # locally fine, but rank 0 expects everything from itself while every rank sends it one row
        splits = [world] + [0] * (world - 1) if rank == 0 else [1] * world
        dist.all_to_all_single(torch.empty(world, device="tpu"), torch.ones(world, device="tpu"), splits, [1] * world)
    except RuntimeError as error:
        assert f"all_to_all_single on rank {rank}" in str(error) and "split sizes disagree across ranks" in str(error), error
    else:
        raise AssertionError("inconsistent all_to_all splits did not raise")
    try:
        dist.all_to_all_single(torch.empty(world, device="tpu"), torch.ones(world, device="tpu"), [world + 1] + [0] * (world - 1))
    except RuntimeError as error:
        assert "output split sizes" in str(error) and f"adding up to the output's first dimension ({world})" in str(error), error
    else:
        raise AssertionError("split sizes that do not add up did not raise")
    recovered = torch.ones(2, device="tpu")
    dist.all_reduce(recovered)  # nothing was started: the group still works
    assert recovered.cpu().tolist() == [float(world)] * 2


def _raised(collective):
    try:
        collective()
    except Exception as error:  # noqa: BLE001 (the class is what is checked)
        return error
    raise AssertionError("the collective did not raise")


def check_arguments_refused_on_one_rank_fail_every_rank(rank):
    """Arguments only one rank refuses (an expanded output, a tensor on another device, an output of the wrong
    size, a root outside the group, all-to-all blocks of unequal sizes, which gloo refuses too): that rank raises its own error and every other rank the same class and
    words at once, naming it, where gloo leaves the peers waiting for the timeout; the group still works."""
    world = dist.get_world_size()
    refused = world - 1
    in_place = _raised(lambda: torch.zeros(1).expand(3).add_(1))
    cases = (
        ("all_reduce", RuntimeError, str(in_place),
         lambda mine: dist.all_reduce(mine.expand(world) if rank == refused else torch.ones(world, device="tpu"))),
        ("broadcast", RuntimeError, "tensors on meta are not supported",
         lambda mine: dist.broadcast(torch.ones(2, device="meta" if rank == refused else "tpu"), 0)),
        ("all_gather_into_tensor", RuntimeError, f"the output has {world + 1} elements",
         lambda mine: dist.all_gather_into_tensor(torch.empty(world + (rank == refused), device="tpu"), mine)),
        ("reduce", ValueError, f"the root {world} is not a rank of this group",
         lambda mine: dist.reduce(mine, dst=world if rank == refused else 0)),
        ("all_to_all", RuntimeError, f"tensor {world + 1} has shape [2], expected [1]",
         lambda mine: dist.all_to_all([torch.empty(1 + (rank == refused and i == 1), device="tpu") for i in range(world)],
                                      [mine.clone() for _ in range(world)])),
    )
    for name, kind, words, collective in cases:
        mine = torch.full((1,), float(rank + 1), device="tpu")
        error = _raised(lambda: collective(mine))
        assert type(error) is kind and words in str(error), (name, rank, error)
        if rank != refused:
            assert f"{name} on rank {rank} of process group 'default_pg': rank {refused}'s arguments were refused" \
                in str(error), error
    # dtypes that differ across ranks: every rank lists the calls
    error = _raised(lambda: dist.all_reduce(torch.ones(2, dtype=torch.float32 if rank else torch.float64, device="tpu")))
    assert "called different collectives" in str(error) and "float64[2]" in str(error), error
    recovered = torch.ones(2, device="tpu")
    dist.all_reduce(recovered)
    assert recovered.cpu().tolist() == [float(world)] * 2


class _CountingSends:
    """A transport that counts the bytes of each message it sends."""

    def __init__(self, transport):
        self.transport, self.sent = transport, []

    def send(self, tensors, destination, tag):
        self.sent.append(sum(t.nbytes for t in tensors))
        return self.transport.send(tensors, destination, tag)

    def __getattr__(self, name):
        return getattr(self.transport, name)


def check_point_to_point_refusals_and_mismatches_reach_the_receiver(rank):
    """A send refused on its rank makes its receiver raise the same error at once (gloo leaves the recv waiting
    for the timeout); a recv in another dtype of as many bytes, or of more elements than were sent, raises where
    gloo hands over the bytes as they are (float32 ones read as float64, or the rest left unwritten). The pair
    still works after each."""
    if rank > 1:
        return
    peer = 1 - rank
    cases = (
        (RuntimeError, "send on rank 0 of process group 'default_pg': tensors on meta are not supported",
         lambda: dist.send(torch.ones(4, device="meta"), 1), torch.empty(4, device="tpu")),
        (RuntimeError, "rank 0 sent float32 (4 elements), but this recv takes float64 (2 elements)",
         lambda: dist.send(torch.ones(4, device="tpu"), 1), torch.empty(2, dtype=torch.float64, device="tpu")),
        (RuntimeError, "rank 0 sent float32 (2 elements), but this recv takes float32 (4 elements)",
         lambda: dist.send(torch.ones(2, device="tpu"), 1), torch.empty(4, device="tpu")),
    )
    for kind, words, send, received in cases:
        if rank == 0:
            try:
                send()  # a mismatched send completes: only its receiver can tell
            except kind as error:
                assert words in str(error), error
        else:
            error = _raised(lambda: dist.recv(received, 0))
            assert type(error) is kind and words in str(error) and str(error).startswith(
                "recv on rank 1 of process group 'default_pg': "), (words, error)
        exchanged = torch.empty(3, device="tpu")
        request = dist.irecv(exchanged, peer)
        dist.send(torch.full((3,), float(rank), device="tpu"), peer)
        request.wait()
        assert exchanged.cpu().tolist() == [float(peer)] * 3, exchanged
    # an accepted send's envelope is its 4 int64 fields: 32 bytes before the data (a refused send's carries its words)
    group = dist.group.WORLD
    transport, group._transport = group._transport, _CountingSends(group._transport)
    try:
        if rank == 0:
            dist.send(torch.ones(3, device="tpu"), 1)
        else:
            dist.recv(torch.empty(3, device="tpu"), 0)
        sent = group._transport.sent
    finally:
        group._transport = transport
    assert sent == ([32, 12] if rank == 0 else []), sent
    # tags from 2**30 up would mix with the envelopes' tags: both sides refuse them before anything moves
    tagged = torch.ones(3, device="tpu")
    error = _raised(lambda: dist.send(tagged, 1, tag=2**30) if rank == 0 else dist.recv(tagged, 0, tag=2**30))
    assert type(error) is RuntimeError and "takes tags below 2**30" in str(error), error


def check_monitored_barrier_runs_on_a_gloo_group(rank):
    """c10d keeps monitored_barrier to gloo groups (refusing "ici" as it refuses NCCL); a gloo group made in an
    "ici" world runs it, as users of NCCL do."""
    error = _raised(lambda: dist.monitored_barrier(timeout=datetime.timedelta(seconds=30)))
    assert type(error) is ValueError and "only implemented for GLOO backend" in str(error), error
    dist.monitored_barrier(group=dist.new_group(backend="gloo"), timeout=datetime.timedelta(seconds=30))


def check_power_sgd_hook_gives_its_maths(rank):
    """DDP's PowerSGD hook waits for an all-reduce inside each callback of its chain of futures (gloo on CPU tensors
    hangs there). Its first compressed step of a weight matrix, rank 1 and no error yet, is P Q^T / world with P the
    normalised sum of the ranks' M_r Q0 (Q0 drawn from the state's seed, normalised) and Q the sum of M_r^T P; a 1-D
    bias is averaged as it is. Each rank computes every rank's gradient in float64 on the CPU for that reference."""
    import numpy
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook
    from torch.nn.parallel import DistributedDataParallel

    world = dist.get_world_size()
    torch.manual_seed(0)
    reference = torch.nn.Linear(16, 16).double()
    batches = [(torch.randn(5, 16, dtype=torch.float64), torch.randn(5, 16, dtype=torch.float64)) for _ in range(world)]
    gradients = []
    for inputs, targets in batches:
        reference.zero_grad()
        (reference(inputs) - targets).pow(2).mean().backward()
        gradients.append((reference.weight.grad.clone(), reference.bias.grad.clone()))
    model = DistributedDataParallel(torch.nn.Linear(16, 16).to("tpu"))
    model.module.load_state_dict(reference.state_dict())
    state = powerSGD_hook.PowerSGDState(process_group=None, matrix_approximation_rank=1, start_powerSGD_iter=2)
    model.register_comm_hook(state, powerSGD_hook.powerSGD_hook)
    inputs, targets = batches[rank]
    for _ in range(3):  # two steps of plain all-reduce, then the first compressed one
        model.zero_grad()
        (model(inputs.float().to("tpu")) - targets.float().to("tpu")).pow(2).mean().backward()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(numpy.random.RandomState(0).randint(1_000_000_000))
        q = torch.randn(16, 1).double()
    p = sum(weight @ (q / q.norm()) for weight, _ in gradients)
    p = p / p.norm()
    weight = p @ sum(weight.T @ p for weight, _ in gradients).T / world
    bias = sum(bias for _, bias in gradients) / world
    torch.testing.assert_close(model.module.weight.grad.cpu().double(), weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.module.bias.grad.cpu().double(), bias, rtol=0, atol=1e-6)


def check_a_world_made_again_works(rank):
    """destroy_process_group(), then init_process_group() as under torchrun, whose agent's store (here the suite's,
    on MASTER_PORT) outlives the groups, three times: the groups of each new world have the names of the destroyed
    ones, and gloo's rendezvous under them read the old addresses and timed out connecting (gloo's own groups on
    CPU tensors do so too)."""
    world = dist.get_world_size()
    os.environ["TORCHELASTIC_USE_AGENT_STORE"] = "True"  # env:// connects to the running store, as torchrun's ranks
    for _ in range(3):
        tensor = torch.full((3,), float(rank + 1), device="tpu")
        dist.all_reduce(tensor)
        dist.all_reduce(tensor, group=dist.new_group(list(range(world))))
        assert tensor.cpu().tolist() == [world * world * (world + 1) / 2] * 3, tensor
        dist.destroy_process_group()
        dist.init_process_group(timeout=datetime.timedelta(seconds=20))
    # a world whose default group is gloo's: its "ici" groups are named as the destroyed world's were (review16a)
    dist.barrier(group=dist.new_group(list(range(world))))
    dist.destroy_process_group()
    gc.collect()  # the destroyed world's groups gone: a connection to them fails rather than meets a stale group
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    tensor = torch.full((3,), float(rank + 1), device="tpu")
    dist.all_reduce(tensor, group=dist.new_group(list(range(world)), backend="ici"))
    assert tensor.cpu().tolist() == [world * (world + 1) / 2] * 3, tensor
    dist.destroy_process_group()
    dist.init_process_group(timeout=datetime.timedelta(seconds=20))


scenario = sys.argv[1] if len(sys.argv) > 1 else "all"
torch.ones(1, device="tpu")  # the chip's own threads start with its first use
torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3), torch.ones(1, 1, 3, 3))  # CPU's thread pool (the references')
before = threads_and_sockets()
rank = int(os.environ["RANK"])
store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                      rank == 0, timeout=datetime.timedelta(seconds=60))
dist.init_process_group(store=store, rank=rank, world_size=int(os.environ["WORLD_SIZE"]))
if scenario == "all":
    collectives.run()
    dtensor.run()
    sync_batch_norm.run()
    check_mismatch_is_caught_and_recoverable(rank)
    check_bad_arguments_name_the_collective_and_rank(rank)
    check_arguments_refused_on_one_rank_fail_every_rank(rank)
    check_point_to_point_refusals_and_mismatches_reach_the_receiver(rank)
    check_monitored_barrier_runs_on_a_gloo_group(rank)
    check_power_sgd_hook_gives_its_maths(rank)
    check_a_world_made_again_works(rank)
    dist.barrier()
    dist.destroy_process_group()
    del store
    gc.collect()
    time.sleep(0.5)  # gloo's threads end as their process groups go
    after = threads_and_sockets()
    assert after == before, f"threads and sockets before init {before}, after destroy {after}"
    print(f"rank {rank}: suite ok (threads and sockets before {before}, after {after})", flush=True)
elif scenario == "dead":
    tensor = torch.ones(4, device="tpu")
    dist.all_reduce(tensor)
    if rank == 1:
        os._exit(3)
    time.sleep(1)
    start = time.monotonic()
    try:
        dist.all_reduce(tensor)
    except RuntimeError as error:
        print(f"rank {rank}: suite ok: after {time.monotonic() - start:.1f} s: {error}", flush=True)
    os._exit(0)
