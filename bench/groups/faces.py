"""faces: `predict --faces` on scenes made from the real sample's val/test photos (one to three faces a scene, random scale 0.45-1.1, rotation +-25 degrees, textured background): faces found, decisions agreeing with `predict` on the aligned originals per attribute (and the ceiling an exact inverse warp reaches), with heads on the shared gender CNN's features embedded with and without --antialias; the detector's photos/s by minimum face size; predict latency for a photo with 1 and with 5 faces."""

import time

import numpy as np
import pandas as pd

from bench.common import HEAD_ATTRIBUTES, SAMPLE, group, row
from bench.groups.defaults import MODELS


def gender_head(work, antialias):
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


def _embed_rate(folder, align, batch_size):
    """images/s of one `embed` (keras:EfficientNetV2B0, random weights, 224 px) of folder's scenes,
    whole or --align, into a fresh cache."""
    from embed.backbones import BackboneSpec, load_backbone
    from embed.dataset import load_dataset
    from embed.faces import align_record
    from embed.runner import EmbedSpec, embed
    backbone = load_backbone(BackboneSpec("keras:EfficientNetV2B0", weights="none",
                                          align=align_record() if align else None))
    dataset = load_dataset(folder / "labels.csv", folder / "scenes")
    out = folder / f"rate_{align}.h5"
    summary = embed(dataset, backbone, out, EmbedSpec(batch_size=batch_size, overwrite=True))
    out.unlink()
    return summary.images_per_second


def _aligned_against_originals(work, originals_cache, quick):
    """Test accuracy per attribute of the default head on embed --align of one-face scenes of every
    sample image, and on the aligned originals (gender CNN add_4, --antialias)."""
    from embed.backbones import BackboneSpec, load_backbone
    from embed.dataset import load_dataset, open_dataset
    from embed.faces import align_record
    from embed.runner import EmbedSpec, embed
    from embed.scenes import make_scenes
    from heads.run.fit import train_heads
    from heads.run.task import TaskSpec
    dataset = open_dataset(SAMPLE)
    ids = dataset.image_ids[::20] if quick else dataset.image_ids
    folder = work / "one-face"
    make_scenes([SAMPLE / "img_align_celeba" / i for i in ids], folder, seed=2, dataset=dataset)
    backbone = load_backbone(BackboneSpec(str(MODELS / "gender_mini_XCEPTION.hdf5"), layer="add_4",
                                          value_range=(-1.0, 1.0), antialias=True, align=align_record()))
    summary = embed(load_dataset(folder / "labels.csv", folder / "scenes"), backbone, work / "aligned.h5",
                    EmbedSpec(batch_size=64))
    scores = {}
    for name, cache in (("aligned", work / "aligned.h5"), ("originals", originals_cache)):
        metrics = train_heads(TaskSpec(cache, HEAD_ATTRIBUTES), work / f"run_{name}")
        scores[name] = np.array([metrics["attributes"][a]["test"]["accuracy"] for a in HEAD_ATTRIBUTES])
    return scores, summary, folder


def _video_rate(work, ids, frames):
    """predict --video frames/s on a generated 640x480 video with two real faces moving across it."""
    import cv2

    from embed.faces import read_photo
    from embed.scenes import texture
    from heads.serve.video import predict_video
    faces = [read_photo(SAMPLE / "img_align_celeba" / i, 10 ** 8)[0] for i in ids]
    wall = texture(np.random.default_rng(7), 480, 640)
    path = work / "walk.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    for k in range(frames):
        frame = wall.copy()
        for j, face in enumerate(faces):
            x, y = 40 + 300 * j + (k % 60), 60 + 2 * (k % 60)
            frame[y:y + 218, x:x + 178] = face
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()
    out = work / "walk_annotated.mp4"
    if out.exists():
        out.unlink()
    result = predict_video(work / "antialias", path, out)
    return row("faces: predict --video, 640x480, two faces a frame", round(result["frames_per_second"], 1),
               "frames/s", note=f"{result['frames']} frames, {result['faces']} faces found (of "
                                f"{2 * result['frames']}), read, detected, aligned, predicted, drawn and written; "
                                "gender CNN head; the run loaded once")


def _decisions(entries):
    return np.array([[e["attributes"][a]["decision"] for a in HEAD_ATTRIBUTES] for e in entries])


def _agreement(run, truth, scenes_dir, aligner=None):
    """(found share, agreement [3] of matched faces, oracle agreement [3], seconds of predict_faces,
    scenes, (accuracy [3] of the matched faces' decisions, of their aligned originals' decisions)
    against the true labels)."""
    from embed.dataset import open_dataset
    from embed.faces import align, read_photo
    from heads.run.rundir import Run
    from heads.serve.predict import face_probabilities, predict_faces, predict_images, run_backbones
    originals = _decisions(predict_images(run, [SAMPLE / "img_align_celeba" / i for i in truth.image_id]))
    names = sorted(set(truth.scene))
    began = time.perf_counter()
    results = {r["image"].rsplit("/", 1)[-1]: r for r in predict_faces(run, [scenes_dir / n for n in names],
                                                                         aligner=aligner)}
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
    found = _decisions([f for _, f in matched])
    agree = (found == originals[[k for k, _ in matched]]).mean(0)
    dataset = open_dataset(SAMPLE)
    label_of = dict(zip(dataset.image_ids, dataset.labels[:, [dataset.attribute_names.index(a) for a in HEAD_ATTRIBUTES]]))
    labels = np.array([label_of[truth.image_id[k]] for k, _ in matched]).astype(int)
    accuracy = ((found == labels).mean(0), (originals[[k for k, _ in matched]] == labels).mean(0))
    return len(matched) / len(truth), agree, oracle_agree, seconds, len(names), accuracy


def _main_face(work, ids, quick):
    """Scenes with two real faces: the photo's subject large near the middle (scale 0.8-1.1), and
    another person smaller at the side (scale 0.45-0.65: a passer-by, large enough for `--min-face
    40` and `--min-score` to keep it in most scenes). How often each face rule puts
    the subject first (the face `embed --align` embeds): {rule: share}, and the scenes counted."""
    import cv2

    from embed.faces import FACE_RULES, TEMPLATE, MtcnnDetector, ranked
    from embed.scenes import paste, texture
    rng = np.random.default_rng(7)
    detector = MtcnnDetector()
    hits, counted = {rule: 0 for rule in FACE_RULES}, 0
    pairs = list(zip(ids[0::2], ids[1::2]))[:12 if quick else 150]
    for subject, other in pairs:
        scene = texture(rng, 480, 720)
        truths = []
        for image_id, cell, scales in ((subject, (200, 700), (0.8, 1.1)), (other, (0, 190), (0.45, 0.65))):
            face = cv2.cvtColor(cv2.imread(str(SAMPLE / "img_align_celeba" / image_id)), cv2.COLOR_BGR2RGB)
            _, _, matrix = paste(scene, face, rng, cell, scales, 15.0)
            truths.append(TEMPLATE @ matrix[:, :2].T + matrix[:, 2])
        found = detector.detect([scene])[0]
        if len(found) < 2:  # the rule only matters where both faces were found
            continue
        counted += 1
        for rule in FACE_RULES:
            first = ranked(found, rule, scene.shape)[0]
            hits[rule] += np.linalg.norm(first.landmarks - truths[0], axis=1).mean() < 20
    return {rule: hit / max(counted, 1) for rule, hit in hits.items()}, counted, len(pairs)


def _min_score(work, truth, quick):
    """Scores of the faces MTCNN finds (min face 40, last-stage threshold 0.5), with and without the
    mirror check: in the scenes (each matched to its pasted face), on the aligned sample photos
    themselves (close-ups), and in textured photos without a face. Returns rows: per threshold the
    share of faces kept in scenes and close-ups and the false faces left in the noise photos."""
    from embed.defaults import FACE_DEFAULTS
    from embed.faces import MtcnnDetector, read_photo
    from embed.scenes import texture
    names = sorted(set(truth.scene))[:60 if quick else None]
    paths = sorted((SAMPLE / "img_align_celeba").glob("*.jpg"))[:100 if quick else None]
    noise_counts = (((750, 1000), 11, 12 if quick else 120), ((3000, 4000), 11, 1 if quick else 6),
                    ((750, 1000), 12, 12 if quick else 400))
    rows = []
    for mirror in (0.0, FACE_DEFAULTS["mirror_score"]):
        detector = MtcnnDetector(min_score=0.5, mirror_score=mirror)
        scene_scores = []
        for k in range(0, len(names), 32):
            photos = [read_photo(work / "scenes" / "scenes" / n, 10 ** 9)[0] for n in names[k:k + 32]]
            for name, faces in zip(names[k:k + 32], detector.detect(photos)):
                for item in truth[truth.scene == name].itertuples(index=False):
                    true = np.array(item[5:], float).reshape(5, 2)
                    near = [f.score for f in faces
                            if np.linalg.norm(f.landmarks - true, axis=1).mean() < 39 * item.scale]
                    scene_scores.append(max(near, default=0.0))
        closeups = []
        for k in range(0, len(paths), 64):
            found = detector.detect([read_photo(p, 10 ** 9)[0] for p in paths[k:k + 64]])
            closeups += [max((f.score for f in faces), default=0.0) for faces in found]
        noise, photos_without = [], 0
        for (height, width), seed, count in noise_counts:
            rng = np.random.default_rng(seed)
            for _ in range(count):
                noise += [f.score for f in detector.detect([texture(rng, height, width)])[0]]
            photos_without += count
        scene_scores, closeups, noise = map(np.array, (scene_scores, closeups, noise))
        for threshold in (0.8, 0.9, 0.95) if mirror else (0.8,):
            kept, close = (scene_scores >= threshold).mean(), (closeups >= threshold).mean()
            false = int((noise >= threshold).sum())
            default = threshold == FACE_DEFAULTS["min_score"] and mirror == FACE_DEFAULTS["mirror_score"]
            rows.append(row(f"faces: --min-score {threshold:g} --min-mirror-score {mirror:g}"
                            f"{' (the defaults)' if default else ''}: faces kept in scenes / close-ups, false faces "
                            "in noise photos", f"{100 * kept:.1f} / {100 * close:.1f} / {false}", "% / % / faces",
                            ">= 99 % of scene faces, no false face" if default else "",
                            bool(kept >= 0.99 and false == 0) if default else None,
                            f"{len(scene_scores)} faces in {len(names)} scenes, {len(closeups)} aligned sample photos, "
                            f"{photos_without} textured photos without a face ({noise_counts[0][2] + noise_counts[2][2]} "
                            f"at 1000x750, {noise_counts[1][2]} at 4000x3000); MTCNN, min face 40 (a box under it on "
                            "its longer side dropped); --min-mirror-score: ONet's score of the box mirrored"))
    return rows


def _fmt(values):
    return " / ".join(f"{100 * v:.1f}" for v in values)


@group("faces", order=14)
def run(ctx):
    from embed.faces import Aligner, MtcnnDetector, align_record, read_photo
    from embed.scenes import make_scenes
    from heads.serve.predict import Predictor
    work = ctx.workdir / "faces"
    work.mkdir(parents=True, exist_ok=True)
    split = pd.read_csv(SAMPLE / "list_eval_partition.csv")
    ids = split[split.partition > 0].image_id.tolist()[:40 if ctx.quick else None]
    make_scenes([SAMPLE / "img_align_celeba" / i for i in ids], work / "scenes", seed=0, faces_per_scene=(1, 1, 1, 2, 3))
    truth = pd.read_csv(work / "scenes" / "faces.csv")
    rows = []
    for antialias in (True, False):
        run_dir = gender_head(work, antialias)
        found, agree, oracle, seconds, scenes, (accuracy, original) = _agreement(run_dir, truth,
                                                                                 work / "scenes" / "scenes")
        how = "--antialias" if antialias else "no --antialias (the default)"
        note = (f"{len(truth)} faces in {scenes} scenes from the real sample's val/test photos; gender CNN add_4, "
                f"embedded with {how}, default head; MTCNN, min face 40, --landmark-fit eyes-mouth (the default: both eyes and the mouth's "
                f"centre)")
        if antialias:
            rows.append(row("faces: faces found in scenes", round(100 * found, 2), "%", ">= 99 %", found >= 0.99,
                            note + f"; predict --faces {scenes / seconds:.1f} scenes/s"))
        rows.append(row(f"faces: decisions agreeing with the aligned originals, {how} (Male / Smiling / Young)",
                        _fmt(agree), "%", ">= 97 % each", bool((agree >= 0.97).all()), note))
        gap = accuracy - original
        rows.append(row(f"faces: predict --faces accuracy on scenes minus the aligned originals', {how} (Male / Smiling "
                        "/ Young)", " / ".join(f"{100 * g:+.1f}" for g in gap), "points", ">= -1.5 each",
                        bool((gap >= -0.015).all()), f"the same faces against their true labels: scenes {_fmt(accuracy)}, "
                        f"originals {_fmt(original)} %"))
        rows.append(row(f"faces: the same with an exact inverse warp (the ceiling), {how}", _fmt(oracle), "%", "", None,
                        "the scene warped back by the inverse of how each photo was pasted: what resampling and "
                        "JPEG alone cost"))
    for fit, refine in (("five", False), ("five", True), ("eyes-mouth", True)):
        aligner = Aligner.from_record(align_record(refine=refine, fit=fit))
        _, agree, _, seconds, scenes, (accuracy, original) = _agreement(work / "antialias", truth,
                                                                        work / "scenes" / "scenes", aligner)
        rows.append(row(f"faces: agreement with --landmark-fit {fit}{' --refine-landmarks' if refine else ''}, "
                        "--antialias", _fmt(agree), "%", ">= 97 % each", bool((agree >= 0.97).all()),
                        f"as above; five: the five landmarks weighted 1/1/0.3/0.3/0.3 (eyes, nose, mouth corners), "
                        f"the default before session 22; accuracy minus the originals' "
                        + " / ".join(f"{100 * g:+.1f}" for g in accuracy - original)
                        + f" points; predict --faces {scenes / seconds:.1f} scenes/s"))
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
    scores, summary, folder = _aligned_against_originals(work, work / "antialias.h5", ctx.quick)
    gap = scores["aligned"] - scores["originals"]
    rows.append(row("faces: embed --align of one-face scenes, test accuracy minus the aligned originals' "
                    "(Male / Smiling / Young)", " / ".join(f"{100 * g:+.1f}" for g in gap), "points", ">= -1 each",
                    bool((gap >= -0.01).all()),
                    f"{summary.rows_ok} scenes of every sample image, {summary.rows_failed} without a face found; "
                    f"default head on the gender CNN's add_4 (--antialias); aligned "
                    f"{' / '.join(f'{100 * v:.1f}' for v in scores['aligned'])}, originals "
                    f"{' / '.join(f'{100 * v:.1f}' for v in scores['originals'])} %"))
    rates = {True: [], False: []}
    for _ in range(1 if ctx.quick else 3):  # paired, alternating rounds
        for align in (False, True):
            rates[align].append(_embed_rate(folder, align, ctx.size["embed_batch"]))
    ratio = float(np.median(np.array(rates[True]) / np.array(rates[False])))
    rows.append(row("faces: embed --align / plain embed, images/s (EfficientNetV2B0 at 224, random weights)",
                    round(ratio, 3), "ratio", ">= 0.6", ratio >= 0.6,
                    f"{len(pd.read_csv(folder / 'labels.csv'))} one-face 400x400 scenes; median of paired rounds: "
                    + ", ".join(f"{a:.1f}/{p:.1f}" for a, p in zip(rates[True], rates[False])) + " images/s"))
    rows += _min_score(work, truth, ctx.quick)
    shares, counted, scenes = _main_face(work, ids, ctx.quick)
    rows.append(row("faces: the subject first in two-face scenes, by face rule (main / best / largest / central)",
                    " / ".join(f"{100 * shares[r]:.1f}" for r in ("main", "best", "largest", "central")), "%",
                    "main >= 99 %", shares["main"] >= 0.99,
                    f"{counted} of {scenes} scenes where MTCNN found both faces: the subject at scale 0.8-1.1 in "
                    "the middle, another sample face at 0.45-0.65 at the side; main (the default) = box area minus "
                    "twice the squared distance from the centre"))
    rows.append(_video_rate(work, ids[:2], 16 if ctx.quick else 120))
    five = work / "five"
    make_scenes([SAMPLE / "img_align_celeba" / i for i in ids[:5]], five, seed=1, faces_per_scene=(5,),
                scale_range=(0.45, 0.8))
    predictor = Predictor(work / "antialias")
    for label, photo in (("1 face", sorted((work / "scenes" / "scenes").glob("*.jpg"))[0]),
                         ("5 faces", five / "scenes" / "00000.jpg")):
        items = [(str(photo), *read_photo(photo, 10 ** 9))]
        predictor.entries(items)
        times = []
        for _ in range(3 if ctx.quick else 15):
            began = time.perf_counter()
            predictor.entries([(str(photo), *read_photo(photo, 10 ** 9))])
            times.append(time.perf_counter() - began)
        rows.append(row(f"faces: predict --faces latency, a {items[0][1].shape[1]}x{items[0][1].shape[0]} photo with "
                        f"{label}", round(1000 * float(np.median(times))), "ms",
                        note="median of 15 calls after the first: read, detect, align, backbone, head; the run "
                             "loaded once (a predict command adds its start-up and loading)"))
    return rows
