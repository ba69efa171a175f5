"""fork() after the tpu was used: the child gets CUDA's error, not a hang; before first use it works.

A forked child inherits a copy of the parent's emulated HBM but not its threads. As with CUDA, a child
forked after first use is in a *bad fork*: every tpu call raises, ``torch.tpu._is_in_bad_fork()`` is
True and ``torch.manual_seed`` leaves the tpu alone, while CPU work (DataLoader workers) goes on.
"""

import multiprocessing

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from conftest import run_python
from torch_tpu._C import vpu

FORK = multiprocessing.get_context("fork")
CHILD_TIMEOUT = 60
BAD_FORK = "Cannot re-initialize TPU in forked subprocess. To use TPU with multiprocessing, you must use the 'spawn' start method"


def run_in_forked_child(function, *args):
    """``function(*args)`` in a forked child; its result, or the text of what it raised."""
    queue = FORK.Queue()

    def child():
        try:
            queue.put(("ok", function(*args)))
        except Exception as error:  # noqa: BLE001 (the child reports whatever it raised)
            queue.put(("error", f"{type(error).__name__}: {error}"))

    process = FORK.Process(target=child)
    process.start()
    try:
        return queue.get(timeout=CHILD_TIMEOUT)
    finally:
        process.join(CHILD_TIMEOUT)
        assert process.exitcode == 0


INHERITED = torch.arange(4.0, device="tpu")

TPU_CALLS = {
    "factory": lambda: torch.ones(2, device="tpu"),
    "empty factory": lambda: torch.empty(0, device="tpu"),  # allocates nothing, yet the chip is lost
    "to": lambda: torch.ones(2).to("tpu"),
    "in-place op on an inherited tensor": lambda: INHERITED.add_(1),
    "printing an inherited tensor": lambda: repr(INHERITED),
    "inherited tensor to cpu": lambda: INHERITED.cpu(),
    "torch.tpu.init": lambda: torch.tpu.init(),
    "torch.tpu._lazy_init": lambda: torch.tpu._lazy_init(),
    "memory query": lambda: torch.tpu.memory_allocated(),
    "synchronize": lambda: torch.tpu.synchronize(),
    "storage": lambda: torch.UntypedStorage(4, device="tpu"),
}


@pytest.mark.parametrize("call", TPU_CALLS, ids=list(TPU_CALLS))
def test_a_child_forked_after_first_use_gets_a_clear_error(call):
    status, message = run_in_forked_child(TPU_CALLS[call])
    assert status == "error" and message.startswith(f"ChipLostInFork: {BAD_FORK}"), message
    assert INHERITED.tolist() == [0.0, 1.0, 2.0, 3.0]  # the parent's chip is untouched


def test_the_bad_fork_child_knows_and_cpu_work_goes_on():
    def child():
        torch.manual_seed(3)  # seeds the CPU and skips the tpu, as torch.cuda in a bad fork
        return (torch.tpu._is_in_bad_fork(), torch.tpu.is_initialized(), torch.tpu.is_available(),
                torch.tpu.device_count(), (torch.ones(3) * 2).tolist(), INHERITED.view(2, 2).shape)

    assert run_in_forked_child(child) == ("ok", (True, False, True, 1, [2.0, 2.0, 2.0], (2, 2)))
    assert not torch.tpu._is_in_bad_fork() and torch.tpu.is_initialized()


def test_a_child_forked_before_first_use_has_its_own_chip():
    out = run_python("""
        import multiprocessing, torch
        def child(queue):
            x = torch.arange(3., device="tpu") * 2
            queue.put((torch.tpu._is_in_bad_fork(), x.tolist(), torch.tpu.memory_allocated()))
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        torch.manual_seed(0)  # a seed alone does not initialise the tpu
        process = context.Process(target=child, args=(queue,))
        process.start()
        print(queue.get(timeout=60))
        process.join()
        print(process.exitcode, torch.tpu.is_initialized())
    """).stdout.splitlines()
    assert out == ["(False, [0.0, 2.0, 4.0], 12)", "0 False"]


class _TpuTouchingDataset(Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        return torch.full((2,), float(index), device="tpu")


def test_dataloader_workers_of_cpu_data_keep_working():
    assert torch.ones(1, device="tpu").item() == 1.0  # the tpu is in use in this process
    loader = DataLoader(TensorDataset(torch.arange(8.0)), batch_size=2, num_workers=2,
                        multiprocessing_context=FORK)
    assert [batch.tolist() for (batch,) in loader] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0], [6.0, 7.0]]


def test_a_dataloader_worker_touching_the_tpu_fails_clearly():
    loader = DataLoader(_TpuTouchingDataset(), batch_size=1, num_workers=1, multiprocessing_context=FORK)
    with pytest.raises(RuntimeError, match="Cannot re-initialize TPU in forked subprocess"):
        list(loader)


def test_the_elementwise_thread_pool_restarts_in_a_child():
    """A child that forked after big ufuncs started the pool's threads would otherwise wait forever."""
    a = np.ones((1 << 19,), np.float32)
    out = np.empty_like(a)
    vpu.apply(np.add, a, a, out=out)  # large enough to use the pool (when the host has 2+ cores)

    def child():
        result = np.empty_like(a)
        vpu.apply(np.multiply, a, a + 2, out=result)
        return float(result.sum())

    assert run_in_forked_child(child) == ("ok", 3.0 * a.size)


@pytest.mark.parametrize("make", [
    lambda: torch.ones(3, device="tpu"),
    lambda: torch.nn.Linear(2, 2).to("tpu").weight,
    lambda: torch.ones(2, device="tpu").untyped_storage(),
    lambda: torch.ones(2, device="tpu").storage(),
])
def test_sending_a_tpu_tensor_to_another_process_is_refused_with_the_way_out(make):
    """CUDA shares device memory over IPC; another process here is another chip, so there is nothing to share."""
    from multiprocessing.reduction import ForkingPickler

    obj = make()
    with pytest.raises(RuntimeError, match=r"cannot be shared with another process.*Send tensor\.cpu\(\)"):
        ForkingPickler.dumps(obj)


def test_a_tpu_tensor_put_on_a_multiprocessing_queue_raises_where_it_is_received():
    """multiprocessing.Queue pickles in a feeder thread that prints an error and drops the object: a DataLoader
    whose spawn worker returned tpu tensors waited forever for the batch. The receiver gets the refusal."""
    import multiprocessing
    import queue

    channel = multiprocessing.get_context("spawn").Queue()
    channel.put((0, torch.ones(3, device="tpu")))
    try:
        with pytest.raises(RuntimeError, match=r"cannot be shared with another process.*Send tensor\.cpu\(\)"):
            channel.get(timeout=20)
    except queue.Empty:
        pytest.fail("the tpu tensor was dropped: the receiver waits forever")
    finally:
        channel.close()
        channel.join_thread()


def test_cpu_tensors_still_go_through_shared_memory():
    import pickle
    from multiprocessing.reduction import ForkingPickler

    source = torch.arange(4.0)
    received = pickle.loads(ForkingPickler.dumps(source))
    received.add_(1)  # the receiver shares the bytes: CPU sharing is untouched
    assert source.is_shared() and torch.equal(source, torch.arange(1.0, 5.0))
