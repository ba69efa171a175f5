"""Point-to-point envelopes: a send tells its receiver what it carries, or that it was refused.

A send and its recv have no group to agree with (``checks``), and gloo moves bytes without asking what they
are: a recv in another dtype of as many bytes reads them as that dtype, one of more bytes than were sent keeps
the rest as it was, both without a word, and a send refused on its rank leaves the recv waiting for the
timeout. So on the "ici" group every send first sends an envelope, on a tag of its own: the dtype and number
of elements it carries, or its error's class and words. The data follows on the send's tag, or, when the send
was refused, a message of no bytes (gloo lets a recv take fewer bytes than it asked for, so this works
whatever the receiver expects). Both go out at once, as gloo's sends do, and the recv posts both of its
receives at once, so no send waits for its receiver to call ``wait()`` (exchanges such as "irecv, send,
wait" on two ranks, and pipeline schedules, depend on that). The receiver reads the envelope in ``wait()``
and raises the sender's error, or a mismatch, instead of handing over the wrong numbers.

Not caught: a send of *more* bytes than its recv asks for aborts the receiving process inside gloo
("Received data size doesn't match expected size"), as with gloo on CPU tensors, before the envelope is read.
"""

import torch

from . import checks

# the envelope's tag: the send's own tag with this bit set (tags that use it would mix with envelopes)
ENVELOPE_TAG_BIT = 1 << 30
LONGEST_TEXT = 512  # bytes of a refused send's message carried by the envelope
_FIELDS = 4  # failure kind, message length, dtype, elements


def envelope_tag(tag):
    return tag | ENVELOPE_TAG_BIT


def envelope(tensor, failure=None):
    """The envelope of a send of ``tensor``: [failure kind, message length, dtype, elements, message bytes]."""
    kind, length = checks.failure_code(failure)
    length = min(length, LONGEST_TEXT)
    dtype = checks.DTYPES.index(tensor.dtype) if tensor is not None else 0
    elements = tensor.numel() if tensor is not None else 0
    text = checks.failure_text_codes(failure, LONGEST_TEXT)[:LONGEST_TEXT]
    return torch.tensor([kind, length, dtype, elements, *text], dtype=torch.int64)


def empty_envelope():
    return torch.empty(_FIELDS + LONGEST_TEXT, dtype=torch.int64)


def nothing():
    """What a refused send sends in place of its data."""
    return torch.empty(0, dtype=torch.uint8)


def _describe(dtype_index, elements):
    return f"{str(checks.DTYPES[dtype_index]).removeprefix('torch.')} ({elements} elements)"


class EnvelopedReceive:
    """A recv's transport work: the envelope's receive and the data's. ``wait()`` waits for both (so that
    gloo's buffers live until it is done with them), then raises if the send was refused or does not fit.
    A receive from any source posts its data's receive once the envelope names the sender."""

    def __init__(self, error, tensor, envelope_work, received_envelope, receive_data, source=None):
        self._error, self._tensor, self._source = error, tensor, source
        self._envelope_work, self._envelope, self._receive_data = envelope_work, received_envelope, receive_data
        self._data_work = receive_data(source) if source is not None else None

    def _data(self):
        if self._data_work is None:
            self._data_work = self._receive_data(self._source_rank())
        return self._data_work

    def is_completed(self):
        return self._envelope_work.is_completed() and self._data().is_completed()

    def _source_rank(self):
        return self._envelope_work._source_rank() if self._source is None else self._source

    def wait(self):
        self._envelope_work.wait()
        self._data().wait()
        kind, length, dtype, elements = self._envelope[:_FIELDS].tolist()
        sender = self._source_rank()
        if kind:
            raise checks.peer_failure(self._error, sender, [kind, length], self._envelope[_FIELDS:].tolist())
        tensor = self._tensor
        if checks.DTYPES[dtype] != tensor.dtype or elements != tensor.numel():
            raise self._error(f"rank {sender} sent {_describe(dtype, elements)}, but this recv takes "
                              f"{_describe(checks.DTYPES.index(tensor.dtype), tensor.numel())}")
