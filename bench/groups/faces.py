"""faces: `predict --faces` on scenes made from the real sample's val/test photos (one to three faces a scene, random scale 0.45-1.1, rotation +-25 degrees, textured background): faces found, decisions agreeing with `predict` on the aligned originals per attribute (and the ceiling an exact inverse warp reaches), with heads on the shared gender CNN's features embedded with and without --antialias; the detector's photos/s by minimum face size; predict latency for a photo with 1 and with 5 faces."""

import time

import numpy as np
import pandas as pd

from bench.common import HEAD_ATTRIBUTES, SAMPLE, group, row
from bench.groups.defaults import MODELS


def _head(work, antialias):
    from embed.backbones import BackboneSpec, load_backbone
    from embed.dataset import open_dataset
    from embed.runner import EmbedSpec, embed
    from heads.run.fit import train_heads
    from heads.run.task import TaskSpec
    name = "antialias" if antialias else "plain"
    backbone = load_backbone(BackboneSpec(str(MODELS / "gender_mini_XCEPTION.hdf5"), layer="add_4",
                                          value_range=(-1.0, 1.0), antialias=antialias))
    embed(open_dataset(SAMPLE), backbone, work / f"{name}.h5", EmbedSpec(batch_size=256))
    train_heads(TaskSpec(work / f"{name}.h5", HEAD_ATTRIBUTES), work / name)
    return work / name


def _decisions(entries):
    return np.array([[e["attributes"][a]["decision"] for a in HEAD_ATTRIBUTES] for e in entries])


def _agreement(run, truth, scenes_dir):
    """(found share, agreement [3] of matched faces, oracle agreement [3], seconds of predict_faces)."""
    from embed.faces import align, read_photo
    from heads.run.rundir import Run
    from heads.serve.predict import face_probabilities, predict_faces, predict_images, run_backbones
    originals = _decisions(predict_images(run, [SAMPLE / "img_align_celeba" / i for i in truth.image_id]))
    names = sorted(set(truth.scene))
    began = time.perf_counter()
    results = {r["image"].rsplit("/", 1)[-1]: r for r in predict_faces(run, [scenes_dir / n for n in names])}
    seconds = time.perf_counter() - began
    matched, oracle = [], []
    for k, item in enumerate(truth.itertuples(index=False)):
        true = np.array(item[5:], float).reshape(5, 2)
        errors = [np.linalg.norm(np.array(f["landmarks"]) - true, axis=1).mean() for f in results[item.scene]["faces"]]
        if errors and min(errors) < 39 * item.scale:
            matched.append((k, results[item.scene]["faces"][int(np.argmin(errors))]))
        oracle.append(align(read_photo(scenes_dir / item.scene, 10 ** 9)[0], true))
    loaded = Run(run)
    transform, head = loaded.load()
    p = face_probabilities(loaded, transform, head, run_backbones(loaded, False), np.stack(oracle))
    oracle_agree = ((p >= np.array(loaded.thresholds)).astype(int) == originals).mean(0)
    agree = (_decisions([f for _, f in matched]) == originals[[k for k, _ in matched]]).mean(0)
    return len(matched) / len(truth), agree, oracle_agree, seconds, len(names)


def _fmt(values):
    return " / ".join(f"{100 * v:.1f}" for v in values)


@group("faces", order=14)
def run(ctx):
    from embed.faces import MtcnnDetector, read_photo
    from embed.scenes import make_scenes
    from heads.serve.predict import predict_faces
    work = ctx.workdir / "faces"
    work.mkdir(parents=True, exist_ok=True)
    split = pd.read_csv(SAMPLE / "list_eval_partition.csv")
    ids = split[split.partition > 0].image_id.tolist()[:40 if ctx.quick else None]
    make_scenes([SAMPLE / "img_align_celeba" / i for i in ids], work / "scenes", seed=0, faces_per_scene=(1, 1, 1, 2, 3))
    truth = pd.read_csv(work / "scenes" / "faces.csv")
    rows = []
    for antialias in (True, False):
        run_dir = _head(work, antialias)
        found, agree, oracle, seconds, scenes = _agreement(run_dir, truth, work / "scenes" / "scenes")
        how = "--antialias" if antialias else "no --antialias (the default)"
        note = (f"{len(truth)} faces in {scenes} scenes from the real sample's val/test photos; gender CNN add_4, "
                f"embedded with {how}, default head; MTCNN, min face 40, 5 landmarks weighted equally")
        if antialias:
            rows.append(row("faces: faces found in scenes", round(100 * found, 2), "%", ">= 99 %", found >= 0.99,
                            note + f"; predict --faces {scenes / seconds:.1f} scenes/s"))
        rows.append(row(f"faces: decisions agreeing with the aligned originals, {how} (Male / Smiling / Young)",
                        _fmt(agree), "%", ">= 97 % each", bool((agree >= 0.97).all()), note))
        rows.append(row(f"faces: the same with an exact inverse warp (the ceiling), {how}", _fmt(oracle), "%", "", None,
                        "the scene warped back by the inverse of how each photo was pasted: what resampling and "
                        "JPEG alone cost"))
    photos = [read_photo(p, 10 ** 9)[0] for p in sorted((work / "scenes" / "scenes").glob("*.jpg"))]
    square = [p for p in photos if p.shape[:2] == (400, 400)][:64 if not ctx.quick else 8]
    for min_face in (20, 40):
        detector = MtcnnDetector(min_face=min_face)
        detector.detect(square[:2])
        began = time.perf_counter()
        for i in range(0, len(square), 32):
            detector.detect(square[i:i + 32])
        rate = len(square) / (time.perf_counter() - began)
        rows.append(row(f"faces: MTCNN detection, 400x400 scenes, min face {min_face}", round(rate, 1), "photos/s",
                        note=f"{len(square)} one-face scenes in batches of 32"))
    five = work / "five"
    make_scenes([SAMPLE / "img_align_celeba" / i for i in ids[:5]], five, seed=1, faces_per_scene=(5,),
                scale_range=(0.45, 0.8))
    for label, photo in (("1 face", sorted((work / "scenes" / "scenes").glob("*.jpg"))[0]),
                         ("5 faces", five / "scenes" / "00000.jpg")):
        detector = MtcnnDetector()
        predict_faces(work / "antialias", [photo], detector=detector)
        times = []
        for _ in range(3 if ctx.quick else 7):
            began = time.perf_counter()
            predict_faces(work / "antialias", [photo], detector=detector)
            times.append(time.perf_counter() - began)
        rows.append(row(f"faces: predict --faces latency, a photo with {label}", round(1000 * float(np.median(times))),
                        "ms", note="median of the calls after the first, in one process, the detector built once; "
                                   "each call loads the run and its backbone, as a predict command does"))
    return rows
