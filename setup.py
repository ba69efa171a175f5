from setuptools import setup

setup(
    name="torch_tpu",
    version="0.1.0",
    description="An emulated Google TPU (Ironwood) as a PyTorch device, in pure Python",
    python_requires=">=3.10",
    packages=["torch_tpu", "torch_tpu.ops", "torch_tpu.tpu", "torch_tpu.distributed", "torch_tpu.plan", "torch_tpu.compile", "torch_tpu._C"],
    package_dir={"torch_tpu._C": "csrc_py"},
    install_requires=["torch>=2.13,<2.14", "numpy", "ml_dtypes", "scipy"],
    extras_require={"test": ["pytest", "expecttest"], "plot": ["matplotlib"]},
    entry_points={
        "torch.backends": ["torch_tpu = torch_tpu:_autoload"],
        "torch_dynamo_backends": ["tpu = torch_tpu.compile.registration:tpu_backend"],
    },
)
