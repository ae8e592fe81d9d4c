"""The reference Keras head, trained fast on features held in memory.

Architecture (the reference notebook's): Dropout(dropout) -> Dense(hidden, relu) -> one
Dense(1, sigmoid, L2(l2)) per attribute, each output layer named after its attribute. With
standardize, a Normalization layer holding the train split's feature mean and variance comes first
(saved inside the model), for features whose scale is far from 1.
Loss: binary cross-entropy per output, summed, plus the L2 penalty; Adam(lr); shuffled
mini-batches. Training (`_FlatAdamTrainer`) runs each epoch as one TensorFlow graph over one flat
weight vector with a written-out backward pass and a fused Adam update, so no Python runs per step;
it is the same algorithm as `model.fit` (tested), 4-6x faster on 2 cores (bench/RESULTS.md).
"""

import numpy as np

from cache.errors import UserError
from cache.reader import aligned_empty

EPSILON = 1e-7  # probability clipping in the validation loss, as Keras' binary cross-entropy does


def build_model(n_features, attributes, hidden=128, dropout=0.2, l2=1e-4, standardize=None):
    """keras.Model: float32 [B, n_features] -> {attribute: probability [B, 1]}.

    standardize: None, or (mean [D], variance [D]) of the training features."""
    import keras

    inputs = keras.Input((n_features,), name="features")
    x = inputs
    if standardize is not None:
        mean, variance = standardize
        x = keras.layers.Normalization(mean=mean, variance=variance, name="standardize")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    x = keras.layers.Dense(hidden, activation="relu", name="hidden")(x)
    outputs = {name: keras.layers.Dense(1, activation="sigmoid", name=name,
                                        kernel_regularizer=keras.regularizers.L2(l2))(x)
               for name in attributes}
    return keras.Model(inputs, outputs, name="attribute_head")


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
    """(positive, negative) weight per attribute, float32 [k] each: ones, or 'balanced' n / (2 n_c)."""
    k = labels.shape[1]
    if mode in (None, "none"):
        return np.ones(k, np.float32), np.ones(k, np.float32)
    if mode != "balanced":
        raise UserError(f"--class-weight {mode!r}: use none or balanced")
    positives = labels.sum(axis=0).astype(np.float64)
    n = len(labels)
    return (n / (2 * positives)).astype(np.float32), (n / (2 * (n - positives))).astype(np.float32)


class KerasHead:
    """scikit-learn-style estimator around `build_model`.

    fit(X [n, D] float16 or float32, Y [n, k] 0/1, attributes) -> self; learned state: model_, history_
    (one dict per epoch: loss, val_loss, <attr>_accuracy, val_<attr>_accuracy), n_features_in_,
    attributes_. predict_proba(X) -> float32 [n, k].
    """

    def __init__(self, hidden=128, dropout=0.2, l2=1e-4, lr=1e-3, epochs=3, batch_size=128,
                 class_weight="none", standardize=False, seed=0):
        self.hidden = hidden
        self.dropout = dropout
        self.l2 = l2
        self.lr = lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.standardize = standardize
        self.seed = seed

    def fit(self, X, Y, attributes, X_val=None, Y_val=None, on_epoch=None):
        fit_together([self], X, Y, attributes, X_val, Y_val, on_epoch)
        return self

    def _validation_record(self, probabilities, Y_val):
        p = np.clip(probabilities.astype(np.float64), EPSILON, 1 - EPSILON)
        y = np.asarray(Y_val, np.float64)
        bce = -(y * np.log(p) + (1 - y) * np.log(1 - p)).mean(axis=0).sum()
        reg = float(sum(float(l) for l in self.model_.losses))
        record = {"val_loss": float(bce + reg)}
        record.update({f"val_{a}_accuracy": float(((p[:, j] >= 0.5) == y[:, j]).mean())
                       for j, a in enumerate(self.attributes_)})
        return record

    def predict_proba(self, X, batch_size=8192):
        """Probabilities float32 [n, k] for features X [n, n_features_in_]."""
        X = np.asarray(X, np.float32)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise UserError(f"features have width {X.shape[-1]}, the head was trained on {self.n_features_in_}")
        return predict_model(self.model_, self.attributes_, X, batch_size)


# Settings that heads trained together must share: they see the same batches in the same order.
SHARED_SETTINGS = ("epochs", "batch_size", "class_weight", "standardize", "seed")


def fit_together(heads, X, Y, attributes, X_val=None, Y_val=None, on_epoch=None):
    """Fit several KerasHeads that differ only in hidden, dropout, lr and l2 in one pass over the data.

    Each head runs the same algorithm as if fitted alone: same initial weights, batch order and
    dropout masks (one random draw per step, thresholded at each head's rate), its own weights and
    Adam state. Results agree with fitting alone to float32 rounding, not bitwise: Grappler picks
    fused oneDNN kernels per graph, so a head's ops may run other kernels inside a bigger graph.
    Shared per step: the row gather, the dtype cast and the random bits. on_epoch(record) is called
    for the first head only.
    """
    import keras

    first = heads[0]
    for head in heads[1:]:
        differing = [k for k in SHARED_SETTINGS if getattr(head, k) != getattr(first, k)]
        if differing:
            raise ValueError(f"heads trained together must share {', '.join(differing)}")
    X = np.asarray(X)
    X = X if X.dtype in (np.float16, np.float32) else X.astype(np.float32)  # float16 stays: half the memory
    Y = np.asarray(Y, np.float32)
    if X.ndim != 2 or Y.shape != (len(X), len(attributes)):
        raise ValueError(f"X must be [n, D] and Y [n, {len(attributes)}]; got {X.shape} and {Y.shape}")
    moments = ((X.mean(axis=0, dtype=np.float64).astype(np.float32), X.var(axis=0, dtype=np.float64).astype(np.float32))
               if first.standardize else None)
    for head in heads:
        keras.utils.set_random_seed(first.seed)  # every head starts from the weights it would get alone
        head.model_ = build_model(X.shape[1], attributes, head.hidden, head.dropout, head.l2, moments)
        head.attributes_, head.n_features_in_, head.history_ = list(attributes), X.shape[1], []
    X_val_prepared = None if X_val is None else np.asarray(X_val)
    if moments is not None:  # the Normalization layer's arithmetic, applied once up front
        X, X_val_prepared = (None if a is None else (a - moments[0]) / np.maximum(np.sqrt(moments[1]), keras.backend.epsilon())
                             for a in (X, X_val_prepared))
    trainer = _FlatAdamTrainer(heads, attributes, class_weights(Y, first.class_weight))
    features, targets = as_tensor(X), as_tensor(Y)
    val_features = None if X_val_prepared is None else as_tensor(X_val_prepared)
    rng = np.random.default_rng(first.seed)
    for epoch in range(1, first.epochs + 1):
        losses, accuracies = trainer.run_epoch(rng.permutation(len(X)), features, targets)
        trainer.copy_to_models()
        val_probabilities = None if val_features is None else trainer.probabilities(val_features)
        for v, head in enumerate(heads):
            record = {"epoch": epoch, "loss": float(losses[v])}
            record.update({f"{a}_accuracy": float(x) for a, x in zip(attributes, accuracies[v])})
            if val_probabilities is not None:
                record.update(head._validation_record(val_probabilities[v], Y_val))
            head.history_.append(record)
        if on_epoch:
            on_epoch(heads[0].history_[-1])


def predict_model(model, attributes, X, batch_size=8192):
    """Run a saved or fitted head model over X in batches; float32 [n, k] in attribute order."""
    blocks = []
    for start in range(0, len(X), batch_size):
        out = model(X[start:start + batch_size], training=False)
        blocks.append(np.concatenate([np.asarray(out[a]) for a in attributes], axis=1))
    return np.concatenate(blocks) if blocks else np.zeros((0, len(attributes)), np.float32)


class _FlatAdamTrainer:
    """Trains `build_model` heads fast: each head's trainable weights live in one flat vector, so
    each step is a few large ops and one fused Adam update per head (TensorFlow's ResourceApplyAdam,
    the same update rule as keras.optimizers.Adam with epsilon 1e-7), and each epoch is one graph
    (a while-loop over the batches) for all heads together. Dropout masks come from stateless
    16-bit random numbers seeded by (seed, step), drawn one step ahead and once for every head.
    The loss is the head's: per-output binary cross-entropy (from logits), averaged over the
    batch, summed over outputs, plus l2 * sum of squared output kernels; its gradient is written
    out in `loss_and_gradient`. Weights go back into the Keras models with copy_to_models()."""

    def __init__(self, heads, attributes, weights):
        import tensorflow as tf

        self.layers, self.params, self.m, self.v, self.shapes, self.sizes = [], [], [], [], [], []
        for head in heads:
            hidden = head.model_.get_layer("hidden")
            outputs = [head.model_.get_layer(a) for a in attributes]
            w2 = np.concatenate([o.kernel.numpy() for o in outputs], axis=1)
            b2 = np.concatenate([o.bias.numpy() for o in outputs])
            parts = [hidden.kernel.numpy(), hidden.bias.numpy(), w2, b2]
            flat = np.concatenate([p.ravel() for p in parts]).astype(np.float32)
            self.layers.append((hidden, outputs))
            self.shapes.append([p.shape for p in parts])
            self.sizes.append([p.size for p in parts])
            self.params.append(tf.Variable(flat))
            self.m.append(tf.Variable(tf.zeros_like(flat)))
            self.v.append(tf.Variable(tf.zeros_like(flat)))
        self.lrs = [float(h.lr) for h in heads]
        self.dropouts = [float(h.dropout) for h in heads]
        self.l2s = [float(h.l2) for h in heads]
        self.batch, self.seed = int(heads[0].batch_size), int(heads[0].seed)
        self.steps_done = 0
        self.positive_weight, self.negative_weight = (tf.constant(w) for w in weights)
        self.weighted = not (np.all(weights[0] == 1) and np.all(weights[1] == 1))
        # autograph=False: the graphs are written with tf.while_loop, and autograph's source
        # conversion cost about 0.6 s of tracing per fit.
        self._epoch = tf.function(self._epoch_graph, autograph=False)
        self._probabilities = tf.function(self._probabilities_graph, autograph=False)

    def _unpack(self, head, flat):
        """Head `head`'s flat weight vector as (w1 [D, H], b1 [H], w2 [H, k], b2 [k])."""
        import tensorflow as tf
        pieces = tf.split(flat, self.sizes[head])
        return [tf.reshape(p, shape) for p, shape in zip(pieces, self.shapes[head])]

    def _random_bits(self, rows, width, step):
        """uint16 [rows, width] stateless random numbers (two per 32-bit draw: a third less RNG work
        than float uniforms), seeded by the step number alone, so the next step's bits can be drawn
        while this step computes. A head keeps an input where bits >= dropout * 65536: the rate is
        exact to 1/65536."""
        import tensorflow as tf
        seed = tf.stack([tf.constant(self.seed, tf.int64), step])
        halves = (width + 1) // 2
        bits = tf.random.stateless_uniform([rows, halves], seed, minval=None, maxval=None, dtype=tf.uint32)
        return tf.reshape(tf.bitcast(bits, tf.uint16), [rows, 2 * halves])[:, :width]

    def _probabilities_graph(self, features):
        import tensorflow as tf
        x = tf.cast(features, tf.float32)
        out = []
        for head, params in enumerate(self.params):
            w1, b1, w2, b2 = self._unpack(head, params)
            out.append(tf.sigmoid(tf.matmul(tf.nn.relu(tf.matmul(x, w1) + b1), w2) + b2))
        return tf.stack(out)

    def probabilities(self, features):
        """float32 [heads, n, k] with the current weights (no dropout), computed in one graph."""
        return self._probabilities(features).numpy()

    def loss_and_gradient(self, head, params, x_kept, y, weights):
        """(loss, gradient of loss w.r.t. the flat `params`) of head `head` on one batch whose dropout
        is already applied (x_kept: dropped inputs are 0, kept ones scaled by 1 / (1 - rate), as
        keras' Dropout does), plus its logits [B, k].

        The backward pass is written out (tests compare it with tf.GradientTape): autodiff of the
        same graph adds about 150 small ops per step for shapes and broadcasting, which cost more
        on 2 cores than the two large matmuls. weights: per-element class weights [B, k] or None."""
        import tensorflow as tf
        w1, b1, w2, b2 = self._unpack(head, params)
        l2 = self.l2s[head]
        hidden = tf.nn.relu(tf.nn.bias_add(tf.matmul(x_kept, w1), b1))  # the form Grappler's remapper fuses
        logits = tf.nn.bias_add(tf.matmul(hidden, w2), b2)
        batch = tf.cast(tf.shape(x_kept)[0], tf.float32)
        cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logits)
        d_logits = tf.sigmoid(logits) - y
        if weights is not None:
            cross_entropy, d_logits = cross_entropy * weights, d_logits * weights
        loss = tf.reduce_sum(cross_entropy) / batch + l2 * tf.reduce_sum(tf.square(w2))
        d_logits /= batch
        d_w2 = tf.matmul(hidden, d_logits, transpose_a=True) + (2 * l2) * w2
        d_pre = tf.raw_ops.ReluGrad(gradients=tf.matmul(d_logits, w2, transpose_b=True), features=hidden)
        d_w1 = tf.matmul(x_kept, d_pre, transpose_a=True)
        gradient = tf.concat([tf.reshape(d_w1, [-1]), tf.reduce_sum(d_pre, 0), tf.reshape(d_w2, [-1]),
                              tf.reduce_sum(d_logits, 0)], 0)
        return loss, gradient, logits

    def _step(self, x, y, step, bits):
        """One Adam step of every head on batch (x [B, D], y [B, k]); bits: uint16 [B, D] for the
        dropout masks (unused without dropout)."""
        import tensorflow as tf
        weights = y * self.positive_weight + (1 - y) * self.negative_weight if self.weighted else None
        positive = y > 0.5
        t = tf.cast(step, tf.float32)
        beta1_power, beta2_power = tf.pow(0.9, t), tf.pow(0.999, t)
        kept = {0.0: x}  # dropped and scaled inputs, per dropout rate: heads with one rate share them
        for rate in set(self.dropouts) - {0.0}:
            kept[rate] = tf.where(bits >= int(round(rate * 65536)), x * (1.0 / (1.0 - rate)), 0.0)
        losses, corrects = [], []
        for head, (params, m, v, lr, dropout) in enumerate(zip(self.params, self.m, self.v, self.lrs, self.dropouts)):
            loss, gradient, logits = self.loss_and_gradient(head, params, kept[dropout], y, weights)
            tf.raw_ops.ResourceApplyAdam(var=params.handle, m=m.handle, v=v.handle, beta1_power=beta1_power,
                                         beta2_power=beta2_power, lr=lr, beta1=0.9, beta2=0.999,
                                         epsilon=1e-7, grad=gradient)
            losses.append(loss)
            corrects.append(tf.math.count_nonzero(tf.equal(logits >= 0, positive), axis=0, dtype=tf.float32))
        return tf.stack(losses) * tf.cast(tf.shape(x)[0], tf.float32), tf.stack(corrects)

    def _epoch_graph(self, order, features, targets, first_step):
        import tensorflow as tf
        n = tf.shape(order)[0]
        width = features.shape[1]
        dropout = any(self.dropouts)

        def bits_for(i):
            """Batch i's random bits (an empty block past the last batch)."""
            rows = tf.maximum(tf.minimum((i + 1) * self.batch, n) - i * self.batch, 0)
            return self._random_bits(rows, width, first_step + tf.cast(i, tf.int64))

        def step(i, loss_sum, correct, bits):
            rows = order[i * self.batch:tf.minimum((i + 1) * self.batch, n)]
            x = tf.cast(tf.gather(features, rows), tf.float32)
            loss, hits = self._step(x, tf.gather(targets, rows), first_step + tf.cast(i, tf.int64), bits)
            # The next batch's bits are drawn in this iteration: they depend on no weight, so they
            # are computed while this step's chain of dependent ops (forward, backward, Adam) waits
            # on itself; drawn inside the next iteration they sat on that chain (-0.15 to -0.3 s/epoch).
            return i + 1, loss_sum + loss, correct + hits, bits_for(i + 1) if dropout else bits

        steps = (n + self.batch - 1) // self.batch
        start = (tf.constant(0), tf.zeros([len(self.params)]), tf.zeros([len(self.params), self.shapes[0][3][0]]),
                 bits_for(0) if dropout else tf.zeros([0, 0], tf.uint16))
        invariants = (tf.TensorShape([]), start[1].shape, start[2].shape, tf.TensorShape([None, None]))
        _, loss_sum, correct, _ = tf.while_loop(lambda i, *_: i < steps, step, start, shape_invariants=invariants)
        return loss_sum / tf.cast(n, tf.float32), correct / tf.cast(n, tf.float32)

    def run_epoch(self, order, features, targets):
        """One pass over the rows in `order`; returns (mean loss [heads], train accuracy [heads, k])."""
        import tensorflow as tf
        loss, accuracy = self._epoch(tf.constant(order, tf.int32), features, targets, tf.constant(self.steps_done + 1, tf.int64))
        self.steps_done += -(-len(order) // self.batch)
        return loss.numpy(), accuracy.numpy()

    def copy_to_models(self):
        for head, (params, (hidden, outputs)) in enumerate(zip(self.params, self.layers)):
            w1, b1, w2, b2 = (t.numpy() for t in self._unpack(head, params))
            hidden.kernel.assign(w1)
            hidden.bias.assign(b1)
            for j, layer in enumerate(outputs):
                layer.kernel.assign(w2[:, j:j + 1])
                layer.bias.assign(b2[j:j + 1])
