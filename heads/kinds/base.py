"""The one head interface, the data it is handed, and the registry of kinds by name.

Every head kind (the Keras head, scikit-learn baselines, the probe protocols, DFR) is a `Head`:
  __init__(**settings)          stores its settings only (scikit-learn habit)
  fit(train, val=None, on_epoch=None) -> self
                                train, val: `Data` (features, labels, group labels together); a kind
                                that chooses something on val (C, k, a learning rate) refuses an
                                empty val; on_epoch(record) after each epoch (kinds trained in epochs)
  predict_proba(X) -> float32 [n, k] in attribute order; checks X's width
  save(directory)               writes the files named in `files`
  load(directory, settings, attributes, trust_model=False) -> a fitted head (classmethod)
Learned state ends in `_`: attributes_, n_features_in_, history_ (one dict per epoch, kinds trained
in epochs), best_epoch_ (the epoch whose weights the head keeps, kinds trained in epochs), selection_ (what was chosen on val, recorded in metrics.json, or None), val_proba_ (the
head's probabilities on the val Data it was fitted with, when fitting computed them anyway, else
None; scoring uses them rather than predicting val again), calibration_ (how its probabilities
were calibrated on val, recorded in metrics.json, or None).
Class attributes: `kind` (its registered name), `command` (the command that trains it: "baselines"
or "train-heads"), `files` (what `save` writes), `code_files` (those of them that run code when
loaded, e.g. pickles: a run must record their sha256 before they are loaded), `takes` ("vectors"
[n, D], "tokens" [n, H, W, C] or [n, T, C], or "any").
`heads.kinds` finds every kind; `heads.run.rundir` writes and reads a run directory around any.
"""

import inspect
from dataclasses import dataclass

import numpy as np

from cache.errors import UsageError, UserError
from cache.layout import UNKNOWN_LABEL

KINDS = {}


def register(name):
    """Class decorator: make a Head subclass available under `name`."""
    def decorate(cls):
        cls.kind = name
        KINDS[name] = cls
        return cls
    return decorate


@dataclass(frozen=True)
class Data:
    """What a head is fitted or validated on, row by row: features [n, D] (float16 or float32; a
    spatial layer [n, H, W, C]), labels uint8 0/1 [n, k] for `attributes` (UNKNOWN_LABEL where a
    label overlay left one unknown: every kind fits and scores each attribute on its labelled rows,
    `labelled`), group_labels uint8 0/1 [n, g] for `group_names` (the `--groups` attributes; g = 0
    without them; UNKNOWN_LABEL too). source: where a
    single stored layer came from, for a kind that continues the backbone from it (`--head tail`):
    {"backbone": the cache's backbone record, "preprocessing": its record, "layer": the name}."""
    features: np.ndarray
    labels: np.ndarray
    attributes: tuple
    group_labels: np.ndarray = None
    group_names: tuple = ()
    source: dict = None

    def __len__(self):
        return len(self.labels)

    @property
    def partial(self):
        """Whether some label is unknown."""
        return bool((np.asarray(self.labels) == UNKNOWN_LABEL).any())


def labelled(labels):
    """bool, the shape of labels: True where the label is known (not UNKNOWN_LABEL)."""
    return np.asarray(labels) != UNKNOWN_LABEL


def option_name(setting):
    """The command-line spelling of a setting: C -> --C, refit_train_val -> --refit-train-val."""
    return "--" + setting.replace("_", "-")


class Head:
    """Base class: settings handling and the width check every kind shares."""
    kind = None
    command = "baselines"
    files = ()
    code_files = ()
    history_ = ()
    best_epoch_ = None
    selection_ = None
    val_proba_ = None
    calibration_ = None

    @classmethod
    def setting_names(cls):
        """The constructor's settings, in order."""
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    @classmethod
    def from_settings(cls, settings):
        """An unfitted head from settings a user gave; one this kind does not take is a UsageError."""
        unknown = [k for k in settings if k not in cls.setting_names()]
        if unknown:
            raise UsageError(f"{cls.kind} does not take {', '.join(map(option_name, unknown))}")
        return cls(**settings)

    @classmethod
    def from_record(cls, settings):
        """An unfitted head from a run's recorded settings (config.json), which also hold the run's
        own settings (features, ...) and may hold keys an older version recorded: takes its own."""
        return cls(**{k: v for k, v in settings.items() if k in cls.setting_names()})

    def get_params(self):
        """{name: value} of the constructor's settings (recorded in config.json)."""
        return {name: getattr(self, name) for name in self.setting_names()}

    takes = "vectors"  # what the kind trains on: "vectors" [n, D], "tokens" [n, H, W, C], or "any"

    def check_width(self, X):
        """Refuse features whose per-row shape differs from the fitted one (n_features_in_: a width,
        or a tuple for spatial inputs)."""
        fitted = self.n_features_in_ if isinstance(self.n_features_in_, tuple) else (self.n_features_in_,)
        if tuple(X.shape[1:]) != tuple(fitted):
            shape = "width " + str(X.shape[1]) if X.ndim == 2 else f"shape {list(X.shape[1:])}"
            raise UserError(f"features have {shape} per row, the {self.kind} head was trained on "
                            f"{fitted[0] if len(fitted) == 1 else list(fitted)}")

    def export_model(self):
        """A keras.Model for `export`; kinds without a TensorFlow graph cannot be exported."""
        raise UserError(f"export needs a head with a TensorFlow graph (the Keras kinds); {self.kind} is "
                        "not one")


def need_val(kind, val):
    """Refuse a missing or empty val split for a kind that chooses its setting on it."""
    if val is None or len(val) == 0:
        raise UserError(f"{kind} chooses its setting on the val split, which has no rows")
