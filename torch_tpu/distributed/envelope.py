"""Point-to-point envelopes: a send tells its receiver what it carries, or that it was refused.

A send and its recv have no group to agree with (``checks``), and gloo moves bytes without asking what they
are: a recv in another dtype of as many bytes reads them as that dtype, one of more bytes than were sent keeps
the rest as it was, both without a word, and a send refused on its rank leaves the recv waiting for the
timeout. So on the "ici" group every send first sends an envelope, on a tag of its own: the dtype and number
of elements it carries, or its error's class and words. The data follows on the send's tag, or, when the send
was refused, a message of no bytes (gloo lets a recv take fewer bytes than it asked for, so this works
whatever the receiver expects). Both go out at once, as gloo's sends do, and the recv posts both of its
receives at once, so no send waits for its receiver to call ``wait()`` (exchanges such as "irecv, send,
wait" on two ranks, and pipeline schedules, depend on that). A receive from any source learns its sender
from the envelope, so its data's receive, and those of the receives on its tag after it, wait for that
(``ReceiveLine``). The receiver reads the envelope in ``wait()``
and raises the sender's error, or a mismatch, instead of handing over the wrong numbers.

Not caught: a send of *more* bytes than its recv asks for aborts the receiving process inside gloo
("Received data size doesn't match expected size"), as with gloo on CPU tensors, before the envelope is read.
"""

import torch

from . import checks

# the envelope's tag: the send's own tag with this bit set; tags that use it would mix with envelopes, so they
# are refused (gloo takes tags up to 2**32 - 1)
ENVELOPE_TAG_BIT = 1 << 30
LONGEST_TEXT = 512  # bytes of a refused send's message carried by the envelope
_FIELDS = 4  # failure kind, message length, dtype, elements


def envelope_tag(tag):
    if tag >= ENVELOPE_TAG_BIT:
        raise RuntimeError(f"tag {tag} is out of range: the \"ici\" backend takes tags below 2**30 (it sends "
                           "each send's envelope on its tag + 2**30)")
    return tag | ENVELOPE_TAG_BIT


def envelope(tensor, failure=None):
    """The envelope of a send of ``tensor``: [failure kind, message length, dtype, elements, message bytes].
    Only a refused send carries a message, so an accepted send's envelope is its 4 fields (32 bytes): the
    receive posted for the longest envelope (``empty_envelope``) takes a shorter one, as gloo's receives do."""
    kind, length = checks.failure_code(failure)
    length = min(length, LONGEST_TEXT)
    dtype = checks.DTYPES.index(tensor.dtype) if tensor is not None else 0
    elements = tensor.numel() if tensor is not None else 0
    text = checks.failure_text_codes(failure, length)[:length]
    return torch.tensor([kind, length, dtype, elements, *text], dtype=torch.int64)


def empty_envelope():
    """Room for the longest envelope: a refused send's, with ``LONGEST_TEXT`` bytes of its message."""
    return torch.empty(_FIELDS + LONGEST_TEXT, dtype=torch.int64)


def nothing():
    """What a refused send sends in place of its data."""
    return torch.empty(0, dtype=torch.uint8)


def _describe(dtype_index, elements):
    return f"{str(checks.DTYPES[dtype_index]).removeprefix('torch.')} ({elements} elements)"


class ReceiveLine:
    """The receives of one group and tag whose data's receive is not yet posted, in the order they were posted.
    gloo hands one peer's messages on a tag to its receives in the order they were posted, and the envelopes'
    receives are posted at once, in that order; so the data's receives must be posted in that order too, or a
    receive waited before an earlier one takes the earlier one's data. A receive from any source posts its
    data's receive once its envelope names the sender, so the receives after it wait in line: the first waited
    posts the data's receives of all before it first (waiting for their envelopes, which gloo would have matched
    before its own message anyway)."""

    def __init__(self):
        self._waiting = []

    def join(self, receive):
        if receive.source is not None and not self._waiting:
            receive.post_data()
        else:
            self._waiting.append(receive)

    def post_through(self, receive, block=True):
        """Post the data's receives up to ``receive``'s, in order. Not blocking, stop at the first whose sender
        is not known yet, and say whether ``receive``'s is posted."""
        while not receive.data_posted:
            head = self._waiting[0]
            if not (block or head.sender_known()):
                return False
            self._waiting.pop(0)
            head.post_data()
        return True


class EnvelopedReceive:
    """A recv's transport work: the envelope's receive and the data's. ``wait()`` waits for both (so that
    gloo's buffers live until it is done with them), then raises if the send was refused or does not fit.
    The data's receive is posted in line (``ReceiveLine``)."""

    def __init__(self, error, tensor, envelope_work, received_envelope, receive_data, line, source=None):
        self._error, self._tensor, self.source, self._line = error, tensor, source, line
        self._envelope_work, self._envelope, self._receive_data = envelope_work, received_envelope, receive_data
        self._envelope_in, self._data_work = False, None
        line.join(self)

    @property
    def data_posted(self):
        return self._data_work is not None

    def sender_known(self):
        return self.source is not None or self._envelope_in or self._envelope_work.is_completed()

    def post_data(self):
        self._data_work = self._receive_data(self.source if self.source is not None else self._source_rank())

    def _source_rank(self):
        """The sending rank, once the envelope is in (waited for once: a gloo receive's second wait() waits
        for one more message)."""
        if not self._envelope_in:
            self._envelope_work.wait()
            self._envelope_in = True
        return self._envelope_work._source_rank() if self.source is None else self.source

    def is_completed(self):
        return self._envelope_work.is_completed() and self._line.post_through(self, block=False) and \
            self._data_work.is_completed()

    def wait(self):
        self._line.post_through(self)
        sender = self._source_rank()
        self._data_work.wait()
        kind, length, dtype, elements = self._envelope[:_FIELDS].tolist()
        if kind:
            raise checks.peer_failure(self._error, sender, [kind, length], self._envelope[_FIELDS:].tolist())
        tensor = self._tensor
        if checks.DTYPES[dtype] != tensor.dtype or elements != tensor.numel():
            raise self._error(f"rank {sender} sent {_describe(dtype, elements)}, but this recv takes "
                              f"{_describe(checks.DTYPES.index(tensor.dtype), tensor.numel())}")
