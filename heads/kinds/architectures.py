"""Keras head architectures, named by a `--head SPEC`.

SPEC is one of
  linear                 features -> Dropout -> Dense(k) logits
  mlp:H1[,H2,...]        features -> Dropout -> Dense(H1, relu) -> ... -> Dense(k) logits
                         (mlp:128 is the reference notebook's head)
  attentive[:W[,H[,Q]]]  an attentive probe over a spatial input's tokens ([B, H, W, C] or
                         [B, T, C]): LayerNorm, Q learned queries of width W (default 1 of 64)
                         cross-attending with H heads (default 4), the queries added back, LayerNorm,
                         Dropout, Dense(k) logits (V-JEPA's attentive pooler, AIM's classifier)
  tail                   the backbone's own layers after the stored layer (`--input LAYER`), rebuilt
                         from the model the cache records with its pretrained weights, then the
                         pooling and Dense(k) logits: partial fine-tuning on cached activations
  path/to/file.py:name   a function name(n_features, attributes) in that file returning a
                         keras.Model: float32 [B, n_features] -> one sigmoid output [B, 1] named
                         after each attribute (a dict keyed by attribute, or outputs so named);
                         for a spatial input, n_features is its per-row shape
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
from cache.units import plural

BUILTIN_SPECS = "linear, mlp:128, mlp:512,128, attentive[:W[,H[,Q]]], tail"


def row_shape(input_shape):
    """A per-row input shape as a tuple (an int is a vector's width)."""
    return (int(input_shape),) if isinstance(input_shape, (int, np.integer)) else tuple(int(d) for d in input_shape)


def _sigmoid_outputs(logits, attributes):
    """{attribute: Activation(sigmoid) layer named after it, fed by its column of the logits}."""
    import keras
    return {name: keras.layers.Activation("sigmoid", name=name)(logits[:, j:j + 1]) for j, name in enumerate(attributes)}


@dataclass(frozen=True)
class MLP:
    """A built-in head: `hidden` relu layers (none for linear), dropout on the input features."""
    hidden: tuple
    spatial = False  # takes vectors [B, D]

    @property
    def spec(self):
        return "linear" if not self.hidden else "mlp:" + ",".join(map(str, self.hidden))

    def build(self, input_shape, attributes, dropout, l2, source=None, bn=None):
        """keras.Model: float32 [B, n_features] -> {attribute: probability [B, 1]}."""
        import keras

        inputs = keras.Input(row_shape(input_shape), name="features")
        x = keras.layers.Dropout(dropout, name="dropout")(inputs)
        for i, units in enumerate(self.hidden, 1):
            x = keras.layers.Dense(units, activation="relu", name="hidden" if len(self.hidden) == 1 else f"hidden_{i}")(x)
        logits = keras.layers.Dense(len(attributes), name="logits", kernel_regularizer=keras.regularizers.L2(l2))(x)
        return keras.Model(inputs, _sigmoid_outputs(logits, attributes), name="attribute_head")

    @staticmethod
    def logits(weights, x):
        """Logits [B, k] from the model's trainable tensors (in the order above) and inputs x [B, D]
        whose dropout is already applied."""
        import tensorflow as tf

        for kernel, bias in zip(weights[:-2:2], weights[1:-2:2]):
            x = tf.nn.relu(tf.nn.bias_add(tf.matmul(x, kernel), bias))  # the form Grappler fuses
        return tf.nn.bias_add(tf.matmul(x, weights[-2]), weights[-1])


_LAYERS = {}  # the attentive probe's layer classes, defined (and registered for loading) once


def attentive_layers():
    """The attentive probe's Keras layers, registered so saved probes load: {"QueryAttention": the
    probe's pooling (below), "LearnedQueries": the queries layer of probes saved before it}."""
    if not _LAYERS:
        import keras
        from keras import ops

        register = keras.saving.register_keras_serializable(package="celeba_heads")

        @register
        class LearnedQueries(keras.layers.Layer):
            """[B, T, C] -> the learned queries [Q, W] tiled over the batch (probes saved before
            QueryAttention pair it with keras.layers.MultiHeadAttention)."""
            def __init__(self, queries, width, **kwargs):
                super().__init__(**kwargs)
                self.queries, self.width = queries, width

            def build(self, input_shape):
                self.query = self.add_weight(shape=(self.queries, self.width), name="query",
                                             initializer=keras.initializers.TruncatedNormal(stddev=0.02))

            def call(self, tokens):
                batch = ops.shape(tokens)[0]
                return ops.broadcast_to(self.query[None], (batch, self.queries, self.width))

            def get_config(self):
                return {**super().get_config(), "queries": self.queries, "width": self.width}

        @register
        class QueryAttention(keras.layers.Layer):
            """Tokens [B, T, C] -> [B, Q, W]: Q learned queries [Q, W] (trunc-normal, std 0.02, as
            V-JEPA's) plus their multi-head cross-attention over the tokens (H heads of W // H, scaled
            dot products, biased projections: keras.layers.MultiHeadAttention's arithmetic). Every
            product is a 2-D matmul or a batch matmul of equal batch dims: oneDNN's broadcasting batch
            matmul (MultiHeadAttention's einsums) corrupts the heap now and then in TensorFlow 2.21."""
            def __init__(self, queries, width, heads, **kwargs):
                super().__init__(**kwargs)
                self.queries, self.width, self.heads = queries, width, heads
                self.key_dim = max(1, width // heads)

            def build(self, input_shape):
                inner, channels = self.heads * self.key_dim, input_shape[-1]
                dense = keras.initializers.GlorotUniform()
                self.query = self.add_weight(shape=(self.queries, self.width), name="query",
                                             initializer=keras.initializers.TruncatedNormal(stddev=0.02))
                for name, shape in (("query", (self.width, inner)), ("key", (channels, inner)),
                                    ("value", (channels, inner)), ("output", (inner, self.width))):
                    setattr(self, f"{name}_kernel", self.add_weight(shape=shape, name=f"{name}_kernel",
                                                                    initializer=dense))
                    setattr(self, f"{name}_bias", self.add_weight(shape=(shape[1],), name=f"{name}_bias",
                                                                  initializer="zeros"))

            def call(self, tokens):
                batch, count = ops.shape(tokens)[0], ops.shape(tokens)[1]
                heads, key_dim, queries = self.heads, self.key_dim, self.queries
                flat = ops.reshape(tokens, (-1, tokens.shape[-1]))  # [B T, C]
                query = ops.matmul(self.query, self.query_kernel) + self.query_bias  # [Q, H D], batch-free
                query = ops.transpose(ops.reshape(query, (queries, heads, key_dim)), (1, 2, 0))  # [H, D, Q]
                key = ops.reshape(ops.matmul(flat, self.key_kernel) + self.key_bias, (-1, heads, key_dim))
                scores = ops.matmul(ops.transpose(key, (1, 0, 2)), query) / float(np.sqrt(key_dim))  # [H, B T, Q]
                weights = ops.softmax(ops.reshape(scores, (heads, batch, count, queries)), axis=2)
                value = ops.reshape(ops.matmul(flat, self.value_kernel) + self.value_bias,
                                    (batch, count, heads, key_dim))
                attended = ops.matmul(ops.transpose(weights, (0, 1, 3, 2)),  # [H, B, Q, T] @ [H, B, T, D]
                                      ops.transpose(value, (2, 0, 1, 3)))
                attended = ops.reshape(ops.transpose(attended, (1, 2, 0, 3)), (-1, heads * key_dim))  # [B Q, H D]
                attended = ops.matmul(attended, self.output_kernel) + self.output_bias
                return ops.reshape(attended, (batch, queries, self.width)) + self.query  # the residual

            def compute_output_shape(self, input_shape):
                return (input_shape[0], self.queries, self.width)

            def get_config(self):
                return {**super().get_config(), "queries": self.queries, "width": self.width, "heads": self.heads}

        _LAYERS.update(LearnedQueries=LearnedQueries, QueryAttention=QueryAttention)
    return _LAYERS


@dataclass(frozen=True)
class Attentive:
    """An attentive probe (module docstring) of `queries` learned queries of `width`, `heads` heads."""
    width: int = 64
    heads: int = 4
    queries: int = 1
    spatial = True  # takes tokens [B, H, W, C] or [B, T, C]

    @property
    def spec(self):
        return f"attentive:{self.width},{self.heads},{self.queries}"

    def build(self, input_shape, attributes, dropout, l2, source=None, bn=None):
        """keras.Model: float32 [B, *input_shape] (H, W, C or T, C) -> {attribute: probability [B, 1]}."""
        import keras

        shape = row_shape(input_shape)
        if len(shape) not in (2, 3):
            raise UsageError(f"--head {self.spec} attends over tokens; its input is {list(shape)} per row: give "
                             "--input a layer stored spatial (embed --layers NAME:none or NAME:grid:K)")
        inputs = keras.Input(shape, name="features")
        tokens = keras.layers.Reshape((-1, shape[-1]), name="tokens")(inputs)
        tokens = keras.layers.LayerNormalization(name="token_norm")(tokens)
        pooled = attentive_layers()["QueryAttention"](self.queries, self.width, self.heads, name="attention")(tokens)
        pooled = keras.layers.LayerNormalization(name="query_norm")(pooled)
        pooled = keras.layers.Flatten(name="pooled")(pooled)
        pooled = keras.layers.Dropout(dropout, name="dropout")(pooled)
        logits = keras.layers.Dense(len(attributes), name="logits", kernel_regularizer=keras.regularizers.L2(l2))(
            pooled)
        return keras.Model(inputs, _sigmoid_outputs(logits, attributes), name="attentive_probe")


@dataclass(frozen=True)
class Tail:
    """The backbone's own layers after a stored layer, rebuilt from the model its cache records,
    with their pretrained weights as the start, then global average pooling (of a spatial output),
    Dropout and Dense(k) logits; everything trains (the backbone's layers at `tail_lr`)."""
    spatial = None  # takes what the cached layer is
    tail = True

    @property
    def spec(self):
        return "tail"

    def build(self, input_shape, attributes, dropout, l2, source=None, bn="frozen"):
        """keras.Model: float32 [B, *the stored layer's shape] -> {attribute: probability [B, 1]};
        source: Data.source (the cache's backbone record and the layer); bn: "frozen" keeps the
        BatchNormalization layers' statistics and scales as they are, "train" trains them."""
        import keras

        from embed.backbones import cut_after
        if not source:
            raise UsageError("--head tail continues the backbone from one stored layer: give --input LAYER (a layer "
                             "the cache stores with :none, from one cache)")
        if bn not in ("frozen", "train"):
            raise UsageError(f"--tail-bn {bn!r}: use frozen or train")
        reseed = int(np.random.randint(2**31 - 1))  # drawn before the cut: see below
        tail = cut_after(source["backbone"], source["preprocessing"], source["layer"])
        # cut_after loads the file or clones the cut it keeps, and the two draw different amounts of
        # Keras' random stream: seeding again from a number drawn before gives the head's own layers
        # the same initial weights either way (a grid member as it would start alone)
        keras.utils.set_random_seed(reseed)
        if tuple(tail.input_shape[1:]) != row_shape(input_shape):
            raise UsageError(f"--head tail: the backbone continues from {source['layer']} as "
                             f"{list(tail.input_shape[1:])} per image, the cache stores {list(row_shape(input_shape))} "
                             f"(stored pooled? embed --layers {source['layer']}:none)")
        for layer in tail.layers:
            if isinstance(layer, keras.layers.BatchNormalization) and bn == "frozen":
                layer.trainable = False  # in Keras 3 a frozen BatchNormalization also runs in inference mode
        inputs = keras.Input(row_shape(input_shape), name="features")
        x = tail(inputs)
        if len(x.shape) == 4:
            x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
        x = keras.layers.Dropout(dropout, name="dropout")(x)
        logits = keras.layers.Dense(len(attributes), name="logits", kernel_regularizer=keras.regularizers.L2(l2))(x)
        return keras.Model(inputs, _sigmoid_outputs(logits, attributes), name="tail_head")


@dataclass(frozen=True)
class Builder:
    """A user's builder function in a Python file."""
    path: str
    function: str
    spatial = None  # takes what the user's model takes

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

    def build(self, input_shape, attributes, dropout=None, l2=None, source=None, bn=None):
        """The user's model, checked against the contract (dropout and l2 are the builder's own)."""
        import keras

        shape = row_shape(input_shape)
        n_features = shape[0] if len(shape) == 1 else shape
        try:
            model = self.load_function()(n_features, list(attributes))
        except UsageError:
            raise
        except Exception as exc:
            raise UsageError(f"{self.spec}: the builder raised {type(exc).__name__}: {exc}") from None
        if not isinstance(model, keras.Model):
            raise UsageError(f"{self.spec} returned {type(model).__name__}, not a keras.Model")
        check_outputs(model, shape, attributes, self.spec)
        return model


def check_outputs(model, shape, attributes, spec):
    """Raise UsageError unless `model` maps [B, *shape] to one probability [B, 1] per attribute."""
    names = output_names(model)
    missing, extra = [a for a in attributes if a not in names], [n for n in names if n not in attributes]
    if missing or extra:
        what = "; ".join(filter(None, [missing and f"missing {plural('output', len(missing))} {', '.join(missing)}",
                                       extra and f"unexpected {plural('output', len(extra))} {', '.join(extra)}"]))
        raise UsageError(f"{spec}: {what}; the model needs one sigmoid output named after each attribute "
                         f"({', '.join(attributes)})")
    probe = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32) * 3
    try:
        outputs = named_outputs(model, model(probe, training=False))
    except Exception as exc:
        raise UsageError(f"{spec}: calling the model on [4, {', '.join(map(str, shape))}] features failed: "
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
    if text == "tail":
        return Tail()
    match = re.fullmatch(r"attentive(?::(\d+)(?:,(\d+)(?:,(\d+))?)?)?", text)
    if match:
        width, heads, queries = (int(v) if v else d for v, d in zip(match.groups(), (64, 4, 1)))
        if min(width, heads, queries) < 1 or width % heads:
            raise UsageError(f"--head {text}: width, heads and queries must be at least 1, the width a multiple "
                             "of the heads")
        return Attentive(width, heads, queries)
    path, sep, function = text.rpartition(":")
    if sep and path.endswith(".py") and function.isidentifier():
        return Builder(path, function)
    raise UsageError(f"--head {text!r}: expected {BUILTIN_SPECS} (mlp:H1,H2,... any widths) or FILE.py:FUNCTION")
