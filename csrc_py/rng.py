"""Counter-based random numbers, as TPUs (and CUDA's Philox) generate them.

The state is just (seed, offset). Every random kernel takes a fresh Philox
stream at the current offset and bumps the offset by one, so a result depends
only on the seed and on how many random kernels ran before it: reproducible,
and cheap to save and restore.
"""

import numpy as np

STATE_BYTES = 16
DEFAULT_SEED = 67280421310721  # the same default torch uses for its generators


class CounterRNG:
    def __init__(self, seed=DEFAULT_SEED):
        self.manual_seed(seed)

    def manual_seed(self, seed):
        self.seed = int(seed) & 0xFFFF_FFFF_FFFF_FFFF
        self.initial_seed = self.seed
        self.offset = 0

    def next_stream(self):
        """A NumPy Generator private to one kernel launch."""
        bit_generator = np.random.Philox(key=self.seed, counter=[0, 0, 0, self.offset])
        self.offset += 1
        return np.random.Generator(bit_generator)

    def get_state(self):
        return np.array([self.seed, self.offset], dtype=np.uint64).view(np.uint8).copy()

    def set_state(self, state):
        state = np.asarray(state, dtype=np.uint8)
        if state.size != STATE_BYTES:
            raise ValueError(f"a TPU RNG state is {STATE_BYTES} bytes, got {state.size}")
        self.seed, self.offset = (int(v) for v in state.view(np.uint64))
