"""CPU's cascade sum (aten/src/ATen/native/cpu/SumKernel.cpp's multi-level accumulation), replayed.

CPU's nll_loss sums in its input's own dtype through ``CASCADE_LEVELS`` partial sums, each flushed into
the next every ``2 ** level_power`` samples: in bf16 that rounds after every addition, so a plain NumPy
sum (pairwise, in another order) gives different bits.
"""

import numpy as np

CASCADE_LEVELS = 8
FOLD_LIMIT = 512  # counted samples up to which one Python pass over them beats the vectorised replay's NumPy calls


def cascade_sum(values, counted, dtype):
    """sum(values[counted]) as CPU's cascade forms it. Sample ``b`` (if counted) flushes level j into level
    j + 1 when ``b`` is a multiple of ``2 ** (level_power * (j + 1))``; the levels are then added in order."""
    level_power = max(4, (max(len(values), 3) - 1).bit_length() // CASCADE_LEVELS)  # utils::CeilLog2
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
    total = zero
    for partial in levels:
        total = total + partial
    return total


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
