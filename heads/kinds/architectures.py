"""Keras head architectures, named by a `--head SPEC`.

SPEC is one of
  linear                 features -> Dropout -> Dense(k) logits
  mlp:H1[,H2,...]        features -> Dropout -> Dense(H1, relu) -> ... -> Dense(k) logits
                         (mlp:128 is the reference notebook's head)
  path/to/file.py:name   a function name(n_features, attributes) in that file returning a
                         keras.Model: float32 [B, n_features] -> one sigmoid output [B, 1] named
                         after each attribute (a dict keyed by attribute, or outputs so named)
The built-in specs end in one Dense(k, L2(l2), name="logits") layer and, per attribute, an
Activation(sigmoid) layer named after it fed by the logits' column. Their trainable variables are,
in order, [kernel_1 [D, H1], bias_1 [H1], ..., logits kernel [H, k], logits bias [k]], and
`MLP.logits` computes the same logits from those tensors: the fast trainer's forward pass (tested
equal to the Keras model).
"""

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cache.errors import UsageError

BUILTIN_SPECS = "linear, mlp:128, mlp:512,128"


@dataclass(frozen=True)
class MLP:
    """A built-in head: `hidden` relu layers (none for linear), dropout on the input features."""
    hidden: tuple

    @property
    def spec(self):
        return "linear" if not self.hidden else "mlp:" + ",".join(map(str, self.hidden))

    def build(self, n_features, attributes, dropout, l2):
        """keras.Model: float32 [B, n_features] -> {attribute: probability [B, 1]}."""
        import keras

        inputs = keras.Input((n_features,), name="features")
        x = keras.layers.Dropout(dropout, name="dropout")(inputs)
        for i, units in enumerate(self.hidden, 1):
            x = keras.layers.Dense(units, activation="relu", name="hidden" if len(self.hidden) == 1 else f"hidden_{i}")(x)
        logits = keras.layers.Dense(len(attributes), name="logits", kernel_regularizer=keras.regularizers.L2(l2))(x)
        outputs = {name: keras.layers.Activation("sigmoid", name=name)(logits[:, j:j + 1])
                   for j, name in enumerate(attributes)}
        return keras.Model(inputs, outputs, name="attribute_head")

    @staticmethod
    def logits(weights, x):
        """Logits [B, k] from the model's trainable tensors (in the order above) and inputs x [B, D]
        whose dropout is already applied."""
        import tensorflow as tf

        for kernel, bias in zip(weights[:-2:2], weights[1:-2:2]):
            x = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, kernel), bias))  # the form Grappler fuses
        return tf.nn.bias_add(tf.matmul(x, weights[-2]), weights[-1])


@dataclass(frozen=True)
class Builder:
    """A user's builder function in a Python file."""
    path: str
    function: str

    @property
    def spec(self):
        return f"{self.path}:{self.function}"

    def sha256(self):
        return hashlib.sha256(Path(self.path).read_bytes()).hexdigest()

    def load_function(self):
        """Import the file (running its code, as `python file.py` would) and return the function."""
        path = Path(self.path)
        if not path.is_file():
            raise UsageError(f"--head {self.spec}: no such file {self.path}")
        module_name = f"celeba_heads_builder_{self.sha256()[:16]}"
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except SyntaxError as exc:
            raise UsageError(f"{self.path}:{exc.lineno}: syntax error: {exc.msg}") from None
        except Exception as exc:
            raise UsageError(f"{self.path}: importing it failed: {type(exc).__name__}: {exc}") from None
        function = getattr(module, self.function, None)
        if not callable(function):
            raise UsageError(f"{self.path} has no function {self.function!r}")
        return function

    def build(self, n_features, attributes, dropout=None, l2=None):
        """The user's model, checked against the contract (dropout and l2 are the builder's own)."""
        import keras

        try:
            model = self.load_function()(n_features, list(attributes))
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"{self.spec}: the builder raised {type(exc).__name__}: {exc}") from None
        if not isinstance(model, keras.Model):
            raise UsageError(f"{self.spec} returned {type(model).__name__}, not a keras.Model")
        check_outputs(model, n_features, attributes, self.spec)
        return model


def check_outputs(model, n_features, attributes, spec):
    """Raise UsageError unless `model` maps [B, n_features] to one probability [B, 1] per attribute."""
    names = output_names(model)
    missing, extra = [a for a in attributes if a not in names], [n for n in names if n not in attributes]
    if missing or extra:
        what = "; ".join(filter(None, [missing and f"missing output(s) {', '.join(missing)}",
                                       extra and f"unexpected output(s) {', '.join(extra)}"]))
        raise UsageError(f"{spec}: {what}; the model needs one sigmoid output named after each attribute "
                         f"({', '.join(attributes)})")
    probe = np.random.default_rng(0).standard_normal((4, n_features)).astype(np.float32) * 3
    try:
        outputs = named_outputs(model, model(probe, training=False))
    except Exception as exc:
        raise UsageError(f"{spec}: calling the model on [4, {n_features}] features failed: "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    for name in attributes:
        value = np.asarray(outputs[name])
        if value.shape != (4, 1):
            raise UsageError(f"{spec}: output {name} has shape {list(value.shape[1:])} per row, expected [1]")
        if not np.all((value >= 0) & (value <= 1)):
            raise UsageError(f"{spec}: output {name} is not a probability (values outside [0, 1]); "
                             "end each output with a sigmoid")


def output_names(model):
    """The model's output names in order (dict keys, or the output layers' names)."""
    return list(model.output_names)


def named_outputs(model, outputs):
    """{name: tensor} from a model call's outputs (a dict, or a list in output_names order)."""
    if isinstance(outputs, dict):
        return outputs
    if not isinstance(outputs, (list, tuple)):
        outputs = [outputs]
    return dict(zip(output_names(model), outputs))


def parse_head(spec):
    """`--head SPEC` -> MLP or Builder; UsageError (exit 2) names what is wrong."""
    text = str(spec).strip()
    if text == "linear":
        return MLP(())
    match = re.fullmatch(r"mlp:(\d+(?:,\d+)*)", text)
    if match:
        hidden = tuple(int(h) for h in match.group(1).split(","))
        if min(hidden) < 1:
            raise UsageError(f"--head {text}: layer widths must be at least 1")
        return MLP(hidden)
    path, sep, function = text.rpartition(":")
    if sep and path.endswith(".py") and function.isidentifier():
        return Builder(path, function)
    raise UsageError(f"--head {text!r}: expected {BUILTIN_SPECS} (mlp:H1,H2,... any widths) or FILE.py:FUNCTION")
