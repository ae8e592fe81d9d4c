"""The one head interface, and the registry of head kinds by name.

Every head kind (Keras heads, scikit-learn baselines, the probe protocols) is a `Head`:
  __init__(**settings)            stores its settings only (scikit-learn habit)
  fit(X, Y, attributes, X_val=None, Y_val=None, on_epoch=None) -> self
                                  X float16/float32 [n, D], Y 0/1 [n, k]; val data if the kind
                                  chooses something on val (C, k, a learning rate) or reports it
  predict_proba(X) -> float32 [n, k] in attribute order; checks X's width
  save(directory)                 writes the files named in `files`
  load(directory, settings, attributes, trust_model=False) -> a fitted head (classmethod)
Learned state ends in `_`: attributes_, n_features_in_, history_ (one dict per epoch, Keras
kinds), selection_ (what was chosen on val, recorded in metrics.json, or None).
`heads.rundir` writes and reads a run directory around any of them.
"""

import inspect

from cache.errors import UserError

KINDS = {}


def register(name):
    """Class decorator: make a Head subclass available under `name`."""
    def decorate(cls):
        cls.kind = name
        KINDS[name] = cls
        return cls
    return decorate


def kind_names():
    """Every registered kind's name (importing the modules that register them)."""
    import heads.baselines  # noqa: F401  (each module registers its kinds)
    import heads.dfr  # noqa: F401
    import heads.keras_head  # noqa: F401
    import heads.probes  # noqa: F401
    return list(KINDS)


def head_class(kind):
    """The Head subclass registered as `kind`."""
    if kind not in kind_names():
        raise UserError(f"unknown head kind {kind!r}; choose from {', '.join(KINDS)}")
    return KINDS[kind]


def make_head(kind, **settings):
    return head_class(kind)(**settings)


class Head:
    """Base class: settings handling and the width check every kind shares."""
    kind = None
    files = ()
    history_ = ()
    selection_ = None

    @classmethod
    def from_settings(cls, settings):
        """An unfitted head from a settings dict, ignoring keys this kind does not take (runs share
        one settings dict across kinds; older runs recorded keys that are gone)."""
        takes = cls().get_params()
        return cls(**{k: v for k, v in settings.items() if k in takes})

    def get_params(self):
        """{name: value} of the constructor's settings (recorded in config.json)."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def check_width(self, X):
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise UserError(f"features have width {X.shape[-1]}, the {self.kind} head was trained on "
                            f"{self.n_features_in_}")

    def export_model(self):
        """A keras.Model for `export`; kinds without a TensorFlow graph cannot be exported."""
        raise UserError(f"export needs a head with a TensorFlow graph (the Keras kinds); {self.kind} is "
                        "not one")
