"""`make-sample`: a synthetic dataset in the CelebA layout whose labels are visible in the pixels.

Writes into out_dir:
  img_align_celeba/000001.jpg ...   178x218 RGB JPEGs (CelebA's aligned size)
  list_attr_celeba.txt              CelebA text format, CRLF line ends
  list_attr_celeba.csv              Kaggle CSV format, LF line ends
  list_eval_partition.txt / .csv    first 80 % train, next 10 % val, rest test (like CelebA)

Each image encodes its labels: an 8 x 5 grid of cells, one per attribute in CelebA's order, holds
a bright square where the attribute is positive; on top, three global cues survive global pooling:
Young -> brighter background, Male -> blue rather than red tint, Smiling -> horizontal stripes in
the lower third. Labels are drawn independently with CelebA's positive rates; pixels get
uniform noise (std 10). Each image also gets an identity of its own, as each photo has: a smooth
gray field of mean 0 (bilinear over an 8 x 8 grid of offsets in -50..50, drawn from its own
stream), so no two images look alike to a backbone even where their labels agree. Same seed, same files: the noise is drawn in file order, while the
drawing, JPEG encoding and writing run on every core.

Planted truth for `audit` (each recorded in a CSV beside the images):
  --label-noise RATE  flips each of the 40 labels of each image with probability RATE in the label
                      files; the pixels show the true labels. planted_label_flips.csv: image_id,
                      attribute, true_label, given_label.
  --duplicates N      N more images, each a copy of an earlier one put in another split (a train
                      image's copy in val or test, a val or test image's in train) with the same
                      given labels; every second copy is re-encoded at JPEG quality 70 after a crop
                      of 2 % per side resized back. planted_duplicates.csv: image_id, source_id,
                      copy ("exact" or "reencoded"), split, source_split.
"""

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from embed.defaults import SAMPLE

# CelebA's 40 attributes in file order, with their positive rate over the full dataset.
CELEBA_ATTRIBUTES = {
    "5_o_Clock_Shadow": 0.11, "Arched_Eyebrows": 0.27, "Attractive": 0.51, "Bags_Under_Eyes": 0.20,
    "Bald": 0.02, "Bangs": 0.15, "Big_Lips": 0.24, "Big_Nose": 0.23, "Black_Hair": 0.24,
    "Blond_Hair": 0.15, "Blurry": 0.05, "Brown_Hair": 0.21, "Bushy_Eyebrows": 0.14, "Chubby": 0.06,
    "Double_Chin": 0.05, "Eyeglasses": 0.07, "Goatee": 0.06, "Gray_Hair": 0.04, "Heavy_Makeup": 0.39,
    "High_Cheekbones": 0.46, "Male": 0.42, "Mouth_Slightly_Open": 0.48, "Mustache": 0.04,
    "Narrow_Eyes": 0.12, "No_Beard": 0.83, "Oval_Face": 0.28, "Pale_Skin": 0.04, "Pointy_Nose": 0.28,
    "Receding_Hairline": 0.08, "Rosy_Cheeks": 0.07, "Sideburns": 0.06, "Smiling": 0.48,
    "Straight_Hair": 0.21, "Wavy_Hair": 0.32, "Wearing_Earrings": 0.19, "Wearing_Hat": 0.05,
    "Wearing_Lipstick": 0.47, "Wearing_Necklace": 0.12, "Wearing_Necktie": 0.07, "Young": 0.77,
}
WIDTH, HEIGHT = 178, 218
GRID_ROWS, GRID_COLS = 8, 5


def draw_noise(rng):
    """int16 [HEIGHT, WIDTH, 3] uniform noise in -17..17 (std 10; 8x faster to draw than Gaussian)."""
    return rng.integers(-17, 18, (HEIGHT, WIDTH, 3), dtype=np.int16)


IDENTITY_CELLS, IDENTITY_AMPLITUDE = 8, 50


def _interpolation(size):
    """float64 [size, IDENTITY_CELLS]: linear interpolation weights from the grid's values to `size`
    evenly spaced points (what np.interp computes, as a matrix)."""
    points = np.linspace(0, IDENTITY_CELLS - 1, size)
    left = np.minimum(np.floor(points).astype(int), IDENTITY_CELLS - 2)
    weights = np.zeros((size, IDENTITY_CELLS))
    weights[np.arange(size), left] = 1 - (points - left)
    weights[np.arange(size), left + 1] = points - left
    return weights


DOWN, ACROSS = _interpolation(HEIGHT), _interpolation(WIDTH)


def draw_identity(rng):
    """int16 [HEIGHT, WIDTH, 1]: a smooth gray offset field of mean 0, bilinear between an
    IDENTITY_CELLS x IDENTITY_CELLS grid of values in -IDENTITY_AMPLITUDE..IDENTITY_AMPLITUDE (two
    small matrix products: 0.45 ms here, where 186 np.interp calls took 3.4; the same field)."""
    cells = rng.uniform(-IDENTITY_AMPLITUDE, IDENTITY_AMPLITUDE, (IDENTITY_CELLS, IDENTITY_CELLS))
    field = DOWN @ cells @ ACROSS.T
    return np.round(field - field.mean()).astype(np.int16)[..., None]


def draw_face(labels, noise, hidden=None):
    """uint8 [HEIGHT, WIDTH, 3] image showing the 40 0/1 `labels` (CelebA order), plus `noise` from
    draw_noise; the attribute named `hidden`, if any, gets no square (its label is not visible)."""
    names = list(CELEBA_ATTRIBUTES)
    label = dict(zip(names, labels))
    image = np.full((HEIGHT, WIDTH, 3), 150.0 if label["Young"] else 90.0, np.float32)  # float32: 3x faster
    image[..., 2 if label["Male"] else 0] += 50.0
    if label["Smiling"]:
        image[150:200:6] += 60.0
        image[151:200:6] += 60.0
    cell_h, cell_w = HEIGHT // GRID_ROWS, WIDTH // GRID_COLS
    for k, positive in enumerate(labels):
        if positive and names[k] != hidden:
            top, left = (k // GRID_COLS) * cell_h + cell_h // 4, (k % GRID_COLS) * cell_w + cell_w // 4
            image[top:top + cell_h // 2, left:left + cell_w // 2] = 245.0
    image += noise
    return np.clip(image, 0, 255, out=image).astype(np.uint8)


def parse_spurious(text):
    """'TARGET:GROUP:RATE' -> (target, group, rate); UsageError names what is wrong."""
    import difflib

    from cache.errors import UsageError
    parts = str(text).split(":")
    if len(parts) != 3:
        raise UsageError(f"--spurious {text!r}: expected TARGET:GROUP:RATE, e.g. Blond_Hair:Male:0.95")
    target, group, rate = parts
    for name in (target, group):
        if name not in CELEBA_ATTRIBUTES:
            close = difflib.get_close_matches(name, list(CELEBA_ATTRIBUTES), n=1, cutoff=0.5)
            raise UsageError(f"--spurious: unknown attribute {name!r}" + (f" (did you mean {close[0]}?)" if close else ""))
    if target == group:
        raise UsageError("--spurious: TARGET and GROUP must differ")
    try:
        rate = float(rate)
    except ValueError:
        rate = -1.0
    if not 0.0 <= rate <= 1.0:
        raise UsageError(f"--spurious {text!r}: RATE must be a number in [0, 1]")
    return target, group, rate


SPURIOUS_CUE_RATE = 0.7  # with --spurious, the target's square shows in this share of its positives


def plant_spurious(labels, train_rows, spurious, rng):
    """In `train_rows`, set the target attribute to agree with the group attribute at `rate`; other
    rows keep labels drawn independently (so in val and test the two are unrelated)."""
    names = list(CELEBA_ATTRIBUTES)
    target, group, rate = spurious
    t, g = names.index(target), names.index(group)
    agree = rng.random(len(labels)) < rate
    planted = np.where(agree, labels[:, g], 1 - labels[:, g])
    labels[train_rows, t] = planted[train_rows]
    return labels


def make_sample(out_dir, n=SAMPLE["n"], seed=SAMPLE["seed"], spurious=None, label_noise=0.0, duplicates=0):
    """Write an n-image synthetic CelebA-layout dataset into out_dir (n + duplicates images with
    --duplicates); returns the true labels [n, 40] of the first n. spurious: (target, group, rate)
    from `parse_spurious`, planting a correlation in train only; the target's square then shows in
    SPURIOUS_CUE_RATE of its positive images only. label_noise, duplicates: planted truth (module
    docstring)."""
    import tensorflow as tf

    if n < 10:
        raise ValueError("a sample needs at least 10 images (train, val and test)")
    if not 0.0 <= label_noise < 0.5:
        raise ValueError("label_noise must be in [0, 0.5)")
    if not 0 <= duplicates <= n:
        raise ValueError("duplicates must be in [0, n]")
    out = Path(out_dir)
    images = out / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(CELEBA_ATTRIBUTES)
    labels = (rng.random((n, len(names))) < np.array(list(CELEBA_ATTRIBUTES.values()))).astype(np.uint8)
    train_rows = np.arange(n) < int(n * 0.8)
    if spurious:
        labels = plant_spurious(labels, train_rows, spurious, rng)
    # With a planted correlation the target's own cue is imperfect, as in real faces: its square
    # shows in SPURIOUS_CUE_RATE of the positives, so the group's strong global cue is the shortcut
    # a plain head takes.
    hidden = (rng.random(n) >= SPURIOUS_CUE_RATE) if spurious else np.zeros(n, bool)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]

    def write(path, row, noise, hidden_attribute):
        path.write_bytes(tf.io.encode_jpeg(draw_face(row, noise, hidden_attribute), quality=90).numpy())

    identity_rng = np.random.default_rng([seed, 3])  # its own stream: labels and noise are drawn as before
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        pending = deque()  # at most 64 images in flight: memory stays flat for any n
        for image_id, row, hide in zip(ids, labels, hidden):
            pending.append(pool.submit(write, images / image_id, row, draw_noise(rng) + draw_identity(identity_rng), spurious[0] if hide else None))
            if len(pending) > 64:
                pending.popleft().result()
        for done in pending:
            done.result()
    partition = np.where(train_rows, 0, 1).astype(np.int8)
    partition[int(n * 0.9):] = 2
    given = labels
    if label_noise:
        noise_rng = np.random.default_rng([seed, 1])  # its own stream: the images are the same with or without
        flips = noise_rng.random(labels.shape) < label_noise
        given = np.where(flips, 1 - labels, labels).astype(np.uint8)
        rows, columns = np.nonzero(flips)
        (out / "planted_label_flips.csv").write_text("image_id,attribute,true_label,given_label\n" + "".join(
            f"{ids[r]},{names[c]},{labels[r, c]},{given[r, c]}\n" for r, c in zip(rows, columns)))
    if duplicates:
        ids, given, partition = plant_duplicates(out, images, ids, given, partition, duplicates, seed)
    write_label_files(out, names, ids, given, partition)
    return labels


def write_label_files(out, names, ids, given, partition):
    """CelebA's attribute and partition files, text and CSV, for ids with 0/1 labels given [n, 40]
    (columns `names`) and partition 0/1/2."""
    signed = np.where(given == 1, "1", "-1")
    text = [str(len(ids)), " ".join(names)] + [f"{i} " + " ".join(f"{v:>2}" for v in row) for i, row in zip(ids, signed)]
    (out / "list_attr_celeba.txt").write_bytes(("\r\n".join(text) + "\r\n").encode())
    csv = ["image_id," + ",".join(names)] + [f"{i}," + ",".join(row) for i, row in zip(ids, signed)]
    (out / "list_attr_celeba.csv").write_text("\n".join(csv) + "\n")
    (out / "list_eval_partition.txt").write_bytes(
        "".join(f"{i} {p}\r\n" for i, p in zip(ids, partition)).encode())
    (out / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{i},{p}\n" for i, p in zip(ids, partition)))


DUPLICATE_QUALITY, DUPLICATE_CROP = 70, 0.02


def plant_duplicates(out, images, ids, given, partition, count, seed, first_new=None):
    """Copy `count` of the images in folder `images` (module docstring: --duplicates) as ids after
    the last (or from first_new); writes out/planted_duplicates.csv and returns ids, given labels
    and partition with the copies appended."""
    import tensorflow as tf

    rng = np.random.default_rng([seed, 2])
    sources = np.sort(rng.choice(len(ids), count, replace=False))
    n = len(ids)
    first_new = n + 1 if first_new is None else first_new
    new_ids = [f"{i:06d}.jpg" for i in range(first_new, first_new + count)]
    new_partition = np.where(partition[sources] == 0, rng.choice([1, 2], count), 0).astype(np.int8)
    lines = ["image_id,source_id,copy,split,source_split"]
    split_name = {0: "train", 1: "val", 2: "test"}
    for k, (source, copy_id) in enumerate(zip(sources, new_ids)):
        data = (images / ids[source]).read_bytes()
        reencoded = k % 2 == 1
        if reencoded:
            image = tf.io.decode_jpeg(data)
            height, width = int(image.shape[0]), int(image.shape[1])
            dy, dx = int(round(height * DUPLICATE_CROP)), int(round(width * DUPLICATE_CROP))
            cropped = tf.image.resize(image[dy:height - dy, dx:width - dx], (height, width))
            data = tf.io.encode_jpeg(tf.cast(tf.clip_by_value(tf.round(cropped), 0, 255), tf.uint8),
                                     quality=DUPLICATE_QUALITY).numpy()
        (images / copy_id).write_bytes(data)
        lines.append(f"{copy_id},{ids[source]},{'reencoded' if reencoded else 'exact'},"
                     f"{split_name[int(new_partition[k])]},{split_name[int(partition[source])]}")
    (out / "planted_duplicates.csv").write_text("\n".join(lines) + "\n")
    return (ids + new_ids, np.concatenate([given, given[sources]]),
            np.concatenate([partition, new_partition]))
