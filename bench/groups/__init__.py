"""The benchmark groups, one module each; a module registers its group when imported
(`bench.common.group`). `load` imports them all (found on disk: a new group is one new module)."""

import importlib
import pkgutil

from bench.common import GROUPS


def load():
    """{name: function} of every group, in the order they run."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return {name: function for name, (_, function) in sorted(GROUPS.items(), key=lambda item: item[1][0])}
