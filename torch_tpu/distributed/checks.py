"""Argument checks for collectives, and the check that every rank called the same collective.

Bad arguments are found on the rank that passed them, before anything moves, with an error naming
the collective and the rank. A collective's *signature* (what it is, its dtype, the shape every
rank must agree on, its root and reduce op) is then exchanged with the other ranks of the group,
with whether this rank's checks passed: if any rank's failed, it raises its error and every other
rank raises the same (its class and words, naming the rank), at once; if any rank called something
else, every rank raises an error listing what each one called. Either way no rank waits for a
collective its peers will not run. A rank that never arrives (dead, or stuck elsewhere) makes the
exchange fail within the group's timeout. ``TORCH_TPU_DIST_CHECKS=0`` skips the exchange.
"""

import os

import torch

from .._errors import cannot_cast

KINDS = (
    "barrier", "all_reduce", "broadcast", "all_gather", "all_gather_into_tensor", "reduce_scatter",
    "reduce_scatter_tensor", "all_to_all_single", "all_to_all", "scatter", "gather", "reduce",
    "all_reduce_coalesced", "all_gather_coalesced",
)
DTYPES = (None, *sorted({d for d in vars(torch).values() if isinstance(d, torch.dtype)}, key=str))
MAX_DIMS = 8
# the classes a rank's failed check can raise, so that its peers raise the same (any other: RuntimeError)
FAILURE_KINDS = (RuntimeError, ValueError, TypeError, IndexError, NotImplementedError)
LONGEST_FAILURE = 4000  # bytes of a failure's message sent to the peers


def exchange_enabled():
    return os.environ.get("TORCH_TPU_DIST_CHECKS", "1") != "0"


def signature(sequence, kind, tensor=None, *, shape=None, op=-1, root=-1, count=1):
    """A collective call as integers: [sequence, kind, dtype, op, root, count, ndim, sizes...]."""
    dtype = DTYPES.index(tensor.dtype) if tensor is not None else 0
    shape = list(tensor.shape if shape is None and tensor is not None else shape or ())
    if len(shape) > MAX_DIMS:
        shape = shape[: MAX_DIMS - 1] + [int(torch.Size(shape[MAX_DIMS - 1:]).numel())]
    sizes = shape + [-1] * (MAX_DIMS - len(shape))
    return [sequence, KINDS.index(kind), dtype, int(op), root, count, len(shape), *sizes]


def describe_signature(values):
    sequence, kind, dtype, op, root, count, ndim, *sizes = values
    dtype_name = str(DTYPES[dtype]).removeprefix("torch.") if dtype else ""
    parts = [f"{dtype_name}[{', '.join(str(s) for s in sizes[:ndim])}]" if dtype else ""]
    if op >= 0:
        parts.append(f"op {str(torch.distributed.ReduceOp.RedOpType(op)).rpartition('.')[2]}")
    if root >= 0:
        parts.append(f"root {root}")
    if count != 1:
        parts.append(f"{count} tensors")
    return f"{KINDS[kind]}({', '.join(p for p in parts if p)}) as collective #{sequence}"


def failure_code(failure):
    """What a rank tells its peers of its own checks: [0, 0] if they passed, else [kind, bytes of the message]."""
    if failure is None:
        return [0, 0]
    kind = next((i for i, k in enumerate(FAILURE_KINDS) if type(failure) is k), 0)
    return [kind + 1, len(_failure_text(failure))]


def _failure_text(failure):
    return str(failure).encode()[:LONGEST_FAILURE]


def failure_text_codes(failure, length):
    """A failure's message as ``length`` integers (its bytes, padded), for the exchange."""
    text = _failure_text(failure) if failure is not None else b""
    return list(text.ljust(length, b"\0"))


def peer_failure(error, rank, code, text_codes):
    """The error a rank raises when peer ``rank``'s checks failed: the peer's class, naming it, with its words."""
    kind, length = code
    text = bytes(text_codes[:length]).decode(errors="replace")
    return error(f"rank {rank}'s arguments were refused, so no rank runs it: {text}", FAILURE_KINDS[kind - 1])


class CollectiveError:
    """Builds the errors of one collective call: ``fail("...")`` -> RuntimeError naming it and the rank."""

    def __init__(self, name, rank, group):
        self.name, self.rank, self.group = name, rank, group

    def __str__(self):
        return f"{self.name} on rank {self.rank} of process group {self.group!r}"

    def __call__(self, message, kind=RuntimeError):
        return kind(f"{self}: {message}")


def same_device(error, tensors):
    devices = {str(t.device) for t in tensors}
    if len(devices) > 1:
        raise error(f"all tensors must be on one device, got tensors on {', '.join(sorted(devices))}")
    device = next(iter(devices), "cpu")
    if device not in ("cpu", "tpu:0"):
        raise error(f"tensors on {device} are not supported: the ici backend takes tpu tensors (and CPU ones, over gloo)")


_BITWISE_OPS = ("BAND", "BOR", "BXOR")


def reduce_op_takes(error, op, tensors):
    """The reduce op must be defined on the tensors' dtype, as gloo requires (in gloo's words): bitwise ops on
    integral and bool tensors only, an average on floating ones only (its float result cannot be stored)."""
    name = str(torch.distributed.ReduceOp.RedOpType(op)).rpartition(".")[2]
    for tensor in tensors:
        integral = not (tensor.dtype.is_floating_point or tensor.dtype.is_complex)
        if name in _BITWISE_OPS and not integral:
            raise error(f"Cannot use ReduceOp.{name} with non-integral dtype")
        if name == "AVG" and integral:
            raise error(str(cannot_cast(torch.float32, tensor.dtype)))


def same_dtype(error, reference, tensors, what="output"):
    for tensor in tensors:
        if tensor.dtype != reference.dtype:
            raise error(f"{what} dtype {tensor.dtype} does not match the input dtype {reference.dtype}", TypeError)


def same_shape(error, reference, tensors, what):
    for index, tensor in enumerate(tensors):
        if tensor.shape != reference.shape:
            raise error(f"{what} {index} has shape {list(tensor.shape)}, expected {list(reference.shape)}")


def list_length(error, tensors, size, what):
    if len(tensors) != size:
        raise error(f"the {what} list has {len(tensors)} tensors, expected one per rank ({size})")


def one_per_rank(error, references, lists, size, what):
    """Each list holds one tensor per rank, of its reference's dtype and shape (all-gather outputs,
    reduce-scatter inputs, the root's scatter and gather lists)."""
    for reference, tensors in zip(references, lists):
        list_length(error, tensors, size, what)
        same_dtype(error, reference, tensors, f"{what} list")
        same_shape(error, reference, tensors, f"{what} list tensor")


def root_list(error, root, rank, size, references, lists, what):
    """Scatter and gather: a list of one tensor per rank on the root, none elsewhere."""
    rank_in_group(error, root, size, "the root")
    if rank == root:
        one_per_rank(error, references, lists, size, what)
    elif any(lists):
        raise error(f"only the root passes a {what} list")


def sized(error, big, small, size, big_name, small_name):
    """``big`` must hold ``size`` times ``small``'s elements (all-gather output, reduce-scatter input)."""
    if big.numel() != small.numel() * size:
        raise error(
            f"the {big_name} has {big.numel()} elements, but {size} ranks x {small.numel()} {small_name} "
            f"elements make {small.numel() * size}"
        )


def rank_in_group(error, rank, size, what):
    if not 0 <= rank < size:
        raise error(f"{what} {rank} is not a rank of this group of {size}", ValueError)


def splits(error, tensor, sizes, size, what):
    if not sizes:
        if tensor.dim() == 0 or tensor.shape[0] % size:
            raise error(f"the {what}'s first dimension ({tensor.shape[0] if tensor.dim() else 'none'}) does not "
                        f"split evenly over {size} ranks; pass split sizes")
        return
    if len(sizes) != size or sum(sizes) != tensor.shape[0] or min(sizes) < 0:
        raise error(f"{what} split sizes {list(sizes)} must be {size} sizes adding up to the {what}'s first "
                    f"dimension ({tensor.shape[0]})")
