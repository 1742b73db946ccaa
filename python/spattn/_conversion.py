"""The class a model converter swaps into a module it converts (``module.__class__ = ...``)."""

from __future__ import annotations

import functools

__all__ = ["converted_class"]


@functools.lru_cache(maxsize=None)
def _converted(base: type, module: str, attributes: tuple) -> type:
    return type(f"Spattn{base.__name__}", (base,), {**dict(attributes), "__module__": module})


def converted_class(base: type, module: str, **attributes) -> type:
    """``Spattn<base>``, a subclass of ``base`` with ``attributes`` (the converted forward, flags), defined in
    ``module``; the same class for the same base and attributes, so converting every block of a model makes
    one class per kind of block. Parameters and state_dict keys are the base class's."""
    return _converted(base, module, tuple(sorted(attributes.items())))
