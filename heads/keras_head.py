"""The reference Keras head, trained fast on features held in memory.

Architecture (the reference notebook's): Dropout(dropout) -> Dense(hidden, relu) -> one
Dense(1, sigmoid, L2(l2)) per attribute, each output layer named after its attribute. With
standardize, a Normalization layer holding the train split's feature mean and variance comes first
(saved inside the model), for features whose scale is far from 1.
Loss: binary cross-entropy per output, summed, plus the L2 penalty; Adam(lr); shuffled
mini-batches. Training runs each epoch as one TensorFlow graph (a while-loop over batches), so
no Python runs per step; the result is the same algorithm as `model.fit`.
"""

import numpy as np

from cache.errors import UserError

EPSILON = 1e-7  # probability clipping, as Keras' binary cross-entropy does


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

    fit(X [n, D] float32, Y [n, k] 0/1, attributes) -> self; learned state: model_, history_
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
        import keras
        import tensorflow as tf

        X = np.asarray(X, np.float32)
        Y = np.asarray(Y, np.float32)
        if X.ndim != 2 or Y.shape != (len(X), len(attributes)):
            raise ValueError(f"X must be [n, D] and Y [n, {len(attributes)}]; got {X.shape} and {Y.shape}")
        keras.utils.set_random_seed(self.seed)
        moments = (X.mean(axis=0), X.var(axis=0)) if self.standardize else None
        model = build_model(X.shape[1], attributes, self.hidden, self.dropout, self.l2, moments)
        optimizer = keras.optimizers.Adam(learning_rate=self.lr)
        optimizer.build(model.trainable_variables)
        positive_weight, negative_weight = (tf.constant(w) for w in class_weights(Y, self.class_weight))
        features, targets = tf.constant(X), tf.constant(Y)
        n, batch = len(X), int(self.batch_size)
        n_batches = -(-n // batch)

        def probabilities(x, training):
            out = model(x, training=training)
            return tf.clip_by_value(tf.concat([out[a] for a in attributes], axis=1), EPSILON, 1 - EPSILON)

        def cross_entropy(y, p):
            return -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))

        @tf.function
        def train_epoch(order):
            loss_sum = tf.constant(0.0)
            correct = tf.zeros([len(attributes)])
            for i in tf.range(n_batches):
                rows = order[i * batch:tf.minimum((i + 1) * batch, n)]
                x, y = tf.gather(features, rows), tf.gather(targets, rows)
                with tf.GradientTape() as tape:
                    p = probabilities(x, training=True)
                    weights = y * positive_weight + (1 - y) * negative_weight
                    loss = tf.reduce_sum(tf.reduce_mean(weights * cross_entropy(y, p), axis=0))
                    loss += tf.add_n(model.losses)
                gradients = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(gradients, model.trainable_variables))
                size = tf.cast(tf.shape(rows)[0], tf.float32)
                loss_sum += loss * size
                correct += tf.reduce_sum(tf.cast(tf.equal(tf.cast(p >= 0.5, tf.float32), y), tf.float32), axis=0)
            return loss_sum / n, correct / n

        rng = np.random.default_rng(self.seed)
        self.model_, self.attributes_, self.n_features_in_ = model, list(attributes), X.shape[1]
        self.history_ = []
        for epoch in range(1, self.epochs + 1):
            loss, accuracy = train_epoch(tf.constant(rng.permutation(n), tf.int32))
            record = {"epoch": epoch, "loss": float(loss)}
            record.update({f"{a}_accuracy": float(v) for a, v in zip(attributes, accuracy.numpy())})
            if X_val is not None:
                record.update(self._validation_record(X_val, Y_val))
            self.history_.append(record)
            if on_epoch:
                on_epoch(record)
        return self

    def _validation_record(self, X_val, Y_val):
        p = np.clip(self.predict_proba(X_val).astype(np.float64), EPSILON, 1 - EPSILON)
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


def predict_model(model, attributes, X, batch_size=8192):
    """Run a saved or fitted head model over X in batches; float32 [n, k] in attribute order."""
    blocks = []
    for start in range(0, len(X), batch_size):
        out = model(X[start:start + batch_size], training=False)
        blocks.append(np.concatenate([np.asarray(out[a]) for a in attributes], axis=1))
    return np.concatenate(blocks) if blocks else np.zeros((0, len(attributes)), np.float32)
