"""Temperature scaling (Guo et al. 2017) for Keras heads: `--calibrate temperature`.

Each attribute's probability p becomes sigmoid(logit(p) / T), with T > 0 fitted on the val split
only (the T minimising val binary cross-entropy; 1 is the head as trained). A decision at 0.5 and
every ranking (ROC AUC) are unchanged; ECE and the Brier score change. The temperatures go inside
the head's Keras model (one `Temperature` layer per output), so model.keras, evaluate, predict
and export all apply them with no other file.
"""

import numpy as np

from cache.layout import UNKNOWN_LABEL

EPSILON = 1e-7  # probabilities are clipped to [EPSILON, 1 - EPSILON] before the logit
LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))
_LAYER = []  # the Temperature layer class, defined (and registered for loading) once


def logit(p):
    p = np.clip(np.asarray(p, np.float64), EPSILON, 1 - EPSILON)
    return np.log(p) - np.log1p(-p)


def bce(y, p):
    """Mean binary cross-entropy of labels y (0/1) under probabilities p (clipped as Keras does)."""
    p = np.clip(np.asarray(p, np.float64), EPSILON, 1 - EPSILON)
    y = np.asarray(y, np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


def fit_temperatures(labels, probabilities):
    """Per attribute the temperature T in [0.01, 100] minimising the mean binary cross-entropy of
    sigmoid(logit(p) / T) against labels (both [n, k], the val split), over the attribute's labelled
    rows (UNKNOWN_LABEL left out; none labelled: T = 1); float64 [k]."""
    from scipy.optimize import minimize_scalar
    from scipy.special import expit

    z = logit(probabilities)
    labels = np.asarray(labels)
    temperatures = []
    for j in range(z.shape[1]):
        known = labels[:, j] != UNKNOWN_LABEL
        if not known.any():
            temperatures.append(1.0)
            continue
        y, zj = labels[known, j].astype(np.float64), z[known, j]
        result = minimize_scalar(lambda log_t: bce(y, expit(zj / np.exp(log_t))),
                                 bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-5})
        temperatures.append(float(np.exp(result.x)))
    return np.array(temperatures)


def temperature_layer():
    """The registered Keras layer p -> sigmoid(logit(p) / temperature), computed in float32."""
    if not _LAYER:
        import keras

        @keras.saving.register_keras_serializable(package="celeba_heads")
        class Temperature(keras.layers.Layer):
            def __init__(self, temperature=1.0, **kwargs):
                super().__init__(**kwargs)
                self.temperature = float(temperature)

            def call(self, p):
                p = keras.ops.clip(p, EPSILON, 1 - EPSILON)
                return keras.ops.sigmoid((keras.ops.log(p) - keras.ops.log1p(-p)) / self.temperature)

            def get_config(self):
                return {**super().get_config(), "temperature": self.temperature}

        _LAYER.append(Temperature)
    return _LAYER[0]


def with_temperatures(model, attributes, temperatures):
    """keras.Model: the same input as `model`, {attribute: its probability scaled by its temperature}."""
    import keras

    from heads.kinds.architectures import named_outputs

    layer = temperature_layer()
    inputs = keras.Input(shape=tuple(model.input_shape[1:]), name="features")
    outputs = named_outputs(model, model(inputs))
    return keras.Model(inputs, {a: layer(float(t), name=f"{a}_temperature")(outputs[a])
                                for a, t in zip(attributes, temperatures)}, name=f"{model.name}_calibrated")
