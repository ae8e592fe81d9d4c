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
# min_score: the lowest detector score a face may have (MTCNN's last-stage confidence). Measured on
# 1,439 faces in 900 scenes of the real sample's val/test photos, on the 1,987 aligned CelebA photos
# themselves (close-ups: the face fills the frame, and scores run lower), and on 126 textured photos
# without a face (120 at 1000 x 750, 6 at 4000 x 3000; bench/RESULTS.md, faces). Faces kept in
# scenes / close-ups, and false faces in the noise photos: 0.8 (MTCNN's own) 100 / 99.7 %, 1 (a
# 76-px box at 0.960); 0.9 99.7 / 98.5 %, the same 1; 0.95 99.0 / 95.4 %, the same 1. No threshold
# that keeps 99 % of the faces removes it, so the default keeps the most faces: 0.8. What removed
# issue 42's false face (a 27 x 34 box at 0.916 in a 4000 x 3000 photo) is the box rule: a face's
# box must be at least min_face on its longer side.
# upside_down: how much higher MTCNN's last stage (ONet) must score a face's box turned 180 degrees
# than as it stands for `predict` to flag the face as upside down (a photo without its EXIF
# orientation: MTCNN still finds such faces, at up to 0.98, with landmarks laid out as if upright).
# Measured on the real sample's first 300 photos pasted into 400 x 400 scenes, upright and turned
# over: flagged upright faces / upside-down faces at a margin of 0.02: 7 of 300 / 127 of 134; 0.05:
# 5 / 119; 0.1: 2 / 107; 0.2: 1 / 95. 0.1 flags 80 % of upside-down faces and 0.7 % of upright ones.
FACE_DEFAULTS = {"min_face": 40, "face": "main", "min_score": 0.8, "upside_down": 0.1, "fit": "eyes-mouth",
                 "mirror_score": 0.5}
FIT_CHOICES = {  # the landmark fits (embed.faces.FITS) and the points each puts onto the template
    "eyes-mouth": "both eyes and the mouth's centre, equally weighted",
    "five": "the five landmarks, weighted 1/1/0.3/0.3/0.3 (eyes, nose, mouth corners)"}
FACE_CHOICES = {  # the face rules (embed.faces.FACE_RULES) and what each puts first
    "main": "the large face near the centre first", "best": "the most confident first",
    "largest": "the largest first", "central": "the nearest the centre first"}
