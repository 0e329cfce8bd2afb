"""Optional dependencies: the core installs without Prefect, Ray, transformers or matplotlib.

A feature that needs one calls `require` where it imports it, so a missing extra is one line that
says what to install instead of a traceback from deep inside an import.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from replaystore.errors import ReplayStoreError


class MissingExtraError(ReplayStoreError, ImportError):
    """A feature's optional dependency is not installed; the message names the extra that brings it."""


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import `module` for `feature`, or raise `MissingExtraError` naming `replaystore[extra]`.

    Only the absence of `module` itself (or a package above it) is translated: an import error from
    inside an installed module is a real bug and propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        parts = module.split(".")
        if exc.name not in {".".join(parts[: i + 1]) for i in range(len(parts))}:
            raise
        raise MissingExtraError(f"{feature} needs {parts[0]}, which is not installed: pip install 'replaystore[{extra}]'", name=exc.name) from exc
