"""Public names of a package, imported on first use (PEP 562), so that importing a package stays
instant (`cli.py --help` never imports TensorFlow) while `from heads import TaskSpec` works."""

import importlib


def lazy_exports(package, names):
    """(__getattr__, __dir__) for `package` (its __name__) exporting names: {name: the module that
    defines it}. A package assigns both, and `__all__ = list(names)`."""
    def get(name):
        if name in names:
            return getattr(importlib.import_module(names[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def listing():
        return sorted({*vars(importlib.import_module(package)), *names})
    return get, listing
