"""Head kinds: the interface and the registry (`base`), and one module per family of kinds, each
registering its kinds when it is imported. `kind_names` and `head_class` import every module of
this package first (found on disk, so there is no list to keep): a new kind is one new module.
Nothing here imports TensorFlow; kinds import it when they fit or load.
"""

import importlib
import pkgutil

from cache.errors import UserError
from heads.kinds.base import KINDS


def _import_all():
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")


def kind_names(command=None):
    """Every registered kind's name, or those trained by `command` ("baselines", "train-heads")."""
    _import_all()
    return [name for name, cls in KINDS.items() if command is None or cls.command == command]


def head_class(kind):
    """The Head subclass registered as `kind`."""
    if kind not in kind_names():
        raise UserError(f"unknown head kind {kind!r}; choose from {', '.join(KINDS)}")
    return KINDS[kind]
