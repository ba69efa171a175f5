"""The device's legacy tensor types, as ``torch.cuda.FloatTensor`` is CUDA's: ``isinstance(t, torch.tpu.FloatTensor)``
says a tensor is a strided float32 tpu tensor, and calling the type makes one as the CPU type's legacy constructor
would (sizes or data), on the chip. PyTorch declares these classes in C++ for CPU and CUDA only; device-generic
code (``isinstance(p, custom_device_mod.FloatTensor)``) reads them from the PrivateUse1 device module.

The legacy storage types (``torch.tpu.FloatStorage``, ...) are torch.cuda's kind: PyTorch's own ``_LegacyStorage``
classes, which read their device from their module's name, so ``torch.tpu.FloatStorage(n)`` is a tpu
``TypedStorage`` and ``isinstance`` tells a tpu storage of that dtype."""

import torch
from torch._utils import classproperty
from torch.storage import _LegacyStorage, _warn_typed_storage_removal

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


LEGACY_STORAGE_DTYPES = {  # torch.cuda's legacy storage types
    "ByteStorage": torch.uint8, "DoubleStorage": torch.float64, "FloatStorage": torch.float32,
    "HalfStorage": torch.float16, "LongStorage": torch.int64, "IntStorage": torch.int32, "ShortStorage": torch.int16,
    "CharStorage": torch.int8, "BoolStorage": torch.bool, "BFloat16Storage": torch.bfloat16,
    "ComplexDoubleStorage": torch.complex128, "ComplexFloatStorage": torch.complex64,
}


def legacy_storage_type(name):
    dtype = LEGACY_STORAGE_DTYPES[name]

    def deprecated_dtype(cls):
        _warn_typed_storage_removal()  # as the CPU and CUDA types warn
        return dtype

    return type(name, (_LegacyStorage,), {"__module__": "torch.tpu", "_dtype": classproperty(lambda cls: dtype),
                                          "dtype": classproperty(deprecated_dtype)})


ByteStorage, DoubleStorage, FloatStorage, HalfStorage, LongStorage, IntStorage, ShortStorage, CharStorage, \
    BoolStorage, BFloat16Storage, ComplexDoubleStorage, ComplexFloatStorage = map(legacy_storage_type,
                                                                                  LEGACY_STORAGE_DTYPES)
