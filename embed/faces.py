"""Faces in photos: find each face and its five landmarks, then warp it into CelebA's aligned frame.

A photo (uint8 [H, W, 3] RGB, EXIF orientation applied by `read_photo`) goes to a detector, which
returns per photo a list of `Face`s: box (x, y, width, height), landmarks float32 [5, 2] as (x, y)
in photo pixels, in the order LANDMARKS, and a score in [0, 1]. `align` estimates the
least-squares similarity transform (Umeyama) from a face's landmarks onto TEMPLATE (by a `Fit`:
which points count, by default both eyes and the mouth's centre) and warps the
photo into the 178 x 218 frame CelebA's aligned images have; the backbone's own preprocessing
follows as for any image file. Pixels that fall outside the photo repeat its nearest edge pixel
(OpenCV's BORDER_REPLICATE), as in CelebA's own aligned images, whose borders show the same
streaks where a face was near the photo's edge: no black wedge for a backbone to read as a feature.

Detectors are a component kind: a class with `settings` (what a cache records) and
`detect(photos) -> [[Face]]`, registered by name in DETECTORS. MTCNN (the `mtcnn` package, its
three networks' weights inside its wheel) is the first. Photos are detected in groups of one shape
with no padding, so a face's detection does not depend on which other photos share its batch.

An `Aligner` (a detector, the landmark fit, optional refinement, the face rule) is the one way
faces are found and aligned: `embed --align` builds it from the record it writes into the cache's
preprocessing (`align_record`), through `FaceBatches`, the batch source of such a cache; `predict
--faces` and `--video` build it from the same record.
"""

import json
import logging
from dataclasses import dataclass, field

import numpy as np

from cache.errors import UsageError
from embed.defaults import FACE_CHOICES, FACE_DEFAULTS, FIT_CHOICES

log = logging.getLogger(__name__)


# CelebA's aligned frame (width, height) and the five canonical landmark positions in it, (x, y)
# pixels in OpenCV's convention (pixel centres at integers). Provenance: the median landmarks
# MTCNN finds on real aligned CelebA images (issue 27's measurement over the val/test photos),
# checked on the shared real sample by tests/test_faces.py (within 1.5 px). CelebA made its aligned
# images by a similarity transform of these same five points onto fixed positions.
FRAME = (178, 218)
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
TEMPLATE = np.array([[69.0, 111.0], [108.0, 111.0], [88.0, 136.0], [72.0, 152.0], [105.0, 152.0]], np.float32)
@dataclass(frozen=True)
class Face:
    """One detected face: box (x, y, width, height) in photo pixels, clipped to the photo;
    landmarks float32 [5, 2] (x, y) in the order LANDMARKS, not clipped; score in [0, 1]."""
    box: tuple
    landmarks: np.ndarray = field(repr=False)
    score: float

    def to_dict(self):
        return {"box": [round(float(v), 2) for v in self.box],
                "landmarks": [[round(float(x), 2), round(float(y), 2)] for x, y in self.landmarks],
                "score": round(float(self.score), 5)}


# --- alignment -------------------------------------------------------------------------------------

def similarity_transform(src, dst, weights=None):
    """The similarity (rotation, uniform scale, translation) that maps points src [N, 2] onto dst
    [N, 2] with the least weighted squared error (Umeyama 1991, no reflection), as a float64 [2, 3]
    matrix for cv2.warpAffine. weights [N] >= 0, default all 1."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_src, mu_dst = w @ src, w @ dst
    a, b = src - mu_src, dst - mu_dst
    covariance = (b * w[:, None]).T @ a
    u, s, vt = np.linalg.svd(covariance)
    d = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rotation = u @ d @ vt
    variance = (w * (a ** 2).sum(axis=1)).sum()
    scale = np.trace(np.diag(s) @ d) / variance
    translation = mu_dst - scale * rotation @ mu_src
    return np.hstack([scale * rotation, translation[:, None]])


@dataclass(frozen=True)
class Fit:
    """Which points of a face the similarity fit puts onto the template's: points [M, 5], each row a
    mix of the five landmarks (the same mix of TEMPLATE is its target), and weights [M] >= 0."""
    points: tuple
    weights: tuple

    def matrix(self, landmarks):
        """The [2, 3] similarity from photo pixels into CelebA's frame for landmarks [5, 2]."""
        points = np.asarray(self.points, np.float64)
        return similarity_transform(points @ np.asarray(landmarks, np.float64), points @ TEMPLATE, self.weights)


# The landmark fits by name (FIT_CHOICES). eyes-mouth, the default: both eyes and the mouth's centre
# (the corners' midpoint), equally weighted, so the mouth's width and the nose, which a smile or a
# turned head move, do not pull the fit. five: the five landmarks weighted 1/1/0.3/0.3/0.3, the
# default before (what a cache's align record without a fit used). Measured on 1,438 faces in
# scenes (bench/RESULTS.md, faces): Smiling's accuracy on the scenes 73.7 % with eyes-mouth, 68.7 %
# with five, 73.6 % on the aligned originals themselves; the eyes alone were worse (a two-point fit
# follows each eye's error).
_IDENTITY = tuple(tuple(float(i == j) for j in range(5)) for i in range(5))
FITS = {"eyes-mouth": Fit(((1.0, 0.0, 0.0, 0.0, 0.0), (0.0, 1.0, 0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.5, 0.5)),
                          (1.0, 1.0, 1.0)),
        "five": Fit(_IDENTITY, (1.0, 1.0, 0.3, 0.3, 0.3))}
assert set(FITS) == set(FIT_CHOICES)


def fit_of(record):
    """The Fit an align record (`align_record`) names; a record from before fits were named holds
    five landmark weights and no points: the five-point fit with those weights."""
    if "points" not in record:
        return Fit(_IDENTITY, tuple(record["weights"]))
    return Fit(tuple(map(tuple, record["points"])), tuple(record["weights"]))


def align(photo, landmarks, fit=FITS[FACE_DEFAULTS["fit"]]):
    """photo uint8 [H, W, C], landmarks [5, 2] -> uint8 [218, 178, C]: the face in CelebA's frame
    by `fit` (bilinear; outside the photo, its edge repeated)."""
    return align_by(photo, fit.matrix(landmarks))


def align_by(photo, matrix):
    """photo uint8 [H, W, C] warped by a [2, 3] matrix into CelebA's frame (see `align`)."""
    import cv2
    warped = cv2.warpAffine(np.ascontiguousarray(photo), matrix, FRAME, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
    return warped.reshape(FRAME[1], FRAME[0], -1)


def landmarks_outside(face, shape):
    """True if any landmark lies outside a photo of shape (H, W, ...): a face cut by the photo's
    edge, whose crop repeats that edge (`predict` says so per face)."""
    x, y = face.landmarks[:, 0], face.landmarks[:, 1]
    return bool((x < 0).any() or (y < 0).any() or (x > shape[1] - 1).any() or (y > shape[0] - 1).any())


def implausible(face, turned=None):
    """Why the face cannot be aligned into CelebA's frame as an upright face, or None: its landmarks
    put the eyes below the mouth or swap them about it (no rotation makes that arrangement); or,
    with turned (the detector's score of the face's box turned 180 degrees minus as it stands,
    `MTCNN.turned_over`), it looks upside down: an upside-down photo without its EXIF orientation,
    whose face MTCNN still finds with landmarks laid out as if upright. `predict` flags such a face;
    `embed --align` warns of the landmark arrangements (the turn test costs a network pass)."""
    if turned is not None and turned > FACE_DEFAULTS["upside_down"]:
        return (f"looks upside down: the detector scores it {turned:.2f} higher turned over; rotate the photo or "
                "set its EXIF orientation")
    left_eye, right_eye, _, mouth_left, mouth_right = np.asarray(face.landmarks, np.float64)
    eyes, mouth = (left_eye + right_eye) / 2, (mouth_left + mouth_right) / 2
    across, down = right_eye - left_eye, mouth - eyes
    if across[0] * down[1] - across[1] * down[0] <= 0:
        return "implausible landmarks: the eyes are swapped about the mouth"
    if down[1] <= 0:
        return ("implausible landmarks: the eyes are below the mouth (an upside-down photo? rotate it or set its "
                "EXIF orientation)")
    return None


def box_patch(photo, face, side=48):
    """The face's box made square about its centre (as MTCNN's stages cut it), clipped to the photo
    and resized to side x side: uint8 [side, side, 3]."""
    import cv2
    x, y, w, h = face.box
    half, cx, cy = max(w, h) / 2, x + w / 2, y + h / 2
    x0, y0 = int(max(cx - half, 0)), int(max(cy - half, 0))
    x1, y1 = int(min(cx + half, photo.shape[1])), int(min(cy + half, photo.shape[0]))
    return cv2.resize(np.ascontiguousarray(photo[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]), (side, side),
                      interpolation=cv2.INTER_LINEAR)


def _off_centre(face, shape):
    """Squared distance (pixels²) of the face's box centre from the centre of a photo of shape (H, W, ...)."""
    x, y, w, h = face.box
    return (x + w / 2 - (shape[1] - 1) / 2) ** 2 + (y + h / 2 - (shape[0] - 1) / 2) ** 2


FACE_RULES = {  # rule -> key, the face first in order having the highest
    "main": lambda f, shape: f.box[2] * f.box[3] - 2 * _off_centre(f, shape),  # insightface: area - 2 x offset²
    "best": lambda f, shape: f.score,
    "largest": lambda f, shape: f.box[2] * f.box[3],
    "central": lambda f, shape: -_off_centre(f, shape),
}


def ranked(faces, how, shape):
    """A photo's faces in the order of the rule `how` (the first is the one `choose` picks; ties keep
    the detector's order): main (box area minus twice the squared distance of its centre from the
    photo's centre: the large face near the middle), best (the detector's score), largest (box area)
    or central (box centre nearest the photo's centre)."""
    if how not in FACE_RULES:
        raise UsageError(f"--face: {how!r} is not one of {', '.join(FACE_CHOICES)}")
    key = FACE_RULES[how]
    return sorted(faces, key=lambda f: -key(f, shape))


def choose(faces, how, shape):
    """The one face of a photo that the rule `how` picks (`ranked`), or None if there is none."""
    return next(iter(ranked(faces, how, shape)), None)


# --- photos -------------------------------------------------------------------------------------

def read_photo(path, max_pixels):
    """(uint8 [H, W, 3] RGB with its EXIF orientation applied, "") or (None, error text). Any format
    and colour mode Pillow reads (JPEG incl. CMYK, PNG, WebP, BMP, GIF's first frame, grayscale,
    palette, alpha dropped); the size is checked from the header before decoding."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                return None, (f"image is {width}x{height} = {width * height / 1e6:.1f} M pixels, more than "
                              f"--max-pixels {max_pixels} (raise it to read such images)")
            image.load()
            upright = ImageOps.exif_transpose(image)
            return np.asarray(upright.convert("RGB")), ""
    except FileNotFoundError:
        return None, "missing file"
    except IsADirectoryError:
        return None, "is a directory, not an image"
    except UnidentifiedImageError:
        return None, "cannot decode image: not an image file in a format Pillow reads"
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        return None, f"cannot decode image: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"


# --- embedding aligned faces ----------------------------------------------------------------------

def align_record(face=FACE_DEFAULTS["face"], refine=False, detector="mtcnn", fit=FACE_DEFAULTS["fit"],
                 **detector_settings):
    """What a cache of aligned faces records in preprocessing["align"]: everything needed to find
    and align the same face again (compared on resume), without loading the detector. The fit is
    written out (its points and weights) so a client can align as predict does."""
    if face not in FACE_CHOICES:
        raise UsageError(f"--face: {face!r} is not one of {', '.join(FACE_CHOICES)}")
    if fit not in FITS:
        raise UsageError(f"--landmark-fit: {fit!r} is not one of {', '.join(FITS)}")
    if detector not in DETECTORS:
        raise UsageError(f"unknown face detector {detector!r}; known: {', '.join(DETECTORS)}")
    return {"detector": DETECTORS[detector].describe(**detector_settings), "face": face, "refine": bool(refine),
            "template": TEMPLATE.tolist(), "fit": fit, "points": [list(p) for p in FITS[fit].points],
            "weights": list(FITS[fit].weights), "frame": list(FRAME), "fill": "edge", "exif": True}


def complete_record(record):
    """An align record as `align_record` writes it today, for one made by an earlier version (no
    fit: the five-point one with its weights; three detector thresholds: the third is min_score; no
    mirror_score: the mirror check off),
    so a resume compares like with like."""
    detector = {"mirror_score": 0.0, **record["detector"]}  # made before the mirror check: off
    version = detector.pop("version", None)
    detector = {**DETECTORS[detector.pop("detector")].describe(**detector), "version": version}
    fit = record.get("fit", "five")
    return {**record, "detector": detector, "fit": fit, "points": [list(p) for p in fit_of(record).points]}


@dataclass
class Aligner:
    """How faces are found and aligned, the one object `embed --align` and `predict --faces` both
    use: a detector, the landmark fit (`Fit`), whether the landmarks are refined
    by a second pass, and the face rule (`ranked`: which face `choose` picks, and the order faces
    are numbered in)."""
    detector: object
    fit: Fit = FITS[FACE_DEFAULTS["fit"]]
    refine: bool = False
    face: str = FACE_DEFAULTS["face"]

    @classmethod
    def from_record(cls, record):
        """The aligner a preprocessing["align"] record (`align_record`) describes."""
        return cls(load_detector(record["detector"]), fit_of(record), bool(record.get("refine")),
                   record["face"])

    def find(self, photos):
        """photos: uint8 [H, W, 3] arrays -> per photo its Faces, best score first (landmarks refined
        when self.refine)."""
        found = self.detector.detect(photos)
        if not self.refine:
            return found
        pairs = [(photo, face) for photo, faces in zip(photos, found) for face in faces]
        refined = iter(self._refined([p for p, _ in pairs], [f for _, f in pairs]))
        return [[Face(f.box, next(refined), f.score) for f in faces] for faces in found]

    def _refined(self, photos, faces):
        """Second-pass landmarks: each face is aligned by its landmarks, the detector runs again on
        the aligned crops (one batch, all of one shape), and the landmarks it finds nearest the
        template are mapped back into the photo. Upright and at CelebA's scale, a face's landmarks
        come out as on the images the template was measured on (bench/RESULTS.md, faces: the
        agreement this buys). A crop where the detector finds no face keeps its first-pass landmarks."""
        import cv2
        matrices = [self.fit.matrix(f.landmarks) for f in faces]
        crops = [align_by(photo, m) for photo, m in zip(photos, matrices)]
        refined = []
        for face, matrix, found in zip(faces, matrices, self.detector.detect(crops) if crops else []):
            if not found:
                refined.append(face.landmarks)
                continue
            nearest = min(found, key=lambda f: np.linalg.norm(f.landmarks - TEMPLATE, axis=1).mean())
            inverse = cv2.invertAffineTransform(matrix)
            refined.append((nearest.landmarks @ inverse[:, :2].T + inverse[:, 2]).astype(np.float32))
        return refined

    def align(self, photo, face):
        """The face (a Face of photo) in CelebA's frame, uint8 [218, 178, C]."""
        return align(photo, face.landmarks, self.fit)


def aligned_pixels(faces, preprocessing):
    """Aligned faces uint8 [N, 218, 178, 3] -> float32 [N, S, S, C] as the backbone's preprocessing
    makes them of an image file of the face (grayscale by the JPEG luma weights)."""
    import tensorflow as tf

    from embed.pipeline import preprocess

    images = tf.constant(faces)
    if preprocessing.channels == 1:
        images = tf.image.rgb_to_grayscale(images)
    return preprocess(tf.cast(images, tf.float32), preprocessing)


def no_face_error(detector, shape):
    """Why a photo of `shape` ([H, W, ...]) gave no face: too small to hold the smallest face searched,
    or none found at the detector's settings."""
    height, width = shape[:2]
    if min(height, width) < detector.min_face:
        return (f"no face found: the photo is {width}x{height}, smaller than the smallest face searched "
                f"({detector.min_face} px; --min-face, at least 12)")
    return f"no face found (smallest face searched: {detector.min_face} px, score at least {detector.thresholds[2]:g})"


class FaceBatches:
    """Like `embed.pipeline.ImageBatches`, for a cache of aligned faces: batches of {"index": int64
    [B], "image": float32 [B, S, S, C], "error": string [B], "stored": {faces/... dataset: [B, ...]}}
    for the fixed windows of the input, in order. Each window is made one ahead, in a thread of
    its own, while the consumer runs the backbone on the window before: its photos read (EXIF
    orientation applied) by a thread pool, detected as one batch (one detector call per photo
    shape), one face chosen per photo as preprocessing.align says and aligned. A photo that cannot
    be read, or holds no face, is a zero image with its error."""

    def __init__(self, paths, indices, preprocessing, batch_size, threads=None, max_pixels=None):
        from embed.defaults import MAX_PIXELS
        self.paths, self.indices = list(paths), np.asarray(indices, np.int64)
        self.preprocessing, self.batch_size = preprocessing, batch_size
        self.threads, self.max_pixels = threads or 2, max_pixels or MAX_PIXELS
        self.aligner = Aligner.from_record(preprocessing.align)

    def __iter__(self):
        from concurrent.futures import ThreadPoolExecutor

        import tensorflow as tf
        windows = [(a, min(a + self.batch_size, len(self.paths))) for a in range(0, len(self.paths), self.batch_size)]
        with ThreadPoolExecutor(self.threads) as readers, ThreadPoolExecutor(1) as ahead:
            def made(window):
                start, stop = window
                photos = list(readers.map(lambda p: read_photo(p, self.max_pixels), self.paths[start:stop]))
                return self._batch(photos, self.indices[start:stop], tf, self.paths[start:stop])
            pending = ahead.submit(made, windows[0]) if windows else None
            for k in range(len(windows)):
                batch = pending.result()
                pending = ahead.submit(made, windows[k + 1]) if k + 1 < len(windows) else None
                yield batch

    def _batch(self, photos, indices, tf, paths):
        n = len(photos)
        box, marks = np.full((n, 4), np.nan, np.float32), np.full((n, 5, 2), np.nan, np.float32)
        score, count = np.full(n, np.nan, np.float32), np.zeros(n, np.int16)
        faces = np.zeros((n, FRAME[1], FRAME[0], 3), np.uint8)
        errors = [error for _, error in photos]
        found = iter(self.aligner.find([photo for photo, _ in photos if photo is not None]))
        for i, (photo, _) in enumerate(photos):
            if photo is None:
                continue
            detected = next(found)
            count[i] = len(detected)
            face = choose(detected, self.aligner.face, photo.shape)
            if face is None:
                errors[i] = no_face_error(self.aligner.detector, photo.shape)
                continue
            box[i], marks[i], score[i] = face.box, face.landmarks, face.score
            flagged = implausible(face)
            if flagged:
                log.warning("%s: %s; its face is embedded as found", paths[i], flagged)
            faces[i] = self.aligner.align(photo, face)
        return {"index": tf.constant(indices), "image": aligned_pixels(faces, self.preprocessing),
                "error": tf.constant(errors, tf.string),
                "stored": {"faces/box": box, "faces/landmarks": marks, "faces/score": score, "faces/count": count}}

    def close(self):
        pass


def image_batches(paths, indices, preprocessing, batch_size, threads=None, max_pixels=None):
    """The batch source for these images: FaceBatches for a preprocessing that aligns faces, else
    `embed.pipeline.ImageBatches` (whole image files)."""
    if preprocessing.align:
        return FaceBatches(paths, indices, preprocessing, batch_size, threads, max_pixels)
    from embed.defaults import MAX_PIXELS
    from embed.pipeline import ImageBatches
    return ImageBatches(paths, indices, preprocessing, batch_size, threads, max_pixels or MAX_PIXELS)


# --- detectors ------------------------------------------------------------------------------------

DETECTORS = {}


def detector(name):
    """Class decorator: register a detector kind under `name`."""
    def register(cls):
        cls.name = name
        DETECTORS[name] = cls
        return cls
    return register


DETECTORS_KEPT = 2  # detectors kept per process (`load_detector`)
_detectors = {}  # settings as JSON -> the detector made from them


def load_detector(settings):
    """A detector from its recorded settings {"detector": NAME, ...the kind's keyword arguments}.
    Made once per process for the same settings and kept (its weights ship with its package, and
    detection leaves it unchanged): embed, predict and a notebook's calls share its loaded networks
    and traced graphs (0.2 s of loading and tracing each time otherwise)."""
    key = json.dumps(settings, sort_keys=True, default=str)
    if key not in _detectors:
        settings = dict(settings)
        name = settings.pop("detector")
        if name not in DETECTORS:
            raise UsageError(f"unknown face detector {name!r}; known: {', '.join(DETECTORS)}")
        settings.pop("version", None)
        _detectors[key] = DETECTORS[name](**settings)
        while len(_detectors) > DETECTORS_KEPT:
            _detectors.pop(next(iter(_detectors)))
    return _detectors[key]





@detector("mtcnn")
class MtcnnDetector:
    """MTCNN (Zhang et al. 2016) from the `mtcnn` package: its three networks and box utilities,
    driven here on same-shape batches. min_face: the smallest face searched (box side, pixels);
    the image pyramid starts at 12 / min_face and shrinks by scale_factor while the photo's short
    side is at least 12 px, and a face whose box is smaller than min_face on its longer side is
    dropped. min_score: the lowest score a face keeps (the last network's confidence, ONet's
    threshold). thresholds: PNet's and RNet's confidence. A record made before min_score existed
    holds three thresholds, the third ONet's: it is read as min_score. mirror_score: the lowest
    score ONet gives a kept face's final box mirrored left-right (0: no such check). A face is
    nearly symmetric and a face-like pattern in a texture seldom is: at 0.5 this drops all 4 false
    faces MTCNN keeps at 0.8 in 526 textured photos, while 99.9 / 99.7 % of the faces in scenes /
    close-ups are kept, as without it (bench/RESULTS.md, faces, session 22)."""

    def __init__(self, min_face=FACE_DEFAULTS["min_face"], min_score=None, scale_factor=0.709, thresholds=(0.6, 0.7),
                 mirror_score=FACE_DEFAULTS["mirror_score"]):
        min_score, thresholds = self._split(min_score, thresholds)
        self.settings = self.describe(min_face, min_score, scale_factor, thresholds, mirror_score)
        self.mirror_score = float(mirror_score)
        from mtcnn.stages import StageONet, StagePNet, StageRNet
        self.min_face, self.scale_factor = int(min_face), float(scale_factor)
        self.thresholds = (*thresholds, float(min_score))
        self._pnet, self._rnet, self._onet = StagePNet(), StageRNet(), StageONet()
        import tensorflow as tf
        # PNet in a graph: eager Keras spends as long dispatching its layers as computing them. One
        # trace per pyramid level's shape (the same for every batch of photos of one size).
        self._pnet_graph = tf.function(self._pnet.model, reduce_retracing=True)
        # RNet and ONet in graphs too, one trace each (any number of patches): the stages call their
        # `_model` on the patches they cut, and eagerly the two took 2/3 of a one-photo detection
        # (71 of 108 ms on a 400 x 400 photo, cProfile; bench/RESULTS.md, session 19).
        for stage, side in ((self._rnet, 24), (self._onet, 48)):
            stage._model = tf.function(stage.model, input_signature=[tf.TensorSpec([None, side, side, 3], tf.float32)])

    @staticmethod
    def _split(min_score, thresholds):
        if len(thresholds) == 3:  # a record from before min_score: ONet's threshold was the third
            min_score, thresholds = thresholds[2] if min_score is None else min_score, thresholds[:2]
        return FACE_DEFAULTS["min_score"] if min_score is None else min_score, tuple(thresholds)

    @classmethod
    def describe(cls, min_face=FACE_DEFAULTS["min_face"], min_score=None, scale_factor=0.709, thresholds=(0.6, 0.7),
                 mirror_score=FACE_DEFAULTS["mirror_score"]):
        """The settings a cache records (and `load_detector` takes back), checked, without loading
        the networks."""
        from importlib.metadata import version
        min_score, thresholds = cls._split(min_score, thresholds)
        if min_face < 12:
            raise UsageError(f"--min-face: {min_face} is below MTCNN's 12-pixel window")
        if not 0 <= min_score < 1:
            raise UsageError(f"--min-score: {min_score} is not in [0, 1)")
        if not 0 <= mirror_score < 1:
            raise UsageError(f"--min-mirror-score: {mirror_score} is not in [0, 1)")
        return {"detector": cls.name, "min_face": int(min_face), "min_score": float(min_score),
                "scale_factor": float(scale_factor), "thresholds": [float(t) for t in thresholds],
                "mirror_score": float(mirror_score), "version": version("mtcnn")}

    def _onet_scores(self, patches):
        """ONet's face score of each patch, uint8 [N, 48, 48, 3] -> float [N] (one network pass)."""
        import tensorflow as tf
        return np.asarray(self._onet._model(tf.constant((patches.astype(np.float32) - 127.5) / 128.0))[2])[:, 1]

    def turned_over(self, patches):
        """ONet's face score of each box patch (uint8 [N, 48, 48, 3], `box_patch`) turned 180
        degrees minus its score as it stands: float [N], one network pass for all."""
        if not len(patches):
            return np.zeros(0)
        scores = self._onet_scores(np.concatenate([patches, patches[:, ::-1, ::-1]]))
        return scores[len(patches):] - scores[:len(patches)]

    def scales(self, height, width):
        """The pyramid's scales for a photo of this size (none if it is smaller than min_face)."""
        scale, scales = 12.0 / self.min_face, []
        while min(height, width) * scale >= 12:
            scales.append(scale)
            scale *= self.scale_factor
        return scales

    def detect(self, photos):
        """photos: uint8 [H, W, 3] arrays -> per photo a list of Faces, best score first."""
        found = [[] for _ in photos]
        groups = {}
        for i, photo in enumerate(photos):
            groups.setdefault(photo.shape, []).append(i)
        for shape, members in groups.items():
            rows = self._detect_same_shape(np.stack([photos[i] for i in members]))
            rows = rows[np.maximum(rows[:, 3] - rows[:, 1], rows[:, 4] - rows[:, 2]) >= self.min_face]
            if self.mirror_score > 0 and len(rows):
                mirrored = np.stack([box_patch(photos[members[int(r[0])]], _face(r, shape))[:, ::-1] for r in rows])
                rows = rows[self._onet_scores(mirrored) >= self.mirror_score]
            for row in rows[np.argsort(-rows[:, 5], kind="stable")]:
                found[members[int(row[0])]].append(_face(row, shape))
        return found

    def _detect_same_shape(self, batch):
        """[B, H, W, 3] uint8 -> the package's rows [n, 16]: image, x1, y1, x2, y2, score, 5 x, 5 y.
        The batch goes to TensorFlow once; each pyramid level is an area resize of the level before
        (the cost of a level falls with its size, not the photo's)."""
        import tensorflow as tf
        from mtcnn.utils.bboxes import generate_bounding_box, resize_to_square, smart_nms_from_bboxes, upscale_bboxes

        empty = np.empty((0, 16))
        height, width = batch.shape[1:3]
        normalized = (tf.cast(tf.constant(batch), tf.float32) - 127.5) / 128.0
        proposals, level = [], normalized
        for scale in self.scales(height, width):
            level = tf.image.resize(level, [int(height * scale), int(width * scale)], method="area")
            regression, score = self._pnet_graph(level)
            boxes = generate_bounding_box(regression, score, self.thresholds[0])
            boxes = upscale_bboxes(boxes, np.full(len(batch), scale))
            if len(boxes):
                proposals.append(smart_nms_from_bboxes(boxes, threshold=0.5, method="union", initial_sort=False))
        if not proposals:
            return empty
        boxes = smart_nms_from_bboxes(np.concatenate(proposals), threshold=0.7, method="union", initial_sort=True)
        boxes = resize_to_square(boxes)
        boxes = self._rnet(images_normalized=normalized, bboxes_batch=boxes, threshold_rnet=self.thresholds[1])
        if not len(boxes):
            return empty
        rows = self._onet(images_normalized=normalized, bboxes_batch=boxes, threshold_onet=self.thresholds[2])
        return rows if len(rows) else empty


def _face(row, shape):
    height, width = shape[:2]
    x1, y1 = max(row[1], 0.0), max(row[2], 0.0)
    x2, y2 = min(row[3], width - 1.0), min(row[4], height - 1.0)
    landmarks = np.stack([row[6:11], row[11:16]], axis=1).astype(np.float32)
    return Face((float(x1), float(y1), float(x2 - x1), float(y2 - y1)), landmarks, float(row[5]))
