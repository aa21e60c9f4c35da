"""HostCopy: a kept host copy makes every eviction after the first a pointer swap. The 'meta' device stands in for the
GPU: a move onto it is a real copy call, and anything copied back off it would fail (a meta tensor has no data),
so an eviction that succeeds and gives back the original values copied nothing."""

import torch

from squeeze_core.host_copy import HostCopy
from squeeze_core.quantization import quantize_weights


def tied_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 6), torch.nn.LayerNorm(6), torch.nn.Linear(6, 10, bias=False))
    model[2].weight = model[0].weight  # tied, as a language model's head and embeddings can be
    model.register_buffer("inv_freq", torch.arange(3.0), persistent=False)
    return model


def host_pointers(copies: HostCopy) -> list[int]:
    return [slot.tensor().data_ptr() for slot in copies.slots()]


def test_a_kept_copy_makes_every_eviction_copy_nothing_and_keeps_the_values():
    model = tied_model()
    values = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    size = sum(p.numel() * p.element_size() for p in model.parameters()) + model.inv_freq.numel() * 4  # tied: once
    copies = HostCopy(model)
    copies.keep_current()
    assert copies.kept_bytes == size
    kept = host_pointers(copies)
    for _ in range(2):
        assert copies.to_device("meta") == size
        assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {"meta"}
        assert model[2].weight is model[0].weight  # still tied on the device
        assert copies.to_host() == 0
        assert host_pointers(copies) == kept
        assert model[2].weight is model[0].weight
    assert copies.to_device("meta") == size
    assert copies.to_device("meta") == 0  # already there: nothing copied
    copies.to_host()
    assert all(torch.equal(values[name], tensor) for name, tensor in model.state_dict().items())
    assert (copies.bytes_to_device, copies.bytes_to_host) == (3 * size, 0)


def test_the_module_is_read_at_every_move_so_quantizing_it_later_holds_nothing_back():
    """The headless pipeline makes its HostCopy before --flux-quantization replaces the Linear weights: the copy must
    not hold the replaced weights (on a GPU, the whole bf16 model) nor move them instead of the quantized ones."""
    import gc
    import weakref

    linear = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.LayerNorm(64))
    copies = HostCopy(linear)
    old_weight = weakref.ref(linear[0].weight)
    assert copies.to_host() == 0 and copies.kept_bytes == 0  # in host memory already: nothing copied, nothing kept
    assert quantize_weights(linear, "int8") == 1
    gc.collect()
    assert old_weight() is None
    assert any(type(slot.tensor()) is not torch.Tensor for slot in copies.slots())  # moved with Module.to from now on
    copies.keep_current()
    assert copies.kept_bytes == 0


def test_host_tensors_share_a_few_blocks_without_overlap():
    """Pinned memory comes rounded up to a power of two per allocation; packing the copies into shared blocks keeps
    the total near what the weights need (here one block: the next power of two above their sum)."""
    from squeeze_core.host_copy import ALIGN, host_tensors

    like = [torch.empty(shape, dtype=dtype) for shape, dtype in
            [((300, 7), torch.float32), ((5,), torch.bfloat16), ((0,), torch.float32), ((64, 64), torch.float16), ((3, 3), torch.bool)]]
    placed = dict(host_tensors([(t.shape, t.dtype) for t in like], pin=False))
    hosts = [placed[i] for i in range(len(like))]
    assert [(h.shape, h.dtype) for h in hosts] == [(t.shape, t.dtype) for t in like]
    spans = sorted((h.data_ptr(), h.data_ptr() + h.numel() * h.element_size()) for h in hosts if h.numel())
    assert all(end <= start for (_, end), (start, _) in zip(spans, spans[1:], strict=False))  # no overlap
    base = hosts[0].untyped_storage().data_ptr()
    assert all((h.data_ptr() - base) % ALIGN == 0 for h in hosts if h.numel())
    storages = {h.untyped_storage().data_ptr(): h.untyped_storage().nbytes() for h in hosts}
    needed = sum(-(-t.numel() * t.element_size() // ALIGN) * ALIGN for t in like)
    assert list(storages.values()) == [1 << (needed - 1).bit_length()]
    for index, host in enumerate(hosts):
        host.copy_(torch.full(host.shape, index % 2 == 1) if host.dtype == torch.bool else torch.full(host.shape, float(index)))
    assert [h.float().unique().tolist() for h in hosts] == [[0.0], [1.0], [], [3.0], [0.0]]


def test_pinning_that_fails_leaves_the_copy_in_pageable_memory(caplog):
    """Page-locked memory can run out (or, as on a machine without CUDA, not exist): the copy is then made in
    pageable memory, with a warning, instead of failing the eviction that needed it."""
    from squeeze_core.host_copy import host_tensors

    like = [torch.ones(8, 8), torch.ones(3)]
    with caplog.at_level("WARNING", logger="squeeze.host_copy"):
        hosts = dict(host_tensors([(t.shape, t.dtype) for t in like], pin=True))
    if torch.cuda.is_available():
        assert all(h.is_pinned() for h in hosts.values())
    else:
        assert not any(h.is_pinned() for h in hosts.values())
        assert "could not pin" in caplog.text and "pageable" in caplog.text
    assert [hosts[i].shape for i in range(2)] == [t.shape for t in like]


def test_copying_into_new_host_memory_keeps_every_parameter_object():
    """keep_current with pinning: each weight gets new host memory (pinned; on a machine without CUDA, pageable after
    the warning) through Parameter.data, so whatever holds the Parameter objects (ComfyUI's patcher, tied layers)
    still holds the module's weights."""
    model = tied_model()
    parameters = list(model.parameters())
    before = {name: (tensor.data_ptr(), tensor.clone()) for name, tensor in model.state_dict().items()}
    copies = HostCopy(model, pin=True)
    copies.keep_current()
    assert all(a is b for a, b in zip(model.parameters(), parameters, strict=True))
    for name, tensor in model.state_dict().items():
        assert tensor.data_ptr() != before[name][0] and torch.equal(tensor, before[name][1]), name
    assert host_pointers(copies) == [slot.kept.data_ptr() for slot in copies.slots()]
