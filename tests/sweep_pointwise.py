"""A random differential sweep of the pointwise ops with special CPU paths (unstructured direct paths,
functional_launch, the foreach fast loop, CHECKED_SCALARS): each case runs on cpu and on tpu with random shapes
(0-d, empty, broadcast), layouts (transposed, strided, expanded, offset), dtypes, numbers (out of range ones too),
NaN/-0.0/inf values and out= tensors (resized, other dtypes, transposed, expanded, the input itself), and every
difference in values, dtype, shape, strides or error (class and first line) is printed once per kind.

Not a test (it prints what differs, and a few kinds are known and documented in docs/testing.md, "Eager
correctness, round nine"). Run: python tests/sweep_pointwise.py SEED CASES
"""
import math
import sys
import numpy as np
import torch, torch_tpu
import torch.nn.functional as F

aten = torch.ops.aten
rng = np.random.default_rng(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16, torch.int64, torch.int32, torch.uint8,
          torch.bool, torch.complex64]
SPECIALS = [math.nan, -0.0, math.inf, -math.inf]

def values(shape, dtype):
    if dtype == torch.bool:
        return torch.from_numpy(rng.integers(0, 2, shape).astype(bool))
    if dtype.is_floating_point or dtype.is_complex:
        t = torch.from_numpy(rng.normal(0, 3, shape)).to(dtype)
        if t.numel() and rng.random() < 0.5:
            flat = t.view(-1) if t.is_contiguous() else t.reshape(-1)
            k = int(rng.integers(1, max(2, t.numel() // 3 + 1)))
            idx = rng.integers(0, t.numel(), k)
            flat[idx] = torch.tensor([SPECIALS[i] for i in rng.integers(0, 4, k)], dtype=torch.float64).to(dtype)
            t = flat.reshape(shape)
        return t
    lo, hi = (0, 200) if dtype == torch.uint8 else (-50, 50)
    return torch.from_numpy(rng.integers(lo, hi, shape)).to(dtype)

def layout(shape, dtype):
    """(base cpu tensor, view function) laying out a tensor of ``shape``."""
    kind = rng.choice(["contig", "contig", "transposed", "strided", "expanded", "offset"])
    if len(shape) < 2 and kind == "transposed":
        kind = "contig"
    if kind == "transposed":
        base = values(shape[:-2] + (shape[-1], shape[-2]), dtype)
        return base, lambda t: t.transpose(-1, -2)
    if kind == "strided" and len(shape):
        base = values(shape[:-1] + (2 * shape[-1],), dtype)
        return base, lambda t: t[..., ::2]
    if kind == "expanded" and len(shape):
        small = tuple(1 if rng.random() < 0.5 else s for s in shape)
        base = values(small, dtype)
        return base, lambda t: t.expand(shape)
    if kind == "offset" and len(shape):
        base = values(shape[:-1] + (shape[-1] + 1,), dtype)
        return base, lambda t: t[..., 1:]
    base = values(shape, dtype)
    return base, lambda t: t

def rand_shape():
    r = rng.random()
    if r < 0.1:
        return ()
    if r < 0.15:
        return (0, 3)
    nd = int(rng.integers(1, 4))
    return tuple(int(rng.integers(1, 6)) if rng.random() < 0.8 else int(rng.integers(20, 70)) for _ in range(nd))

def broadcast_partner(shape):
    r = rng.random()
    if r < 0.5 or not shape:
        return shape
    if r < 0.7:
        return shape[1:]
    if r < 0.85:
        return tuple(1 if rng.random() < 0.5 else s for s in shape)
    return ()

def scalar_for(dtype):
    r = rng.random()
    if r < 0.15:
        return float(rng.choice([1e6, -1e6, 1e40, 300.0, -3.0]))
    if r < 0.3:
        return int(rng.integers(-3, 4))
    if r < 0.35:
        return True
    return float(np.round(rng.normal(0, 2), 3))

# op name -> (arity of tensors, call(tensors, scalars dict, out), scalar names)
def unary(f):
    return (1, f)
def binary(f):
    return (2, f)

OPS = {
    "relu": unary(lambda t, s, out: torch.relu(t[0])),
    "relu_": unary(lambda t, s, out: t[0].relu_()),
    "hardtanh": unary(lambda t, s, out: F.hardtanh(t[0], s["a"], s["b"]) if out is None else aten.hardtanh.out(t[0], s["a"], s["b"], out=out)),
    "hardtanh_": unary(lambda t, s, out: aten.hardtanh_(t[0], s["a"], s["b"])),
    "hardswish": unary(lambda t, s, out: aten.hardswish(t[0]) if out is None else aten.hardswish.out(t[0], out=out)),
    "abs": unary(lambda t, s, out: torch.abs(t[0]) if out is None else torch.abs(t[0], out=out)),
    "logical_not": unary(lambda t, s, out: torch.logical_not(t[0]) if out is None else torch.logical_not(t[0], out=out)),
    "isnan": unary(lambda t, s, out: torch.isnan(t[0])),
    "logit": unary(lambda t, s, out: torch.logit(t[0], s["eps"] if s["eps"] is not None and abs(s["eps"]) < 0.5 else None) if out is None else torch.logit(t[0], out=out)),
    "angle": unary(lambda t, s, out: torch.angle(t[0]) if out is None else torch.angle(t[0], out=out)),
    "conj_physical": unary(lambda t, s, out: torch.conj_physical(t[0]) if out is None else torch.conj_physical(t[0], out=out)),
    "softshrink": unary(lambda t, s, out: F.softshrink(t[0], abs(s["a"])) if out is None else aten.softshrink.out(t[0], abs(s["a"]), out=out)),
    "hardshrink": unary(lambda t, s, out: F.hardshrink(t[0], abs(s["a"])) if out is None else aten.hardshrink.out(t[0], abs(s["a"]), out=out)),
    "threshold": unary(lambda t, s, out: F.threshold(t[0], s["a"], s["b"]) if out is None else aten.threshold.out(t[0], s["a"], s["b"], out=out)),
    "leaky_relu": unary(lambda t, s, out: F.leaky_relu(t[0], s["a"]) if out is None else aten.leaky_relu.out(t[0], s["a"], out=out)),
    "elu": unary(lambda t, s, out: F.elu(t[0], s["a"]) if out is None else aten.elu.out(t[0], s["a"], out=out)),
    "softplus": unary(lambda t, s, out: F.softplus(t[0], s["a"] or 1.0, 20) if out is None else aten.softplus.out(t[0], s["a"] or 1.0, 20, out=out)),
    "clamp": unary(lambda t, s, out: torch.clamp(t[0], s["a"], s["b"]) if out is None else torch.clamp(t[0], s["a"], s["b"], out=out)),
    "clamp_min": unary(lambda t, s, out: torch.clamp_min(t[0], s["a"]) if out is None else torch.clamp_min(t[0], s["a"], out=out)),
    "clamp_": unary(lambda t, s, out: t[0].clamp_(s["a"], s["b"])),
    "add_scalar": unary(lambda t, s, out: torch.add(t[0], s["a"], alpha=s["alpha"]) if out is None else torch.add(t[0], s["a"], alpha=s["alpha"], out=out)),
    "mul_scalar": unary(lambda t, s, out: t[0] * s["a"]),
    "rsub": unary(lambda t, s, out: torch.rsub(t[0], s["a"], alpha=s["alpha"])),
    "div_scalar": unary(lambda t, s, out: t[0] / s["a"]),
    "add": binary(lambda t, s, out: torch.add(t[0], t[1], alpha=s["alpha"]) if out is None else torch.add(t[0], t[1], alpha=s["alpha"], out=out)),
    "add_": binary(lambda t, s, out: t[0].add_(t[1], alpha=s["alpha"])),
    "sub": binary(lambda t, s, out: torch.sub(t[0], t[1], alpha=s["alpha"]) if out is None else torch.sub(t[0], t[1], alpha=s["alpha"], out=out)),
    "mul": binary(lambda t, s, out: torch.mul(t[0], t[1]) if out is None else torch.mul(t[0], t[1], out=out)),
    "mul_": binary(lambda t, s, out: t[0].mul_(t[1])),
    "div": binary(lambda t, s, out: torch.div(t[0], t[1]) if out is None else torch.div(t[0], t[1], out=out)),
    "div_floor": binary(lambda t, s, out: torch.div(t[0], t[1], rounding_mode="floor")),
    "floor_divide": binary(lambda t, s, out: torch.floor_divide(t[0], t[1]) if out is None else torch.floor_divide(t[0], t[1], out=out)),
    "remainder_scalar_tensor": unary(lambda t, s, out: torch.remainder(s["a"], t[0])),
    "hardtanh_backward": binary(lambda t, s, out: aten.hardtanh_backward(t[0], t[1], s["a"], s["b"]) if out is None else aten.hardtanh_backward.grad_input(t[0], t[1], s["a"], s["b"], grad_input=out)),
    "hardswish_backward": binary(lambda t, s, out: aten.hardswish_backward(t[0], t[1])),
    "threshold_backward": binary(lambda t, s, out: aten.threshold_backward(t[0], t[1], s["a"]) if out is None else aten.threshold_backward.grad_input(t[0], t[1], s["a"], grad_input=out)),
    "maximum": binary(lambda t, s, out: torch.maximum(t[0], t[1]) if out is None else torch.maximum(t[0], t[1], out=out)),
    "lerp": binary(lambda t, s, out: torch.lerp(t[0], t[1], s["a"]) if out is None else torch.lerp(t[0], t[1], s["a"], out=out)),
    "addcmul": (3, lambda t, s, out: torch.addcmul(t[0], t[1], t[2], value=s["a"]) if out is None else torch.addcmul(t[0], t[1], t[2], value=s["a"], out=out)),
    "addcdiv": (3, lambda t, s, out: torch.addcdiv(t[0], t[1], t[2], value=s["a"])),
    "prelu": binary(lambda t, s, out: aten._prelu_kernel(t[0], t[1])),
    "where": (3, lambda t, s, out: torch.where(t[0].bool() if t[0].dtype != torch.bool else t[0], t[1], t[2])),
    "foreach_add": (2, lambda t, s, out: torch._foreach_add([t[0], t[0] * 2], [t[1], t[1]], alpha=s["alpha"])),
    "foreach_add_scalar": (1, lambda t, s, out: torch._foreach_add([t[0], t[0] + 1], s["a"])),
    "foreach_mul_": (1, lambda t, s, out: torch._foreach_mul_([t[0], t[0].clone()], s["a"])),
    "foreach_clamp_min": (1, lambda t, s, out: torch._foreach_clamp_min([t[0], t[0] * 2], s["a"])),
    "foreach_lerp": (2, lambda t, s, out: torch._foreach_lerp([t[0]], [t[1]], s["a"])),
    "foreach_addcmul": (3, lambda t, s, out: torch._foreach_addcmul([t[0]], [t[1]], [t[2]], value=s["a"])),
    "foreach_maximum": (1, lambda t, s, out: torch._foreach_maximum([t[0]], s["a"])),
    "foreach_pow": (1, lambda t, s, out: torch._foreach_pow([t[0]], s["a"])),
}
TOLERANT = {"logit", "elu", "softplus", "angle", "lerp", "addcmul", "addcdiv", "div", "foreach_lerp", "foreach_addcmul", "foreach_pow", "div_scalar", "remainder_scalar_tensor", "hardswish", "hardswish_backward"}

def describe(e):
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"

def run(name, bases, views, scal, out_spec, device):
    tensors = [v(b.clone().to(device)) for b, v in zip(bases, views)]
    out = None
    if out_spec is not None:
        shape, dtype, kind = out_spec
        if kind == "expanded":
            out = torch.empty((1,) + shape[1:], dtype=dtype, device=device).expand(shape) if shape else torch.empty((), dtype=dtype, device=device)
        elif kind == "transposed" and len(shape) >= 2:
            out = torch.empty(shape[:-2] + (shape[-1], shape[-2]), dtype=dtype, device=device).transpose(-1, -2)
        elif kind == "self":
            out = tensors[0]
        else:
            out = torch.empty(shape if kind != "wrongshape" else (2,), dtype=dtype, device=device)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = OPS[name][1](tensors, scal, out)
    return r

def flat(r):
    if isinstance(r, (list, tuple)):
        return list(r)
    return [r]

def same_values(a, b, tolerant):
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    a = a.cpu()
    if a.numel() == 0:
        return True
    if tolerant and (a.is_floating_point() or a.is_complex()):
        try:
            torch.testing.assert_close(a, b, equal_nan=True, atol=1e-2 if a.dtype in (torch.bfloat16, torch.float16) else 1e-5, rtol=1e-2 if a.dtype in (torch.bfloat16, torch.float16) else 1e-5)
            return True
        except AssertionError:
            return False
    if a.is_floating_point():
        an, bn = torch.isnan(a), torch.isnan(b)
        if not torch.equal(an, bn):
            return False
        return torch.equal(torch.where(an, 0, a), torch.where(bn, 0, b)) and torch.equal(torch.signbit(torch.where(an, 0, a)), torch.signbit(torch.where(bn, 0, b)))
    if a.is_complex():
        return same_values(torch.view_as_real(a), torch.view_as_real(b), False)
    return torch.equal(a, b)

mismatches = {}
names = list(OPS)
for case in range(N):
    name = names[int(rng.integers(0, len(names)))]
    arity = OPS[name][0]
    shape = rand_shape()
    dtype = DTYPES[int(rng.integers(0, len(DTYPES)))]
    dtypes = [dtype] + [dtype if rng.random() < 0.7 else DTYPES[int(rng.integers(0, len(DTYPES)))] for _ in range(arity - 1)]
    shapes = [shape] + [broadcast_partner(shape) for _ in range(arity - 1)]
    if rng.random() < 0.2 and arity > 1:
        shapes[0], shapes[1] = shapes[1], shapes[0]
    laid = [layout(s, d) for s, d in zip(shapes, dtypes)]
    bases, views = [l[0] for l in laid], [l[1] for l in laid]
    scal = {"a": scalar_for(dtype), "b": scalar_for(dtype), "alpha": 1 if rng.random() < 0.5 else scalar_for(dtype), "eps": scalar_for(dtype) if rng.random() < 0.5 else None}
    if scal["a"] is not None and scal["b"] is not None and rng.random() < 0.7 and not isinstance(scal["a"], bool) and not isinstance(scal["b"], bool):
        scal["a"], scal["b"] = min(scal["a"], scal["b"]), max(scal["a"], scal["b"])
    out_spec = None
    if rng.random() < 0.35 and not name.endswith("_") and not name.startswith("foreach"):
        full = torch.broadcast_shapes(*shapes)
        kind = rng.choice(["fresh", "fresh", "transposed", "wrongshape", "expanded", "self"])
        odt = dtype if rng.random() < 0.6 else DTYPES[int(rng.integers(0, len(DTYPES)))]
        out_spec = (tuple(full), odt, kind)
    results = {}
    for device in ("cpu", "tpu"):
        try:
            results[device] = ("ok", run(name, bases, views, scal, out_spec, device))
        except Exception as e:  # noqa
            results[device] = ("err", describe(e))
    c, t = results["cpu"], results["tpu"]
    problem = None
    if c[0] != t[0]:
        problem = f"cpu {c[0]} {c[1] if c[0]=='err' else ''} / tpu {t[0]} {t[1] if t[0]=='err' else ''}"
    elif c[0] == "err":
        if c[1] != t[1]:
            problem = f"errors differ: cpu [{c[1]}] tpu [{t[1]}]"
    else:
        for a, b in zip(flat(t[1]), flat(c[1])):
            if a.dtype != b.dtype:
                problem = f"dtype {a.dtype} vs cpu {b.dtype}"
            elif a.shape != b.shape:
                problem = f"shape {tuple(a.shape)} vs cpu {tuple(b.shape)}"
            elif a.stride() != b.stride() and a.numel() > 1:
                problem = f"strides {a.stride()} vs cpu {b.stride()}"
            elif not same_values(a, b, name in TOLERANT):
                a = a.cpu()
                bad = ~((a == b) | (a.isnan() & b.isnan())) if a.dtype != torch.bool else a != b
                if a.is_floating_point() and not bad.any():
                    bad = torch.signbit(a) != torch.signbit(b)
                problem = f"values: tpu {a[bad][:4].tolist()} cpu {b[bad][:4].tolist()}"
            if problem:
                break
    if problem:
        key = (name, problem[:60])
        if key not in mismatches:
            mismatches[key] = (case, name, dtypes, [tuple(views[i](bases[i]).shape) for i in range(arity)], [views[i](bases[i]).stride() for i in range(arity)], scal, out_spec, problem)
print(f"{N} cases, {len(mismatches)} distinct mismatches")
for v in mismatches.values():
    print(v)
