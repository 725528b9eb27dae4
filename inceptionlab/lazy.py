"""Public names imported on first use (PEP 562), for the packages whose imports are heavy.

    __getattr__, __dir__ = lazy_names(__name__, {"train": "inceptionlab.train.engine"}, __all__)

`import inceptionlab` and `import inceptionlab.train` then cost no torch import: `inceptionlab --help`
and every command's `--help` start in a fraction of a second.
"""
from __future__ import annotations

import importlib
import sys


def lazy_names(module: str, where: dict[str, str], public: list[str]):
    """``(__getattr__, __dir__)`` for ``module``: each name of ``where`` is taken from the module
    that ``where`` gives for it when first asked for, then kept in ``module``'s globals."""

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name]), name)
        setattr(sys.modules[module], name, value)
        return value

    def __dir__():
        return sorted(set(vars(sys.modules[module])) | set(public))

    return __getattr__, __dir__
