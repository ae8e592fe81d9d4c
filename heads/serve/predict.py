"""`predict` images with a run: every backbone its caches record, in the run's views, then the run's
transform and head. The backbones and views are rebuilt here for `export` too.

Two ways in. `predict_images` feeds each whole image to the backbones, as `embed` does (for photos
already in the frame the run was trained in, e.g. CelebA's aligned images). `predict_faces` finds
the faces in each photo (embed.faces), aligns each into CelebA's 178 x 218 frame and predicts each
face; the aligned face then goes through each backbone's own preprocessing like an image file.
`Predictor` holds a loaded run for both ways on photos already in memory (`predict --video`, `serve`):
its entries are the ones `predict --json` prints.
"""

import functools
import logging
import threading

import numpy as np

from cache.errors import UserError
from heads.defaults import SCORE
from heads.run.rundir import Run
from heads.run.task import needs_flip, view_features

FACE_MODES = ("all", "best", "none")
log = logging.getLogger(__name__)


def run_backbones(run, trust_model):
    """One backbone per cache the run was trained on, each checked against its feature width."""
    from embed.backbones import load_recorded_backbone
    backbones = []
    for record in run.caches:
        backbone = load_recorded_backbone(record["backbone"], record["preprocessing"], trust_model=trust_model)
        if backbone.feature_dim != record["feature_dim"]:
            raise UserError(f"backbone {record['backbone'].get('model')} gives {backbone.feature_dim}-d features, "
                            f"the run was trained on {record['feature_dim']}-d")
        backbones.append(backbone)
    return backbones


def run_view_features(run, backbone, images):
    """The backbone's features of a batch in the view the run was trained and evaluated on: its
    features, or the stored layers the run trained on (its inputs), flattened side by side as
    `cache.reader.load_split` reads them."""
    import tensorflow as tf

    from embed.pipeline import mirrored

    def features(batch):
        if not run.inputs:
            return backbone.extract(batch)
        _, layers = backbone.extract_all(batch)
        by_name = {layer["name"]: x for layer, x in zip(backbone.layers, layers)}
        if len(run.inputs) == 1:
            return by_name[run.inputs[0]]  # a vector, or a spatial map as stored
        return tf.concat([by_name[name] for name in run.inputs], axis=1)  # vectors side by side

    flip = features(mirrored(images)) if needs_flip(run.views, run.eval_view) else None
    return view_features(run.views, run.eval_view, features(images), flip, concat=lambda parts: tf.concat(parts, axis=1))


def _attributes(run, probabilities):
    return {a: {"probability": float(p), "decision": int(p >= t), "threshold": float(t)}
            for a, t, p in zip(run.attributes, run.thresholds, probabilities)}


def predict_images(run_dir, images, *, batch_size=32, trust_model=False):
    """[{"image", "ok", "error", "attributes": {A: {"probability", "decision", "threshold"}}, "note"}] per
    image, in order (note: a size warning, else None).
    An image that cannot be read is reported with its error; the others are still predicted."""
    from embed.pipeline import ImageBatches

    run = Run(run_dir)
    transform, head = run.load(trust_model)
    backbones = run_backbones(run, trust_model)
    paths = [str(i) for i in images]
    features, errors = [], [""] * len(paths)
    for backbone in backbones:  # a fused run decodes each image once per backbone's preprocessing
        blocks = []
        for batch in ImageBatches(paths, np.arange(len(paths)), backbone.preprocessing, batch_size):
            blocks.append(run_view_features(run, backbone, batch["image"]).numpy())
            for index, error in zip(batch["index"].numpy(), batch["error"].numpy()):
                errors[index] = errors[index] or error.decode("utf-8", "replace")
        features.append(np.concatenate(blocks))
    probabilities = head.predict_proba(transform.transform(np.concatenate(features, axis=1)))
    aligner = functools.cache(lambda: run_aligner(run))
    results = [image_entry(run, path, error, p, None if error else _file_note(path, aligner))
               for path, error, p in zip(paths, errors, probabilities)]
    for result in results:
        if result["note"]:
            log.warning("%s: %s", result["image"], result["note"])
    return results


def several_faces_note(data, aligner):
    """A note for a whole photo (image file bytes; not an aligned crop: SCORE["scene_side"] pixels or
    more on a side) holding several faces: its one prediction mixes them, --faces all predicts each.
    aligner(): the face aligner whose detector searches it (made only when a photo is that large)."""
    import io

    from embed.defaults import MAX_PIXELS
    from embed.faces import read_photo
    from embed.pipeline import header_size

    size = header_size(data)
    if size is None or max(size) < SCORE["scene_side"]:
        return None
    photo, _ = read_photo(io.BytesIO(data), MAX_PIXELS)
    count = 0 if photo is None else len(aligner().detector.detect([photo])[0])
    return (f"{count} faces in this {size[0]}x{size[1]} photo, predicted as one image: --faces all finds, aligns and "
            "predicts each face") if count > 1 else None


def image_entry(run, name, error, probabilities, note):
    """The entry `predict` gives a whole image: {"image", "ok", "error", "attributes", "note"}."""
    return {"image": name, "ok": not error, "error": error or None,
            "attributes": None if error else _attributes(run, probabilities), "note": note}


def _file_note(path, aligner):
    with open(path, "rb") as f:
        data = f.read()
    return small_note(data) or several_faces_note(data, aligner)


def small_note(data):
    """A note for an image file (bytes) smaller than SCORE["min_image_side"] pixels a side (its
    prediction is made, but from too few pixels to mean much), else None."""
    from embed.pipeline import header_size
    size = header_size(data)
    side = SCORE["min_image_side"]
    if size is not None and min(size) < side:
        return f"{size[0]}x{size[1]} pixels, under {side} a side: too few to show a face, so its prediction means little"
    return None


def face_probabilities(run, transform, head, backbones, faces, batch_size=32):
    """float32 [N, k] for aligned faces uint8 [N, 218, 178, 3]. Blocks of batch_size faces, the last
    padded to the next power of two (the padding's rows dropped after): a varying number of faces
    per photo traces the backbone's graph a few times (1, 2, 4, ...), not once per count."""
    from embed.faces import aligned_pixels
    features = []
    for backbone in backbones:
        blocks = []
        for start in range(0, len(faces), batch_size):
            block = faces[start:start + batch_size]
            size = min(batch_size, 1 << (len(block) - 1).bit_length())
            padded = np.concatenate([block, np.zeros((size - len(block), *block.shape[1:]), block.dtype)])
            pixels = aligned_pixels(padded, backbone.preprocessing)
            blocks.append(run_view_features(run, backbone, pixels).numpy()[:len(block)])
        features.append(np.concatenate(blocks))
    return head.predict_proba(transform.transform(np.concatenate(features, axis=1)))


def run_alignment(run):
    """preprocessing["align"] of the run's (first) cache, completed as today's records are
    (`embed.faces.complete_record`: a record from before fits were named gets its points): how its
    faces were found and aligned, or None for a run on whole images."""
    from embed.faces import complete_record
    record = run.caches[0]["preprocessing"].get("align")
    return complete_record(record) if record else None


def default_face_mode(run_dir):
    """--faces when not given: "all" for a run on a cache of aligned faces, else "none"."""
    return "all" if run_alignment(Run(run_dir)) else "none"


def run_aligner(run, min_face=None, refine=None, min_score=None, mirror_score=None):
    """The embed.faces.Aligner predict uses on a run's photos: as the run's cache of aligned faces
    recorded it, else the defaults (`embed.faces.align_record`); min_face, refine, min_score,
    mirror_score: overrides."""
    from embed.faces import Aligner, align_record
    record = dict(run_alignment(run) or align_record())
    for name, value in (("min_face", min_face), ("min_score", min_score), ("mirror_score", mirror_score)):
        if value is not None:
            record["detector"] = {**record["detector"], name: value}
    if refine is not None:
        record["refine"] = refine
    return Aligner.from_record(record)


class Predictor:
    """A run, its transform, head and backbones, loaded once, for photos already in memory:
    `entries(items, faces)` finds, aligns and predicts their faces (for photo files,
    `predict_faces`; for video frames, `heads.serve.video`; for uploads, `heads.serve.service`),
    `image_entries(items)` predicts whole images from their files' bytes (`serve`). The aligner
    (`run_aligner` with min_face and refine, unless one is given) is made on first use, once: serve's
    worker threads share one Predictor."""

    def __init__(self, run_dir, *, aligner=None, min_face=None, refine=None, min_score=None, mirror_score=None,
                 batch_size=32, trust_model=False):
        self.run = Run(run_dir)
        self.transform, self.head = self.run.load(trust_model)
        self.backbones = run_backbones(self.run, trust_model)
        self._aligner, self.min_face, self.refine, self.min_score = aligner, min_face, refine, min_score
        self.mirror_score = mirror_score
        self._making_aligner = threading.Lock()
        self.batch_size = batch_size

    @property
    def attributes(self):
        return self.run.attributes

    @property
    def aligner(self):
        with self._making_aligner:
            if self._aligner is None:
                self._aligner = run_aligner(self.run, self.min_face, self.refine, self.min_score, self.mirror_score)
        return self._aligner

    def entries(self, items, faces="all", min_face=None):
        """items: [(name, photo uint8 [H, W, 3] or None, error text)] -> one entry per item (see
        `predict_faces`), every face of all the items through the head in one batch. min_face:
        search this smallest face instead of the aligner's."""
        from embed.faces import box_patch, implausible, landmarks_outside, no_face_error, ranked

        if faces not in ("all", "best"):
            raise UserError(f"faces must be all or best, not {faces!r}")
        aligner = self.aligner if min_face is None else run_aligner(self.run, min_face, self.refine, self.min_score,
                                                                     self.mirror_score)
        found = iter(aligner.find([photo for _, photo, _ in items if photo is not None]))
        entries, aligned, patches = [], [], []
        for name, photo, error in items:
            entry = {"image": name, "ok": False, "error": error or None, "size": None, "order": aligner.face,
                     "faces": []}
            entries.append(entry)
            if photo is None:
                continue
            entry["size"] = [photo.shape[1], photo.shape[0]]
            detected = next(found)
            ordered = ranked(detected, aligner.face, photo.shape)
            chosen = ordered if faces == "all" else ordered[:1]
            if not chosen:
                entry["error"] = no_face_error(aligner.detector, photo.shape)
                continue
            entry["ok"] = True
            for face in chosen:
                entry["faces"].append({**face.to_dict(), "landmarks_outside": landmarks_outside(face, photo.shape),
                                       "implausible": None})  # judged below, all faces in one pass
                aligned.append(aligner.align(photo, face))
                patches.append((box_patch(photo, face), face))
        if aligned:
            turned = iter(aligner.detector.turned_over(np.stack([p for p, _ in patches])))
            flags = iter([implausible(face, next(turned)) for _, face in patches])
            for entry in entries:
                for face in entry["faces"]:
                    face["implausible"] = next(flags)
            probabilities = iter(face_probabilities(self.run, self.transform, self.head, self.backbones,
                                                    np.stack(aligned), self.batch_size))
            for entry in entries:
                for face in entry["faces"]:
                    face["attributes"] = _attributes(self.run, next(probabilities))
        return entries

    def image_entries(self, items, max_pixels=None):
        """items: [(name, image file bytes)] -> the entries `predict_images` gives, in order. Each file
        is decoded as the pipeline's per-file path decodes it (`embed.pipeline.decode_file_bytes`:
        the size checked from its header first, then the same kernel), preprocessed per backbone,
        and all go through the backbones and the head as one batch."""
        import tensorflow as tf

        from embed.defaults import MAX_PIXELS
        from embed.pipeline import decode_file_bytes, preprocess

        errors, features = [""] * len(items), []
        for backbone in self.backbones:
            prep, pixels = backbone.preprocessing, []
            for k, (_, data) in enumerate(items):
                image, error = decode_file_bytes(data, prep.channels, max_pixels or MAX_PIXELS)
                errors[k] = errors[k] or error
                pixels.append(preprocess(image, prep))
            features.append(run_view_features(self.run, backbone, tf.stack(pixels)).numpy())
        probabilities = self.head.predict_proba(self.transform.transform(np.concatenate(features, axis=1)))
        return [image_entry(self.run, name, error, p,
                            None if error else small_note(data) or several_faces_note(data, lambda: self.aligner))
                for (name, data), error, p in zip(items, errors, probabilities)]


def predict_faces(run_dir, images, *, faces="all", aligner=None, min_face=None, refine=None, min_score=None,
                  mirror_score=None, batch_size=32, max_pixels=None, draw_dir=None, trust_model=False):
    """Every face (faces="all") or one ("best": the first in the order of the aligner's face rule,
    `embed.faces.ranked`: "main" by default, the large face near the centre) of each photo, aligned
    and predicted.
    [{"image", "ok", "error", "size": [W, H], "order": the face rule, "faces": [{"box", "landmarks",
    "score", "landmarks_outside", "implausible" (why the landmarks cannot be an upright face's, or null;
    `embed.faces.implausible`), "attributes"}]}]
    per photo, in order, its faces in the rule's order; a photo that cannot be read, or has no face, is
    reported with its error (ok false) and the others are still predicted. aligner: an
    embed.faces.Aligner (default `run_aligner`: as the run's cache of aligned faces recorded, else
    the defaults, with the overrides min_face, refine, min_score and mirror_score). Photos go `batch_size` at a time through
    detection, alignment and the head, so memory does not grow with their number. draw_dir: also
    write each readable photo there with its faces drawn (heads.look.drawn)."""
    from embed.defaults import MAX_PIXELS
    from embed.faces import read_photo

    predictor = Predictor(run_dir, aligner=aligner, min_face=min_face, refine=refine, min_score=min_score,
                          mirror_score=mirror_score, batch_size=batch_size, trust_model=trust_model)
    paths = [str(i) for i in images]
    results = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        items = [(path, *read_photo(path, max_pixels or MAX_PIXELS)) for path in chunk]
        entries = predictor.entries(items, faces)
        if draw_dir is not None:
            from heads.look.drawn import draw_faces
            for entry, (_, photo, _) in zip(entries, items):
                if photo is not None:
                    draw_faces(photo, entry, draw_dir)
        results.extend(entries)
    return results
