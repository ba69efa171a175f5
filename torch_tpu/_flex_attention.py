"""``flex_attention`` in eager mode on tpu tensors.

Eager ``flex_attention`` runs its higher-order op through Dynamo's "eager" backend, whose forward and
backward are the op's dense reference implementations written in aten ops (the scores materialised,
``score_mod`` and ``mask_mod`` called on index tensors): they run on any device that has those ops.
PyTorch only lets a fixed list of device types in (``_validate_device``: cuda, cpu, xpu, hpu, mps) and
refuses the rest with "FlexAttention is only supported on CUDA, CPU, HPU, or MPS devices". tpu tensors
are let through, with the backward CUDA has (CPU's refusal of backward is about its compiled kernels).
"""


def install(module):
    """Wrap ``module._validate_device`` (module is ``torch.nn.attention.flex_attention``) to admit tpu."""
    validate_device = module._validate_device

    def validate_device_or_tpu(query, key, value):
        if query.device.type != "tpu":
            validate_device(query, key, value)

    validate_device_or_tpu.__wrapped__ = validate_device
    module._validate_device = validate_device_or_tpu
