"""Resolve `--model SPEC` into a frozen feature extractor that knows its preprocessing.

SPEC kinds:
  * a TF-Hub / Kaggle handle (`https://...`); default DEFAULT_MODEL, EfficientNetV2-B0
    ImageNet-21k-ft1k feature vector: 224x224 RGB in [0, 1] -> 1280-d;
  * a local SavedModel folder (a downloaded handle; `hub.load` reads it offline);
  * `keras:<Name>` from `keras.applications` (EfficientNetV2B0 ... S, ...), with weights
    `imagenet`, `none` (random, seeded so every run builds the same net; smoke tests only) or a
    weights file;
  * a Keras model file (`.keras`, `.h5`, `.hdf5`) cut at a layer (default: the one before the
    last), loaded in Keras safe mode unless trust_model.
The SavedModel is called directly (no `hub.KerasLayer`, which Keras 3 models cannot hold).
A 4-D output is global-average-pooled. Every backbone maps float32 images [B, S, S, C] in its
value range to float32 features [B, D]. A `BackboneSpec` names the model and every override;
`load_backbone` resolves it. A Keras backbone can also hand out inner layers in the same pass
(`--layers NAME[:POOL],...`), each pooled: gap [B, C], none [B, H, W, C] or grid:K (K x K average
pooling, [B, K, K, C]).
"""

import copy
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cache.errors import UsageError, UserError
from cache.layout import sha256_file

DEFAULT_MODEL = "https://tfhub.dev/google/imagenet/efficientnet_v2_imagenet21k_ft1k_b0/feature_vector/2"
KERAS_FILE_SUFFIXES = (".keras", ".h5", ".hdf5")
RANDOM_WEIGHTS_SEED = 0
log = logging.getLogger(__name__)

# TF-Hub EfficientNetV2 handles: input size by variant; all take RGB in [0, 1].
HUB_EFFICIENTNET_V2 = re.compile(r"efficientnet[_-]v2.*?[_-](b0|b1|b2|b3|s|m|l|xl)([_/-]|$)", re.I)
HUB_EFFICIENTNET_V2_SIZES = {"b0": 224, "b1": 240, "b2": 260, "b3": 300, "s": 384, "m": 480, "l": 480, "xl": 512}

# keras.applications models this tool supports: default input size and the value range the model
# expects (EfficientNet*, ConvNeXt*, MobileNetV3* rescale inside the model and take [0, 255]).
KERAS_APPLICATIONS = {
    **{f"EfficientNetB{i}": (s, (0.0, 255.0)) for i, s in enumerate((224, 240, 260, 300, 380, 456, 528, 600))},
    "EfficientNetV2B0": (224, (0.0, 255.0)), "EfficientNetV2B1": (240, (0.0, 255.0)),
    "EfficientNetV2B2": (260, (0.0, 255.0)), "EfficientNetV2B3": (300, (0.0, 255.0)),
    "EfficientNetV2S": (384, (0.0, 255.0)), "EfficientNetV2M": (480, (0.0, 255.0)),
    "EfficientNetV2L": (480, (0.0, 255.0)),
    "ConvNeXtTiny": (224, (0.0, 255.0)), "ConvNeXtSmall": (224, (0.0, 255.0)),
    "MobileNetV3Small": (224, (0.0, 255.0)), "MobileNetV3Large": (224, (0.0, 255.0)),
    "MobileNetV2": (224, (-1.0, 1.0)), "ResNet50V2": (224, (-1.0, 1.0)),
    "InceptionV3": (299, (-1.0, 1.0)), "Xception": (299, (-1.0, 1.0)),
}


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a backbone input: decode, resize to image_size x image_size
    (bilinear, optionally antialiased), `color` rgb (3 channels) or grayscale (1), then map
    pixel values 0..255 linearly onto value_range. align: None for image files taken whole, or
    how each photo's face is found and aligned into CelebA's frame first (`embed.faces.align_record`;
    recorded only when set, so caches of whole images keep their record)."""
    image_size: int
    color: str
    value_range: tuple
    resize: str = "bilinear"
    antialias: bool = False
    align: dict = None

    @property
    def channels(self):
        return 1 if self.color == "grayscale" else 3

    def to_dict(self):
        record = {**asdict(self), "value_range": list(self.value_range)}
        if self.align is None:
            del record["align"]
        return record


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone to load and how to feed it. model: a TF-Hub handle, a SavedModel folder,
    keras:<Name> or a Keras model file; weights: for keras:<Name>, imagenet (None), none (random)
    or a weights file; layer: for a model file, the layer whose output is the feature (default: the
    one before the last); image_size, color ("rgb"/"grayscale"), value_range (lo, hi), antialias:
    overrides of the model's own preprocessing; trust_model: load a model file with Keras' safe mode
    off; mixed_precision (keras:<Name>, GPUs), xla: how the backbone runs; align: find and align
    each photo's face first (`embed.faces.align_record`), None for whole images."""
    model: str = DEFAULT_MODEL
    weights: str = None
    layer: str = None
    image_size: int = None
    color: str = None
    value_range: tuple = None
    antialias: bool = False
    trust_model: bool = False
    mixed_precision: bool = False
    xla: bool = False
    layers: tuple = ()
    align: dict = None

    def __post_init__(self):
        object.__setattr__(self, "layers", parse_layers(self.layers))


@dataclass
class Backbone:
    """A frozen extractor: `extract(images)` maps float32 [B, S, S, C] to float32 [B, feature_dim];
    `extract_all(images)` gives (features, (one float32 [B, *shape] per stored layer)) in one pass.
    `spec` is what the cache records about the model; `layers`: [{"name", "pool", "shape"}] of the
    stored layers (the cache's `layers` attribute); `module` is the loaded model object (holds the
    variables, for export); `layer_reason`: why a model file's layer was chosen when the spec named
    none (`default_feature_layer`)."""
    spec: dict
    preprocessing: Preprocessing
    feature_dim: int
    extract: object
    module: object
    extract_all: object = None
    layers: list = ()
    layer_reason: str = None


LAYER_POOLS = "gap, none or grid:K"


def parse_layers(value):
    """`--layers NAME[:POOL],...` (text, or a sequence of NAME[:POOL]) -> a tuple of "NAME:POOL", POOL
    gap (the default), none or grid:K; UsageError (exit 2) for a bad POOL or a name given twice."""
    items = value.split(",") if isinstance(value, str) else list(value or ())
    layers = []
    for item in (str(i).strip() for i in items):
        if not item:
            continue
        name, _, pool = item.partition(":")
        pool = pool or "gap"
        if not name or "/" in name or not re.fullmatch(r"gap|none|grid:[1-9]\d*", pool):
            raise UsageError(f"--layers {item!r}: expected NAME[:POOL] with POOL {LAYER_POOLS} (K >= 1)")
        layers.append(f"{name}:{pool}")
    names = [layer.split(":")[0] for layer in layers]
    if len(set(names)) != len(names):
        raise UsageError(f"--layers {','.join(layers)}: a layer is named twice")
    return tuple(layers)


def _pooled(x, pool):
    """A layer's output [B, H, W, C] (or [B, C]) pooled: gap -> [B, C], none -> as it is, grid:K ->
    [B, K, K, C], each cell the mean of its share of the rows and columns (as adaptive pooling)."""
    import tensorflow as tf
    if x.shape.rank == 2 or pool == "none":
        return x
    if pool == "gap":
        return tf.reduce_mean(x, axis=[1, 2])
    k = int(pool.split(":")[1])
    height, width = int(x.shape[1]), int(x.shape[2])
    rows = []
    for i in range(k):
        top, bottom = i * height // k, -(-(i + 1) * height // k)
        cells = [tf.reduce_mean(x[:, top:bottom, j * width // k:-(-(j + 1) * width // k)], axis=[1, 2])
                 for j in range(k)]
        rows.append(tf.stack(cells, axis=1))
    return tf.stack(rows, axis=1)


def _with_layers(net, primary, layers, model):
    """A keras.Model from net's input to [primary, each of `layers`' outputs] ("NAME:POOL"); a name
    the model lacks, or a layer whose output shape is not fixed, is a UserError."""
    import difflib

    import keras
    names = [l.name for l in net.layers]
    outputs = []
    for layer in layers:
        name, pool = layer.split(":", 1)
        if name not in names:
            nearest = difflib.get_close_matches(name, names, n=5, cutoff=0)
            raise UsageError(f"--layers {name}: no such layer in {model}; the nearest: {', '.join(nearest)}")
        output = net.get_layer(name).output
        if not isinstance(output, keras.KerasTensor) or output.shape[0] is not None or \
                any(d is None for d in output.shape[1:]) or len(output.shape) not in (2, 4):
            raise UsageError(f"--layers {name}: its output shape {tuple(output.shape)} is not [B, C] or [B, H, W, C] "
                             "with fixed sizes (it depends on the batch or the input); choose another layer")
        if pool.startswith("grid:") and len(output.shape) == 4 and int(pool[5:]) > min(output.shape[1:3]):
            raise UsageError(f"--layers {layer}: the layer is {output.shape[1]}x{output.shape[2]}, smaller than "
                             f"a {pool[5:]}x{pool[5:]} grid")
        outputs.append(output)
    return keras.Model(net.inputs, [primary, *outputs])


def parse_value_range(text):
    """'LO,HI' -> (lo, hi) floats with lo < hi."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--value-range {text!r}: expected LO,HI such as 0,1 or -1,1") from None
    if not lo < hi:
        raise UsageError(f"--value-range {text!r}: LO must be below HI")
    return lo, hi


def model_kind(model):
    if not model.strip():
        raise UsageError("--model: empty; give a TF-Hub handle, a SavedModel folder, keras:<Name> or a .keras/.h5 file")
    if model.startswith("keras:"):
        return "keras_app"
    if model.lower().endswith(KERAS_FILE_SUFFIXES):
        return "keras_file"
    if re.match(r"^(https?|gs)://", model):
        return "hub"
    try:
        if Path(model).is_dir():
            return "saved_model"
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise UserError(f"--model {model[:80]!r}: {exc.strerror or exc}") from None
    raise UserError(f"--model {model!r}: not a TF-Hub handle (https://...), a SavedModel folder, "
                    "keras:<Name>, or a .keras/.h5 file")


BACKBONES_KEPT = 4  # Keras model files kept loaded per process (`load_backbone`)
_backbones = {}  # (spec, device, the file's stat) as JSON -> the Backbone as loaded


def load_backbone(spec, device=None):
    """Load the model a BackboneSpec names and resolve its preprocessing (explicit options win).

    device: a TensorFlow device name (e.g. "/GPU:1") to hold the weights and run on; default: TF's.
    A Keras model file loaded before in this process with the same spec and device, its bytes
    unchanged (sha256), is not loaded and traced again (0.3 s for the shared 64x64 CNNs: embed,
    predict and a tail's cut load the same file again and again in a session or a notebook): the
    same weights and traced extractor, with their own copy of the record.
    """
    import tensorflow as tf
    key = _reuse_key(spec, device)
    backbone = _backbones.get(key)
    if backbone is None or not _recorded_file_unchanged(backbone.spec):
        with tf.device(device):
            backbone = _load_backbone(spec, device)
        if key is not None:
            _backbones.pop(key, None)
            _backbones[key] = backbone
            while len(_backbones) > BACKBONES_KEPT:
                _backbones.pop(next(iter(_backbones)))
    if backbone.layer_reason:
        log.info("--model %s without --layer: features from %s (%s)", spec.model, backbone.spec["layer"],
                 backbone.layer_reason)
    return replace(backbone, spec=copy.deepcopy(backbone.spec), layers=copy.deepcopy(list(backbone.layers)))


def _reuse_key(spec, device):
    """What a loaded Keras model file is kept under, None for other kinds (or no such file)."""
    try:
        if model_kind(spec.model) != "keras_file":
            return None
        stat = os.stat(spec.model)
    except (UserError, OSError):
        return None
    return json.dumps([asdict(spec), device, [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns]],
                      sort_keys=True, default=str)


def _load_backbone(spec, device):
    model, weights, layer, image_size = spec.model, spec.weights, spec.layer, spec.image_size
    mixed_precision = spec.mixed_precision
    kind = model_kind(model)
    if weights is not None and kind != "keras_app":
        raise UserError("--weights applies to keras:<Name> models only")
    if layer is not None and kind != "keras_file":
        raise UserError("--layer applies to Keras model files only")
    if mixed_precision and kind != "keras_app":
        raise UserError("--mixed-precision applies to keras:<Name> backbones only "
                        "(a SavedModel or model file keeps the dtypes it was saved with)")
    if spec.layers and kind in ("hub", "saved_model"):
        raise UsageError(f"--layers: {model} is a SavedModel, which exposes only its outputs; use the Keras form "
                        "of the backbone (e.g. keras:EfficientNetV2B0 with --weights imagenet or a weights file, "
                        "or a .keras/.h5 file)")
    import tensorflow as tf
    layer_reason = None
    record = {"model": model, "kind": kind, "weights": None, "layer": None, "sha256": None,
              "random_weights": False, "mixed_precision": bool(mixed_precision)}  # what the cache records
    if spec.layers:
        record["layers"] = list(spec.layers)
    if kind in ("hub", "saved_model"):
        net, native = _load_saved_model(model, kind)
        if kind == "saved_model":
            record["sha256"] = sha256_file(Path(model) / "saved_model.pb")
    elif kind == "keras_app":
        net, native, record = _load_keras_application(model, weights or "imagenet", image_size,
                                                     mixed_precision, record, spec.layers)
    else:
        net, native, record, layer_reason = _load_keras_file(model, layer, spec.trust_model, record, spec.layers)
    size = image_size or native.get("image_size")
    if size is None:
        raise UserError(f"--model {model}: its input size is not fixed in the model; pass --image-size N")
    chosen_range = spec.value_range or native.get("value_range")
    if chosen_range is None:
        raise UserError(f"--model {model}: a Keras model file does not record the pixel value range it "
                        "was trained on; pass --value-range LO,HI (e.g. 0,1 or -1,1 or 0,255)")
    prep = Preprocessing(image_size=int(size), color=spec.color or native.get("color", "rgb"),
                         value_range=tuple(float(v) for v in chosen_range), antialias=bool(spec.antialias),
                         align=spec.align)

    pools = [layer.split(":", 1)[1] for layer in spec.layers]

    def outputs(images):
        with tf.device(device):
            out = net(images) if kind in ("hub", "saved_model") else net(images, training=False)
            if isinstance(out, dict):
                raise UserError(f"--model {model}: returns a dict of outputs; give a feature-vector model")
            primary, inner = (out[0], out[1:]) if pools else (out, [])
            if primary.shape.rank == 4:
                primary = tf.reduce_mean(primary, axis=[1, 2])
            if primary.shape.rank != 2:
                raise UserError(f"--model {model}: output has rank {primary.shape.rank}; expected [B, D] or "
                                "[B, H, W, D]")
            return tf.cast(primary, tf.float32), tuple(tf.cast(_pooled(x, p), tf.float32) for x, p in zip(inner, pools))

    batch_spec = tf.TensorSpec([None, prep.image_size, prep.image_size, prep.channels], tf.float32)
    extract_all = tf.function(outputs, input_signature=[batch_spec], jit_compile=bool(spec.xla))  # one trace
    probe = tf.zeros([1, prep.image_size, prep.image_size, prep.channels], tf.float32)  # traces once
    try:
        features, inner = extract_all(probe)
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as exc:
        raise UserError(f"--model {model}: does not accept {prep.image_size}x{prep.image_size}x"
                        f"{prep.channels} images ({str(exc).splitlines()[0][:200]})") from None
    layers = [{"name": layer.split(":", 1)[0], "pool": pool, "shape": [int(d) for d in x.shape[1:]]}
              for layer, pool, x in zip(spec.layers, pools, inner)]

    def extract(images):  # the features alone, from the one trace
        return extract_all(images)[0]

    return Backbone(spec=record, preprocessing=prep, feature_dim=int(features.shape[-1]), extract=extract,
                    module=net, extract_all=extract_all, layers=layers, layer_reason=layer_reason)


def _load_saved_model(model, kind):
    import tensorflow_hub as hub
    try:
        loaded = hub.load(model)
    except Exception as exc:  # network, missing file, bad protobuf: all end here with one message
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if kind == "hub":
            raise UserError(
                f"cannot load {model} ({reason}). Without internet, fetch it once on a machine that has it: "
                f"python -c \"import tensorflow_hub as hub; print(hub.resolve('{model}'))\" prints a folder; "
                "copy that folder here and pass it as --model FOLDER") from None
        raise UserError(f"{model}: not a loadable SavedModel ({reason})") from None
    if not callable(loaded):
        raise UserError(f"{model}: the SavedModel has no __call__; save a feature-vector model")
    native = {"value_range": (0.0, 1.0), "color": "rgb"}  # the TF-Hub image-model convention
    match = HUB_EFFICIENTNET_V2.search(model)
    if match:
        native["image_size"] = HUB_EFFICIENTNET_V2_SIZES[match.group(1).lower()]
    for concrete in getattr(loaded.__call__, "concrete_functions", []):
        args = concrete.structured_input_signature[0]
        shape = args[0].shape if args and hasattr(args[0], "shape") else None
        if shape is not None and shape.rank == 4 and shape[1] and shape[1] == shape[2]:
            native["image_size"] = int(shape[1])
            native["color"] = "grayscale" if shape[3] == 1 else "rgb"
            break
    return loaded, native


def _load_keras_application(model, weights, image_size, mixed_precision, record, layers=()):
    import keras
    name = model.removeprefix("keras:")
    if name not in KERAS_APPLICATIONS:
        raise UserError(f"--model {model}: unknown; supported: "
                        + ", ".join(f"keras:{n}" for n in sorted(KERAS_APPLICATIONS)))
    size, value_range = KERAS_APPLICATIONS[name]
    size = image_size or size
    if weights == "none":
        log.warning("--weights none: random weights, the features are meaningless; use this for smoke tests only")
        keras.utils.set_random_seed(RANDOM_WEIGHTS_SEED)  # same weights in every run, so resume works
        keras_weights = None
    elif weights == "imagenet":
        keras_weights = "imagenet"
    else:
        if not Path(weights).is_file():
            raise UserError(f"--weights {weights}: not 'imagenet', 'none' or an existing weights file")
        keras_weights = weights
    previous_policy = keras.mixed_precision.global_policy()
    try:
        if mixed_precision:
            keras.mixed_precision.set_global_policy("mixed_float16")
        net = getattr(keras.applications, name)(include_top=False, weights=keras_weights, pooling="avg",
                                                input_shape=(size, size, 3))
        if layers:
            net = _with_layers(net, net.output, layers, model)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:200]
        hint = (" (downloading ImageNet weights needs internet; pass --weights FILE with a local copy)"
                if weights == "imagenet" else "")
        raise UserError(f"--model {model} --weights {weights}: cannot build ({reason}){hint}") from None
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
    record = {**record, "weights": weights, "random_weights": weights == "none",
            "sha256": sha256_file(weights) if keras_weights not in (None, "imagenet") else None}
    return net, {"image_size": size, "value_range": value_range, "color": "rgb"}, record


CLASSIFIER_NARROWING = 8  # a classifier maps what feeds it to at least this many times fewer channels


def _feeding(layer):
    """The one layer whose output `layer` reads, or None (an input, or several inputs)."""
    inputs = layer.input
    if isinstance(inputs, (list, tuple)):
        if len(inputs) != 1:
            return None
        inputs = inputs[0]
    history = getattr(inputs, "_keras_history", None)
    return None if history is None else history.operation


def default_feature_layer(net):
    """(name, why) of the layer a Keras classifier file's features come from without --layer.
    Walking back from the output over the layers that keep its width (pooling, activation, reshape),
    the first that changes it is the classifier; when what feeds it is at least CLASSIFIER_NARROWING
    times wider (class scores from features: a final 1x1 convolution or dense layer to the
    classes), the features are what feeds it. Otherwise the layer before the last, as always."""
    import keras
    width = net.outputs[0].shape[-1]
    layer = net.layers[-1]
    while True:
        feeding = _feeding(layer)
        if feeding is None or isinstance(feeding, keras.layers.InputLayer):
            break
        fed = feeding.output.shape[-1]
        if fed != width:
            if width and fed and fed >= CLASSIFIER_NARROWING * width:
                shape = "x".join(str(d) for d in feeding.output.shape[1:])
                return feeding.name, (f"{shape}, the layer feeding the classifier {layer.name}, which maps its {fed} "
                                      f"channels to {width} class scores")
            break
        layer = feeding
    return net.layers[-2].name, "the layer before the last"


def _load_keras_file(model, layer, trust_model, record, layers=()):
    import keras
    if not Path(model).is_file():
        raise UserError(f"--model {model}: no such file")
    try:
        net = keras.saving.load_model(model, compile=False, safe_mode=not trust_model)
    except Exception as exc:
        reason = str(exc).splitlines()[0][:300]
        raise UserError(f"--model {model}: cannot load ({reason})") from None
    why = None
    if layer is None:
        if len(net.layers) < 2:
            raise UserError(f"--model {model}: has one layer; cannot cut before the classifier")
        layer, why = default_feature_layer(net)
    try:
        cut = net.get_layer(layer)
    except ValueError:
        names = ", ".join(l.name for l in net.layers)
        raise UserError(f"--layer {layer}: no such layer in {model} (layers: {names})") from None
    extractor = _with_layers(net, cut.output, layers, model) if layers else keras.Model(net.inputs, cut.output)
    shape = net.input_shape
    native = {}
    if isinstance(shape, tuple) and len(shape) == 4:
        if shape[1] and shape[1] == shape[2]:
            native["image_size"] = int(shape[1])
        native["color"] = "grayscale" if shape[3] == 1 else "rgb"
    record = {**record, "layer": layer, "sha256": sha256_file(model)}
    return extractor, native, record, why


def load_recorded_backbone(record, preprocessing, *, trust_model=False):
    """Rebuild the backbone a cache recorded (its `backbone` and `preprocessing` attributes), and
    check it is the same model: same file hash where one was recorded, same preprocessing."""
    prep = dict(preprocessing)
    backbone = load_backbone(BackboneSpec(
        record["model"], weights=record.get("weights"), layer=record.get("layer"), image_size=prep["image_size"],
        color=prep["color"], value_range=tuple(prep["value_range"]), antialias=prep["antialias"],
        trust_model=trust_model, mixed_precision=record.get("mixed_precision", False),
        layers=tuple(record.get("layers") or ()), align=prep.get("align")))
    if record.get("sha256") and backbone.spec["sha256"] != record["sha256"]:
        raise UserError(f"{record['model']}: the file changed since the cache was made (sha256 differs)")
    if backbone.preprocessing.to_dict() != prep:
        raise UserError(f"{record['model']}: preprocessing {backbone.preprocessing.to_dict()} differs from "
                        f"the recorded {prep}")
    return backbone


def _refuse_class_scores(record, net, layer):
    """A tail trained through features far narrower than the layer it continues from (more than
    CLASSIFIER_NARROWING times fewer channels: a classifier's class scores, e.g. a cache embedded
    without --layer before features skipped the classifier) is refused in one line that names the
    feature layer to embed with."""
    import keras
    fed, width = net.get_layer(layer).output.shape[-1], net.output.shape[-1]
    if not (fed and width and fed > CLASSIFIER_NARROWING * width):
        return
    hint = "a layer before the classifier"
    if record.get("kind") == "keras_file":
        full = keras.saving.load_model(record["model"], compile=False)
        name, _ = default_feature_layer(full)
        if name != record.get("layer"):
            hint = f"--layer {name} ({'x'.join(str(d) for d in full.get_layer(name).output.shape[1:])})"
    raise UsageError(f"--head tail: the cache's features ({width} per row, from {record.get('layer')}) are more than "
                     f"{CLASSIFIER_NARROWING}x narrower than {layer} ({fed} channels): class scores, not features, "
                     f"and the tail would train through them; embed with {hint}")


CUTS_KEPT = 4  # cuts kept per process to clone from (`cut_after`)
_cuts = {}  # (record, preprocessing, layer) as JSON -> the cut as made, never trained


def cut_after(record, preprocessing, layer):
    """keras.Model from the output of `layer` to the backbone's features: the backbone's own layers
    after it, rebuilt as the cache records it (a model file's sha256 and the preprocessing checked),
    with their weights. UsageError: a backbone that cannot be cut (a SavedModel), a layer it lacks,
    or a connection that crosses the cut (a later layer that also reads something before it).
    Every call returns a new model with its own copy of the pretrained weights: the cut is made once
    per process (while the recorded file's sha256 still matches) and cloned after, 0.05 s where
    loading and cutting a small CNN takes 0.5 s (a grid of tails builds one per member)."""
    import keras
    key = json.dumps([record, preprocessing, layer], sort_keys=True, default=str)
    if key not in _cuts or not _recorded_file_unchanged(record):
        _cuts.pop(key, None)
        _cuts[key] = _cut(record, preprocessing, layer)
        while len(_cuts) > CUTS_KEPT:
            _cuts.pop(next(iter(_cuts)))
    made = _cuts[key]
    clone = keras.models.clone_model(made)
    clone.set_weights(made.get_weights())
    return clone


def _recorded_file_unchanged(record):
    """Whether the file whose sha256 the record holds (a model file, or a keras:<Name>'s weights
    file) still has it; True when the record holds none (a keras:<Name> with imagenet weights)."""
    if not record.get("sha256"):
        return True
    path = Path(record["model"] if record.get("kind") == "keras_file" else record.get("weights") or "")
    return path.is_file() and sha256_file(path) == record["sha256"]


def _cut(record, preprocessing, layer):
    """`cut_after`'s model, made from the backbone file (see there)."""
    import difflib

    import keras
    if record.get("kind") not in ("keras_app", "keras_file"):
        raise UsageError(f"--head tail: {record.get('model')} is a SavedModel, which exposes only its outputs and "
                         "cannot be cut; embed with the Keras form of the backbone (e.g. keras:EfficientNetV2B0 "
                         "with --weights imagenet or a weights file, or a .keras/.h5 file)")
    net = load_recorded_backbone({k: v for k, v in record.items() if k != "layers"}, preprocessing).module
    names = [l.name for l in net.layers]
    if layer not in names:
        raise UsageError(f"--head tail: no layer {layer!r} in {record['model']}; the nearest: "
                         + ", ".join(difflib.get_close_matches(layer, names, n=5, cutoff=0)))
    _refuse_class_scores(record, net, layer)
    try:
        return keras.Model(net.get_layer(layer).output, net.output, name=f"tail_after_{layer}")
    except (ValueError, KeyError) as exc:
        raise UsageError(f"--head tail: a connection crosses the cut after {layer} in {record['model']} (a later "
                         f"layer also reads a tensor from before it: {str(exc).splitlines()[0][:120]}); cache a layer "
                         "that every later layer reaches only through it, e.g. a block's output") from None
