"""The Keras head kind: any architecture `--head SPEC` names (`heads.kinds.architectures`), trained
by the fast trainer (`heads.kinds.trainer`). `train-heads` trains one, `sweep` many together."""

import math
from pathlib import Path

import numpy as np

from cache.errors import UsageError, UserError
from heads.defaults import CALIBRATE, KERAS, TAIL_GRID
from heads.kinds.architectures import Attentive, Builder, attentive_layers, parse_head
from heads.kinds.base import Head, labelled, register
from heads.kinds.calibration import bce, fit_temperatures, temperature_layer, with_temperatures
from heads.kinds.trainer import EPSILON, fit_together, parse_epochs, predict_model, val_score

MODEL_FILE = "model.keras"


def _whole(low):
    def check(value):
        text = str(value).strip()
        if not text.lstrip("+").isdigit() or int(text) < low:
            raise ValueError(f"a whole number >= {low}")
        return int(text)
    return check


def _real(low, high=None, low_open=False, high_open=False):
    interval = ("(" if low_open else "[") + f"{low:g}, " + ("inf)" if high is None else f"{high:g}" + (
        ")" if high_open else "]"))

    def check(value):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and (number > low if low_open else number >= low) and (
                high is None or (number < high if high_open else number <= high))):
            raise ValueError(f"a number in {interval}")
        return number
    return check


def _auto_or(check):
    def either(value):
        if str(value).strip() == "auto":
            return "auto"
        try:
            return check(value)
        except ValueError as exc:
            raise ValueError(f"auto or {exc}") from None
    return either


def _choice(*options):
    def check(value):
        if str(value) not in options:
            raise ValueError(" or ".join(options))
        return str(value)
    return check


# Every setting of the kind with its check: the one validation path of train-heads' options and of
# sweep's --grid values (`check_setting`). head and epochs are checked by their own parsers.
SETTING_CHECKS = {
    "head": lambda value: parse_head(str(value)).spec, "hidden": _whole(1), "dropout": _real(0, 1, high_open=True),
    "l2": _real(0), "lr": _real(0, low_open=True), "epochs": parse_epochs, "patience": _whole(1),
    "max_epochs": _whole(1), "batch_size": _whole(1), "class_weight": _choice("none", "balanced"),
    "tail_lr": _auto_or(_real(0, low_open=True)), "tail_bn": _choice("auto", "frozen", "train"),
    "calibrate": _choice(*CALIBRATE),
}


def unused_settings(head, epochs, given):
    """[(setting, why)] of the `given` setting names that the head `head` (a spec) trained for `epochs`
    would not use: tail_lr and tail_bn outside a tail, dropout and l2 with a builder file's head
    (its own), patience and max_epochs with a fixed number of epochs."""
    architecture = parse_head(str(head))
    rules = {"tail_lr": (getattr(architecture, "tail", False), "is for --head tail"),
             "tail_bn": (getattr(architecture, "tail", False), "is for --head tail"),
             "dropout": (not isinstance(architecture, Builder), "is for the built-in heads (a FILE.py:FUNCTION head "
                                                                "builds its own)"),
             "l2": (not isinstance(architecture, Builder), "is for the built-in heads (a FILE.py:FUNCTION head builds "
                                                           "its own)"),
             "patience": (parse_epochs(epochs) == "auto", "is for --epochs auto"),
             "max_epochs": (parse_epochs(epochs) == "auto", "is for --epochs auto")}
    return [(name, rules[name][1]) for name in given if name in rules and not rules[name][0]]


def check_setting(name, value):
    """`value` (text or a number) of setting `name` as the kind takes it; otherwise a UsageError
    naming the option (--name) and what it must be (head and epochs: their parsers' own line)."""
    try:
        return SETTING_CHECKS[name](value)
    except ValueError as exc:
        raise UsageError(f"--{name.replace('_', '-')} {value!r}: must be {exc}") from None


@register("keras_head")
class KerasHead(Head):
    """A Keras head of architecture `head` (a `--head SPEC`).

    epochs: a number, or "auto" (stop once the val loss has not improved for `patience` epochs, at
    most `max_epochs`, and keep the best epoch's weights; `heads.kinds.trainer`). calibrate:
    "none", or "temperature": after training, one temperature per attribute fitted on val goes into
    the model (`heads.kinds.calibration`), recorded in calibration_. tail_lr, tail_bn (`--head tail`
    only): a value, or "auto": one tail per point of TAIL_GRID (`members`) trains in the same pass,
    the better half going on after each epoch of TAIL_HALVING, and the one with the best mean val
    accuracy is kept (`keep_best`), recorded in selection_.
    Learned state: model_ (keras.Model: float32 [B, D] -> {attribute: probability [B, 1]}),
    history_ (one dict per epoch: epoch, loss, <attr>_accuracy, and with val data val_loss,
    val_<attr>_accuracy), best_epoch_ (the epoch whose weights model_ holds), attributes_,
    n_features_in_, calibration_ (None, or {"method": "temperature", "temperature": {attribute: T},
    "val_bce_before", "val_bce_after": {attribute: mean val binary cross-entropy}}).
    """
    command = "train-heads"
    files = (MODEL_FILE,)

    def __init__(self, head=KERAS["head"], dropout=KERAS["dropout"], l2=KERAS["l2"], lr=KERAS["lr"],
                 epochs=KERAS["epochs"], patience=KERAS["patience"], max_epochs=KERAS["max_epochs"],
                 batch_size=KERAS["batch_size"], class_weight=KERAS["class_weight"], seed=KERAS["seed"],
                 tail_lr=KERAS["tail_lr"], tail_bn=KERAS["tail_bn"], calibrate=KERAS["calibrate"]):
        self.head = head
        self.dropout = dropout
        self.l2 = l2
        self.lr = lr
        self.epochs = epochs
        self.patience = patience
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.seed = seed
        self.tail_lr = tail_lr
        self.tail_bn = tail_bn
        self.calibrate = calibrate

    @property
    def takes(self):
        spatial = parse_head(self.head).spatial
        return "any" if spatial is None else "tokens" if spatial else "vectors"

    def fit(self, train, val=None, on_epoch=None):
        fit_together([self], train, val, on_epoch)
        return self

    def members(self):
        """The heads this one trains as: [self], or for `--head tail` with tail_lr or tail_bn "auto",
        one fixed head per point of TAIL_GRID (a fixed value keeps its axis to that value), in grid
        order: tail_lr, then tail_bn."""
        if not getattr(parse_head(self.head), "tail", False) or "auto" not in (self.tail_lr, self.tail_bn):
            return [self]
        rates = TAIL_GRID["tail_lr"] if self.tail_lr == "auto" else (self.tail_lr,)
        policies = TAIL_GRID["tail_bn"] if self.tail_bn == "auto" else (self.tail_bn,)
        return [type(self)(**{**self.get_params(), "tail_lr": rate, "tail_bn": bn}) for rate in rates for bn in policies]

    def keep_best(self, members):
        """After `members()` trained: take the learned state of the member with the best mean val
        accuracy (`trainer.val_score`, at the epoch whose weights it keeps; ties: the first in grid
        order; a diverged member scores nothing) and record every member's score, its epochs, the
        epoch after which halving stopped it (`trainer._halving`) and the choice in selection_."""
        scores = [val_score(m) for m in members]
        ranked = [i for i in range(len(members)) if scores[i] is not None]
        best = members[max(ranked, key=lambda i: (scores[i], -i)) if ranked else 0]
        for name in ("spec_", "model_", "history_", "best_epoch_", "attributes_", "n_features_in_", "diverged_"):
            setattr(self, name, getattr(best, name))
        names = [f"tail_lr={m.tail_lr:g} tail_bn={m.tail_bn}" for m in members]
        self.selection_ = {"tail_lr": best.tail_lr, "tail_bn": best.tail_bn,
                           "val_accuracy_by_member": dict(zip(names, scores)),
                           "epochs_by_member": {name: len(m.history_) for name, m in zip(names, members)},
                           "halved_after_epoch_by_member": {name: m.halved_ for name, m in zip(names, members) if m.halved_}}

    def calibrate_on(self, val):
        """With calibrate "temperature": fit each attribute's temperature on val (`Data`) and put it
        into model_ (calibration_ records it); with "none" nothing. Called once training ends."""
        if self.calibrate == "none":
            return
        if val is None or len(val) == 0:
            raise UserError("--calibrate temperature is fitted on the val split, which has no rows")
        before = self.predict_proba(val.features)
        temperatures = fit_temperatures(val.labels, before)
        self.model_ = with_temperatures(self.model_, self.attributes_, temperatures)
        after = self.predict_proba(val.features)
        labels, known = np.asarray(val.labels), labelled(val.labels)
        self.calibration_ = {
            "method": "temperature", "temperature": dict(zip(self.attributes_, map(float, temperatures))),
            "val_bce_before": {a: bce(labels[known[:, j], j], before[known[:, j], j]) for j, a in enumerate(self.attributes_)},
            "val_bce_after": {a: bce(labels[known[:, j], j], after[known[:, j], j]) for j, a in enumerate(self.attributes_)}}

    def lr_groups(self):
        """[(count, lr)]: consecutive runs of the model's trainable variables and their learning
        rates: one run at lr, or for `--head tail` the backbone's own layers at tail_lr, then the
        head's logits at lr."""
        variables = self.model_.trainable_variables
        if not getattr(self.spec_, "tail", False):
            return [(len(variables), self.lr)]
        if self.tail_lr == "auto":
            raise ValueError("tail_lr auto trains as its grid's members (KerasHead.members)")
        head = self.model_.get_layer("logits").trainable_variables
        if [id(v) for v in variables[-len(head):]] != [id(v) for v in head]:
            raise ValueError("the tail's logits must be its last trainable variables")
        return [(len(variables) - len(head), self.tail_lr), (len(head), self.lr)]

    def predict_proba(self, X):
        """Probabilities float32 [n, k] for features X [n, n_features_in_] (float16 or float32)."""
        X = np.asarray(X)
        self.check_width(X)
        return predict_model(self.model_, self.attributes_, X)

    def save(self, directory):
        self.model_.save(Path(directory) / MODEL_FILE)

    @classmethod
    def load(cls, directory, settings, attributes, trust_model=False):
        import keras

        head = cls.from_record(settings)
        spec = parse_head(head.head)
        if isinstance(spec, Builder) and Path(spec.path).is_file():
            spec.load_function()  # registers the builder file's custom layers, if any
        if isinstance(spec, Attentive):
            attentive_layers()  # registers the probe's layers, which the saved model names
        if head.calibrate != "none":
            temperature_layer()  # registers the layer that applies the temperatures
        path = Path(directory) / MODEL_FILE
        try:
            head.model_ = keras.saving.load_model(path, compile=False, safe_mode=not trust_model)
        except ValueError as exc:
            if "safe_mode" in str(exc) or "Lambda" in str(exc):
                raise UserError(f"{path}: Keras safe mode refuses this model (it holds code, e.g. a Lambda "
                                "layer); pass --trust-model only if you trust the file") from None
            raise UserError(f"{path}: cannot load the model: {str(exc).splitlines()[0][:200]}") from None
        shape = tuple(int(d) for d in head.model_.input_shape[1:])
        head.attributes_, head.n_features_in_ = list(attributes), shape[0] if len(shape) == 1 else shape
        return head

    def export_model(self):
        return self.model_

    def validation_record(self, val):
        """{"val_loss", "val_<attr>_accuracy"} of the current model on val (`Data`): the loss
        `model.fit` reports (binary cross-entropy summed over outputs, plus the model's losses), each
        output's cross-entropy and accuracy over its labelled rows."""
        p = np.clip(self.predict_proba(val.features).astype(np.float64), EPSILON, 1 - EPSILON)
        known = labelled(val.labels)
        y = np.where(known, val.labels, 0).astype(np.float64)
        rows = np.maximum(known.sum(axis=0), 1)
        bce = (-(y * np.log(p) + (1 - y) * np.log(1 - p)) * known).sum(axis=0) / rows
        reg = float(sum(float(l) for l in self.model_.losses))
        record = {"val_loss": float(bce.sum() + reg)}
        record.update({f"val_{a}_accuracy": float((((p[:, j] >= 0.5) == y[:, j]) & known[:, j]).sum() / rows[j])
                       for j, a in enumerate(self.attributes_)})
        return record
