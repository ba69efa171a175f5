"""One kernel launch in abstract mode: Meta's answer, rebuilt as tpu tensors without values.

``_cost.charged`` sends every launch here while ``torch_tpu.abstract()`` is active (``_abstract.py``).
``run`` runs the op's Meta kernel on meta twins of its tpu arguments, as FakeTensor does, so that
PyTorch itself infers shapes, dtypes and strides and checks the arguments; then the results come
back as tpu tensors. Arguments the op writes (in-place, ``out=``) keep their identity, and are
resized when Meta resized them; an output that aliases an argument is a view of that argument's
storage; every other output is a new allocation (bufferless, counted to the byte). Where Meta has
no kernel or answers differently from the tpu kernel, ``RULES`` and a few tables say what to do.
"""

import re

import torch

from . import _C, _storage, _tensor
from ._errors import NoValuesError, device_mismatch

Tensor = torch.Tensor
_SEQUENCES = (list, tuple)
_META = torch.device("meta")
_BUFFER = _tensor.BUFFER_ATTRIBUTE


# --- one abstract launch ---------------------------------------------------------------------
#
# A launch's outputs are described by a recipe relative to its arguments: "argument 2 itself",
# "a view of argument 0's storage with this geometry", "a new allocation of n bytes". The recipe is
# derived once from Meta and cached under a key made of the op and its arguments' metadata, so the
# 80 identical layers of a large model cost one Meta run each, as FakeTensor's dispatch cache does.

_ARGUMENT, _VIEW, _NEW, _SEQUENCE, _CONSTANT, _HOST = range(6)
_SCALARS = (int, float, bool, complex, str, torch.dtype, torch.device, torch.layout, torch.memory_format)
CACHE_LIMIT = 50_000
_RECIPES = {}


class _Launch:
    """One launch's arguments as abstract mode sees them.

    ``tensors`` are its tpu tensors in argument order, ``storages`` their distinct storages in order
    of appearance, and ``key`` a hashable description of every argument's metadata (None when some
    argument's metadata alone cannot decide the result, e.g. a CPU tensor whose values Meta may read).
    """

    def __init__(self, facts, args, kwargs):
        self.facts, self.op, self.args, self.kwargs = facts, facts.op, args, kwargs
        self.tensors, self.storages, self.owners = [], [], []
        self._storage_numbers = {}
        self.cacheable = True
        self._float_values_matter = facts.float_values_matter
        self._owner = None
        described = []
        for position, value in enumerate(args):
            self._owner = position
            described.append(self._describe(value))
        for name, value in kwargs.items():
            self._owner = name
            described.append((name, self._describe(value)))
        self.key = (facts, tuple(described)) if self.cacheable else None

    def _describe(self, value):
        if isinstance(value, Tensor):
            storage = value.untyped_storage()
            buffer = getattr(storage, _BUFFER, None)  # only tpu storages have one
            if buffer is None:
                self.cacheable = False
                return None
            number = self._storage_numbers.get(id(storage))
            if number is None:
                number = self._storage_numbers[id(storage)] = len(self.storages)
                self.storages.append(storage)
            self.tensors.append(value)
            self.owners.append(self._owner)
            return (number, value.dtype, tuple(value.shape), value.stride(), value.storage_offset(), buffer.nbytes)
        if type(value) in _SEQUENCES:
            return (type(value), *(self._describe(v) for v in value))
        if type(value) is float and not self._float_values_matter:
            return float  # an optimizer's step size changes every step; its results' shapes do not
        if value is None or isinstance(value, _SCALARS):
            return (type(value), value)
        self.cacheable = False
        return None

    def storage_number(self, storage):
        return self._storage_numbers[id(storage)]

    def written_tensors(self):
        """Indices into ``tensors`` of the ones the op's schema marks as written (in-place, ``out=``)."""
        written = self.facts.written
        return [i for i, owner in enumerate(self.owners) if owner in written]

    # --- deriving the recipe from Meta --------------------------------------------------------

    def derive_recipe(self):
        """(outputs template, resized written tensors, cacheable), from one run of Meta on twins."""
        meta_storages = [torch.UntypedStorage(s.nbytes(), device=_META) for s in self.storages]
        twins = []
        for tensor in self.tensors:
            twin = torch.empty((0,), dtype=tensor.dtype, device=_META)
            number = self._storage_numbers[id(tensor.untyped_storage())]
            twins.append(twin.set_(meta_storages[number], tensor.storage_offset(), tensor.shape, tensor.stride()))
        feed = iter(twins)
        meta_args = tuple(_replace_tensors(v, feed) for v in self.args)
        meta_kwargs = {k: _replace_tensors(v, feed) for k, v in self.kwargs.items()}
        if self.op in TPU_CHECKS:
            TPU_CHECKS[self.op](_bind(self.op, meta_args, meta_kwargs))
        meta_result = _run_meta(self.op, *_numbers_as_tensors(self.op, meta_args, meta_kwargs))
        if self.op in AS_TPU_KERNEL:
            meta_result = AS_TPU_KERNEL[self.op](_bind(self.op, meta_args, meta_kwargs), meta_result)
        resized = tuple((i, _geometry(twins[i])) for i in self.written_tensors()
                        if _geometry(twins[i]) != _geometry(self.tensors[i]))
        deriver = _RecipeDeriver({id(t): i for i, t in enumerate(twins)},
                                 {s._cdata: n for n, s in enumerate(meta_storages)})
        return _on_host(self.op, deriver.template(meta_result)), resized, deriver.cacheable

    # --- replaying it on the tpu tensors ------------------------------------------------------

    def replay(self, recipe):
        outputs, resized = recipe[0], recipe[1]
        for i, (shape, stride, offset, nbytes) in resized:
            tensor = self.tensors[i]
            storage = tensor.untyped_storage()
            _tensor.ensure_capacity(storage, nbytes)
            _tensor.set_metadata(tensor, storage, offset, shape, stride)
        hbm = _C.current_chip().hbm
        for i in self.written_tensors():
            hbm.drop_bytes(_tensor.hbm_buffer(self.tensors[i].untyped_storage()))
        return self._build(outputs, {})

    def _build(self, template, new_storages):
        kind = template[0]
        if kind == _ARGUMENT:
            return self.tensors[template[1]]
        if kind == _NEW:
            _, number, nbytes, dtype, shape, stride, offset, dense = template
            storage = new_storages.get(number)
            if storage is None:
                if dense:  # the common case: one new tensor that fills its own storage
                    result = _tensor.empty(shape, dtype, stride)
                    new_storages[number] = result.untyped_storage()
                    return result
                storage = new_storages[number] = _storage.new_tpu_storage(nbytes)
            return _tensor.tensor_on(storage, dtype, offset, shape, stride)
        if kind == _VIEW:
            _, number, dtype, shape, stride, offset = template
            return _tensor.tensor_on(self.storages[number], dtype, offset, shape, stride)
        if kind == _SEQUENCE:
            return template[1](self._build(t, new_storages) for t in template[2])
        if kind == _HOST:
            return torch.empty(template[2], dtype=template[1])
        return template[1]


# Results that the tpu kernel returns on the host, where Meta can only say "meta": (op, result positions).
HOST_RESULTS = {
    # the RNG seed and offset a fused attention forward hands its backward
    torch.ops.aten._scaled_dot_product_fused_attention_overrideable.default: (6, 7),
}


def _on_host(op, template):
    positions = HOST_RESULTS.get(op)
    if positions is None:
        return template
    results = list(template[2])
    for position in positions:
        meta_template = results[position]
        results[position] = (_HOST, meta_template[3], meta_template[4])  # a _NEW template: dtype, shape
    return (_SEQUENCE, template[1], tuple(results))


def _replace_tensors(value, feed):
    """``value`` with each tpu tensor replaced by the next meta twin from ``feed``, and the tpu device by
    the meta device (a factory op told to make tpu tensors would come back here)."""
    if isinstance(value, Tensor):
        return next(feed) if value.device.type == "tpu" else value
    if type(value) in _SEQUENCES:
        return type(value)(_replace_tensors(v, feed) for v in value)
    if isinstance(value, torch.device) and value.type == "tpu":
        return _META
    return value


def _numbers_as_tensors(op, args, kwargs):
    """Tensor arguments that arrive as Python numbers, as 0-d tensors.

    C++ passes a number given for a tensor (``torch.copysign(t, 2.0)``) as a wrapped-number tensor,
    which reaches a Python kernel as the number itself; Meta takes it back only as a tensor. A 0-d
    meta tensor of the number's default dtype promotes as the wrapped number does (and its value, which
    no shape depends on, is not needed).
    """
    args = list(args)
    for position, argument in enumerate(op._schema.arguments):
        if not isinstance(argument.type, torch.TensorType):
            continue
        in_args = position < len(args) and not argument.kwarg_only
        value = args[position] if in_args else kwargs.get(argument.name)
        if type(value) in _NUMBER_DTYPES:
            number = torch.empty((), dtype=_NUMBER_DTYPES[type(value)](), device=_META)
            if in_args:
                args[position] = number
            else:
                kwargs = {**kwargs, argument.name: number}
    return tuple(args), kwargs


_NUMBER_DTYPES = {bool: lambda: torch.bool, int: lambda: torch.int64, float: torch.get_default_dtype,
                  complex: lambda: torch.complex128 if torch.get_default_dtype() == torch.float64 else torch.complex64}


def _geometry(tensor):
    return tuple(tensor.shape), tensor.stride(), tensor.storage_offset(), tensor.untyped_storage().nbytes()


class _RecipeDeriver:
    """Describes Meta's results relative to the twins of the arguments."""

    def __init__(self, twin_numbers, twin_storage_numbers):
        self.twin_numbers, self.twin_storage_numbers = twin_numbers, twin_storage_numbers
        self.new_storage_numbers = {}
        self.cacheable = True

    def template(self, value):
        if isinstance(value, Tensor):
            if value.device.type != "meta":
                self.cacheable = False  # a tensor of another device, returned as it is
                return (_CONSTANT, value)
            return self._tensor_template(value)
        if type(value) in _SEQUENCES:
            return (_SEQUENCE, type(value), tuple(self.template(v) for v in value))
        return (_CONSTANT, value)

    def _tensor_template(self, meta):
        number = self.twin_numbers.get(id(meta))
        if number is not None:
            return (_ARGUMENT, number)  # in-place and out= ops return the tensor they wrote
        storage = meta.untyped_storage()
        shape, stride, offset = tuple(meta.shape), meta.stride(), meta.storage_offset()
        number = self.twin_storage_numbers.get(storage._cdata)
        if number is not None:
            return (_VIEW, number, meta.dtype, shape, stride, offset)
        number = self.new_storage_numbers.get(storage._cdata)
        dense = number is None and not offset and storage.nbytes() == _tensor.storage_nbytes(
            shape, stride, meta.element_size())
        if number is None:
            number = self.new_storage_numbers[storage._cdata] = len(self.new_storage_numbers)
        if dense and stride == _tensor.contiguous_strides(shape):
            stride = None  # the allocator's fast path lays it out contiguously
        return (_NEW, number, storage.nbytes(), meta.dtype, shape, stride, offset, dense)


class _OpFacts:
    """What abstract mode needs to know of an op, read once from its schema and tags."""

    __slots__ = ("op", "rule", "needs_values", "element_wise", "float_values_matter", "written")

    def __init__(self, op):
        name = op._schema.name
        self.op = op
        self.rule = RULES.get(op)
        self.needs_values = torch.Tag.data_dependent_output in op.tags
        self.element_wise = name.startswith(_PER_ELEMENT_PREFIXES)
        # a float can decide a shape (arange's step, interpolate's scale) but not a pointwise result's
        # or a foreach or fused optimizer step's
        self.float_values_matter = not (torch.Tag.pointwise in op.tags or name.startswith(_FLOAT_BLIND_PREFIXES))
        self.written = frozenset(key for position, argument in enumerate(op._schema.arguments)
                                 if argument.alias_info is not None and argument.alias_info.is_write
                                 for key in (position, argument.name))

    def reads_metadata_only(self):
        """Returns no tensor and writes none (``_fused_sdp_choice``, say)."""
        return (self.rule is None and not self.needs_values and not self.written
                and not any(isinstance(r.type, (torch.TensorType, torch.ListType, torch.OptionalType))
                            for r in self.op._schema.returns))


_FLOAT_BLIND_PREFIXES = ("aten::_foreach_", "aten::_fused_", "aten::_amp_")
# Ops applied to lists element by element: each element's results depend on that element alone, so
# their recipe is assembled from one recipe per element, each cached per element shape. Meta would
# loop over the elements in Python: an optimizer step over 700 parameters of 10 shapes derives 10
# small recipes instead of running 700 elementwise meta functions per op.
_PER_ELEMENT_PREFIXES = ("aten::_foreach_", "aten::_fused_adam", "aten::_fused_sgd", "aten::_fused_adagrad",
                         "aten::_amp_foreach_non_finite_check_and_unscale_")
_FACTS = {}


def _facts(op):
    facts = _FACTS.get(op)
    if facts is None:
        facts = _FACTS[op] = _OpFacts(op)
    return facts


_KERNELS = {}


def kernel(name, real_kernel):
    """What runs in abstract mode in place of the tpu kernel ``real_kernel`` of aten ``name`` ("add.out").

    Ops that only read metadata run their real kernel (which raises NoValuesError, naming the op, if it
    reads a value after all).
    """
    stand_in = _KERNELS.get(name)
    if stand_in is None:
        packet, _, overload = name.partition(".")
        facts = _facts(getattr(getattr(torch.ops.aten, packet), overload or "default"))
        if facts.reads_metadata_only():
            stand_in = real_kernel
        else:
            def stand_in(*args, **kwargs):
                return _launch(facts, args, kwargs)

        _KERNELS[name] = stand_in
    return stand_in


def run(op, args, kwargs):
    """One launch of ``op`` without values: results with exact metadata, HBM allocated bufferless."""
    return _launch(_facts(op), args, kwargs)


def _launch(facts, args, kwargs):
    if facts.rule is not None:
        return facts.rule(facts.op, args, kwargs)
    if facts.needs_values:
        raise NoValuesError(USER_NAMES.get(facts.op, _op_name(facts.op)))
    launch = _Launch(facts, args, kwargs)
    recipe = _RECIPES.get(launch.key) if launch.key is not None else None
    if recipe is None:
        per_element = facts.element_wise and _list_length(args) > 1
        recipe = _derive_per_element(launch) if per_element else launch.derive_recipe()
        if launch.key is not None and recipe[2]:
            if len(_RECIPES) >= CACHE_LIMIT:
                _RECIPES.clear()
            _RECIPES[launch.key] = recipe
    return launch.replay(recipe)


def _list_length(args):
    return next((len(a) for a in args if type(a) in _SEQUENCES and a and isinstance(a[0], Tensor)), 0)


def _derive_per_element(launch):
    """The whole list launch's recipe, from the recipes of its one-element launches."""
    length = _list_length(launch.args)
    lists = {p for p, a in enumerate(launch.args) if type(a) in _SEQUENCES and len(a) == length}
    tensor_numbers = {}
    for number, tensor in enumerate(launch.tensors):
        tensor_numbers.setdefault(id(tensor), number)
    outputs, resized, cacheable, new_storages = [], [], True, 0
    for index in range(length):
        element = _Launch(launch.facts, tuple([a[index]] if p in lists else a for p, a in enumerate(launch.args)),
                          launch.kwargs)
        recipe = _RECIPES.get(element.key) if element.key is not None else None
        if recipe is None:
            recipe = element.derive_recipe()
            if element.key is not None and recipe[2]:
                _RECIPES[element.key] = recipe
        renumber = _Renumbering([tensor_numbers[id(t)] for t in element.tensors],
                                [launch.storage_number(s) for s in element.storages], new_storages)
        outputs.append(renumber.template(recipe[0]))
        resized.extend((renumber.tensors[i], geometry) for i, geometry in recipe[1])
        cacheable = cacheable and recipe[2]
        new_storages = renumber.next_new
    if outputs[0][0] == _CONSTANT:  # in-place ops return nothing
        return outputs[0], tuple(resized), cacheable
    return (_SEQUENCE, list, tuple(output[2][0] for output in outputs)), tuple(resized), cacheable


class _Renumbering:
    """Moves a one-element launch's template into the numbering of the whole launch."""

    def __init__(self, tensors, storages, first_new):
        self.tensors, self.storages, self.first_new = tensors, storages, first_new
        self.next_new = first_new

    def template(self, template):
        kind = template[0]
        if kind == _ARGUMENT:
            return (_ARGUMENT, self.tensors[template[1]])
        if kind == _VIEW:
            return (_VIEW, self.storages[template[1]], *template[2:])
        if kind == _NEW:
            number = self.first_new + template[1]
            self.next_new = max(self.next_new, number + 1)
            return (_NEW, number, *template[2:])
        if kind == _SEQUENCE:
            return (_SEQUENCE, template[1], tuple(self.template(t) for t in template[2]))
        return template


def _op_name(op):
    return f"aten.{op._schema.name.removeprefix('aten::')}" + (
        "" if op._overloadname == "default" else f".{op._overloadname}")


# What users call, for the ops that need values most often.
USER_NAMES = {
    torch.ops.aten._local_scalar_dense.default: "Tensor.item() (or float(), int(), bool() of a tensor)",
    torch.ops.aten.equal.default: "torch.equal",
    torch.ops.aten.allclose.default: "torch.allclose",
}
_NO_META_KERNEL = re.compile(r"'Meta' backend|with Meta tensors|on meta tensors|meta tensor without")
_ON_META = re.compile(r"\bmeta\b")


def _run_meta(op, args, kwargs):
    """Meta's answer for ``op``; a decomposition's where Meta has no kernel; clear errors otherwise."""
    try:
        return op(*args, **kwargs)
    except NotImplementedError as error:
        failure = error
    except RuntimeError as error:
        if "device" in str(error) and _ON_META.search(str(error)):
            raise _device_error(op, error) from None
        if not _NO_META_KERNEL.search(str(error)):
            raise
        failure = error
    if torch.Tag.dynamic_output_shape in op.tags:
        raise NoValuesError(f"{_op_name(op)} (its output's shape depends on the values, which abstract mode does "
                            "not have)") from None
    from torch._decomp import decomposition_table

    decomposition = decomposition_table.get(op)
    if decomposition is not None:
        return decomposition(*args, **kwargs)
    if not op._schema.returns:
        return None  # it only writes arguments its caller sized (cummax's helper, say): nothing to infer
    like = LIKE_ARGUMENT.get(op)
    if like is not None:
        return torch.empty_like(_bind(op, args, kwargs)[like])
    raise NotImplementedError(
        f"{_op_name(op)} cannot run in abstract mode: PyTorch has no Meta kernel (shape function) for it "
        f"and torch_tpu no abstract rule. Run it outside torch_tpu.abstract(). ({failure})") from None


# Ops with no Meta kernel whose one result has the shape, dtype and layout of an argument: the
# gradients of a few losses and poolings (with respect to their input), and cumulative ops.
LIKE_ARGUMENT = {
    torch.ops.aten.multi_margin_loss_backward.default: "self",
    torch.ops.aten.multilabel_margin_loss_backward.default: "self",
    torch.ops.aten.fractional_max_pool3d_backward.default: "self",
    torch.ops.aten._ctc_loss_backward.default: "log_probs",
    torch.ops.aten._ctc_loss_backward.Tensor: "log_probs",
    torch.ops.aten._logcumsumexp.default: "self",
}


def _statistics_as_cpu(*parameters, evaluation=False):
    """Meta saves a norm's mean and rstd in float32 (CUDA's choice); CPU's kernels, which tpu's follow, in
    the input's dtype, unless a bf16/fp16 input meets float32 ``parameters`` (autocast's mixed norms). A batch
    norm in evaluation (``training=False``, or an ``evaluation`` overload) saves CPU's empty statistics, where
    Meta gives CUDA's running ones."""

    def correct(call, result):
        output, *statistics = result
        mixed = call["input"].dtype in (torch.bfloat16, torch.float16) and any(
            call.get(name) is not None and call[name].dtype == torch.float32 for name in parameters)
        dtype = torch.float32 if mixed else call["input"].dtype
        if evaluation or call.get("training") is False:
            return (output, *(s.new_empty((0,), dtype=dtype) for s in statistics))
        return (output, *(s.to(dtype) for s in statistics))

    return correct


def _dropout_backward_as_cpu(call, result):
    """Eager lays the gradient out as TensorIterator lays out ``grad * mask``; Meta, contiguously."""
    from .ops import nn

    strides = nn.product_strides(call["grad_output"], call["mask"], result.shape)
    return result if strides is None else result.new_empty_strided(result.shape, strides)


def _half_to_float(call):
    from .ops import nn

    nn.check_half_to_float(call["self"], call["half_to_float"])


def _parameter_dtypes(*parameters):
    """A norm's parameters of another dtype than its input: Meta takes any mix, CPU's kernels (and tpu's) only
    a bf16/fp16 input with float32 parameters (a bf16 BatchNorm whose running statistics stayed float32 fails)."""

    def check(call):
        from .ops import nn

        nn.check_parameter_dtypes(call["input"], *(call[name] for name in parameters))

    return check


_NORM_PARAMETERS = {
    torch.ops.aten.native_batch_norm.default: ("weight", "bias", "running_mean", "running_var"),
    torch.ops.aten._native_batch_norm_legit.default: ("weight", "bias", "running_mean", "running_var"),
    torch.ops.aten._native_batch_norm_legit_no_training.default: ("weight", "bias", "running_mean", "running_var"),
    torch.ops.aten._native_batch_norm_legit.no_stats: ("weight", "bias"),
    torch.ops.aten.native_layer_norm.default: ("weight", "bias"),
    torch.ops.aten.native_group_norm.default: ("weight", "bias"),
}

def _operand_dtypes_as_cpu(op):
    """Meta's matmuls take operands of mixed dtypes (a float32 activation into a bf16 weight, say: a buffer FSDP's
    mixed precision left float32) and answer float32; CPU's and tpu's refuse them. A mixed call runs on CPU
    stand-ins (empty, never read), so that the error is CPU's own."""

    def check(call):
        tensors = [value for value in call.values() if isinstance(value, Tensor)]
        if len({tensor.dtype for tensor in tensors}) > 1:
            op(**{name: torch.empty_strided(value.shape, value.stride(), dtype=value.dtype)
                  if isinstance(value, Tensor) else value for name, value in call.items()})

    return check


_MATMULS = (torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default,
            torch.ops.aten.baddbmm.default, torch.ops.aten.mv.default, torch.ops.aten.addmv.default,
            torch.ops.aten.dot.default)

# The tpu kernel's checks where Meta's differ (Meta takes what the kernel refuses, or refuses in other words)
TPU_CHECKS = {op: _half_to_float for op in (torch.ops.aten._softmax.out, torch.ops.aten._log_softmax.out,
                                             torch.ops.aten._softmax.default, torch.ops.aten._log_softmax.default)}
TPU_CHECKS.update({op: _parameter_dtypes(*parameters) for op, parameters in _NORM_PARAMETERS.items()})
TPU_CHECKS.update({op: _operand_dtypes_as_cpu(op) for op in _MATMULS})

# Results Meta gives differently from the tpu kernel: corrected before the recipe is cached
AS_TPU_KERNEL = {
    torch.ops.aten.native_layer_norm.default: _statistics_as_cpu("weight", "bias"),
    torch.ops.aten.native_batch_norm.default: _statistics_as_cpu("weight", "bias", "running_mean", "running_var"),
    torch.ops.aten._native_batch_norm_legit.default: _statistics_as_cpu("weight", "bias", "running_mean", "running_var"),
    torch.ops.aten._native_batch_norm_legit.no_stats: _statistics_as_cpu("weight", "bias"),
    torch.ops.aten._native_batch_norm_legit_no_training.default: _statistics_as_cpu(
        "weight", "bias", "running_mean", "running_var", evaluation=True),
    torch.ops.aten.native_dropout_backward.default: _dropout_backward_as_cpu,
}


def _device_error(op, error):
    """Meta's device errors name the meta device where the user has a tpu tensor."""
    devices = re.search(r"devices?,? (\S+) and (\S+?)!", str(error))
    if devices:
        first, second = (d if d != "meta" else "tpu:0" for d in devices.groups())
        return device_mismatch(first, second, _op_name(op))
    return RuntimeError(_ON_META.sub("tpu:0", str(error)))


# --- ops whose abstract form is not Meta's -------------------------------------------------------

RULES = {}


def rule(*overloads):
    def decorate(function):
        for overload in overloads:
            RULES[overload] = function
        return function

    return decorate


@rule(torch.ops.aten._copy_from.default, torch.ops.aten._copy_from_and_resize.default)
def _copy(op, args, kwargs):
    """A copy into tpu only checks its arguments; a copy out of tpu would need the values."""
    source, destination = args[0], args[1]
    if op is torch.ops.aten._copy_from_and_resize.default and destination.shape != source.shape:
        destination.resize_(source.shape)
    if destination.shape != source.shape:  # Meta raises copy_'s error if the source does not broadcast
        torch.empty(destination.shape, device=_META).copy_(torch.empty(source.shape, device=_META))
    if destination.device.type != "tpu":
        if source.numel():
            raise NoValuesError(f"Copying a tpu tensor to the {destination.device.type} (.cpu(), .numpy(), "
                                ".tolist(), printing values)")
        return destination  # nothing to copy
    _C.current_chip().hbm.drop_bytes(_tensor.hbm_buffer(destination.untyped_storage()))
    return destination


@rule(torch.ops.aten.record_stream.default, torch.ops.aten._assert_async.default, torch.ops.aten._assert_async.msg,
      torch.ops.aten._linalg_check_errors.default)
def _nothing_to_do(op, args, kwargs):
    """Streams need no bookkeeping, and checks of values (asserts, linalg's error codes) have none to check."""
    return None


@rule(torch.ops.aten.convolution_overrideable.default)
def _convolution(op, args, kwargs):
    return run(torch.ops.aten.convolution.default, args, kwargs)


@rule(torch.ops.aten.convolution_backward_overrideable.default)
def _convolution_backward(op, args, kwargs):
    grad_output, input, weight, stride, padding, dilation, transposed, output_padding, groups, mask = args
    return run(torch.ops.aten.convolution_backward.default,
               (grad_output, input, weight, [grad_output.shape[1]], stride, padding, dilation, transposed, output_padding, groups, mask),
               kwargs)


@rule(torch.ops.aten._scaled_dot_product_fused_attention_overrideable_backward.default)
def _attention_backward(op, args, kwargs):
    """Meta allocates a bias gradient whenever there is a bias; the kernel only when ``grad_input_mask`` asks."""
    from .ops import attention

    call = _bind(op, args, kwargs)
    return attention.backward_results(call["query"], call["key"], call["value"], call["attn_bias"],
                                      call["grad_input_mask"])


@rule(torch.ops.aten._scaled_mm.default, torch.ops.aten._scaled_mm.out)
def _scaled_matmul(op, args, kwargs):
    """Meta checks CUDA's rules (a column-major mat2, sizes divisible by 16); the tpu kernel accepts what
    CPU accepts, so its own checks decide, and the chip must have an FP8 MXU path."""
    from .ops import scaled_mm

    call = _bind(op, args, kwargs)
    mat1, mat2, out, out_dtype = call["self"], call["mat2"], call.get("out"), call["out_dtype"]
    valid = scaled_mm._valid_call(mat1, mat2, call["scale_a"], call["scale_b"], call["bias"])
    if not valid or (out is not None and out_dtype not in (None, out.dtype)):
        standins = {"out": torch.empty(0, dtype=out.dtype)} if out is not None else {}
        scaled_mm._fail_like_cpu(op, *(call[a.name] for a in op._schema.arguments if not a.kwarg_only), **standins)
    _C.mxu.check_chip_supports(_tensor.numpy_dtype(mat1.dtype), _tensor.numpy_dtype(mat2.dtype))
    shape = scaled_mm._result_shape(mat1, mat2)
    if out is None:
        return _tensor.empty(shape, out_dtype or mat1.dtype)
    if tuple(out.shape) != shape:
        out.resize_(shape)
    _C.current_chip().hbm.drop_bytes(_tensor.hbm_buffer(out.untyped_storage()))
    return out


def _synced_statistics(call):
    from .ops import nn

    channels, dtype = call["input"].shape[1], nn.synced_statistics_dtype(call["input"])
    return _tensor.empty((channels,), dtype), _tensor.empty((channels,), dtype)


def _gathered_statistics(call):
    channels, dtype = call["mean"].shape[-1], call["mean"].dtype
    return _tensor.empty((channels,), dtype), _tensor.empty((channels,), dtype)


def _like_input(call):
    from .ops import nn

    return _tensor.empty(call["input"].shape, call["input"].dtype, nn.batch_norm_strides(call["input"]))


def _gradient_sums(call):
    from .ops import nn

    mean = call["mean"]
    params_dtype = nn.synced_params_dtype(mean, call["weight"])
    wanted = ((call["input_g"], mean.dtype), (call["input_g"], mean.dtype), (call["weight_g"], params_dtype),
              (call["bias_g"], params_dtype))
    return tuple(_tensor.empty(mean.shape, dtype) if asked else None for asked, dtype in wanted)


_SYNCED_BATCH_NORM = {
    torch.ops.aten.batch_norm_stats.default: _synced_statistics,
    torch.ops.aten.batch_norm_gather_stats.default: _gathered_statistics,
    torch.ops.aten.batch_norm_gather_stats_with_counts.default: _gathered_statistics,
    torch.ops.aten.batch_norm_elemt.default: _like_input,
    torch.ops.aten.batch_norm_backward_reduce.default: _gradient_sums,
    torch.ops.aten.batch_norm_backward_elemt.default: _like_input,
}


@rule(*_SYNCED_BATCH_NORM)
def _synced_batch_norm(op, args, kwargs):
    """nn.SyncBatchNorm's kernels are CUDA's alone, with no Meta kernel: the tpu kernels' results (ops/nn.py), without
    values; the running statistics a gather updates keep theirs. The dtypes CUDA refuses are refused."""
    from .ops import nn

    call = _bind(op, args, kwargs)
    nn.SYNCED_DTYPE_CHECKS[op._overloadpacket.__name__](call)
    return _SYNCED_BATCH_NORM[op](call)


def _bind(op, args, kwargs):
    """Every argument of a call by its schema name, defaults filled in."""
    call = {}
    for position, argument in enumerate(op._schema.arguments):
        if position < len(args) and not argument.kwarg_only:
            call[argument.name] = args[position]
        elif argument.name in kwargs:
            call[argument.name] = kwargs[argument.name]
        elif argument.has_default_value():
            call[argument.name] = argument.default_value
    return call
