"""`export --format tflite`: a run as one TFLite file for an edge device (backbone, views, transform
and head, from preprocessed pixels to probabilities), converted by TensorFlow's converter from the
SavedModel `export` writes (its `from_pixels` signature, loaded back and frozen: the converter's own
SavedModel path kept the variables as resource variables, which LiteRT then read as missing or NaN),
with a JSON sidecar saying how to feed it.

OUT (a .tflite file), signature "serving_default":
  input   pixels  float32 [1, S, S, C]: the image, or for a run on an --align cache the face aligned
                  into CelebA's 178 x 218 frame (sidecar "alignment"), resized to S x S as "input"
                  says (resize method, antialias) and mapped linearly from 0..255 onto value_range
  outputs <attribute>           float32 [1]: the probability
          <attribute>_decision  int32 [1]: 1 where the probability reaches the run's threshold
OUT with suffix .json (the sidecar):
  {"format": "celeba-heads tflite", "version": 1, "signature": "serving_default",
   "input": {"name", "shape", "dtype", "image_size", "channels", "color", "value_range", "resize",
             "antialias"},
   "attributes": [...] (in order), "thresholds": {attribute: t}, "quantize": "none" | "float16" | "int8",
   "alignment": the run's preprocessing["align"] (detector and its settings, face rule, template,
                fit: its points and weights, frame, fill) or null for a run on whole images,
   "run": {"path", "head", "kind"}, "backbone": the cache's backbone record}

quantize: none keeps float32; float16 stores the weights in float16 (about half the file);
int8 quantizes weights and activations, calibrated on up to `calibration_rows` of the run's train
rows read back from its cache's image folder (aligned again by their stored landmarks for an
--align cache), with float32 input and outputs.
"""

import json
import logging
import tempfile
from pathlib import Path

import numpy as np

from cache.errors import UserError
from cache.outputs import beside
from heads.run.rundir import Run
from heads.serve.export import client_record, export_run
from heads.serve.predict import run_alignment

QUANTIZE = ("none", "float16", "int8")
SIGNATURE = "serving_default"
log = logging.getLogger(__name__)


def interpreter(path):
    """A TFLite interpreter of the file (LiteRT's `ai_edge_litert`, TF's successor to tf.lite's)."""
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter(model_path=str(path))


def calibration_pixels(run, backbone, rows, images=None):
    """float32 [n, S, S, C]: up to `rows` train rows of the run's cache, preprocessed as the cache's
    rows were (aligned again by their stored landmarks for an --align cache)."""
    import h5py

    from embed.defaults import MAX_PIXELS
    from embed.faces import align, aligned_pixels, fit_of, read_photo
    from embed.pipeline import decode_file_bytes, preprocess
    from heads.look.thumbnails import image_folder

    cache = run.caches[0]["path"]
    folder, why = image_folder(cache, images)
    if folder is None:
        raise UserError(f"--quantize int8 calibrates on the run's train images: {why}")
    with h5py.File(cache, "r") as f:
        usable = np.flatnonzero((f["partition"][:] == 0) & (f["status"][:] == 1))
        chosen = usable[np.linspace(0, len(usable) - 1, min(rows, len(usable))).astype(int)] if len(usable) else usable
        ids = [f["image_id"][i].decode() for i in chosen]
        landmarks = f["faces/landmarks"][np.sort(chosen)] if "faces" in f else None
    alignment, prep = run_alignment(run), backbone.preprocessing
    pixels = []
    for k, image_id in enumerate(ids):
        if alignment:
            photo, error = read_photo(folder / image_id, MAX_PIXELS)
            if photo is None:
                raise UserError(f"{folder / image_id}: {error} (a train image the int8 calibration reads)")
            face = align(photo, landmarks[k], fit_of(alignment))
            pixels.append(aligned_pixels(face[None], prep)[0].numpy())
        else:
            image, error = decode_file_bytes((folder / image_id).read_bytes(), prep.channels, MAX_PIXELS)
            if error:
                raise UserError(f"{folder / image_id}: {error} (a train image the int8 calibration reads)")
            pixels.append(preprocess(image, prep).numpy())
    if not pixels:
        raise UserError(f"{cache}: no train row to calibrate int8 on")
    return np.stack(pixels).astype(np.float32)


def export_tflite(run_dir, out, *, quantize="none", calibration_rows=200, images=None, trust_model=False):
    """Write OUT (.tflite) and its sidecar OUT.json (module docstring); returns the sidecar's dict."""
    import tensorflow as tf

    from heads.serve.predict import run_backbones

    if quantize not in QUANTIZE:
        raise UserError(f"--quantize must be one of {', '.join(QUANTIZE)}, not {quantize!r}")
    run = Run(run_dir)
    if len(run.caches) > 1:
        raise UserError("export --format tflite takes a run on one cache (one backbone, one input); this run "
                        f"fuses {len(run.caches)}")
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="tflite-") as folder:
        export_run(run_dir, Path(folder) / "saved", trust_model=trust_model)
        saved = tf.saved_model.load(str(Path(folder) / "saved"))
        converter = tf.lite.TFLiteConverter.from_concrete_functions([saved.signatures["from_pixels"]], saved)
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            (backbone,) = run_backbones(run, trust_model)
            pixels = calibration_pixels(run, backbone, calibration_rows, images)
            converter.representative_dataset = lambda: ([pixels[k:k + 1]] for k in range(len(pixels)))
        flat = converter.convert()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(flat)
    details = interpreter(out).get_signature_runner(SIGNATURE).get_input_details()["pixels"]
    client = client_record(run)
    sidecar = {"format": "celeba-heads tflite", "version": 1, "signature": SIGNATURE,
               "input": {"name": "pixels", "shape": [int(d) for d in details["shape"]], "dtype": "float32",
                         **client["inputs"][0]},
               "attributes": client["attributes"], "thresholds": client["thresholds"], "quantize": quantize,
               "alignment": client["alignment"], "run": client["run"], "backbone": client["backbones"][0],
               "bytes": len(flat)}
    beside(out, ".json").write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def tflite_probabilities(path, pixels):
    """float32 [n, k] from the TFLite file for pixels float32 [n, S, S, C], one image per call (the
    file's batch of 1), attributes in the sidecar's order."""
    sidecar = json.loads(beside(Path(path), ".json").read_text())
    runner = interpreter(path).get_signature_runner(SIGNATURE)
    rows = []
    for image in pixels:
        out = runner(pixels=image[None].astype(np.float32))
        rows.append([float(np.asarray(out[a]).reshape(-1)[0]) for a in sidecar["attributes"]])
    return np.array(rows, np.float32)
