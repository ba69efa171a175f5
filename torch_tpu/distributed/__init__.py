"""Multi-chip tpu: the "ici" c10d backend, and a simulated world for planning.

``register_backend()`` (run by ``import torch_tpu``) registers the backend with c10d; it is cheap,
since ``import torch`` has already loaded ``torch.distributed``. Everything else loads when a
process group is made:

- ``process_group.py``: the "ici" process group (argument checks, the ICI cost, work handles);
- ``transport.py``: how bytes travel (gloo, or nowhere in a simulated world);
- ``_host.py``: tpu tensors as CPU tensors over their HBM bytes, for the transport;
- ``checks.py``: argument errors, and the check that every rank called the same collective;
- ``work.py``: ``work.wait()``, on the host and on the simulated clock;
- ``c10d_kernels.py``: the c10d ops Python process groups cannot override, for tpu tensors;
- ``attention_sharding.py``: DTensor's sharding strategies for tpu's fused attention;
- ``context_parallel.py``: ``context_parallel``'s ring attention over tpu's fused attention;
- ``data_parallel.py``: DistributedDataParallel's options a Python backend cannot serve, refused up front, and
  the bf16 communication hooks its check keeps for NCCL, let through;
- ``simulated_world.py``: ``torch_tpu.simulate(world_size, topology)``.

The cost model itself is on the chip side: ``csrc_py/ici.py``. See docs/distributed.md.
"""

BACKEND_NAME = "ici"


def register_backend():
    """Make "ici" a c10d backend, and the default one for tpu tensors; DDP refuses what it cannot do on tpu."""
    import importlib

    import torch.distributed as dist

    if not dist.is_available() or BACKEND_NAME in dist.Backend.backend_list:
        return
    from . import data_parallel

    data_parallel.install()
    dist.Backend.register_backend(BACKEND_NAME, _create_process_group, extended_api=True, devices=["tpu"])
    # PyTorch's "fake" group (LocalTensorMode's world, ``init_process_group("fake")``) serves the devices its
    # module lists when it registers (imported here first, 0.4 ms, so that the list below is not replaced
    # later); without tpu, a c10d op on a plain tpu tensor found no backend, where on CPU or CUDA it does nothing
    importlib.import_module("torch.testing._internal.distributed.fake_pg")
    if "tpu" not in dist.Backend.backend_capability[dist.Backend.FAKE]:
        dist.Backend.backend_capability[dist.Backend.FAKE].append("tpu")


def _create_process_group(common_options, backend_options):
    from .process_group import create

    return create(common_options, backend_options)


def simulate(world_size, topology=None, rank=0):
    """Play rank ``rank`` of a simulated world of ``world_size`` chips: see ``simulated_world.py``."""
    from .simulated_world import simulate as play

    return play(world_size, topology, rank)
