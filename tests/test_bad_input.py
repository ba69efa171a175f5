"""Bad input gets CPU's error, never NumPy's, and leaves HBM accounting exact.

Every case runs on CPU and on tpu: the tpu error must be of the class CPU raises and, where the
check is PyTorch's own, carry the same message. Allocation counters must not move while the
exception (and its traceback) is alive: nothing is allocated for input that is refused.
"""

import contextlib
import gc
import re
import warnings

import pytest
import torch
from torch.testing._internal.common_methods_invocations import op_db
from torch.testing._internal.common_utils import set_rng_seed

import torch_tpu
from differential import check, check_same_error

BIG = 2**62


def allocation_counters():
    """Bytes in use and the running totals of allocations: all unchanged if nothing was allocated."""
    stats = torch.tpu.memory_stats()
    return (torch.tpu.memory_allocated(), stats["allocation.all.allocated"], stats["allocation.all.current"],
            stats["allocated_bytes.all.allocated"])


@contextlib.contextmanager
def no_garbage_collection():
    """Keeps the cycle collector from freeing earlier tests' tensors while counters are compared."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# --- sizes are validated before anything is allocated --------------------------------------------------------------
# name: (inputs made on a device, the call that must fail with CPU's error)

SIZE_CASES = {
    "empty_negative": (lambda d: (d,), lambda d: torch.empty(2, -3, device=d)),
    "empty_two_negatives": (lambda d: (d,), lambda d: torch.empty(-2, -3, device=d)),
    "empty_negative_after_zero": (lambda d: (d,), lambda d: torch.empty(0, -1, device=d)),
    "empty_bytes_overflow_int64": (lambda d: (d,), lambda d: torch.empty(BIG, device=d)),
    "empty_numel_overflows": (lambda d: (d,), lambda d: torch.empty(2**40, 2**40, device=d)),
    "empty_overflow_then_zero": (lambda d: (d,), lambda d: torch.empty(2**40, 2**40, 0, device=d)),
    "empty_int32_bytes_overflow": (lambda d: (d,), lambda d: torch.empty(2**61, dtype=torch.int32, device=d)),
    "empty_channels_last_negative": (lambda d: (d,), lambda d: torch.empty(1, -2, 3, 4, device=d,
                                                                         memory_format=torch.channels_last)),
    "empty_strided_negative_stride": (lambda d: (d,), lambda d: torch.empty_strided((2, 3), (3, -1), device=d)),
    "empty_strided_negative_size": (lambda d: (d,), lambda d: torch.empty_strided((2, -3), (1, 1), device=d)),
    "empty_strided_overflow": (lambda d: (d,), lambda d: torch.empty_strided((BIG,), (2,), device=d)),
    "zeros_huge": (lambda d: (d,), lambda d: torch.zeros(BIG, device=d)),
    "ones_huge": (lambda d: (d,), lambda d: torch.ones(2**61, 8, device=d)),
    "full_negative": (lambda d: (d,), lambda d: torch.full((-2,), 1.0, device=d)),
    "rand_negative": (lambda d: (d,), lambda d: torch.rand(-1, device=d)),
    "randn_huge": (lambda d: (d,), lambda d: torch.randn(BIG, device=d)),
    "randint_negative": (lambda d: (d,), lambda d: torch.randint(0, 5, (-1,), device=d)),
    "arange_huge": (lambda d: (d,), lambda d: torch.arange(0, BIG, device=d)),
    "eye_negative_n": (lambda d: (d,), lambda d: torch.eye(-1, device=d)),
    "eye_negative_m": (lambda d: (d,), lambda d: torch.eye(2, -3, device=d)),
    "new_empty_negative": (lambda d: (torch.ones(2, device=d),), lambda x: x.new_empty((-1,))),
    "new_empty_huge": (lambda d: (torch.ones(2, device=d),), lambda x: x.new_empty((BIG,))),
    "new_zeros_negative": (lambda d: (torch.ones(2, device=d),), lambda x: x.new_zeros((-2,))),
    "new_full_huge": (lambda d: (torch.ones(2, device=d),), lambda x: x.new_full((BIG,), 1.0)),
    "new_empty_strided_negative_stride": (lambda d: (torch.ones(2, device=d),),
                                          lambda x: x.new_empty_strided((2,), (-1,))),
    "resize_negative": (lambda d: (torch.ones(2, device=d),), lambda x: x.resize_(-1)),
    "resize_negative_second": (lambda d: (torch.ones(2, device=d),), lambda x: x.resize_(2, -1)),
    "resize_bytes_overflow": (lambda d: (torch.ones(2, device=d),), lambda x: x.resize_(BIG)),
    "resize_numel_overflow": (lambda d: (torch.ones(2, device=d),), lambda x: x.resize_(2**40, 2**40)),
    "resize_preserve_format": (lambda d: (torch.ones(2, device=d),),
                               lambda x: x.resize_(3, memory_format=torch.preserve_format)),
    "as_strided_negative_stride": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided((2,), (-1,))),
    "as_strided_negative_size": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided((-2,), (1,))),
    "as_strided_out_of_bounds": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided((10,), (1,))),
    "as_strided_offset_out_of_bounds": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided((2,), (1,), 5)),
    "as_strided_huge": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided((BIG,), (1,))),
    "as_strided_negative_offset": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided((2,), (1,), -1)),
    "as_strided_lengths_differ": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided((2,), (1, 1))),
    "as_strided__out_of_bounds": (lambda d: (torch.ones(6, device=d),), lambda x: x.as_strided_((10,), (1,))),
    "set_huge": (lambda d: (torch.ones(6, device=d), torch.ones(6, device=d).untyped_storage()),
                 lambda x, s: x.set_(s, 0, (BIG,), (1,))),
    "set_negative_stride": (lambda d: (torch.ones(6, device=d), torch.ones(6, device=d).untyped_storage()),
                            lambda x, s: x.set_(s, 0, (2,), (-1,))),
    "set_negative_size": (lambda d: (torch.ones(6, device=d), torch.ones(6, device=d).untyped_storage()),
                          lambda x, s: x.set_(s, 0, (-2,), (1,))),
    "set_negative_offset": (lambda d: (torch.ones(6, device=d), torch.ones(6, device=d).untyped_storage()),
                            lambda x, s: x.set_(s, -1, (2,), (1,))),
    "set_lengths_differ": (lambda d: (torch.ones(6, device=d), torch.ones(6, device=d).untyped_storage()),
                           lambda x, s: x.set_(s, 0, (2,), (1, 1))),
    "set_same_layout_too_small": (lambda d: (torch.ones(6, device=d), torch.ones(2, device=d).untyped_storage()),
                                  lambda x, s: x.set_(s, 0, (6,), (1,))),
    "storage_too_large_for_int64": (lambda d: (d,), lambda d: torch.UntypedStorage(2**63, device=d)),
    "storage_float_size": (lambda d: (d,), lambda d: torch.UntypedStorage(2.5, device=d)),
}


@pytest.mark.parametrize("name", SIZE_CASES)
def test_bad_sizes_raise_cpus_error_and_allocate_nothing(name):
    make_inputs, call = SIZE_CASES[name]
    with pytest.raises(Exception) as cpu_error:
        call(*make_inputs("cpu"))
    inputs = make_inputs("tpu")
    with no_garbage_collection():
        before = allocation_counters()
        with pytest.raises(type(cpu_error.value)) as tpu_error:
            call(*inputs)
        assert allocation_counters() == before, "something was allocated (and is kept alive by the exception)"
    assert str(tpu_error.value) == str(cpu_error.value)


def test_a_negative_storage_size_is_refused_before_allocating():
    """CPU's message names its own allocator; tpu's says what was asked, in the same class."""
    with pytest.raises(RuntimeError):
        torch.UntypedStorage(-1)
    with no_garbage_collection():  # an earlier test's garbage freed meanwhile would change the counters
        before = allocation_counters()
        with pytest.raises(RuntimeError, match="negative number of bytes: -1"):
            torch.UntypedStorage(-1, device="tpu")
        assert allocation_counters() == before


def test_storage_from_a_sequence_of_bytes():
    storage = torch.UntypedStorage([1, 2, 255], device="tpu")
    assert storage.device.type == "tpu" and storage.tolist() == [1, 2, 255]


def test_huge_sizes_that_fit_int64_are_out_of_memory(memory_baseline):
    """Sizes CPU can express but HBM cannot hold: torch.OutOfMemoryError, as CUDA raises, naming the bytes."""
    with pytest.raises(torch.OutOfMemoryError, match=r"\(4611686018427387904 bytes\)"):
        torch.empty(2**60, dtype=torch.float32, device="tpu")
    x = torch.ones(2, device="tpu")
    with pytest.raises(torch.OutOfMemoryError):
        x.resize_(2**60)
    assert x.shape == (2,) and x.cpu().tolist() == [1.0, 1.0]


def test_the_chip_refuses_a_negative_allocation():
    with pytest.raises(ValueError, match="negative number of bytes"):
        torch_tpu._C.current_chip().hbm.allocate(-4)


# --- host RAM exhausted while backing an allocation that fits in HBM ------------------------------------------------


def test_host_memory_exhausted_is_out_of_memory_and_accounting_stays_exact(monkeypatch, memory_baseline):
    hbm = torch_tpu._C.current_chip().hbm

    def no_host_memory(nbytes):
        raise MemoryError()

    keep = torch.ones(3, device="tpu")
    torch.tpu.empty_cache()  # an allocation takes a cached block of its size first, without asking the host
    before = allocation_counters()
    monkeypatch.setattr(hbm, "take_block", no_host_memory)  # where an allocation gets a fresh host block
    with pytest.raises(torch.OutOfMemoryError) as error:
        torch.empty(1000, device="tpu")
    message = str(error.value)
    assert "Host out of memory" in message and "(4000 bytes)" in message and "HBM itself is not full" in message
    assert allocation_counters() == before
    with pytest.raises(torch.OutOfMemoryError, match="Host out of memory"):
        keep.resize_(1000)  # growing a storage needs a new host block too
    assert keep.shape == (3,) and allocation_counters() == before
    monkeypatch.undo()
    assert torch.empty(1000, device="tpu").shape == (1000,)
    assert keep.cpu().tolist() == [1.0, 1.0, 1.0]


def test_host_memory_limit_in_a_subprocess(python_subprocess):
    """A real address-space limit: the host refuses the RAM of an allocation that fits in HBM."""
    result = python_subprocess("""
        import resource
        import torch
        import torch_tpu
        x = torch.ones(4, device="tpu")
        with open("/proc/self/status") as status:
            size = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize"))
        resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.RLIM_INFINITY))
        before = torch.tpu.memory_allocated()
        try:
            torch.empty(1 << 30, dtype=torch.uint8, device="tpu")
        except torch.OutOfMemoryError as error:
            print("refused:", "Host out of memory" in str(error), "(1073741824 bytes)" in str(error))
        print("unchanged:", torch.tpu.memory_allocated() == before, x.sum().item())
    """)
    assert "refused: True True" in result.stdout and "unchanged: True 4.0" in result.stdout


# --- errors escaping kernels (NumPy's, lookups') become PyTorch's ----------------------------------------------------


def _matrix(device):
    return torch.arange(6.0, device=device).reshape(2, 3)


def _complex(device):
    return torch.tensor([1 + 2j, -1 - 1j, 2 + 0j, 0 - 3j], device=device)


# Malformed calls of many ops: the tpu error must be CPU's class and message.
FUZZ = {
    "flip_repeated_dim": lambda d: _matrix(d).flip(0, 0),
    "flip_dim_out_of_range": lambda d: _matrix(d).flip(3),
    "flip_negative_dim_out_of_range": lambda d: _matrix(d).flip(-3),
    "float_index_tensor": lambda d: _matrix(d)[torch.tensor([0.0], device=d)],
    "index_select_float_index": lambda d: _matrix(d).index_select(0, torch.tensor([0.0], device=d)),
    "index_select_matrix_index": lambda d: _matrix(d).index_select(0, torch.zeros(2, 2, dtype=torch.long, device=d)),
    "index_select_out_of_range": lambda d: _matrix(d).index_select(0, torch.tensor([5], device=d)),
    "index_add_float_index": lambda d: torch.zeros(3, device=d).index_add(0, torch.zeros(2, device=d),
                                                                           torch.ones(2, device=d)),
    "index_add_matrix_index": lambda d: torch.zeros(3, device=d).index_add(
        0, torch.zeros(2, 2, dtype=torch.long, device=d), torch.ones(2, device=d)),
    "index_copy_float_index": lambda d: torch.zeros(3, device=d).index_copy(0, torch.zeros(2, device=d),
                                                                             torch.ones(2, device=d)),
    "index_fill_float_index": lambda d: torch.zeros(3, device=d).index_fill(0, torch.zeros(2, device=d), 1.0),
    "index_fill_matrix_index": lambda d: torch.zeros(3, device=d).index_fill(
        0, torch.zeros(2, 2, dtype=torch.long, device=d), 1.0),
    "index_out_of_range": lambda d: _matrix(d)[torch.tensor([5], device=d)],
    "gather_out_of_range": lambda d: _matrix(d).gather(0, torch.tensor([[5]], device=d)),
    "gather_float_index": lambda d: _matrix(d).gather(0, torch.zeros(1, 1, device=d)),
    "scatter_out_of_range": lambda d: _matrix(d).scatter(0, torch.tensor([[5]], device=d), 1.0),
    "scatter_float_index": lambda d: _matrix(d).scatter(0, torch.zeros(1, 1, device=d), 1.0),
    "take_out_of_range": lambda d: _matrix(d).take(torch.tensor([10], device=d)),
    "index_add_out_of_range": lambda d: _matrix(d).index_add(0, torch.tensor([4], device=d), torch.ones(1, 3, device=d)),
    # CPU's index_add names the index only on its scatter_add path (first or last dim of 2+ dims, alpha 1), and
    # index_reduce only when it fills first (include_self=False) and the index does not wrap
    "index_add_out_of_range_1d": lambda d: torch.zeros(3, device=d).index_add(0, torch.tensor([5], device=d),
                                                                              torch.ones(1, device=d)),
    "index_add_out_of_range_inner_dim": lambda d: torch.zeros(3, 2, 2, device=d).index_add(
        1, torch.tensor([-1], device=d), torch.ones(3, 1, 2, device=d)),
    "index_add_out_of_range_with_alpha": lambda d: _matrix(d).index_add(0, torch.tensor([4], device=d),
                                                                        torch.ones(1, 3, device=d), alpha=2),
    "index_reduce_out_of_range": lambda d: _matrix(d).index_reduce(0, torch.tensor([4], device=d),
                                                                   torch.ones(1, 3, device=d), "prod"),
    "index_reduce_without_self_out_of_range": lambda d: _matrix(d).index_reduce(
        1, torch.tensor([7], device=d), torch.ones(2, 1, device=d), "amax", include_self=False),
    "index_reduce_without_self_negative": lambda d: _matrix(d).index_reduce(
        1, torch.tensor([-1], device=d), torch.ones(2, 1, device=d), "mean", include_self=False),
    "masked_fill_complex_value": lambda d: torch.zeros(2, device=d).masked_fill(torch.tensor(True, device=d), 1j),
    "masked_fill_overflow": lambda d: torch.zeros(2, dtype=torch.uint8, device=d).masked_fill(
        torch.tensor(True, device=d), 300),
    "index_fill_overflow": lambda d: torch.zeros(2, dtype=torch.uint8, device=d).index_fill(
        0, torch.tensor([0], device=d), 300),
    "full_overflow": lambda d: torch.full((2,), 300, dtype=torch.uint8, device=d),
    "sum_dim_out_of_range": lambda d: _matrix(d).sum(5),
    "sum_repeated_dim": lambda d: _matrix(d).sum((0, 0)),
    "permute_repeated": lambda d: _matrix(d).permute(0, 0),
    "reshape_bad": lambda d: _matrix(d).reshape(4, 2),
    "cat_sizes_differ": lambda d: torch.cat([_matrix(d), torch.ones(3, 3, device=d)], 1),
    "cat_dims_differ": lambda d: torch.cat([_matrix(d), torch.ones(3, device=d)]),
    "cat_empty_list": lambda d: torch.cat([], out=torch.empty(0, device=d)),
    "mm_shapes": lambda d: _matrix(d) @ _matrix(d),
    "cumsum_dim_out_of_range": lambda d: _matrix(d).cumsum(4),
    "transpose_out_of_range": lambda d: _matrix(d).transpose(0, 4),
    "topk_too_big": lambda d: _matrix(d).topk(5),
    "embedding_out_of_range": lambda d: torch.nn.functional.embedding(torch.tensor([7], device=d), _matrix(d)),
    "bincount_negative": lambda d: torch.bincount(torch.tensor([-1], device=d)),
    "bincount_float": lambda d: torch.bincount(torch.ones(3, device=d)),
    "repeat_interleave_negative": lambda d: torch.repeat_interleave(torch.tensor([-1], device=d)),
    "multinomial_negative": lambda d: torch.multinomial(torch.tensor([-1.0, 2.0], device=d), 1),
    "roll_shifts_and_dims_differ": lambda d: _matrix(d).roll((1, 2), (0,)),
    "roll_dim_of_a_scalar": lambda d: torch.tensor(1.0, device=d).roll(1, 0),
    "narrow_out_of_range": lambda d: _matrix(d).narrow(0, 1, 5),
    "diag_3d": lambda d: torch.ones(2, 2, 2, device=d).diag(),
    "kthvalue_out_of_range": lambda d: _matrix(d).kthvalue(7),
    "lshift_float": lambda d: _matrix(d) << 1,
    "masked_select_shapes": lambda d: _matrix(d).masked_select(torch.ones(4, dtype=torch.bool, device=d)),
    "where_shapes": lambda d: torch.where(torch.ones(4, dtype=torch.bool, device=d), _matrix(d), 0.0),
    "add_shapes": lambda d: _matrix(d) + torch.ones(4, device=d),
    "addcmul_shapes": lambda d: torch.addcmul(_matrix(d), _matrix(d), torch.ones(4, device=d)),
    "view_of_transposed": lambda d: _matrix(d).t().view(6),
    "nll_loss_target_out_of_range": lambda d: torch.nn.functional.nll_loss(_matrix(d), torch.tensor([5, 0], device=d)),
    "cross_entropy_target_out_of_range": lambda d: torch.nn.functional.cross_entropy(_matrix(d),
                                                                                   torch.tensor([5, 0], device=d)),
    "histc_bins": lambda d: torch.histc(_matrix(d), bins=-1),
    "pad_odd": lambda d: torch.nn.functional.pad(_matrix(d), (1,)),
    "conv_channels": lambda d: torch.nn.functional.conv2d(torch.ones(1, 2, 3, 3, device=d), torch.ones(1, 3, 1, 1, device=d)),
    "softmax_dim_out_of_range": lambda d: _matrix(d).softmax(3),
    "linear_shapes": lambda d: torch.nn.functional.linear(_matrix(d), torch.ones(2, 2, device=d)),
    "layer_norm_shape": lambda d: torch.nn.functional.layer_norm(_matrix(d), (2,)),
    "layer_norm_weight_shape": lambda d: torch.nn.functional.layer_norm(_matrix(d), (3,), torch.ones(2, device=d)),
    "trace_of_3d": lambda d: torch.ones(2, 2, 2, device=d).trace(),
    "trace_of_bool": lambda d: torch.ones(2, 2, dtype=torch.bool, device=d).trace(),
    "searchsorted_shapes": lambda d: torch.searchsorted(_matrix(d), torch.ones(3, 3, device=d)),
    "argmax_dim_out_of_range": lambda d: _matrix(d).argmax(3),
    "sort_dim_out_of_range": lambda d: _matrix(d).sort(3),
    "unbind_dim_out_of_range": lambda d: _matrix(d).unbind(3),
    "index_put_out_of_range": lambda d: _matrix(d).index_put_((torch.tensor([4], device=d),), torch.tensor(1.0, device=d)),
    "fill_with_a_vector": lambda d: _matrix(d).fill_(torch.ones(2, device=d)),
    "clamp_without_bounds": lambda d: _matrix(d).clamp(),
    "randperm_negative": lambda d: torch.randperm(-1, device=d),
    "normal_negative_std": lambda d: torch.normal(0.0, -1.0, (2,), device=d),
    "cholesky_not_positive_definite": lambda d: torch.linalg.cholesky(-torch.eye(2, device=d)),
    "inverse_of_singular": lambda d: torch.linalg.inv(torch.zeros(2, 2, device=d)),
    "det_not_square": lambda d: torch.linalg.det(_matrix(d)),
    "integer_to_negative_power": lambda d: torch.tensor([2], device=d) ** -1,
    "integer_floor_division_by_zero": lambda d: torch.tensor([2], device=d) // 0,
    "integer_remainder_by_zero": lambda d: torch.tensor([2], device=d) % 0,
    "bmm_of_matrices": lambda d: torch.bmm(_matrix(d), _matrix(d)),
    "max_of_empty": lambda d: torch.ones(0, device=d).max(),
    "mean_of_integers": lambda d: torch.tensor([1, 2], device=d).mean(),
    "item_of_many": lambda d: _matrix(d).item(),
    "expand_shape": lambda d: _matrix(d).expand(3, 3),
    "stack_shapes": lambda d: torch.stack([_matrix(d), torch.ones(3, 2, device=d)]),
    "max_pool_too_small": lambda d: torch.nn.functional.max_pool2d(torch.ones(1, 1, 2, 2, device=d), 3),
    "interpolate_dims": lambda d: torch.nn.functional.interpolate(torch.ones(1, 1, 2, device=d), size=(3, 3)),
    "tril_of_vector": lambda d: torch.ones(3, device=d).tril(),
    "squeeze_out_of_range": lambda d: _matrix(d).squeeze(4),
    "select_out_of_range": lambda d: _matrix(d).select(0, 5),
    "rot90_same_dims": lambda d: _matrix(d).rot90(1, (0, 0)),
    "bitwise_and_of_floats": lambda d: _matrix(d) & _matrix(d),
    "gcd_of_floats": lambda d: torch.gcd(_matrix(d), _matrix(d)),
    "sign_of_complex": lambda d: torch.sign(torch.ones(2, dtype=torch.cfloat, device=d)),
    "floor_of_complex": lambda d: torch.floor(torch.ones(2, dtype=torch.cfloat, device=d)),
    "gelu_bad_approximation": lambda d: torch.nn.functional.gelu(_matrix(d), approximate="asdf"),
    "lerp_of_integers": lambda d: torch.lerp(torch.arange(3, device=d), torch.arange(3, device=d), 0.5),
    "lerp_of_integers_tensor_weight": lambda d: torch.lerp(*(torch.arange(3, device=d),) * 3),
    "float_added_in_place_to_integers": lambda d: torch.arange(3, device=d).add_(1.5),
    "float_multiplied_in_place_into_integers": lambda d: torch.arange(3, device=d).mul_(torch.ones(3, device=d)),
    "true_division_in_place_of_integers": lambda d: torch.arange(3, device=d).div_(2),
    "float_bounds_clamping_integers_in_place": lambda d: torch.arange(3, device=d).clamp_(0.5, 1.5),
    "foreach_float_added_to_integers": lambda d: torch._foreach_add_([torch.arange(3, device=d)], 1.5),
    # softmax's loops are floating-point only; the error names the loop (last dim or not) as CPU's does
    "softmax_of_integers": lambda d: torch.arange(6, device=d).reshape(2, 3).softmax(0),
    "softmax_of_integers_last_dim": lambda d: torch.arange(6, device=d).reshape(2, 3).softmax(1),
    "log_softmax_of_bools": lambda d: torch.ones(2, 3, dtype=torch.bool, device=d).log_softmax(0),
    "log_softmax_of_a_0d_integer": lambda d: torch.tensor(3, device=d).log_softmax(0),
    "softmax_of_complex": lambda d: torch.ones(2, 3, dtype=torch.complex64, device=d).softmax(-1),
    # complex numbers have no order: ops that compare elements refuse them (NumPy compares lexicographically)
    "relu_of_complex": lambda d: torch.relu(_complex(d)),
    "hardtanh_of_complex_in_place": lambda d: torch.nn.functional.hardtanh_(_complex(d)),
    "relu6_of_complex": lambda d: torch.nn.functional.relu6(_complex(d)),
    "clamp_min_of_complex_by_a_tensor": lambda d: torch.clamp_min(_complex(d), _complex(d)),
    "clamp_max_of_complex_by_a_tensor": lambda d: torch.clamp_max(_complex(d), _complex(d)),
    "max_pool2d_of_complex": lambda d: torch.nn.functional.max_pool2d(_complex(d).reshape(1, 2, 2), 2),
    "unique_of_complex": lambda d: torch.unique(_complex(d)),
    "unique_consecutive_of_complex": lambda d: torch.unique_consecutive(_complex(d)),
    "unique_dim_of_complex": lambda d: torch.unique(_complex(d).reshape(2, 2), dim=0),
    "index_reduce_of_complex": lambda d: _complex(d).index_reduce(0, torch.tensor([0], device=d), _complex(d)[:1],
                                                                  "amax"),
    "index_reduce_of_bools": lambda d: torch.ones(2, dtype=torch.bool, device=d).index_reduce(
        0, torch.tensor([0], device=d), torch.ones(1, dtype=torch.bool, device=d), "prod"),
    "relu_of_bools": lambda d: torch.relu(torch.ones(2, dtype=torch.bool, device=d)),
    "hardtanh_of_bools": lambda d: torch.nn.functional.hardtanh(torch.ones(2, dtype=torch.bool, device=d)),
}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", FUZZ)
def test_malformed_calls_raise_cpus_error(name):
    check_same_error(FUZZ[name])


# CPU's one_hot checks class values itself; for PrivateUse1 (as for CUDA) PyTorch leaves that to scatter,
# whose bounds error is what tpu raises, in CPU's class.
SAME_CLASS_ONLY = {
    "one_hot_negative": lambda d: torch.nn.functional.one_hot(torch.tensor([-1], device=d), 3),
}


@pytest.mark.parametrize("name", SAME_CLASS_ONLY)
def test_malformed_calls_raise_cpus_error_class(name):
    with pytest.raises(Exception) as cpu_error:
        SAME_CLASS_ONLY[name]("cpu")
    with pytest.raises(type(cpu_error.value)):
        SAME_CLASS_ONLY[name]("tpu")


def _raised(function, *args):
    try:
        function(*args)
    except Exception as error:  # noqa: BLE001
        return error
    raise AssertionError("did not raise")


def test_numpy_errors_are_told_from_a_kernels_own_errors():
    """Escaped: raised inside NumPy, or by a failing call in torch_tpu's code. Deliberate: a ``raise`` there."""
    np = pytest.importorskip("numpy")
    wrap_dims = torch_tpu.ops._common.wrap_dims
    assert torch_tpu._errors.escaped(_raised(np.flip, np.ones(3), 5))
    assert torch_tpu._errors.escaped(_raised(wrap_dims, ("a",), 2))  # a comparison failed in torch_tpu's code
    assert not torch_tpu._errors.escaped(_raised(wrap_dims, (5,), 2))  # wrap_dim's own IndexError
    assert not torch_tpu._errors.escaped(_raised(torch.ones(2).view, 3))  # PyTorch's own error


def test_errors_a_kernel_obtains_from_cpu_pass_unchanged():
    """A kernel that cannot take a call asks CPU for its error (raise_cpu_error): that one is PyTorch's own."""
    x = torch.ones(3, device="tpu")
    error = _raised(torch_tpu._errors.raise_cpu_error, torch.ops.aten.select.int, x, 0, 5)
    with pytest.raises(IndexError) as cpu_error:
        torch.ones(3).select(0, 5)
    assert type(error) is IndexError and str(error) == str(cpu_error.value)
    assert not torch_tpu._errors.escaped(error)
    assert torch_tpu._errors.kernel_error(error, torch.ops.aten.select.int, (x, 0, 5), {}) is error
    with pytest.raises(RuntimeError, match="arguments torch CPU accepts but the tpu device does not"):
        torch_tpu._errors.raise_cpu_error(torch.ops.aten.select.int, x, 0, 1)


def test_an_escaped_numpy_error_becomes_the_meta_kernels_error():
    """The general mechanism: the op replayed on Meta tensors of the same sizes and dtypes raises PyTorch's error."""
    x = torch.ones(2, 3, device="tpu")
    numpy_error = _raised(np.flip if (np := pytest.importorskip("numpy")) else None, np.ones((2, 3)), (0, 0))
    translated = torch_tpu._errors.kernel_error(numpy_error, torch.ops.aten.flip.default, (x, [0, 0]), {})
    with pytest.raises(RuntimeError) as meta_error:
        torch.ops.aten.flip.default(torch.ones(2, 3, device="meta"), [0, 0])
    assert type(translated) is RuntimeError and str(translated) == str(meta_error.value)


# Inputs CPU's kernels refuse (a dtype without a loop) where the tpu kernel's NumPy call failed and Meta, which
# checks no dtypes, had nothing to say: CPU is asked for its error on host copies of the inputs.
REFUSED_BY_CPU = {
    "complex_atan2": lambda d: torch.atan2(*[torch.ones(2, dtype=torch.complex64, device=d)] * 2),
    "complex_special_i1": lambda d: torch.special.i1(torch.ones(2, dtype=torch.complex64, device=d)),
    "bool_max_pool2d": lambda d: torch.nn.functional.max_pool2d(torch.ones(1, 4, 4, dtype=torch.bool, device=d), 2),
    "complex_linear_interpolation": lambda d: torch.nn.functional.interpolate(
        torch.ones(1, 1, 4, dtype=torch.complex64, device=d), scale_factor=2, mode="linear"),
}


@pytest.mark.parametrize("name", REFUSED_BY_CPU)
def test_inputs_cpu_refuses_get_cpus_error_from_host_copies(name):
    check_same_error(REFUSED_BY_CPU[name])


def test_asking_cpu_for_its_error_never_moves_its_generator_nor_copies_large_inputs(monkeypatch):
    x = torch.ones(2, 3, device="tpu", dtype=torch.complex64)
    np = pytest.importorskip("numpy")
    numpy_error = _raised(np.flip, np.ones(3), 5)  # stands for any error escaping a NumPy call
    state = torch.get_rng_state()
    for op, args in [(torch.ops.aten.bernoulli.default, (x,)), (torch.ops.aten.atan2.default, (x, x))]:
        if op is torch.ops.aten.atan2.default:
            monkeypatch.setattr(torch_tpu._errors, "_CPU_REPLAY_BYTES", x.nbytes)  # two inputs: over the limit
        translated = torch_tpu._errors.kernel_error(numpy_error, op, args, {})
        assert isinstance(translated, RuntimeError) and "not supported by the tpu kernel" in str(translated)
    assert torch.equal(torch.get_rng_state(), state)


def test_asking_cpu_for_its_error_never_writes_the_callers_tensors():
    host, tpu = torch.zeros(3), torch.ones(3, device="tpu")
    numpy_error = _raised(pytest.importorskip("numpy").flip, [1.0], 5)
    # CPU takes the replayed in-place call: nothing to report, and the caller's host tensor is untouched
    translated = torch_tpu._errors.kernel_error(numpy_error, torch.ops.aten.copy_.default, (host, tpu), {})
    assert "not supported by the tpu kernel" in str(translated)
    assert torch.equal(host, torch.zeros(3))


def test_an_error_nothing_explains_names_the_op():
    x = torch.ones(2, 3, device="tpu")
    error = _raised(torch_tpu._errors.scalar_type_name, None)  # a failed lookup in torch_tpu's code
    translated = torch_tpu._errors.kernel_error(error, torch.ops.aten.flip.default, (x, [0]), {})
    assert isinstance(translated, RuntimeError) and "aten.flip.default" in str(translated)


def test_host_memory_exhausted_inside_a_kernel_is_out_of_memory():
    translated = torch_tpu._errors.kernel_error(MemoryError(), torch.ops.aten.mm.default, (), {})
    assert isinstance(translated, torch.OutOfMemoryError) and "host RAM" in str(translated)


# failing calls on inputs made beforehand: whatever a call allocates before it fails must be freed with it
FAILING_AFTER_ALLOCATING = {
    "full_overflow": (lambda: (), lambda: torch.full((2,), 300, dtype=torch.uint8, device="tpu")),
    "gather_out_of_range": (lambda: (_matrix("tpu"), torch.tensor([[5]], device="tpu")), lambda x, i: x.gather(0, i)),
    "index_select_out_of_range": (lambda: (_matrix("tpu"), torch.tensor([5], device="tpu")),
                                  lambda x, i: x.index_select(0, i)),
    "layer_norm_shape": (lambda: (_matrix("tpu"),), lambda x: torch.nn.functional.layer_norm(x, (2,))),
    "mm_shapes": (lambda: (_matrix("tpu"),), lambda x: x @ x),
    # a replaced error (CPU's wording for a kernel's refusal) must not keep the refused call's temporaries in a cycle
    "layer_norm_refused_parameter_dtype_of_a_temporary": (
        lambda: (_matrix("tpu"), torch.ones(3, dtype=torch.bfloat16, device="tpu"), torch.zeros(3, device="tpu")),
        lambda x, w, b: torch.nn.functional.layer_norm(x * 2, [3], w, b)),
    "cat_sizes_differ": (lambda: (_matrix("tpu"), torch.ones(3, 3, device="tpu")), lambda x, y: torch.cat([x, y], 1)),
    "scatter_out_of_range_after_copying_self": (lambda: (_matrix("tpu"), torch.tensor([[5]], device="tpu")),
                                                lambda x, i: x.scatter(0, i, 1.0)),
}


@pytest.mark.parametrize("name", FAILING_AFTER_ALLOCATING)
def test_a_failed_kernel_leaves_nothing_allocated(name):
    """Outputs made before the kernel refused its input are freed at once, not kept by the traceback."""
    make_inputs, call = FAILING_AFTER_ALLOCATING[name]
    inputs = make_inputs()
    with no_garbage_collection():
        before = torch.tpu.memory_allocated()
        with pytest.raises(Exception):
            call(*inputs)
        assert torch.tpu.memory_allocated() == before


# --- PyTorch's own OpInfo error inputs ---------------------------------------------------------------------------


def _error_inputs(op, device):
    set_rng_seed(0)
    return list(op.error_inputs(device))


def _outcome(op, error_input):
    sample = error_input.sample_input
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            op(sample.input, *sample.args, **sample.kwargs)
    except Exception as error:  # noqa: BLE001
        return error
    return None


def _declared(error, error_input):
    return isinstance(error, error_input.error_type) and re.search(error_input.error_regex, str(error))


ERROR_INPUT_OPS = [op for op in op_db if op.error_inputs_func is not None]


def _on_cpu(sample):
    from torch.utils._pytree import tree_map

    def move(value):
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().requires_grad_(value.requires_grad)
        if isinstance(value, torch.device) or value == "tpu":
            return torch.device("cpu")
        return value

    return tree_map(move, (sample.input, sample.args, sample.kwargs))


@pytest.mark.parametrize("op", ERROR_INPUT_OPS, ids=lambda op: op.full_name)
def test_opinfo_error_inputs(op):
    """Each error input raises on tpu what the OpInfo declares (class and message regex), as PyTorch's own
    TestCommon.test_errors requires of a device. Where the same input on the CPU does not raise what is declared
    either (a declaration for another device, or a stale one), tpu must raise what CPU raises, or nothing."""
    try:
        error_inputs = _error_inputs(op, "tpu")
    except RuntimeError as error:
        if "only tensors with up to 64 dims are supported" not in str(error):
            raise
        pytest.xfail("the samples include a 65-d tensor: tpu tensors, viewed as NumPy arrays, have at most 64 "
                     "dims (CPU's TensorIterator has the same limit, but CPU can still create one)")
    problems = []
    for number, error_input in enumerate(error_inputs):
        actual = _outcome(op, error_input)
        if _declared(actual, error_input):
            continue
        cpu_input, cpu_args, cpu_kwargs = _on_cpu(error_input.sample_input)
        expected = _outcome(op, type(error_input)(type(error_input.sample_input)(cpu_input, args=cpu_args,
                                                                                 kwargs=cpu_kwargs),
                                                  error_type=error_input.error_type, error_regex=error_input.error_regex))
        if _declared(expected, error_input) or type(expected) is not type(actual):
            problems.append(f"#{number}: expected {error_input.error_type.__name__} /{error_input.error_regex}/, "
                            f"got {type(actual).__name__}: {actual} (CPU: {type(expected).__name__}: {expected})")
    assert not problems, "\n".join(problems)


# --- out= tensors: one check with TensorIterator's rules -----------------------------------------------------------

# calls with an out= CPU refuses: wrong dtype, partial overlap with an input, an expanded out
OUT_ERRORS = {
    "cat_floats_into_long": lambda d: torch.cat([_matrix(d), _matrix(d)], out=torch.empty(0, dtype=torch.long, device=d)),
    "stack_floats_into_long": lambda d: torch.stack([_matrix(d), _matrix(d)],
                                                    out=torch.empty(0, dtype=torch.long, device=d)),
    "add_float_into_long": lambda d: torch.add(_matrix(d), 1, out=torch.empty(0, dtype=torch.long, device=d)),
    "exp_float_into_long": lambda d: torch.exp(_matrix(d), out=torch.empty(0, dtype=torch.long, device=d)),
    "exp_float_into_bool": lambda d: torch.exp(_matrix(d), out=torch.empty(0, dtype=torch.bool, device=d)),
    "add_complex_into_float": lambda d: torch.add(_matrix(d).cfloat(), 1, out=torch.empty(0, device=d)),
    "floor_divide_float_into_long": lambda d: torch.floor_divide(_matrix(d), 2.0,
                                                                 out=torch.empty(0, dtype=torch.long, device=d)),
    "abs_float_into_long": lambda d: torch.abs(_matrix(d), out=torch.empty(0, dtype=torch.long, device=d)),
    "mm_float_into_long": lambda d: torch.mm(_matrix(d), _matrix(d).t(), out=torch.empty(0, dtype=torch.long, device=d)),
    "mean_float_into_long": lambda d: torch.mean(_matrix(d), 0, out=torch.empty(0, dtype=torch.long, device=d)),
    "amax_float_into_long": lambda d: torch.amax(_matrix(d), 0, out=torch.empty(0, dtype=torch.long, device=d)),
    "argmax_into_float": lambda d: torch.argmax(_matrix(d), 0, out=torch.empty(0, device=d)),
    "all_into_float": lambda d: torch.all(_matrix(d), 0, out=torch.empty(0, device=d)),
    "logsumexp_into_long": lambda d: torch.logsumexp(_matrix(d), 0, out=torch.empty(0, dtype=torch.long, device=d)),
    "gather_into_long": lambda d: torch.gather(_matrix(d), 0, torch.zeros(1, 3, dtype=torch.long, device=d),
                                               out=torch.empty(0, dtype=torch.long, device=d)),
    "index_select_into_long": lambda d: torch.index_select(_matrix(d), 0, torch.tensor([0], device=d),
                                                           out=torch.empty(0, dtype=torch.long, device=d)),
    "take_into_long": lambda d: torch.take(_matrix(d), torch.tensor([0], device=d),
                                           out=torch.empty(0, dtype=torch.long, device=d)),
    "masked_select_into_long": lambda d: torch.masked_select(_matrix(d), _matrix(d) > 1,
                                                             out=torch.empty(0, dtype=torch.long, device=d)),
    "sort_indices_into_float": lambda d: torch.sort(_matrix(d), out=(torch.empty(0, device=d), torch.empty(0, device=d))),
    "where_float_into_long": lambda d: torch.where(_matrix(d) > 1, _matrix(d), _matrix(d),
                                                   out=torch.empty(0, dtype=torch.long, device=d)),
    "nonzero_into_int": lambda d: torch.nonzero(_matrix(d), out=torch.empty(0, dtype=torch.int32, device=d)),
    "nonzero_static_into_int": lambda d: torch.nonzero_static(_matrix(d), size=3,
                                                              out=torch.empty(0, dtype=torch.int32, device=d)),
    "nonzero_static_negative_size_out": lambda d: torch.nonzero_static(_matrix(d), size=-1,
                                                                       out=torch.empty(0, 2, dtype=torch.long, device=d)),
    "nonzero_static_negative_size": lambda d: torch.ops.aten.nonzero_static(_matrix(d), size=-1),
    "searchsorted_into_int": lambda d: torch.searchsorted(torch.arange(3.0, device=d), _matrix(d),
                                                          out=torch.empty(0, dtype=torch.int32, device=d)),
    "searchsorted_int32_into_long": lambda d: torch.searchsorted(torch.arange(3.0, device=d), 1.5, out_int32=True,
                                                                 out=torch.empty(0, dtype=torch.long, device=d)),
    "cholesky_into_long": lambda d: torch.cholesky(torch.eye(2, device=d), out=torch.empty(0, dtype=torch.long, device=d)),
    "nansum_float_into_long": lambda d: torch.nansum(_matrix(d), out=torch.empty((), dtype=torch.long, device=d)),
    "nansum_float_into_bool": lambda d: torch.nansum(_matrix(d), 0, out=torch.empty(0, dtype=torch.bool, device=d)),
    "nansum_float_into_complex": lambda d: torch.nansum(_matrix(d), out=torch.empty((), dtype=torch.complex64,
                                                                                    device=d)),
    "histc_into_double": lambda d: torch.histc(_matrix(d), out=torch.empty(0, dtype=torch.float64, device=d)),
    "inv_into_long": lambda d: torch.linalg.inv(torch.eye(2, device=d), out=torch.empty(0, dtype=torch.long, device=d)),
    "mul_partial_overlap": lambda d: (lambda y: torch.mul(y[:-1], 2, out=y[1:]))(torch.arange(6.0, device=d)),
    "add_partial_overlap": lambda d: (lambda y: torch.add(y[:-1], y[1:], out=y[1:]))(torch.arange(6.0, device=d)),
    "cat_into_an_input": lambda d: (lambda y: torch.cat([y[:2], y[2:4]], out=y[1:5]))(torch.arange(6.0, device=d)),
    "cumsum_partial_overlap": lambda d: (lambda y: torch.cumsum(y[:4], 0, out=y[1:5]))(torch.arange(6.0, device=d)),
    "index_select_into_self": lambda d: (lambda y: torch.index_select(y, 0, torch.tensor([0, 1], device=d), out=y[:2]))(
        torch.arange(6.0, device=d)),
    # CPU checks gather's overlaps after resizing its out: the out's view, grown, now shares an index element
    "gather_into_a_view_grown_over_the_index": lambda d: (lambda y: torch.gather(y.clone(), 0, y[1:], out=y[:1]))(
        torch.tensor([2, 1, 0], device=d)),
    "take_into_expanded": lambda d: torch.take(_matrix(d), torch.tensor([0, 1], device=d),
                                               out=torch.zeros(1, device=d).expand(2)),
    "masked_select_into_self": lambda d: (lambda y: torch.masked_select(y, y > 2, out=y))(torch.arange(6.0, device=d)),
    "exp_into_expanded": lambda d: torch.exp(torch.ones(3, device=d), out=torch.zeros(1, device=d).expand(3)),
    "max_dim_into_expanded": lambda d: torch.max(_matrix(d), 0, out=(torch.zeros(1, device=d).expand(3),
                                                                    torch.zeros(3, dtype=torch.long, device=d))),
}


@pytest.mark.parametrize("name", OUT_ERRORS)
def test_bad_out_tensors_raise_cpus_error(name):
    check_same_error(OUT_ERRORS[name])


# calls CPU accepts: castable dtypes, overlaps it allows, outs it resizes (warning if they had elements)
OUT_ACCEPTED = {
    "sum_float_into_long": lambda d: torch.sum(_matrix(d), 0, out=torch.empty(0, dtype=torch.long, device=d)),
    "add_int_into_float": lambda d: torch.add(torch.arange(3, device=d), 1, out=torch.empty(0, device=d)),
    "cat_ints_into_float": lambda d: torch.cat([torch.arange(3, device=d)] * 2, out=torch.empty(0, device=d)),
    "sum_into_expanded": lambda d: torch.sum(_matrix(d), 0, out=torch.zeros(1, device=d).expand(3)),
    "add_into_itself": lambda d: (lambda y: torch.add(y, 1, out=y))(torch.arange(6.0, device=d)),
    "add_resizes_with_warning": lambda d: torch.add(torch.ones(3, device=d), 1, out=torch.ones(2, device=d)),
    "add_resizes_an_empty_out": lambda d: torch.add(torch.ones(3, device=d), 1, out=torch.empty(0, device=d)),
    "mm_resizes_with_warning": lambda d: torch.mm(_matrix(d), _matrix(d).t(), out=torch.ones(5, device=d)),
    "cat_resizes_with_warning": lambda d: torch.cat([_matrix(d)] * 2, out=torch.ones(3, device=d)),
    "sum_resizes_with_warning": lambda d: torch.sum(_matrix(d), 0, out=torch.ones(2, device=d)),
    "gather_resizes_with_warning": lambda d: torch.gather(_matrix(d), 0, torch.zeros(1, 3, dtype=torch.long, device=d),
                                                          out=torch.ones(2, device=d)),
    "index_select_resizes_with_warning": lambda d: torch.index_select(_matrix(d), 0, torch.tensor([0], device=d),
                                                                      out=torch.ones(2, device=d)),
    "flip_resizes_with_warning": lambda d: torch.ops.aten.flip.out(_matrix(d), [0], out=torch.ones(2, device=d)),
    "arange_warns_of_another_count": lambda d: torch.arange(6, out=torch.ones(2, device=d)),
    "arange_keeps_a_matrix_of_the_count": lambda d: torch.arange(6, out=torch.ones(2, 3, device=d)),
    "linspace_resizes_silently": lambda d: torch.linspace(0, 1, 6, out=torch.ones(2, device=d)),
    "linspace_keeps_a_matrix_of_the_count": lambda d: torch.linspace(0, 1, 6, out=torch.ones(3, 2, device=d)),
    "logspace_keeps_a_matrix_of_the_count": lambda d: torch.logspace(0, 1, 6, out=torch.ones(3, 2, device=d)),
    "sort_resizes_with_warning": lambda d: torch.sort(_matrix(d), out=(torch.ones(2, device=d),
                                                                      torch.ones(2, dtype=torch.long, device=d))),
    "nonzero_static_resizes_with_warning": lambda d: torch.nonzero_static(_matrix(d), size=4, fill_value=-3,
                                                                          out=torch.ones(5, dtype=torch.long, device=d)),
    "nonzero_static_keeps_a_transposed_out": lambda d: torch.nonzero_static(
        _matrix(d) > 2, size=3, out=torch.zeros(2, 3, dtype=torch.long, device=d).t()),
    "searchsorted_keeps_a_transposed_out": lambda d: torch.searchsorted(
        torch.arange(3.0, device=d), _matrix(d).t(), out=torch.zeros(2, 3, dtype=torch.long, device=d).t()),
    "searchsorted_int32_resizes_with_warning": lambda d: torch.searchsorted(
        torch.arange(3.0, device=d), 1.5, out_int32=True, right=True, out=torch.ones(2, dtype=torch.int32, device=d)),
    "nansum_int_into_complex": lambda d: torch.nansum(torch.arange(4, device=d), out=torch.empty((), dtype=torch.complex64,
                                                                                                device=d)),
}


# An out= on the host is refused as CUDA refuses it, whatever the result: an empty one is never written, but
# the device check comes first
CPU_OUTS = {
    "cat_of_empty_tensors": lambda out: torch.cat([torch.empty(0, device="tpu")] * 2, out=out),
    "gather_of_an_empty_index": lambda out: torch.gather(torch.ones(5, device="tpu"), 0,
                                                         torch.empty(0, dtype=torch.long, device="tpu"), out=out),
    "add_of_empty_tensors": lambda out: torch.add(torch.empty(0, device="tpu"), 1, out=out),
    "nonzero_static_of_size_0": lambda out: torch.nonzero_static(torch.ones(3, device="tpu"), size=0,
                                                                 out=out.long()),
    "mm": lambda out: torch.mm(torch.ones(2, 2, device="tpu"), torch.ones(2, 2, device="tpu"), out=out),
}


@pytest.mark.parametrize("name", CPU_OUTS)
def test_an_out_on_the_host_is_refused_even_for_an_empty_result(name):
    out = torch.full((3,), 7.0)
    with pytest.raises(RuntimeError, match="Expected all tensors to be on the same device"):
        CPU_OUTS[name](out)
    assert out.shape == (3,) and (out == 7).all()


def _warnings_of(call):
    """The call's result and its UserWarnings, without the C++ source location CPU's warnings end with."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, sorted(str(w.message).split(" (Triggered internally at")[0] for w in caught
                          if issubclass(w.category, UserWarning))


@pytest.mark.parametrize("name", OUT_ACCEPTED)
def test_out_tensors_cpu_accepts_are_resized_and_warned_about_like_cpu(name):
    call = OUT_ACCEPTED[name]
    expected, expected_warnings = _warnings_of(lambda: call("cpu"))
    actual, actual_warnings = _warnings_of(lambda: call("tpu"))
    assert actual_warnings == expected_warnings
    expected, actual = (tuple(expected), tuple(actual)) if isinstance(expected, tuple) else ((expected,), (actual,))
    for e, a in zip(expected, actual):
        assert (a.device.type, a.shape, a.dtype) == ("tpu", e.shape, e.dtype)
        torch.testing.assert_close(a.cpu(), e)


# --- the shift operators ------------------------------------------------------------------------------------------

SHIFT_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8, torch.uint16, torch.uint32, torch.uint64]
SHIFTS = {
    "tensor_lshift_tensor": lambda a, b: a << b,
    "tensor_rshift_tensor": lambda a, b: a >> b,
    "tensor_lshift_scalar": lambda a, b: a << 3,
    "tensor_rshift_scalar": lambda a, b: a >> 3,
    "lshift_past_the_width": lambda a, b: a << 70,
    "rshift_negative": lambda a, b: a >> -1,
    "scalar_lshift_tensor": lambda a, b: 5 << b,
    "scalar_rshift_tensor": lambda a, b: 300 >> b,
    "negative_scalar_rshift_tensor": lambda a, b: -7 >> b,
    "ilshift_tensor": lambda a, b: a.clone().__ilshift__(b),
    "irshift_tensor": lambda a, b: a.clone().__irshift__(b),
    "ilshift_scalar": lambda a, b: a.clone().__ilshift__(2),
    "irshift_scalar": lambda a, b: a.clone().__irshift__(2),
    "bitwise_left_shift_scalar_first": lambda a, b: torch.bitwise_left_shift(2, b),
    "bitwise_right_shift_scalar_second": lambda a, b: torch.bitwise_right_shift(a, 1),
    "lshift_float": lambda a, b: a.float() << 1,
}


@pytest.mark.parametrize("name", SHIFTS)
@pytest.mark.parametrize("dtype", SHIFT_DTYPES, ids=str)
def test_shift_operators_match_cpu(dtype, name):
    """Every pair of values and shifts, past the bit width and negative ones included."""
    values = torch.tensor([-130, -5, -1, 0, 1, 3, 7, 100, 127])
    shifts = torch.tensor([-3, -1, 0, 1, 2, 7, 8, 15, 16, 31, 32, 63, 64, 65, 100])
    if not dtype.is_signed:
        shifts = shifts.clamp(min=0)
    a, b = torch.meshgrid(values.to(dtype), shifts.to(dtype), indexing="ij")
    result = check(SHIFTS[name], a, b)
    if result is not None:
        assert result.dtype == SHIFTS[name](a, b).dtype


# --- casts of values that do not fit (what a failed cast into out= leaves) ------------------------------------------


def test_integer_overflow_into_out_wraps_like_cpu():
    """Values out of an integer out's range wrap as CPU's conversion does: no NumPy casting error."""
    check(lambda x: torch.add(x, 1, out=torch.empty(0, dtype=torch.uint8, device=x.device)),
          torch.tensor([300, -2, 255]))
