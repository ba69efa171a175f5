"""torch_tpu in one page: the "tpu" device, a small training run, the HBM report and the
estimated Ironwood step time.

Run: python examples/quickstart.py
"""

import os
import tempfile

import torch
import torch.nn.functional as F

import torch_tpu


def show_device():
    props = torch.tpu.get_device_properties()
    print(f"device: {torch.tpu.get_device_name()}  HBM {props.total_memory / 2**30:.0f} GiB")
    x = torch.arange(6.0).to("tpu").view(2, 3).t()  # a view: shares the storage
    print(x, "strides", x.stride())


def train_mlp(steps=20):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 10)
    ).to("tpu")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    inputs = torch.randn(128, 32, device="tpu")
    labels = torch.randint(0, 10, (128,), device="tpu")
    for step in range(steps):
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 5 == 0 or step == steps - 1:
            print(f"step {step:2d}  loss {loss.item():.4f}")
    return model


def profile_step(model):
    """Profile one more training step: estimated Ironwood step time, MFU, HBM peak, top ops."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    inputs = torch.randn(128, 32, device="tpu")
    labels = torch.randint(0, 10, (128,), device="tpu")
    with torch_tpu.profiler.profile() as prof:
        loss = F.cross_entropy(model(inputs), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        prof.step()
    trace = os.path.join(tempfile.gettempdir(), "torch_tpu_quickstart_trace.json")
    prof.export_chrome_trace(trace)
    print(prof.report())
    print(f"trace of the step (open in https://ui.perfetto.dev): {trace}")


if __name__ == "__main__":
    show_device()
    model = train_mlp()
    print(torch.tpu.memory_summary())
    profile_step(model)
