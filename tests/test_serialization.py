"""torch.save/load and deepcopy of tpu tensors, views and modules."""

import copy
import io
import pickle

import pytest
import torch


def _round_trip(obj, **load_kwargs):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, **load_kwargs)


def _shares_storage(a, b):
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


@pytest.mark.parametrize("weights_only", [False, True])
def test_save_load_preserves_values_device_and_aliasing(weights_only):
    base = torch.linspace(-2, 2, 12).to(torch.bfloat16).to("tpu").view(3, 4)
    view = base.t()[1:]
    loaded_base, loaded_view = _round_trip([base, view], weights_only=weights_only)
    for loaded, original in ((loaded_base, base), (loaded_view, view)):
        assert loaded.device == torch.device("tpu:0") and loaded.dtype == original.dtype
        assert (loaded.shape, loaded.stride(), loaded.storage_offset()) == (
            original.shape, original.stride(), original.storage_offset())
        assert torch.equal(loaded.cpu(), original.cpu())
    assert _shares_storage(loaded_base, loaded_view)
    loaded_base.fill_(7)
    assert (loaded_view.cpu() == 7).all()
    assert (view.cpu() != 7).all(), "the loaded copy is independent of the original"


@pytest.mark.parametrize("map_location", ["cpu", torch.device("cpu"), "tpu", "tpu:0"])
def test_map_location(map_location):
    source = torch.arange(5, dtype=torch.int32)
    for saved in (source, source.to("tpu")):
        loaded = _round_trip(saved, map_location=map_location)
        assert loaded.device.type == torch.device(map_location).type
        assert torch.equal(loaded.cpu(), source)


def test_state_dict_round_trip():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).to("tpu")
    state = _round_trip(model.state_dict(), weights_only=True)
    assert all(t.device.type == "tpu" for t in state.values())
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).to("tpu")
    fresh.load_state_dict(state)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a.cpu(), b.cpu()), name
    on_cpu = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    on_cpu.load_state_dict(_round_trip(model.state_dict(), map_location="cpu"))
    assert torch.equal(on_cpu[0].weight, model[0].weight.cpu())


def test_deepcopy_of_tensors_keeps_shared_storage_in_the_memo():
    base = torch.arange(6.0).to("tpu")
    view = base[2:]
    copied_base, copied_view = copy.deepcopy([base, view])
    assert copied_base.device.type == "tpu" and torch.equal(copied_view.cpu(), view.cpu())
    assert copied_view.storage_offset() == 2
    assert _shares_storage(copied_base, copied_view) and not _shares_storage(copied_base, base)
    copied_base.fill_(-1)
    assert (copied_view.cpu() == -1).all() and (view.cpu() != -1).all()


def test_deepcopy_keeps_requires_grad_and_parameters():
    parameter = torch.nn.Parameter(torch.ones(2).to("tpu"))
    copied = copy.deepcopy(parameter)
    assert isinstance(copied, torch.nn.Parameter) and copied.requires_grad and copied.device.type == "tpu"


@pytest.mark.parametrize("make", [lambda: torch.nn.Linear(3, 2),
                                  lambda: torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))])
def test_deepcopy_of_modules(make):
    model = make().to("tpu")
    copied = copy.deepcopy(model)
    for (name, a), (_, b) in zip(model.named_parameters(), copied.named_parameters()):
        assert b.device.type == "tpu" and torch.equal(a.cpu(), b.cpu()), name
        assert not _shares_storage(a, b)


def test_save_load_frees_nothing_it_should_keep(memory_baseline):
    x = torch.arange(100.0).to("tpu")
    loaded = _round_trip(x)
    assert memory_baseline.delta() == 800
    del x, loaded


# pickle (multiprocessing, caches, pickle.dumps(state_dict)) and torch.save's legacy format write each
# storage's bytes through C++, which reads them from a data pointer a Python backend does not have.
@pytest.mark.parametrize("dump", [
    lambda obj: pickle.loads(pickle.dumps(obj)),
    lambda obj: _round_trip_legacy(obj),
], ids=["pickle", "legacy_torch_save"])
def test_pickle_and_legacy_format_round_trip(dump):
    base = torch.linspace(-1, 1, 6).to(torch.bfloat16).to("tpu").view(2, 3)
    model = torch.nn.Linear(3, 2).to("tpu")
    loaded_base, loaded_view, loaded_model = dump([base, base.t(), model])
    assert loaded_base.device.type == "tpu" and loaded_base.dtype == torch.bfloat16
    assert torch.equal(loaded_base.cpu(), base.cpu()) and torch.equal(loaded_view.cpu(), base.t().cpu())
    assert loaded_model.weight.device.type == "tpu"
    assert torch.equal(loaded_model.weight.cpu(), model.weight.cpu())


def _round_trip_legacy(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer, _use_new_zipfile_serialization=False)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_legacy_format_from_a_real_file_to_either_device(tmp_path):
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(4.0).to("tpu")}, path, _use_new_zipfile_serialization=False)
    assert torch.load(path)["w"].device.type == "tpu"
    assert torch.equal(torch.load(path, map_location="cpu")["w"], torch.arange(4.0))
