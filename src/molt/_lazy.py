"""Names a package exports without importing their modules until first use (PEP 562 module ``__getattr__``).

Part of molt-av (Apache-2.0). The task packages export their heads, datasets and generators this way, so that the
command line reads the task registry (names, settings, presets) without importing torch.
"""
from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(package: str, modules: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``.module`` when one of its ``names`` is first read.

    Args:
        package: the package's ``__name__``.
        modules: relative module name (``".head"``) -> the names it provides.
    """
    owner = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name not in owner:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(owner[name], package), name)

    return __getattr__
