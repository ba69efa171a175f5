"""The device's legacy tensor types, as ``torch.cuda.FloatTensor`` is CUDA's: ``isinstance(t, torch.tpu.FloatTensor)``
says a tensor is a strided float32 tpu tensor, and calling the type makes one as the CPU type's legacy constructor
would (sizes or data), on the chip. PyTorch declares these classes in C++ for CPU and CUDA only; device-generic
code (``isinstance(p, custom_device_mod.FloatTensor)``) reads them from the PrivateUse1 device module."""

import torch

LEGACY_DTYPES = {  # the CPU type's name (torch.FloatTensor, ...) -> its dtype
    "FloatTensor": torch.float32, "DoubleTensor": torch.float64, "HalfTensor": torch.float16,
    "BFloat16Tensor": torch.bfloat16, "ByteTensor": torch.uint8, "CharTensor": torch.int8,
    "ShortTensor": torch.int16, "IntTensor": torch.int32, "LongTensor": torch.int64, "BoolTensor": torch.bool,
}


class LegacyTensorType(type):
    def __instancecheck__(cls, value):
        return (isinstance(value, torch.Tensor) and value.device.type == "tpu" and value.dtype == cls.dtype
                and value.layout == torch.strided)

    def __call__(cls, *args, device=None, **kwargs):
        """Made on the host, then moved: the CPU type's constructor would refuse a ``device`` of this type,
        so it is checked here, in its words."""
        if device is not None and torch.device(device).type != "tpu":
            raise RuntimeError(f"legacy constructor expects device type: tpu but device type: "
                               f"{torch.device(device).type} was passed")
        return cls.cpu_type(*args, **kwargs).to("tpu" if device is None else device)

    def __repr__(cls):
        return f"<class '{cls.__name__}'>"


def legacy_type(name):
    """The class named as ``Tensor.type()`` names its tensors ("torch.tpu.FloatTensor"), which is also the name
    ``Tensor.type(cls)`` reads from a class."""
    return LegacyTensorType(f"torch.tpu.{name}", (), {"dtype": LEGACY_DTYPES[name], "cpu_type": getattr(torch, name),
                                                       "is_sparse": False, "__module__": "torch.tpu"})


FloatTensor, DoubleTensor, HalfTensor, BFloat16Tensor, ByteTensor, CharTensor, ShortTensor, IntTensor, LongTensor, \
    BoolTensor = map(legacy_type, LEGACY_DTYPES)
