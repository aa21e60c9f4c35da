"""Host copies of a module's weights, for a model that takes turns on the compute device.

    copies = HostCopy(model, pin=torch.cuda.is_available())
    copies.to_device("cuda")   # bytes copied onto the device (non-blocking from pinned memory)
    copies.to_host()           # bytes copied off it: 0 once the copy exists

The first eviction copies the weights off the device straight into pinned host memory (Module.to followed by
Tensor.pin_memory would take two copies), and that host copy is kept while the weights are on the device again:
every later eviction copies nothing (the weights point back at the copy) and every reload is one DMA copy. The copy
is made at the first eviction, or now with `keep_current()` from weights already in host memory; its price is the
module's size in host memory (pinned, so the OS cannot swap it) also while the module is on the device. Freed
pinned memory would stay cached by torch anyway, so a copy made anew at each eviction would hold as much host
memory and cost a copy more.

Only for weights that do not change on the device (inference). A module holding tensor subclasses (quantized
weights) moves with Module.to instead. The module's tensors are found at every move, so a module changed between
moves (quantized, say) is moved as it is now; a kept copy serves only the tensor of its place, shape and dtype.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

logger = logging.getLogger("squeeze.host_copy")

HOST = torch.device("cpu")


@dataclass
class _Slot:
    """One tensor of the module, a Parameter or a buffer, under one or more (owner, name) places (tied weights).
    A Parameter keeps its object where the storage types allow (its .data is swapped, as Module.to does)."""

    parameter: torch.nn.Parameter | None
    places: list[tuple[torch.nn.Module, str]] = field(default_factory=list)
    kept: torch.Tensor | None = None

    @property
    def key(self) -> tuple[int, str]:
        owner, name = self.places[0]
        return id(owner), name

    def tensor(self) -> torch.Tensor:
        if self.parameter is not None:
            return self.parameter.data
        owner, name = self.places[0]
        return owner._buffers[name]

    def set(self, tensor: torch.Tensor) -> None:
        if self.parameter is not None:
            if torch._has_compatible_shallow_copy_type(self.parameter, tensor):  # as Module.to decides
                self.parameter.data = tensor
                return
            self.parameter = torch.nn.Parameter(tensor, requires_grad=self.parameter.requires_grad)
            for owner, name in self.places:
                owner._parameters[name] = self.parameter
            return
        for owner, name in self.places:
            owner._buffers[name] = tensor


def _slots(module: torch.nn.Module) -> list[_Slot]:
    by_id: dict[int, _Slot] = {}
    for owner in module.modules():
        for name, parameter in owner._parameters.items():
            if parameter is not None:
                by_id.setdefault(id(parameter), _Slot(parameter)).places.append((owner, name))
        for name, buffer in owner._buffers.items():
            if buffer is not None:
                by_id.setdefault(id(buffer), _Slot(None)).places.append((owner, name))
    return list(by_id.values())


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


BLOCK = 256 * 2**20  # the least a host block holds
ALIGN = 512  # bytes; each tensor starts at a multiple, as DMA copies like


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _host_block(capacity: int, pin: bool) -> torch.Tensor:
    if pin:
        try:
            return torch.empty(capacity, dtype=torch.uint8, device=HOST, pin_memory=True)
        except RuntimeError as error:  # no CUDA driver, or the OS refuses more page-locked memory
            logger.warning("could not pin %.2f GiB of host memory (%s); the copy stays in pageable memory",
                           capacity / 2**30, error)
    return torch.empty(capacity, dtype=torch.uint8, device=HOST)


def host_tensors(like: list[tuple[torch.Size, torch.dtype]], pin: bool) -> Iterator[tuple[int, torch.Tensor]]:
    """(index, empty host tensor of like[index]'s shape and dtype) for each, largest first, as views of a few shared
    blocks. torch's pinned allocator rounds every allocation up to a power of two (up to twice the bytes asked for),
    so one pinned tensor per weight could cost nearly double; blocks of power-of-two sizes, filled largest tensor
    first (first fit), waste only the tail of the last one. Blocks are allocated as the views are asked for, so a
    caller that copies each tensor and lets its original go never holds two whole copies."""
    nbytes = [math.prod(shape) * dtype.itemsize for shape, dtype in like]
    order = sorted(range(len(like)), key=lambda i: -nbytes[i])
    left = sum(_aligned(n) for n in nbytes)
    blocks: list[list] = []  # [storage, bytes used]
    for index in order:
        shape, dtype = like[index]
        size = _aligned(nbytes[index])
        block = next((b for b in blocks if b[0].numel() - b[1] >= size), None)
        if block is None:
            capacity = 1 << (max(size, min(BLOCK, left)) - 1).bit_length()
            block = [_host_block(capacity, pin), 0]
            pin = pin and block[0].is_pinned()  # once refused, the rest goes to pageable memory without asking again
            blocks.append(block)
        start = block[1]
        block[1] += size
        left -= size
        yield index, block[0][start:start + nbytes[index]].view(dtype).view(shape)


def _on(tensor: torch.Tensor, device: torch.device) -> bool:
    if tensor.device.type != device.type:
        return False
    return device.index is None or tensor.device.index == device.index


class HostCopy:
    def __init__(self, module: torch.nn.Module, pin: bool = False):
        self.module, self.pin = module, pin
        self._kept: dict[tuple[int, str], torch.Tensor] = {}  # (id(owner), name) of a tensor's first place -> copy
        self.bytes_to_device = 0
        self.bytes_to_host = 0

    def slots(self) -> list[_Slot]:
        """The module's tensors as they are now (found at every move: quantization, say, may have replaced some),
        each with its kept copy where one matches it; kept copies of tensors that are gone are let go."""
        slots = _slots(self.module)
        kept = {}
        for slot in slots:
            copy = self._kept.get(slot.key)
            tensor = slot.tensor()
            if copy is not None and copy.shape == tensor.shape and copy.dtype == tensor.dtype:
                slot.kept = kept[slot.key] = copy
        self._kept = kept
        return slots

    @property
    def kept_bytes(self) -> int:
        return sum(_nbytes(copy) for copy in self._kept.values())

    def keep_current(self) -> None:
        """Keep the tensors now in host memory as the host copy (pinned first, where asked: one copy each)."""
        slots = self.slots()
        if not _plain(slots):
            return
        slots = [slot for slot in slots if slot.kept is None and slot.tensor().device.type == "cpu"]
        if self.pin:  # one tensor at a time, so the pageable original goes as its pinned copy comes
            for index, host in host_tensors([(slot.tensor().shape, slot.tensor().dtype) for slot in slots], pin=True):
                host.copy_(slots[index].tensor())
                slots[index].set(host)
        for slot in slots:
            self._kept[slot.key] = slot.tensor()
        self._log_kept()

    def to_device(self, device) -> int:
        """Every tensor onto `device`; returns the bytes copied."""
        device = torch.device(device)
        slots = self.slots()
        if not _plain(slots):
            return self._module_to(slots, device)
        copied = 0
        for slot in slots:
            tensor = slot.tensor()
            if _on(tensor, device):
                continue
            moved = torch.empty(tensor.shape, dtype=tensor.dtype, device=device)
            moved.copy_(tensor, non_blocking=tensor.is_pinned())  # pinned: a DMA copy, ordered before any use
            slot.set(moved)
            copied += _nbytes(tensor)
        self.bytes_to_device += copied
        return copied

    def to_host(self) -> int:
        """Every tensor into host memory; returns the bytes copied (none for a tensor with a kept copy). All or
        nothing: the host memory is taken and filled before any weight moves, so a failure leaves them all on the
        device, where the caller's bookkeeping says they are."""
        slots = self.slots()
        if not _plain(slots):
            return self._module_to(slots, HOST)
        on_device = [slot for slot in slots if slot.tensor().device.type != "cpu"]
        new = [slot for slot in on_device if slot.kept is None]
        hosts = [None] * len(new)
        for index, host in host_tensors([(slot.tensor().shape, slot.tensor().dtype) for slot in new], self.pin):
            host.copy_(new[index].tensor())  # synchronous: the copy is whole before the device memory is let go
            hosts[index] = host
        for slot, host in zip(new, hosts, strict=True):
            slot.set(host)
            self._kept[slot.key] = slot.kept = host
        for slot in on_device:
            if slot.kept is not None and slot.tensor().device.type != "cpu":
                slot.set(slot.kept)
        copied = sum(_nbytes(host) for host in hosts)
        self.bytes_to_host += copied
        if new:
            self._log_kept()
        return copied

    def _log_kept(self) -> None:
        logger.info("keeping a %shost copy of %s: %.2f GiB", "pinned " if self.pin else "",
                    type(self.module).__name__, self.kept_bytes / 2**30)

    def _module_to(self, slots: list[_Slot], device: torch.device) -> int:
        moving = sum(_nbytes(slot.tensor()) for slot in slots if not _on(slot.tensor(), device))
        self.module.to(device)
        if device.type == "cpu":
            self.bytes_to_host += moving
        else:
            self.bytes_to_device += moving
        return moving


def _plain(slots: list[_Slot]) -> bool:
    # quantized weights (torchao's tensor subclasses) cannot have their storage swapped this way
    return all(type(slot.tensor()) is torch.Tensor for slot in slots)
