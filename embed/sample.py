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
Gaussian noise. Same seed, same files.
"""

from pathlib import Path

import numpy as np

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


def draw_face(labels, rng):
    """uint8 [HEIGHT, WIDTH, 3] image showing the 40 0/1 `labels` (CelebA order)."""
    names = list(CELEBA_ATTRIBUTES)
    label = dict(zip(names, labels))
    image = np.full((HEIGHT, WIDTH, 3), 150.0 if label["Young"] else 90.0)
    image[..., 2 if label["Male"] else 0] += 50.0
    if label["Smiling"]:
        image[150:200:6] += 60.0
        image[151:200:6] += 60.0
    cell_h, cell_w = HEIGHT // GRID_ROWS, WIDTH // GRID_COLS
    for k, positive in enumerate(labels):
        if positive:
            top, left = (k // GRID_COLS) * cell_h + cell_h // 4, (k % GRID_COLS) * cell_w + cell_w // 4
            image[top:top + cell_h // 2, left:left + cell_w // 2] = 245.0
    image += rng.normal(0.0, 10.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def make_sample(out_dir, n=512, seed=0):
    """Write an n-image synthetic CelebA-layout dataset into out_dir; returns the labels [n, 40]."""
    import tensorflow as tf

    if n < 10:
        raise ValueError("a sample needs at least 10 images (train, val and test)")
    out = Path(out_dir)
    images = out / "img_align_celeba"
    images.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(CELEBA_ATTRIBUTES)
    labels = (rng.random((n, len(names))) < np.array(list(CELEBA_ATTRIBUTES.values()))).astype(np.uint8)
    ids = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for image_id, row in zip(ids, labels):
        jpeg = tf.io.encode_jpeg(draw_face(row, rng), quality=90)
        (images / image_id).write_bytes(jpeg.numpy())
    partition = np.zeros(n, np.int8)
    partition[int(n * 0.8):] = 1
    partition[int(n * 0.9):] = 2
    signed = np.where(labels == 1, "1", "-1")
    text = [str(n), " ".join(names)] + [f"{i} " + " ".join(f"{v:>2}" for v in row) for i, row in zip(ids, signed)]
    (out / "list_attr_celeba.txt").write_bytes(("\r\n".join(text) + "\r\n").encode())
    csv = ["image_id," + ",".join(names)] + [f"{i}," + ",".join(row) for i, row in zip(ids, signed)]
    (out / "list_attr_celeba.csv").write_text("\n".join(csv) + "\n")
    (out / "list_eval_partition.txt").write_bytes(
        "".join(f"{i} {p}\r\n" for i, p in zip(ids, partition)).encode())
    (out / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{i},{p}\n" for i, p in zip(ids, partition)))
    return labels
