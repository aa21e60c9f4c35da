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
    return [slot.tensor().data_ptr() for slot in copies.slots]


def test_a_kept_copy_makes_every_eviction_copy_nothing_and_keeps_the_values():
    model = tied_model()
    values = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    size = sum(p.numel() * p.element_size() for p in model.parameters()) + model.inv_freq.numel() * 4  # tied: once
    copies = HostCopy(model, keep=True)
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


def test_without_keep_nothing_is_held_and_quantized_weights_move_with_module_to():
    model = tied_model()
    copies = HostCopy(model, keep=False)
    copies.keep_current()
    assert copies.kept_bytes == 0 and copies.to_host() == 0  # on the host already: nothing to do
    assert copies.to_device("meta") > 0
    assert all(slot.kept is None for slot in copies.slots)

    linear = torch.nn.Sequential(torch.nn.Linear(64, 64))
    assert quantize_weights(linear, "int8") == 1
    quantized = HostCopy(linear, keep=True)
    quantized.keep_current()
    assert not quantized.plain and quantized.kept_bytes == 0
    assert quantized.to_host() == 0  # Module.to: on the host already


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
