"""The fast trainer of Keras heads (any architecture, `heads.kinds.architectures`) on features in memory.

The training objective is `model.fit`'s: binary cross-entropy per output (from the logits when the
output is a sigmoid), averaged over the batch and summed over outputs, plus the model's own losses
(the L2 penalty); Adam(lr) with epsilon 1e-7; shuffled mini-batches; optional class weights. An
unknown label (UNKNOWN_LABEL, a label overlay's) adds nothing to the loss: each output's
cross-entropy is averaged over the batch's rows labelled for it (the partial-label BCE of Durand et
al. 2019, normalised per output), which on a fully labelled batch is the loss above; train accuracy
is over the labelled rows.
`_Trainer` runs it as one TensorFlow graph per epoch (a while-loop over the batches, no Python per
step): each head's trainable weights are one flat vector, the gradient comes from autodiff, and
each head gets one fused Adam update per step. Built-in specs compute their forward pass with
`MLP.logits`, their input dropout masks drawn from 16-bit stateless random numbers (one draw per
step, a step ahead, shared by every head of the group); any other model runs its own layers
through `model.stateless_call` (Keras' own dropout; BatchNormalization statistics are carried
through the loop). A model that overrides `train_step` trains with `model.fit`, with a note logged.

Spatial inputs ([n, H, W, C]) train block by block: each epoch visits blocks of about BLOCK_ROWS
rows (whole batches) in a shuffled order and the rows of each block in a shuffled order, from
memory or streamed from the cache (`cache.reader.StoredRows`, the next block read while this one
trains): the same batches either way, so streamed and in-memory training agree.

Epochs: a fixed number, or "auto": train until the val loss has not improved for `patience`
epochs (at most `max_epochs`), then restore the weights of the best epoch. Heads trained together
stop one by one, each when it would alone: a stopped head leaves the graph, and the others keep
their batch order, dropout bits and Adam steps.
"""

import logging
import weakref

import numpy as np

from cache.errors import UsageError, UserError
from cache.reader import aligned_empty
from cache.units import counted, plural
from heads.defaults import CALIBRATE, TAIL_HALVING
from heads.kinds.architectures import MLP, named_outputs, parse_head
from heads.kinds.base import labelled

log = logging.getLogger(__name__)
EPSILON = 1e-7  # probability clipping in binary cross-entropy, as Keras does
# Settings that heads trained together must share: they see the same batches in the same order.
SHARED_SETTINGS = ("epochs", "batch_size", "class_weight", "seed")
FEW_STEPS = 300  # a fixed --epochs giving fewer optimizer steps than this gets a note
BLOCK_ROWS = 8192  # spatial inputs train in blocks of about this many rows


def epoch_blocks(X, Y, rng, batch_size):
    """One epoch of a spatial input, block by block: yields (order within the block, features of
    the block, its targets) for blocks of whole batches in an order drawn from rng, each block's
    rows in an order drawn from rng. X: an array, or a StoredRows read a block ahead in a thread."""
    from concurrent.futures import ThreadPoolExecutor

    size = batch_size * max(1, -(-BLOCK_ROWS // batch_size))
    blocks = [(a, min(a + size, len(X))) for a in range(0, len(X), size)]
    blocks = [blocks[i] for i in rng.permutation(len(blocks))]
    orders = [rng.permutation(b - a) for a, b in blocks]
    if isinstance(X, np.ndarray):
        for (a, b), order in zip(blocks, orders):
            yield order, X[a:b], Y[a:b]
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(X.read, *blocks[0])
        for k, ((a, b), order) in enumerate(zip(blocks, orders)):
            features = pending.result()
            if k + 1 < len(blocks):
                pending = pool.submit(X.read, *blocks[k + 1])
            yield order, features, Y[a:b]


def parse_epochs(value):
    """`--epochs`: "auto" or a whole number >= 1 -> "auto" or int; UsageError (exit 2) otherwise."""
    text = str(value).strip()
    if text == "auto":
        return "auto"
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise UsageError(f"--epochs {text!r}: expected auto or a whole number of epochs >= 1")


class _Stopper:
    """Early stopping for one head: the best val loss so far, its epoch and its model's weights (a
    copy, trainable and not), and whether to stop: patience run out, or max_epochs reached."""

    def __init__(self, head):
        self.head, self.best_loss, self.best_epoch, self.best_weights = head, np.inf, 0, None

    def update(self, record):
        """After an epoch whose history record (with val_loss) the head's model has just produced."""
        epoch = record["epoch"]
        if record["val_loss"] < self.best_loss:
            self.best_loss, self.best_epoch, self.best_weights = record["val_loss"], epoch, self.head.model_.get_weights()
        return epoch - self.best_epoch >= self.head.patience or epoch >= self.head.max_epochs

    def restore(self):
        self.head.model_.set_weights(self.best_weights)
        self.head.best_epoch_ = self.best_epoch


def aligned(array):
    """`array` as a C-contiguous array whose data starts on a 64-byte boundary (copied only if needed)."""
    array = np.ascontiguousarray(array)
    if array.ctypes.data % 64 == 0:
        return array
    copy = aligned_empty(array.shape, array.dtype)
    copy[...] = array
    return copy


def as_tensor(array):
    """A tf.Tensor over a numpy array without the slow copy: tf.constant copies element by element
    (5-8 s for an 833 MB feature matrix on this 2-core machine), while a DLPack view of 64-byte
    aligned memory is free."""
    import tensorflow as tf
    return tf.experimental.dlpack.from_dlpack(aligned(array).__dlpack__())


def class_weights(labels, mode):
    """(positive, negative) weight per attribute, float32 [k] each: ones, or 'balanced' n / (2 n_c)
    over each attribute's labelled rows (labels uint8 0/1 [n, k], UNKNOWN_LABEL left out)."""
    labels = np.asarray(labels)
    k = labels.shape[1]
    if mode in (None, "none"):
        return np.ones(k, np.float32), np.ones(k, np.float32)
    if mode != "balanced":
        raise UserError(f"--class-weight {mode!r}: use none or balanced")
    known = labelled(labels)
    positives = ((labels == 1) & known).sum(axis=0).astype(np.float64)
    n = known.sum(axis=0).astype(np.float64)
    return (n / (2 * positives)).astype(np.float32), (n / (2 * (n - positives))).astype(np.float32)


class Diverged(UserError):
    """Training made a head's loss NaN or inf (a learning rate or penalty too large for the data)."""


def diverged_message(head, epoch):
    """One line naming the head and the settings that most likely made its loss non-finite."""
    tail_lr = "--tail-lr (every rate of its grid)" if head.tail_lr == "auto" else f"--tail-lr {head.tail_lr:g}"
    rates = [f"--lr {head.lr:g}"] + ([tail_lr] if head.head == "tail" else [])
    return (f"head {head.head}: the training loss became NaN or inf in epoch {epoch}, so training diverged; "
            f"lower {' or '.join(rates)}" + (f", or --l2 {head.l2:g}" if head.l2 > 1e-2 else "")
            + " (--features standardize helps features of a large scale)")


def fit_together(heads, train, val=None, on_epoch=None, diverged="raise"):
    """Fit KerasHeads that share SHARED_SETTINGS in one pass over train (`heads.kinds.base.Data`;
    any architectures), validating on val after each epoch; then each calibrates on val as its
    `calibrate` setting says (`KerasHead.calibrate_on`).

    Each head runs the same algorithm as if fitted alone: same initial weights, batch order and
    dropout masks, its own weights and Adam state. Results agree with fitting alone to float32
    rounding, not bitwise: Grappler picks fused oneDNN kernels per graph, so a head's ops may run
    other kernels inside a bigger graph. Validation metrics come from each head's own Keras model,
    the same computation alone or together. on_epoch(record) is called for the first head only, after
    each epoch it trained.

    A head that trains as a grid (`KerasHead.members`: a tail with tail_lr or tail_bn "auto") trains
    its members in the same pass, halving them after each epoch of TAIL_HALVING (`_halving`), and
    keeps the best on val (`KerasHead.keep_best`); its on_epoch record is the member leading on mean
    val accuracy that epoch, with "member" (its settings) and "training" ("4 of 6": members still
    training).

    A head whose training loss becomes NaN or inf stops training there (`head.diverged_`: the epoch;
    None for the others; a grid: when every member diverged); diverged "raise" then raises Diverged
    for the first such head, "keep" leaves them to the caller (a grid choosing among its members),
    uncalibrated.
    """
    for head in heads:
        if head.calibrate not in CALIBRATE:
            raise UsageError(f"--calibrate {head.calibrate!r}: use {', '.join(CALIBRATE)}")
    members = {id(head): head.members() for head in heads}
    trained = [member for head in heads for member in members[id(head)]]
    first = members[id(heads[0])]

    def report(training):
        if len(first) > 1:
            on_epoch(_leading(first, training))
        elif first[0] in training:
            on_epoch(first[0].history_[-1])

    grids = [members[id(head)] for head in heads if len(members[id(head)]) > 1]
    _train_together(trained, train, val, report if on_epoch else None, _halving(grids) if grids else None)
    for head in heads:
        if members[id(head)] != [head]:
            head.keep_best(members[id(head)])
    failed = [head for head in heads if head.diverged_]
    if failed and diverged == "raise":
        raise Diverged(diverged_message(failed[0], failed[0].diverged_))
    for head in heads:
        if not head.diverged_:
            head.calibrate_on(val)


def kept_record(head):
    """The history record of the epoch whose weights the head keeps, or would keep if it stopped now
    (epochs auto: the lowest val loss so far, the first on ties; a fixed number: the last epoch);
    None for a diverged head or one without val records."""
    records = [r for r in head.history_ if "val_loss" in r]
    if head.diverged_ or not records:
        return None
    return min(records, key=lambda r: r["val_loss"]) if head.epochs == "auto" else records[-1]


def val_score(head):
    """The mean val accuracy over the attributes at the epoch the head keeps (`kept_record`), or None."""
    kept = kept_record(head)
    return None if kept is None else float(np.mean([kept[f"val_{a}_accuracy"] for a in head.attributes_]))


def _halving(grids):
    """Successive halving of grids (lists of member heads): halve(epoch, training) -> the members of
    `training` to stop now. After each epoch of TAIL_HALVING every grid keeps the better half of the
    members still in its race (rounded up; `val_score`, a member without one last, ties to the first
    in grid order); a member out of the race stops if it is still training, with halved_ = epoch."""
    racing = [list(grid) for grid in grids]

    def halve(epoch, training):
        if epoch not in TAIL_HALVING:
            return []
        stop = []
        for grid in racing:
            order = sorted(range(len(grid)), key=lambda i: (val_score(grid[i]) is None, -(val_score(grid[i]) or 0), i))
            keep = -(-len(grid) // 2)
            out = [grid[i] for i in order[keep:] if grid[i] in training]
            for member in out:
                member.halved_ = epoch
            stop += out
            grid[:] = [grid[i] for i in sorted(order[:keep])]
        return stop

    return halve


def _leading(members, training):
    """A grid's progress after an epoch, by the rule `KerasHead.keep_best` chooses by: the kept record
    (`kept_record`) of the member with the best mean val accuracy there (ties: the first), with
    "epoch" the grid's epoch, "member", "member_epoch" (the kept epoch) and "training" ("4 of 6":
    members still training) added, and "epoch_loss" / "epoch_val_loss": [lowest, highest] of this
    epoch's losses over the members that trained it."""
    epoch = max(len(m.history_) for m in members)
    progress = {"epoch": epoch, "training": f"{sum(m in training for m in members)} of {len(members)}"}
    latest = [m.history_[-1] for m in members if len(m.history_) == epoch]
    for key in ("loss", "val_loss"):
        values = [r[key] for r in latest if key in r and np.isfinite(r[key])]
        if values:
            progress[f"epoch_{key}"] = [float(min(values)), float(max(values))]
    scores = [val_score(m) for m in members]
    ranked = [i for i in range(len(members)) if scores[i] is not None]
    if not ranked:
        return progress
    leader = members[max(ranked, key=lambda i: (scores[i], -i))]
    record = kept_record(leader)
    return {**record, **progress, "member": f"tail_lr={leader.tail_lr:g} tail_bn={leader.tail_bn}",
            "member_epoch": record["epoch"]}


def _train_together(heads, train, val, report, halve=None):
    """Train `heads` (each a single head, no grid) in one pass; report(heads still training) after
    every epoch; halve(epoch, heads still training) -> heads to stop now (`_halving`), or None."""
    import keras

    first = heads[0]
    for head in heads[1:]:
        differing = [k for k in SHARED_SETTINGS if getattr(head, k) != getattr(first, k)]
        if differing:
            raise ValueError(f"heads trained together must share {', '.join(differing)}")
    attributes = list(train.attributes)
    streamed = not isinstance(train.features, np.ndarray)  # a StoredRows: read from the cache block by block
    X = train.features if streamed else np.asarray(train.features)
    if not streamed and X.dtype not in (np.float16, np.float32):  # float16 stays: half the memory
        X = X.astype(np.float32)
    blockwise = X.ndim > 2
    known = labelled(train.labels)
    masked = not known.all()
    Y = np.where(known, np.asarray(train.labels, np.float32), np.float32(-1))  # -1: unknown, left out of the loss
    if X.ndim < 2 or Y.shape != (len(X), len(attributes)):
        raise ValueError(f"X must be [n, ...] and Y [n, {len(attributes)}]; got {X.shape} and {Y.shape}")
    for head in heads:
        keras.utils.set_random_seed(first.seed)  # every head starts from the weights it would get alone
        head.spec_ = parse_head(head.head)
        head.model_ = head.spec_.build(X.shape[1:], attributes, head.dropout, head.l2, source=train.source,
                                       bn=head.tail_bn)
        head.attributes_, head.history_, head.diverged_, head.halved_ = attributes, [], None, None
        head.n_features_in_ = X.shape[1] if X.ndim == 2 else tuple(X.shape[1:])
    weights = class_weights(train.labels, first.class_weight)
    accuracy_scale = len(X) / np.maximum(known.sum(axis=0), 1)  # train accuracy over the labelled rows
    auto = first.epochs == "auto"
    if auto and (val is None or len(val) == 0):
        raise UserError("--epochs auto stops on the val loss, and the val split has no rows; give --epochs N")
    if not auto and first.epochs * -(-len(X) // first.batch_size) < FEW_STEPS:
        log.info("%s of %s at batch %d %s %s, which may leave the head under-trained; --epochs auto trains "
                 "until the val loss stops improving", counted(first.epochs, "epoch"), counted(len(X), "row"),
                 first.batch_size, plural("is", first.epochs),
                 counted(first.epochs * -(-len(X) // first.batch_size), "optimizer step"))
    fast = [h for h in heads if not _has_own_train_step(h.model_)]
    for head in heads:
        if head not in fast:
            if streamed:
                raise UserError(f"head {head.head} defines its own train_step, which trains with keras Model.fit "
                                "on a split in memory; its train split streams (--stream never to load it)")
            log.info("head %s defines its own train_step; training it with keras Model.fit (slower)", head.head)
            _fit_with_keras(head, X, Y, val, weights, (lambda _: report([first])) if report and head is first else None)
    if not fast:
        return
    trainer = _Trainer(fast, attributes, weights, masked)
    stoppers = {id(h): _Stopper(h) for h in fast} if auto else {}
    features, targets = (None, None) if blockwise else (as_tensor(X), as_tensor(Y))
    rng = np.random.default_rng(first.seed)
    last = max(h.max_epochs for h in fast) if auto else first.epochs
    for epoch in range(1, last + 1):
        if blockwise:
            losses, accuracies = trainer.run_blocks(epoch_blocks(X, Y, rng, first.batch_size))
        else:
            losses, accuracies = trainer.run_epoch(rng.permutation(len(X)), features, targets)
        trainer.copy_to_models()
        stopped = []
        for v, head in enumerate(trainer.heads):
            record = {"epoch": epoch, "loss": float(losses[v])}
            record.update({f"{a}_accuracy": float(x) for a, x in zip(attributes, accuracies[v] * accuracy_scale)})
            if not np.isfinite(record["loss"]):
                head.history_.append(record)
                head.diverged_ = epoch
                stopped.append(head)
                continue
            if val is not None:
                record.update(head.validation_record(val))
            head.history_.append(record)
            if auto and stoppers[id(head)].update(record):
                stopped.append(head)
        if halve:
            stopped += halve(epoch, [h for h in trainer.heads if h not in stopped])
        if report:
            report([h for h in trainer.heads if not h.diverged_])
        if stopped:
            trainer = trainer.without(stopped)
            if not trainer.heads:
                break
    for head in fast:
        head.best_epoch_ = len(head.history_)
        if auto and not head.diverged_:
            stoppers[id(head)].restore()


PREDICT_VALUES = 1 << 24  # values of X per prediction batch (at most 8,192 rows): bounds a big tail's activations


_FORWARDS = weakref.WeakKeyDictionary()  # model -> its inference pass as one traced graph


def _forward(model):
    """model(x, training=False) traced once per model for any batch size: a validation pass after
    each epoch then costs one graph call, not an eager walk through the layers (7 ms per call for a
    one-layer head here, most of a small split's epoch). Reads the model's variables, so it sees
    every weight update."""
    import tensorflow as tf
    if model not in _FORWARDS:
        signature = [tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)]
        _FORWARDS[model] = tf.function(lambda x: model(x, training=False), input_signature=signature,
                                       autograph=False)
    return _FORWARDS[model]


def predict_model(model, attributes, X, batch_size=None):
    """Run a saved or fitted head model over X in batches (each cast to float32 on its own); float32
    [n, k] in attribute order. batch_size: default 8,192 rows, fewer for wide rows (spatial layers),
    so a tail's intermediate activations stay a few hundred MB."""
    batch_size = batch_size or max(64, min(8192, PREDICT_VALUES // max(1, int(np.prod(X.shape[1:])))))
    forward = _forward(model)
    blocks = []
    for start in range(0, len(X), batch_size):
        out = named_outputs(model, forward(np.asarray(X[start:start + batch_size], np.float32)))
        blocks.append(np.concatenate([np.asarray(out[a], np.float32).reshape(-1, 1) for a in attributes], axis=1))
    return np.concatenate(blocks) if blocks else np.zeros((0, len(attributes)), np.float32)


def _has_own_train_step(model):
    import keras
    return type(model).train_step is not keras.Model.train_step


def _fit_with_keras(head, X, Y, val, weights, on_epoch):
    """The slow path: keras Model.fit with the same loss, optimizer and batch size (and with
    --epochs auto the same stopping rule, applied after each epoch)."""
    import keras

    model, attributes = head.model_, head.attributes_
    model.compile(optimizer=keras.optimizers.Adam(head.lr), loss={a: "binary_crossentropy" for a in attributes},
                  metrics={a: ["accuracy"] for a in attributes})
    targets = {a: np.maximum(Y[:, j], 0) for j, a in enumerate(attributes)}
    sample_weight = None
    if head.class_weight not in (None, "none") or (Y < 0).any():  # weights, or unknown labels weighing nothing
        positive, negative = weights
        sample_weight = {a: np.where(Y[:, j] > 0.5, positive[j], negative[j]) * (Y[:, j] >= 0)
                         for j, a in enumerate(attributes)}

    def record(epoch, logs):
        entry = {"epoch": epoch + 1, "loss": float(logs["loss"])}
        if not np.isfinite(entry["loss"]):
            head.history_.append(entry)
            head.diverged_ = epoch + 1
            model.stop_training = True
            return
        entry.update({f"{a}_accuracy": float(logs.get(f"{a}_accuracy", np.nan)) for a in attributes})
        if val is not None:
            entry.update(head.validation_record(val))
        head.history_.append(entry)
        if on_epoch:
            on_epoch(entry)
        if stopper is not None and stopper.update(entry):
            model.stop_training = True

    stopper = _Stopper(head) if head.epochs == "auto" else None
    model.fit(np.asarray(X, np.float32), targets, sample_weight=sample_weight, batch_size=head.batch_size,
              epochs=head.max_epochs if stopper else head.epochs, shuffle=True, verbose=0,
              callbacks=[keras.callbacks.LambdaCallback(on_epoch_end=record)])
    head.best_epoch_ = len(head.history_)
    if stopper is not None and not head.diverged_:
        stopper.restore()


def _cross_entropy(y, output):
    """Per-element binary cross-entropy [B, 1] and hits (prediction == label) of one sigmoid output."""
    import tensorflow as tf
    logits = getattr(output, "_keras_logits", None)  # Keras' sigmoid keeps its input here
    if logits is not None:
        return tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits), tf.equal(logits >= 0, y > 0.5)
    p = tf.clip_by_value(output, EPSILON, 1 - EPSILON)
    return -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p)), tf.equal(p >= 0.5, y > 0.5)


class _Trainer:
    """Trains several KerasHeads on the same batches, one graph per epoch (see the module docstring).
    Weights go back into the Keras models with copy_to_models()."""

    def __init__(self, heads, attributes, weights, masked=False):
        import tensorflow as tf

        self.heads, self.attributes, self.masked = heads, list(attributes), masked
        # per head: its weights as one flat vector per learning-rate group (`KerasHead.lr_groups`:
        # consecutive runs of its trainable variables), each with its own Adam state
        self.params, self.m, self.v, self.lrs, self.shapes, self.sizes = [], [], [], [], [], []
        for head in heads:
            variables = head.model_.trainable_variables
            self.shapes.append([tuple(v.shape) for v in variables])
            self.sizes.append([int(np.prod(v.shape)) for v in variables])
            groups, start = [], 0
            for count, lr in head.lr_groups():
                flat = np.concatenate([v.numpy().ravel() for v in variables[start:start + count]]).astype(np.float32)
                groups.append((tf.Variable(flat), tf.Variable(tf.zeros_like(flat)), tf.Variable(tf.zeros_like(flat)),
                               float(lr)))
                start += count
            self.params.append([g[0] for g in groups])
            self.m.append([g[1] for g in groups])
            self.v.append([g[2] for g in groups])
            self.lrs.append([g[3] for g in groups])
        self.builtin = [isinstance(h.spec_, MLP) for h in heads]
        self.rates = sorted({float(h.dropout) for h, b in zip(heads, self.builtin) if b and h.dropout > 0})
        self.batch, self.seed = int(heads[0].batch_size), int(heads[0].seed)
        self.steps_done = 0
        self.positive_weight, self.negative_weight = (tf.constant(w) for w in weights)
        self.weighted = not (np.all(weights[0] == 1) and np.all(weights[1] == 1))
        self._epoch = self._make_epoch()

    def without(self, stopped):
        """This trainer for the heads not in `stopped`: their weights, Adam state and step count
        carry over; the epoch graph is traced again for them."""
        keep = [h for h, head in enumerate(self.heads) if head not in stopped]
        trainer = object.__new__(_Trainer)
        trainer.__dict__.update(self.__dict__)
        for name in ("heads", "params", "m", "v", "lrs", "shapes", "sizes", "builtin"):
            setattr(trainer, name, [getattr(self, name)[h] for h in keep])
        trainer.rates = sorted({float(h.dropout) for h, b in zip(trainer.heads, trainer.builtin) if b and h.dropout > 0})
        trainer._epoch = trainer._make_epoch()
        return trainer

    def _make_epoch(self):
        import tensorflow as tf
        # autograph=False: the graph is written with tf.while_loop; autograph's conversion cost
        # about 0.6 s of tracing per fit.
        return tf.function(self._epoch_graph, autograph=False)

    def _unpack(self, h, flats):
        """Head h's flat weight vectors (one per learning-rate group, in order) as its model's
        trainable tensors, in order."""
        import tensorflow as tf
        flat = flats[0] if len(flats) == 1 else tf.concat(flats, 0)
        return [tf.reshape(p, shape) for p, shape in zip(tf.split(flat, self.sizes[h]), self.shapes[h])]

    def _random_bits(self, rows, width, step):
        """uint16 [rows, width] stateless random numbers (two per 32-bit draw: half the random-number
        work of float uniforms), seeded by the step number alone, so the next step's bits can be
        drawn while this step computes. An input is kept where bits >= rate * 65536: the rate is
        exact to 1/65536."""
        import tensorflow as tf
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        halves = (width + 1) // 2
        bits = tf.random.stateless_uniform([rows, halves], seed, minval=None, maxval=None, dtype=tf.uint32)
        return tf.reshape(tf.bitcast(bits, tf.uint16), [rows, 2 * halves])[:, :width]

    def _loss(self, h, weights, x, kept, y, class_weight, known, state):
        """(loss, hits [B, k], new state) of head h on one batch; known: float 0/1 [B, k] (None: every
        label known); state: the model's non-trainable variables (Keras path only)."""
        import tensorflow as tf
        head = self.heads[h]
        if self.builtin[h]:
            logits = MLP.logits(weights, kept[float(head.dropout)])
            cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
            regularization = head.l2 * tf.reduce_sum(tf.square(weights[-2]))
            hits = tf.equal(logits >= 0, y > 0.5)
        else:
            out, state, losses = head.model_.stateless_call(weights, state, x, training=True, return_losses=True)
            out = named_outputs(head.model_, out)
            parts = [_cross_entropy(y[:, j:j + 1], out[a]) for j, a in enumerate(self.attributes)]
            cross_entropy = tf.concat([p[0] for p in parts], 1)
            hits = tf.concat([p[1] for p in parts], 1)
            regularization = tf.add_n(losses) if losses else 0.0
        if class_weight is not None:
            cross_entropy = cross_entropy * class_weight
        if known is None:
            loss = tf.reduce_sum(cross_entropy) / tf.cast(tf.shape(x)[0], tf.float32) + regularization
        else:  # each output's mean over the batch's rows labelled for it
            hits = tf.logical_and(hits, known > 0)
            loss = tf.reduce_sum(tf.reduce_sum(cross_entropy * known, 0) / tf.maximum(tf.reduce_sum(known, 0), 1.0)) \
                + regularization
        return loss, hits, state

    def _step(self, x, y, step, bits, states):
        """One Adam step of every head on batch (x [B, D], y [B, k]); bits: uint16 [B, D] for the
        built-in heads' dropout masks. Returns (summed losses [heads], correct [heads, k], states)."""
        import tensorflow as tf
        known = None
        if self.masked:  # unknown labels arrive as -1
            known, y = tf.cast(y >= 0, tf.float32), tf.maximum(y, 0.0)
        class_weight = y * self.positive_weight + (1 - y) * self.negative_weight if self.weighted else None
        t = tf.cast(step, tf.float32)
        beta1_power, beta2_power = tf.pow(0.9, t), tf.pow(0.999, t)
        kept = {0.0: x}  # dropped and scaled inputs per rate, as keras' Dropout scales them
        for rate in self.rates:
            kept[rate] = tf.where(bits >= int(round(rate * 65536)), x * (1.0 / (1.0 - rate)), 0.0)
        losses, corrects, new_states = [], [], []
        for h, (params, ms, vs, lrs) in enumerate(zip(self.params, self.m, self.v, self.lrs)):
            with tf.GradientTape() as tape:
                loss, hits, state = self._loss(h, self._unpack(h, params), x, kept, y, class_weight, known, states[h])
            for flat, m, v, lr, gradient in zip(params, ms, vs, lrs, tape.gradient(loss, params)):
                tf.raw_ops.ResourceApplyAdam(var=flat.handle, m=m.handle, v=v.handle, beta1_power=beta1_power,
                                             beta2_power=beta2_power, lr=lr, beta1=0.9, beta2=0.999, epsilon=1e-7,
                                             grad=gradient)
            losses.append(loss)
            corrects.append(tf.math.count_nonzero(hits, axis=0, dtype=tf.float32))
            new_states.append(state)
        return tf.stack(losses) * tf.cast(tf.shape(x)[0], tf.float32), tf.stack(corrects), new_states

    def _epoch_graph(self, order, features, targets, first_step, states):
        import tensorflow as tf
        n = tf.shape(order)[0]
        width = features.shape[1]

        def bits_for(i):
            """Batch i's random bits (an empty block past the last batch)."""
            rows = tf.maximum(tf.minimum((i + 1) * self.batch, n) - i * self.batch, 0)
            return self._random_bits(rows, width, first_step + tf.cast(i, tf.int64))

        def step(i, loss_sum, correct, bits, states):
            rows = order[i * self.batch:tf.minimum((i + 1) * self.batch, n)]
            x = tf.cast(tf.gather(features, rows), tf.float32)
            loss, hits, states = self._step(x, tf.gather(targets, rows), first_step + tf.cast(i, tf.int64),
                                            bits, states)
            # The next batch's bits are drawn in this iteration: they depend on no weight, so they are
            # computed while this step's chain of dependent ops waits on itself (-0.15 to -0.3 s/epoch).
            return i + 1, loss_sum + loss, correct + hits, bits_for(i + 1) if self.rates else bits, states

        steps = (n + self.batch - 1) // self.batch
        start = (tf.constant(0), tf.zeros([len(self.params)]), tf.zeros([len(self.params), len(self.attributes)]),
                 bits_for(0) if self.rates else tf.zeros([0, 0], tf.uint16), states)
        invariants = tf.nest.map_structure(lambda t: t.shape, start)
        invariants = (*invariants[:3], tf.TensorShape([None, None]), invariants[4])
        _, loss_sum, correct, _, states = tf.while_loop(lambda i, *_: i < steps, step, start,
                                                        shape_invariants=invariants)
        return loss_sum / tf.cast(n, tf.float32), correct / tf.cast(n, tf.float32), states

    def run_epoch(self, order, features, targets):
        """One pass over the rows in `order`; returns (mean loss [heads], train accuracy [heads, k])."""
        import tensorflow as tf
        states = [[] if builtin else [v.value for v in head.model_.non_trainable_variables]
                  for head, builtin in zip(self.heads, self.builtin)]
        loss, accuracy, states = self._epoch(tf.constant(order, tf.int32), features, targets,
                                             tf.constant(self.steps_done + 1, tf.int64), states)
        for head, state in zip(self.heads, states):
            for variable, value in zip(head.model_.non_trainable_variables, state):  # [] for built-ins
                variable.assign(value)
        self.steps_done += -(-len(order) // self.batch)
        return loss.numpy(), accuracy.numpy()

    def run_blocks(self, blocks):
        """One epoch as several passes, one per (order, features, targets) block (`epoch_blocks`);
        returns the epoch's (mean loss [heads], train accuracy [heads, k]) over all its rows."""
        total, loss_sum, correct = 0, 0.0, 0.0
        for order, features, targets in blocks:
            loss, accuracy = self.run_epoch(order, as_tensor(features), as_tensor(targets))
            total, loss_sum, correct = total + len(order), loss_sum + loss * len(order), correct + accuracy * len(order)
        return loss_sum / total, correct / total

    def copy_to_models(self):
        for h, head in enumerate(self.heads):
            for variable, value in zip(head.model_.trainable_variables, self._unpack(h, self.params[h])):
                variable.assign(value)
