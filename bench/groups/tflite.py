"""tflite: `export --format tflite` of a default head on the shared gender CNN's add_4 features of the real sample (--antialias), each quantization's file size, per-image CPU latency in LiteRT (one image a call, after a warm-up) against the Keras run's own graph on the same pixels, and its agreement with the run on every test image: float probabilities within 1e-4, int8 decisions >= 98 %."""

import time

import numpy as np

from bench.common import HEAD_ATTRIBUTES, SAMPLE, group, row
from bench.groups.faces import gender_head
from harness.serving import sample_pixels


def _latency_ms(call, pixels, rounds):
    call(pixels[0])
    times = []
    for k in range(rounds):
        began = time.perf_counter()
        call(pixels[k % len(pixels)])
        times.append(time.perf_counter() - began)
    return 1000 * float(np.median(times))


@group("tflite", order=17)
def run(ctx):
    import tensorflow as tf

    from heads.serve.predict import Predictor, run_view_features
    from heads.serve.tflite import SIGNATURE, export_tflite, interpreter
    work = ctx.workdir / "tflite"
    work.mkdir(parents=True, exist_ok=True)
    run_dir = gender_head(work, antialias=True)
    predictor = Predictor(run_dir)
    pixels, expected = sample_pixels(predictor, SAMPLE, 40 if ctx.quick else 10_000)
    backbone = predictor.backbones[0]

    def keras_one(image):
        features = run_view_features(predictor.run, backbone, tf.constant(image[None])).numpy()
        return predictor.head.predict_proba(predictor.transform.transform(features))
    rounds = 20 if ctx.quick else 200
    keras_ms = _latency_ms(keras_one, pixels, rounds)
    rows = [row("tflite: the Keras run's own graph, one image a call", round(keras_ms, 2), "ms",
                note="backbone (gender CNN to add_4, pooled) and head, TensorFlow eager call, median")]
    for quantize in ("none", "float16", "int8"):
        out = work / f"{quantize}.tflite"
        sidecar = export_tflite(run_dir, out, quantize=quantize)
        runner = interpreter(out).get_signature_runner(SIGNATURE)

        def lite_one(image, runner=runner):
            return runner(pixels=image[None])
        got = np.array([[float(np.asarray(lite_one(image)[a]).reshape(-1)[0]) for a in HEAD_ATTRIBUTES]
                        for image in pixels])
        agree = ((got >= 0.5) == (expected >= 0.5)).mean(axis=0)
        worst = float(np.abs(got - expected).max())
        ms = _latency_ms(lite_one, pixels, rounds)
        if quantize == "none":
            goal, passed = "probabilities within 1e-4", worst <= 1e-4
        elif quantize == "int8":
            goal, passed = ">= 98 % each", bool((agree >= 0.98).all())
        else:
            goal, passed = "", None
        rows.append(row(f"tflite --quantize {quantize}: decisions agreeing with the run (Male / Smiling / Young)",
                        " / ".join(f"{100 * a:.1f}" for a in agree), "%", goal, passed,
                        f"{len(pixels)} test images of the real sample; largest probability difference {worst:.2g}; "
                        f"int8 calibrated on 200 train images"))
        rows.append(row(f"tflite --quantize {quantize}: file size, one-image latency", f"{sidecar['bytes'] / 1e3:.0f} kB, "
                        f"{ms:.2f} ms", "", note=f"LiteRT (XNNPACK on CPU), one image a call, median of {rounds}; "
                        f"{ms / keras_ms:.2f}x the Keras graph's time"))
    return rows
