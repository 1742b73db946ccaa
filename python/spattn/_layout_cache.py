"""Layouts of converted models, built in eager mode and read as constants under ``torch.compile``.

A converted Swin block needs a layout (its pattern, bias index, ...) that depends on the input's spatial size.
Building one is host code (pattern construction, execution plans) that tracing cannot run: traced, it stops
on data-dependent sizes. So a converter keeps its layouts in a :class:`LayoutCache` and looks them up with a
key of Python values (grid size, window, shift) and the device::

    _LAYOUTS = LayoutCache("timm Swin", lambda key, device: swin_layout(*key).to(device))
    layout = _LAYOUTS.get((height, width, window, shift), x.device)   # in the block's forward
    _LAYOUTS.prepare((height, width, window, shift), device)          # at conversion, for the model's size

In eager mode a missing layout is built (``build(key, device)``, which returns it ready on ``device``, its
patterns prepared with ``Pattern.prepare``) and kept. While ``torch.compile`` traces, ``get`` is a
plain dict read: the layout's tensors enter the graph as constants, its patterns' plans are found cached,
and the graph is guarded on the key (another input size recompiles). A key never built eagerly cannot be
built while tracing: with ``fullgraph=True`` compilation stops with an error naming the key (run the model
once eagerly at that input size, or prepare it); without, Dynamo breaks the graph there and builds it.
Converters prepare the keys of the input size the model was configured for when they convert.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Hashable

import torch

__all__ = ["LayoutCache"]


class LayoutCache:
    """Layouts by ``(key, device)``: built once in eager mode, read without tracing host code under compile.

    name:  what the layouts are for, used in error messages ("timm Swin", "Hugging Face Swin", ...).
    build: ``build(key, device) -> layout`` on ``device``, with everything the kernels derive from its patterns
           already built (so that a traced lookup finds it). Called once per key and device, in eager mode.
    """

    def __init__(self, name: str, build: Callable[[tuple, torch.device], Any]):
        self._name = name
        self._build = build
        self._entries: dict = {}
        self._lock = threading.Lock()

    @staticmethod
    def _entry_key(key: Hashable, device: torch.device) -> tuple:
        # torch.device objects are not usable as keys while tracing; their type and index are.
        return key, device.type, device.index

    def get(self, key: Hashable, device: torch.device) -> Any:
        """The layout for ``key`` (a tuple of ints / tuples of ints) on ``device``; built on first use in eager
        mode, read as a constant while torch.compile traces."""
        entry_key = self._entry_key(key, device)
        layout = self._entries.get(entry_key)
        if layout is not None:
            return layout
        if torch.compiler.is_compiling():
            raise RuntimeError(
                f"spattn: no {self._name} layout for {key} on {device}: layouts cannot be built while "
                f"torch.compile traces. Run the model once without torch.compile at this input size (and "
                f"device) first, or convert it with this input size.")
        return self.prepare(key, device)

    def prepare(self, key: Hashable, device) -> Any:
        """Builds (once) and returns the layout for ``key`` on ``device``; eager mode only."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        entry_key = self._entry_key(key, device)
        layout = self._entries.get(entry_key)
        if layout is None:
            with self._lock:
                layout = self._entries.get(entry_key)
                if layout is None:
                    layout = self._build(key, device)
                    self._entries[entry_key] = layout
        return layout

    def clear(self) -> None:
        """Forgets every layout (the next eager lookup builds them again)."""
        with self._lock:
            self._entries = {}
