"""Optional dependencies: one clear error that names the package and the extra installing it."""

from __future__ import annotations

import importlib

EXTRAS = {"matplotlib": "plot", "hypothesis": "testing", "torch": "test"}


class MissingDependencyError(ImportError):
    """A feature needs an optional package that is not installed."""


def require(module: str, purpose: str):
    """Import and return ``module``, or raise :class:`MissingDependencyError` saying what ``purpose`` needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = EXTRAS.get(module)
        how = f"python -m pip install {module}"
        if extra:
            how += f", or from a clone the [{extra}] extra: python -m pip install -e \".[{extra}]\""
        raise MissingDependencyError(f"{purpose} needs {module}, which is not installed ({how})") from exc
