"""Photos with faces in them, made from aligned face images: each image pasted into a textured
scene at a random scale, rotation and position, one to three faces a scene, with the truth
recorded. For tests, benchmarks and the docs' offline example of `predict --faces` and
`embed --align`: an aligned image's attributes are known, so a face found in a scene can be
scored against them.

Layout written by `make_scenes(images, out, ...)`:
  OUT/scenes/NNNNN.jpg   the scenes (JPEG, quality 95), HEIGHT x WIDTH
  OUT/faces.csv          one row per pasted face: scene, face (0-based, left to right), image_id
                         (the source image's name), scale, angle (degrees), then the five template
                         landmarks mapped into the scene (left_eye_x, left_eye_y, ..., mouth_right_y)
  OUT/labels.csv         given the source images' Dataset: image_id (the scene's file name),
                         partition, then every attribute as -1/1, for each scene of one face (its
                         source image's labels and split): `embed --labels OUT/labels.csv --images
                         OUT/scenes --align` embeds them
"""

import csv
import os
from pathlib import Path

import numpy as np

from cache.errors import UsageError, UserError
from embed.faces import FRAME, LANDMARKS, TEMPLATE

SCENE_SIZE = 400  # a one-face scene is SCENE_SIZE x SCENE_SIZE; k faces sit side by side, k x as wide


def parse_faces_per_scene(text):
    """`--faces-per-scene 1,1,2,3` -> (1, 1, 2, 3); each 1 to 5. UsageError otherwise."""
    try:
        counts = tuple(int(part) for part in str(text).split(","))
    except ValueError:
        raise UsageError(f"--faces-per-scene: {text!r} is not a comma-separated list of whole numbers") from None
    if not counts or not all(1 <= c <= 5 for c in counts):
        raise UsageError(f"--faces-per-scene: {text!r}: each count must be 1 to 5")
    return counts


def texture(rng, height, width):
    """A textured background uint8 [H, W, 3]: oriented gratings, smooth colour blobs and noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.zeros((height, width, 3), np.float32)
    for _ in range(4):
        angle, period = rng.uniform(0, np.pi), rng.uniform(6, 60)
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period + rng.uniform(0, 6.3))
        image += wave[..., None] * rng.uniform(10, 35, 3)
    coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
    import cv2
    image += cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC) - 128
    image += rng.normal(0, 8, image.shape)
    return np.clip(image + 128, 0, 255).astype(np.uint8)


def paste(scene, face, rng, cell, scale_range, max_angle):
    """Paste face (uint8 [218, 178, 3]) into scene in place, inside the cell (x0, x1) of columns, at
    a random scale, rotation and position that keep the whole pasted photo inside. Returns (scale,
    angle, the [2, 3] matrix from face to scene pixels)."""
    import cv2
    height, (x0, x1) = scene.shape[0], cell
    width = x1 - x0
    for _ in range(100):
        scale, angle = rng.uniform(*scale_range), rng.uniform(-max_angle, max_angle)
        centre = np.array([(FRAME[0] - 1) / 2, (FRAME[1] - 1) / 2])
        matrix = cv2.getRotationMatrix2D(tuple(centre), angle, scale)
        corners = np.array([[0, 0], [FRAME[0] - 1, 0], [0, FRAME[1] - 1], [FRAME[0] - 1, FRAME[1] - 1]], np.float64)
        mapped = corners @ matrix[:, :2].T + matrix[:, 2]
        span = mapped.max(0) - mapped.min(0)
        if span[0] < width - 2 and span[1] < height - 2:
            break
    else:
        raise ValueError(f"a face cannot fit a {width}x{height} cell at scales {scale_range}")
    shift = np.array([rng.uniform(x0 + 1, x1 - 1 - span[0]), rng.uniform(1, height - 1 - span[1])]) - mapped.min(0)
    matrix[:, 2] += shift
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpAffine(face, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.full(face.shape[:2], 255, np.uint8), matrix, size, flags=cv2.INTER_LINEAR)
    alpha = (mask.astype(np.float32) / 255)[..., None]
    scene[:] = np.round(alpha * warped + (1 - alpha) * scene).astype(np.uint8)
    return scale, angle, matrix


def make_scenes(images, out, *, seed=0, faces_per_scene=(1,), scale_range=(0.45, 1.1), max_angle=25.0,
                quality=95, dataset=None):
    """Paste each aligned image (a path, 178 x 218) into a scene, in order, grouping them
    faces_per_scene[k % len] at a time (k: the scene's number). Writes OUT/scenes and OUT/faces.csv,
    and with dataset (an embed.dataset.Dataset holding the images' labels) OUT/labels.csv (module
    docstring); returns the path of faces.csv. Written in a temporary folder beside OUT and renamed
    into place when whole: an unreadable image leaves nothing behind. OUT must be new or empty."""
    import shutil
    import tempfile
    rng = np.random.default_rng(seed)
    final = Path(out)
    final.parent.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))  # renamed into place when whole
    (out / "scenes").mkdir()
    try:
        _fill(images, out, rng, faces_per_scene, scale_range, max_angle, quality, dataset)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    if final.exists():
        final.rmdir()  # new or empty (cache.outputs)
    os.replace(out, final)
    return final / "faces.csv"


def _fill(images, out, rng, faces_per_scene, scale_range, max_angle, quality, dataset):
    """Write the scenes, faces.csv and (with dataset) labels.csv into out."""
    import cv2

    from embed.faces import read_photo
    images = [Path(i) for i in images]
    rows, start, number = [], 0, 0
    while start < len(images):
        group = images[start:start + faces_per_scene[number % len(faces_per_scene)]]
        start += len(group)
        width = SCENE_SIZE * len(group)
        scene = texture(rng, SCENE_SIZE, width)
        name = f"{number:05d}.jpg"
        for k, path in enumerate(group):
            face, error = read_photo(path, 10 ** 8)
            if face is None:
                raise UserError(f"{path}: {error}")
            face = cv2.resize(face, FRAME) if face.shape[:2] != (FRAME[1], FRAME[0]) else face
            scale, angle, matrix = paste(scene, face, rng, (k * SCENE_SIZE, (k + 1) * SCENE_SIZE), scale_range,
                                         max_angle)
            landmarks = TEMPLATE @ matrix[:, :2].T + matrix[:, 2]
            rows.append([name, k, path.name, round(scale, 4), round(angle, 3),
                         *np.round(landmarks, 3).ravel().tolist()])
        cv2.imwrite(str(out / "scenes" / name), scene[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        number += 1
    if dataset is not None:
        _write_scene_labels(rows, dataset, out / "labels.csv")
    with open(out / "faces.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["scene", "face", "image_id", "scale", "angle",
                         *[f"{name}_{axis}" for name in LANDMARKS for axis in "xy"]])
        writer.writerows(rows)


def _write_scene_labels(rows, dataset, path):
    """labels.csv for the scenes of one face: their source image's labels and partition."""
    by_name = {Path(i).name: k for k, i in enumerate(dataset.image_ids)}
    per_scene = {}
    for row in rows:
        per_scene.setdefault(row[0], []).append(row[2])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_id", "partition", *dataset.attribute_names])
        for scene, sources in per_scene.items():
            if len(sources) != 1:
                continue
            if sources[0] not in by_name:
                raise UserError(f"{sources[0]}: no label row in {dataset.sources.get('labels')}")
            k = by_name[sources[0]]
            writer.writerow([scene, int(dataset.partition[k]), *(2 * dataset.labels[k].astype(int) - 1)])
