"""Checks (run by suite.py on every rank): DTensor on tpu meshes equals single-device results.

Covers 1-D and named 2-D meshes, distribute_tensor with default arguments, redistribute between
Shard, Replicate and Partial, full_tensor, DTensor.from_local, and DTensor ops (matmul,
elementwise, reductions, views, embedding, softmax, SDPA, and their gradients) against the same
ops on one device.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_tensor

import torch_tpu  # noqa: F401

rank = world = None


def same(dtensor, expected, what, atol=0.0):
    full = dtensor.full_tensor() if isinstance(dtensor, DTensor) else dtensor
    assert full.device.type == "tpu", what
    difference = (full.cpu() - expected.cpu()).abs().max().item() if full.numel() else 0.0
    assert full.shape == expected.shape and difference <= atol, f"{what} on rank {rank}: {difference}\n{full}\n{expected}"


def run():
    global rank, world
    rank, world = dist.get_rank(), dist.get_world_size()
    mesh = init_device_mesh("tpu", (world,))
    mesh_2d = init_device_mesh("tpu", (2, world // 2), mesh_dim_names=("dp", "tp"))
    assert mesh.device_type == "tpu" and mesh_2d["tp"].size() == world // 2

    torch.manual_seed(0)  # the same global tensors on every rank
    x = torch.randn(8, 12, device="tpu")
    w = torch.randn(12, 16, device="tpu")

    # distribute_tensor with default arguments (scatter from rank 0), every placement, and back
    for placements in ([Shard(0)], [Shard(1)], [Replicate()]):
        d = distribute_tensor(x, mesh, placements)
        same(d, x, f"distribute_tensor {placements}")
        assert d.placements == tuple(placements)
    same(distribute_tensor(x, mesh), x, "distribute_tensor with default placements")
    with mesh:  # the mesh in a with block is the default one
        same(distribute_tensor(x, placements=[Shard(0)]), x, "distribute_tensor on the current mesh")
    for placements in ([Shard(0), Shard(1)], [Replicate(), Shard(0)], [Shard(1), Replicate()]):
        same(distribute_tensor(x, mesh_2d, placements), x, f"2-D {placements}")

    # redistribute from Shard, Replicate and Partial to Shard and Replicate (DTensor keeps redistributing
    # *to* Partial for its own use: "redistributing to Partial is for internal use only")
    layouts = [[Shard(0)], [Shard(1)], [Replicate()], [Partial()]]
    for source in layouts:
        if isinstance(source[0], Partial):
            start = DTensor.from_local(x / world, mesh, source)  # partial sums whose total is x
        else:
            start = distribute_tensor(x, mesh, source)
        for target in layouts[:3]:
            moved = start.redistribute(mesh, target)
            assert moved.placements == tuple(target)
            same(moved, x, f"redistribute {source} -> {target}", atol=1e-6)
    # 2-D: shard on both dims, reshard across mesh dimensions
    d2 = distribute_tensor(x, mesh_2d, [Shard(0), Shard(1)])
    same(d2.redistribute(mesh_2d, [Shard(1), Shard(0)]), x, "2-D transpose of shardings")
    same(d2.redistribute(mesh_2d, [Replicate(), Replicate()]), x, "2-D to replicated")

    # DTensor.from_local: each rank's block of rows
    local = x.chunk(world)[rank]
    from_local = DTensor.from_local(local, mesh, [Shard(0)])
    same(from_local, x, "DTensor.from_local")
    assert torch.equal(from_local.to_local().cpu(), local.cpu())

    # ops on DTensors equal the same ops on one device (values and gradients)
    xs, ws = distribute_tensor(x, mesh, [Shard(0)]), distribute_tensor(w, mesh, [Replicate()])
    same(xs @ ws, x @ w, "matmul, rows sharded", atol=1e-5)
    same(distribute_tensor(x, mesh, [Shard(1)]) @ distribute_tensor(w, mesh, [Shard(0)]), x @ w, "matmul, contracted dim sharded", atol=1e-5)
    same(xs * 2 + xs.sin(), x * 2 + x.sin(), "elementwise", atol=1e-6)
    same(xs.sum(), x.sum(), "sum", atol=1e-5)
    same(xs.mean(dim=0), x.mean(dim=0), "mean over the sharded dim", atol=1e-6)
    same(xs.amax(dim=1), x.amax(dim=1), "amax")
    same(xs.view(8, 3, 4).transpose(1, 2).reshape(8, 12), x.view(8, 3, 4).transpose(1, 2).reshape(8, 12), "views")
    same(xs.softmax(dim=-1), x.softmax(dim=-1), "softmax", atol=1e-6)
    table = torch.randn(20, 12, device="tpu")
    indices = torch.randint(0, 20, (4, 5), device="tpu")
    same(F.embedding(distribute_tensor(indices, mesh, [Replicate()]), distribute_tensor(table, mesh, [Shard(1)])),
         F.embedding(indices, table), "embedding, table sharded by feature")
    same(F.embedding(distribute_tensor(indices, mesh, [Replicate()]), distribute_tensor(table, mesh, [Shard(0)])),
         F.embedding(indices, table), "embedding, table sharded by row", atol=1e-6)
    q, k, v = (torch.randn(2, world * 2, 8, 4, device="tpu") for _ in range(3))
    heads = [distribute_tensor(t, mesh, [Shard(1)]) for t in (q, k, v)]
    same(F.scaled_dot_product_attention(*heads), F.scaled_dot_product_attention(q, k, v), "SDPA sharded by head", atol=1e-6)
    same(F.scaled_dot_product_attention(*heads, is_causal=True), F.scaled_dot_product_attention(q, k, v, is_causal=True),
         "causal SDPA sharded by head", atol=1e-6)
    causal = torch.ones(8, 8, dtype=torch.bool, device="tpu").tril()
    same(F.scaled_dot_product_attention(*heads, attn_mask=distribute_tensor(causal, mesh, [Replicate()])),
         F.scaled_dot_product_attention(q, k, v, is_causal=True), "SDPA with a replicated mask", atol=1e-6)
    batches = [distribute_tensor(t, mesh, [Shard(0)]) for t in (q[:, :2], k[:, :1], v[:, :1])]
    same(F.scaled_dot_product_attention(*batches, is_causal=True, enable_gqa=True),
         F.scaled_dot_product_attention(q[:, :2], k[:, :1], v[:, :1], is_causal=True, enable_gqa=True),
         "grouped-query SDPA sharded by batch", atol=1e-6)
    # gradients through head-sharded causal attention, with a float bias sharded by head
    bias = torch.randn(2, world * 2, 8, 8, device="tpu")
    leaves = [t.clone().requires_grad_() for t in (q, k, v, bias)]
    dleaves = [distribute_tensor(t, mesh, [Shard(1)]).requires_grad_() for t in (q, k, v, bias)]
    F.scaled_dot_product_attention(*leaves[:3], attn_mask=leaves[3]).square().sum().backward()
    F.scaled_dot_product_attention(*dleaves[:3], attn_mask=dleaves[3]).square().sum().backward()
    for name, dleaf, leaf in zip("qkvb", dleaves, leaves):
        same(dleaf.grad, leaf.grad, f"SDPA gradient of {name} sharded by head", atol=1e-5)

    # gradients through a sharded matmul and softmax
    leaf = x.clone().requires_grad_()
    dleaf = distribute_tensor(x, mesh, [Shard(0)]).requires_grad_()
    ((leaf @ w).softmax(-1) * torch.arange(16.0, device="tpu")).sum().backward()
    ((dleaf @ ws).softmax(-1) * distribute_tensor(torch.arange(16.0, device="tpu"), mesh, [Replicate()])).sum().backward()
    same(dleaf.grad, leaf.grad, "gradient", atol=1e-5)

