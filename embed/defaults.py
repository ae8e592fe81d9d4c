"""Defaults of the embedding pass that the command line and the library share (no TensorFlow
import here, so `cli.py --help` stays instant)."""

BATCH_SIZE = 64
LOG_EVERY = 30  # seconds between progress lines when stderr is not a terminal
# Pillow's decompression-bomb limit (1 GiB / 4 / 3 pixels); a decoded RGB image of this size takes
# 256 MB, and a pass holds at most one per decode thread.
MAX_PIXELS = 89_478_485
FEATURE_DTYPE = "float16"  # the cache's feature dtype: half the disk and memory of float32
SAMPLE = {"n": 512, "seed": 0, "max_n": 202_599}  # make-sample and the demo (max_n: CelebA's size)
# Faces in photos (embed.faces): the smallest face searched (pixels, the side of its box). MTCNN's
# own default is 20; 40 keeps faces that align to a usable 178 x 218 crop and detects 2.1x faster
# (146 against 69 photos/s on 178 x 218 photos, bench/RESULTS.md).
# face: which face of a photo `embed --align` embeds and `predict --faces best` predicts, and the
# order `predict` numbers faces in (embed.faces.ranked): "main", the largest face near the centre
# (insightface's rule), not "best", the detector's most confident, which picked a 37-px face cut by
# the top edge of a CelebA photo over its large clear face (issue 42).
FACE_DEFAULTS = {"min_face": 40, "face": "main"}
FACE_CHOICES = {  # the face rules (embed.faces.FACE_RULES) and what each puts first
    "main": "the large face near the centre first", "best": "the most confident first",
    "largest": "the largest first", "central": "the nearest the centre first"}
