"""Worker (one process per rank, env:// variables set): rank 1 never joins a collective.

Rank 0 must raise within the group's timeout (TORCH_TPU_DIST_TIMEOUT) and print what it saw.
"""

import os
import time

import torch
import torch.distributed as dist

import torch_tpu  # noqa: F401

dist.init_process_group()
rank = dist.get_rank()
tensor = torch.ones(4, device="tpu")
dist.all_reduce(tensor)
if rank == 1:
    time.sleep(600)  # alive, but never joins: the test kills it once rank 0 is done
start = time.monotonic()
try:
    dist.all_reduce(tensor)
except RuntimeError as error:
    print(f"hang: rank 0 raised after {time.monotonic() - start:.1f} s: {error}", flush=True)
os._exit(0)  # the store lives here: do not wait for rank 1 at exit
