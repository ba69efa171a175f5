"""libstdc++'s unstable orderings (std::sort, std::nth_element, std::partial_sort), replayed in NumPy.

torch CPU sorts, takes the top k and finds the mode with these algorithms, so where keys tie, the
order it leaves them in (and so the indices it returns) is theirs, not a stable sort's. Each function
takes keys (``ranks`` makes them from values: numbers that ``<`` orders totally, without NaN), one
row per independent range, and returns positions within each row.

The partitions of introsort and introselect run for every pending range of every row at once, one
vectorised step per recursion level. Heaps (libstdc++'s fallback for ranges that keep partitioning
badly, and partial_sort's whole method) are sifted element by element.
"""

import numpy as np

THRESHOLD = 16  # libstdc++'s _S_threshold: introsort leaves shorter ranges to a final insertion sort
_CHUNK = 1024  # heap selection screens this many candidates at a time against the heap's top
_NO_POSITION = np.iinfo(np.int64).max


def ranks(values, descending=False):
    """Keys ordering ``values`` by ``<`` as CPU's comparators do: NaN after every number (before them
    when descending), all NaNs tied, -0.0 tied with 0.0."""
    if (values.dtype.kind == "f" and np.isnan(values).any()) or values.dtype == np.uint64:
        _, inverse = np.unique(values, return_inverse=True)  # puts the NaNs, as one value, last
        values = inverse.reshape(values.shape)
    if values.dtype.kind == "f":
        keys = values.astype(np.float64)
        return -keys if descending else keys
    keys = values.astype(np.int64)
    return ~keys if descending else keys  # -x - 1: reverses the order without overflowing


def sort_order(keys, length=None):
    """Per row, the positions in the order std::sort leaves them; only the first ``length`` positions
    (all by default) are sorted, the rest stay where they are."""
    rows, n = keys.shape
    length = n if length is None else length
    order = np.tile(np.arange(n), (rows, 1))
    order[:, :length] = np.argsort(keys[:, :length], axis=1, kind="stable")  # the order of rows without ties
    ordered = np.take_along_axis(keys, order[:, :length], 1)
    tied = _has_ties(ordered)
    if tied.any():
        flat_keys, flat_order, first = _laid_end_to_end(keys[tied])
        carried = np.stack([flat_order, _twins(ordered[tied], order[tied, :length], n).reshape(-1)], axis=1)
        _introsort(flat_keys, carried, first, first + length, twins=carried[:, 1])
        # __final_insertion_sort: on keys ordered by <, a stable sort of each row's range
        arranged = carried[:, 0].reshape(-1, n)
        final = np.argsort(flat_keys.reshape(-1, n)[:, :length], axis=1, kind="stable")
        arranged[:, :length] = np.take_along_axis(arranged[:, :length], final, 1)
        order[tied] = arranged
    return order


def smallest_first(keys, k):
    """Per row, the positions of the k smallest keys in ascending order, and whether that is the only
    such order: no two of them tie, nor the k-th with the next. Where it is, every algorithm that sorts
    the k smallest keys first (partial_sort, or nth_element then sort) returns exactly these."""
    n = keys.shape[1]
    candidates = np.argpartition(keys, k, axis=1)[:, :k + 1] if k < n else np.tile(np.arange(n), (len(keys), 1))
    ranked = np.take_along_axis(candidates, np.argsort(np.take_along_axis(keys, candidates, 1), axis=1), 1)
    return ranked[:, :k], ~_has_ties(np.take_along_axis(keys, ranked, 1))


def select_order(keys, nth):
    """Per row, the positions in the order std::nth_element(begin, begin + nth, end) leaves them."""
    flat_keys, flat_order, first = _laid_end_to_end(keys)
    n = keys.shape[1]
    if nth < n:
        _introselect(flat_keys, flat_order, first, first + n, first + nth)
    return flat_order.reshape(keys.shape)


def partial_sort_prefix(keys, middle):
    """Per row, the first ``middle`` positions of std::partial_sort(begin, begin + middle, end)."""
    prefix, settled = smallest_first(keys, middle)
    tied = ~settled
    flat_keys, flat_order, first = _laid_end_to_end(keys[tied])
    n = keys.shape[1]
    for start in first.tolist():
        heap_keys, heap_order = _heap_select(flat_keys, flat_order, start, start + middle, start + n)
        _sort_heap(heap_keys, heap_order, middle)
        flat_order[start:start + middle] = heap_order[:middle]
    prefix[tied] = flat_order.reshape(-1, n)[:, :middle]
    return prefix


# --- rows laid end to end ---------------------------------------------------------------------------------


def _has_ties(ordered):
    """Per row of keys in ascending order, whether two are equal."""
    return np.any(ordered[:, 1:] == ordered[:, :-1], axis=1)


def _twins(ordered, order, n):
    """Per row of ``n`` positions, 1 where the key (given in ascending order with its positions) occurs
    more than once in the row, else 0."""
    equal_next = ordered[:, 1:] == ordered[:, :-1]
    twin = np.zeros(ordered.shape, np.int64)
    twin[:, 1:] |= equal_next
    twin[:, :-1] |= equal_next
    by_position = np.zeros((len(ordered), n), np.int64)
    np.put_along_axis(by_position, order, twin, 1)
    return by_position


def _laid_end_to_end(keys):
    """The rows' keys as one flat array, each element's position within its row, and where rows start."""
    rows, n = keys.shape
    return keys.reshape(-1).copy(), np.tile(np.arange(n), rows), np.arange(rows, dtype=np.int64) * n


def _positions(first, last):
    """Every position of the ranges [first, last), range after range; the range of each; where each
    range's run begins in that listing."""
    lengths = last - first
    segment = np.repeat(np.arange(len(first)), lengths)
    offsets = np.cumsum(lengths) - lengths
    return np.arange(lengths.sum()) - offsets[segment] + first[segment], segment, offsets


def _swap(keys, order, i, j):
    keys[i], keys[j] = keys[j], keys[i]
    order[i], order[j] = order[j], order[i]


def _lg(lengths):
    """std::__lg: floor(log2(n)), exactly, per range."""
    return np.frexp(lengths.astype(np.float64))[1].astype(np.int64) - 1


# --- introsort and introselect ------------------------------------------------------------------------------


def _introsort(keys, order, first, last, twins):
    """std::__introsort_loop: partition every range longer than the threshold, both halves inheriting
    the decremented depth limit; a range that exhausts it is heap sorted.

    ``order`` may carry more columns than the positions (rows move whole); ``twins``, a view of one,
    marks the keys that occur more than once in their row. A range holding fewer than two is left alone:
    without equal keys, whatever the partitions would do, the final insertion sort gives its one order.
    """
    depth = 2 * _lg(last - first)
    while True:
        twins_before = np.concatenate([[0], np.cumsum(twins)])
        pending = (last - first > THRESHOLD) & (twins_before[last] - twins_before[first] >= 2)
        first, last, depth = first[pending], last[pending], depth[pending]
        exhausted = depth == 0
        for start, stop in zip(first[exhausted].tolist(), last[exhausted].tolist()):
            _heap_sort(keys, order, start, stop)
        first, last, depth = first[~exhausted], last[~exhausted], depth[~exhausted] - 1
        if not len(first):
            return
        cut = _partition(keys, order, first, last)
        first, last, depth = np.concatenate([first, cut]), np.concatenate([cut, last]), np.tile(depth, 2)


def _introselect(keys, order, first, last, nth):
    """std::__introselect: partition, keep the side holding ``nth``, until at most 3 keys remain, which
    an insertion sort orders; a range that exhausts its depth limit takes a heap selection instead."""
    depth = 2 * _lg(last - first)
    heap_selected = np.zeros(len(first), bool)
    while True:
        pending = ~heap_selected & (last - first > 3)
        exhausted = pending & (depth == 0)
        for row in np.flatnonzero(exhausted).tolist():
            start, stop = first[row], last[row]
            heap_keys, heap_order = _heap_select(keys, order, start, nth[row] + 1, stop)
            keys[start:stop], order[start:stop] = heap_keys, heap_order
            _swap(keys, order, start, nth[row])
        heap_selected |= exhausted
        pending &= ~exhausted
        if not pending.any():
            break
        cut = _partition(keys, order, first[pending], last[pending])
        depth[pending] -= 1
        right = cut <= nth[pending]
        first[pending] = np.where(right, cut, first[pending])
        last[pending] = np.where(right, last[pending], cut)
    _insertion_sort(keys, order, first[~heap_selected], last[~heap_selected])


def _insertion_sort(keys, order, first, last):
    """std::__insertion_sort on each range: with keys ordered by ``<``, a stable sort."""
    positions, segment, _ = _positions(first, last)
    arranged = positions[np.lexsort((keys[positions], segment))]
    keys[positions], order[positions] = keys[arranged], order[arranged]


def _move_median_to_first(keys, order, result, a, b, c):
    ka, kb, kc = keys[a], keys[b], keys[c]
    median = np.where(ka < kb, np.where(kb < kc, b, np.where(ka < kc, c, a)),
                      np.where(ka < kc, a, np.where(kb < kc, c, b)))
    _swap(keys, order, result, median)


def _partition(keys, order, first, last):
    """std::__unguarded_partition_pivot on every range at once; returns each range's cut.

    The median of three becomes the pivot at ``first``. The left scan stops at keys not below it, the
    right scan at keys not above it, and the k-th left stop swaps with the k-th right stop for as long
    as it lies left of it. The scans then cross at the first left stop not swapped, or at the last
    right stop that was (it then holds a key not below the pivot), whichever comes first.
    """
    _move_median_to_first(keys, order, first, first + 1, first + (last - first) // 2, last - 1)
    positions, segment, offsets = _positions(first + 1, last)
    scanned, pivot = keys[positions], keys[first][segment]
    left = _kth_stops(scanned >= pivot, positions, segment, offsets, from_right=False)
    right = _kth_stops(scanned <= pivot, positions, segment, offsets, from_right=True)
    crossing = left < right  # true for a prefix of each range's stops: left ones rise, right ones fall
    _swap(keys, order, left[crossing], right[crossing])
    swapped = np.bincount(segment[crossing], minlength=len(first))
    unswapped_left = np.where(swapped < last - first - 1, left[np.minimum(offsets + swapped, len(left) - 1)],
                              _NO_POSITION)
    last_swapped_right = np.where(swapped > 0, right[np.maximum(offsets + swapped - 1, 0)], last)
    return np.minimum(unswapped_left, last_swapped_right)


def _kth_stops(stops, positions, segment, offsets, from_right):
    """Per range, its k-th stop (counted from the left or from the right) at ``offsets[range] + k``;
    slots past a range's last stop hold a position no scan reaches."""
    slots = np.full(len(positions), -1 if from_right else _NO_POSITION, np.int64)
    hits, hit_segment = positions[stops], segment[stops]
    counts = np.bincount(hit_segment, minlength=len(offsets))
    k = np.arange(len(hits)) - (np.cumsum(counts) - counts)[hit_segment]
    if from_right:
        k = counts[hit_segment] - 1 - k
    slots[offsets[hit_segment] + k] = hits
    return slots


# --- heaps (stl_heap.h), on one range held as Python lists ------------------------------------------------


def _heap_sort(keys, order, first, last):
    """std::__partial_sort(first, last, last): make a heap of the whole range, then sort it."""
    heap_keys, heap_order = keys[first:last].tolist(), order[first:last].tolist()
    _make_heap(heap_keys, heap_order, last - first)
    _sort_heap(heap_keys, heap_order, last - first)
    keys[first:last], order[first:last] = heap_keys, heap_order


def _heap_select(keys, order, first, middle, last):
    """std::__heap_select: a max-heap of [first, middle) that each key of [middle, last) below its top
    enters, in turn, by popping the top out to that key's place. Returns [first, last) as lists."""
    heap_keys, heap_order = keys[first:last].tolist(), order[first:last].tolist()
    size = middle - first
    _make_heap(heap_keys, heap_order, size)
    rest = keys[middle:last]  # each of these is read before anything is written to it
    for start in range(0, len(rest), _CHUNK):
        # the top only ever falls, so keys not below it now can never enter
        for offset in np.flatnonzero(rest[start:start + _CHUNK] < heap_keys[0]).tolist():
            position = size + start + offset
            if heap_keys[position] < heap_keys[0]:
                _pop_heap(heap_keys, heap_order, size, position)
    return heap_keys, heap_order


def _make_heap(keys, order, length):
    for parent in range((length - 2) // 2, -1, -1):
        _adjust_heap(keys, order, parent, length, keys[parent], order[parent])


def _sort_heap(keys, order, length):
    while length > 1:
        length -= 1
        _pop_heap(keys, order, length, length)


def _pop_heap(keys, order, length, result):
    """std::__pop_heap: the top moves to ``result``, whose key sifts into the heap of ``length``."""
    key, index = keys[result], order[result]
    keys[result], order[result] = keys[0], order[0]
    _adjust_heap(keys, order, 0, length, key, index)


def _adjust_heap(keys, order, hole, length, key, index):
    """std::__adjust_heap: move the hole down to a leaf along the larger children, then push the key up."""
    top = child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if keys[child] < keys[child - 1]:
            child -= 1
        keys[hole], order[hole] = keys[child], order[child]
        hole = child
    if length % 2 == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        keys[hole], order[hole] = keys[child - 1], order[child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and keys[parent] < key:
        keys[hole], order[hole] = keys[parent], order[parent]
        hole = parent
        parent = (hole - 1) // 2
    keys[hole], order[hole] = key, index
