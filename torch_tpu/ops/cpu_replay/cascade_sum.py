"""CPU's cascade sum (aten/src/ATen/native/cpu/SumKernel.cpp's multi-level accumulation), replayed.

CPU's nll_loss sums in its input's own dtype through ``CASCADE_LEVELS`` partial sums, each flushed into
the next every ``2 ** level_power`` samples: in bf16 that rounds after every addition, so a plain NumPy
sum (pairwise, in another order) gives different bits.
"""

import numpy as np

CASCADE_LEVELS = 8
FOLD_LIMIT = 512  # counted samples up to which one Python pass over them beats the vectorised replay's NumPy calls
ALL_COUNTED_MIN = 32  # samples above which the replay for all samples counted beats the fold


def cascade_sum(values, counted, dtype):
    """sum(values[counted]) as CPU's cascade forms it. Sample ``b`` (if counted) flushes level j into level
    j + 1 when ``b`` is a multiple of ``2 ** (level_power * (j + 1))``; the levels are then added in order."""
    level_power = max(4, (max(len(values), 3) - 1).bit_length() // CASCADE_LEVELS)  # utils::CeilLog2
    if len(values) > ALL_COUNTED_MIN and counted.all():
        return _replay_all_counted(values, 1 << level_power, dtype)
    samples = np.flatnonzero(counted)
    if len(samples) <= FOLD_LIMIT:
        return _fold(values, samples, level_power, dtype)
    inputs = values[samples]
    residuals = []
    for level in range(1, CASCADE_LEVELS):
        if len(inputs) <= 1:  # what is left reaches the top as 0 + v, every later level's residual being +0.0,
            break  # which leaves a sum begun at +0.0 unchanged wherever it is added
        flushes = samples % (1 << (level_power * level)) == 0
        group = np.cumsum(flushes) - flushes  # a flushing sample closes its group
        sums = sequential_sums(inputs, group, int(flushes.sum()) + 1, dtype)
        residuals.append(sums[-1])
        inputs, samples = sums[:-1], samples[flushes]
    residuals.append(sequential_sums(inputs, np.zeros(len(inputs), np.int64), 1, dtype)[0])
    return sequential_sums(np.array(residuals, dtype), np.zeros(len(residuals), np.int64), 1, dtype)[0]


def _replay_all_counted(values, run, dtype):
    """The replay when every sample is counted (no ignored target): at every level the groups are the first
    input alone, then runs of ``run`` inputs (input i of a level is flushed by sample ``i * run ** level``,
    which flushes that level when i is a multiple of ``run``), then the unflushed tail. One table per level,
    a row per group, summed by one ``np.add.accumulate``: a few NumPy calls per level, not one Python step
    per sample."""
    inputs = values
    residuals = []
    for level in range(1, CASCADE_LEVELS):
        if len(inputs) <= 1:
            break
        runs, tail = divmod(len(inputs) - 1, run)
        table = np.zeros((runs + 2, run + 1), dtype)  # column 0 is the +0.0 each partial sum starts from
        table[0, 1] = inputs[0]
        table[1:runs + 1, 1:] = inputs[1:1 + runs * run].reshape(runs, run)
        table[runs + 1, 1:1 + tail] = inputs[1 + runs * run:]
        sums = np.add.accumulate(table, axis=1, dtype=dtype)[:, -1]
        residuals.append(sums[-1])
        inputs = sums[:-1]
    residuals.append(_added_in_order(inputs, dtype))
    return _added_in_order(residuals, dtype)


def _added_in_order(values, dtype):
    """``((0 + v0) + v1) + ...`` on NumPy scalars of ``dtype``, for the few values of a cascade's top."""
    total = np.zeros((), dtype)[()]
    for value in values:
        total = total + value
    return total


def _fold(values, samples, level_power, dtype):
    """The same cascade, one sample at a time on NumPy scalars of ``dtype`` (each addition rounded to it, as
    the replay's accumulate rounds): a loss over a small batch costs a few microseconds instead of the
    replay's dozens of NumPy calls. Every level is added at the end; those the replay stops short of hold
    +0.0, which leaves a sum begun at +0.0 unchanged."""
    zero = np.zeros((), dtype)[()]
    levels = [zero] * CASCADE_LEVELS
    for sample, value in zip(samples.tolist(), values[samples]):
        levels[0] = levels[0] + value
        level = 1
        while level < CASCADE_LEVELS and sample % (1 << (level_power * level)) == 0:
            levels[level] = levels[level] + levels[level - 1]
            levels[level - 1] = zero
            level += 1
    return _added_in_order(levels, dtype)


def sequential_sums(values, group, groups, dtype):
    """Per group, ``((0 + v0) + v1) + ...`` over its values in order, rounding to ``dtype`` at each step.

    One ``np.add.accumulate`` along the rows of a (group, position) table: accumulate adds strictly in order
    (a reduce may pair), each addition rounded to ``dtype``. Each row starts with +0.0, as the fold does, and
    the padding after a row's last value adds +0.0, which leaves a sum that started at +0.0 unchanged."""
    position = np.arange(len(values)) - np.searchsorted(group, group)
    width = int(position.max()) + 1 if len(values) else 0
    table = np.zeros((groups, width + 1), dtype)
    table[group, position + 1] = values
    return np.add.accumulate(table, axis=1, dtype=dtype)[:, -1]
