"""Photos with their faces drawn: each face's box and five landmarks, and beside it, on a dark plate
that keeps the text readable on any background and clear of the other faces' plates, its number
and score and the attributes the head decided (a name for a yes, "no" + name for a no, with the
probability), as `predict` prints them."""

from pathlib import Path

import numpy as np

from cache.errors import UserError

YES, NO, BOX = (90, 230, 90), (255, 120, 100), (255, 210, 0)  # RGB, light enough to read on the dark plate
PLATE_OPACITY = 0.8  # the plate keeps a fifth of the photo's brightness


def drawn_path(draw_dir, image):
    """Where the drawn copy of `image` goes: DIR/<image's file name>, with .jpg added unless it ends
    so (a.jpg -> a.jpg, a.png -> a.png.jpg): inputs differing only in extension keep distinct names."""
    name = Path(image).name
    return Path(draw_dir) / (name if name.lower().endswith(".jpg") else f"{name}.jpg")


def check_draw_names(images):
    """Refuse, before any work, photos whose drawn copies would share a name (the --draw folder
    itself is checked by the output policy, `cache.outputs`)."""
    seen = {}
    for image in images:
        name = drawn_path("", image).name
        if name in seen and seen[name] != str(image):
            raise UserError(f"--draw: {seen[name]} and {image} would both be drawn as {name}; draw them in "
                            "separate runs")
        seen[name] = str(image)


def label_lines(number, face):
    """The text drawn beside face `number` (1-based, the JSON's order), formatted as `predict` prints
    it: the face's number and detector score, then per attribute its name ("no" before it for a no)
    and probability, each with its colour."""
    lines = [(f"face {number}  {face['score']:.3f}", BOX)]
    for a, v in face["attributes"].items():
        lines.append((f"{'' if v['decision'] else 'no '}{a} {v['probability']:.3f}", YES if v["decision"] else NO))
    return lines


def _overlap(a, b):
    """The area two rectangles (x0, y0, x1, y1) share."""
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


def place_plates(boxes, sizes, shape, gap=6):
    """Where each face's label plate goes: boxes [(x, y, w, h)] of the faces, sizes [(width, height)]
    of their plates, shape the photo's [H, W, ...]. Each plate tries, in turn, the right of its box,
    its left, below, above and over its top-left corner (each kept inside the photo), and takes the
    first that covers no plate placed before it and no face; failing that, the one covering the
    least (its own face counts too). Returns [(x0, y0, x1, y1)] in the order given."""
    height, width = shape[:2]
    faces = [(x, y, x + w, y + h) for x, y, w, h in boxes]
    placed = []
    for k, ((x0, y0, x1, y1), (pw, ph)) in enumerate(zip(faces, sizes)):
        candidates = [(x1 + gap, y0), (x0 - gap - pw, y0), (x0, y1 + gap), (x0, y0 - gap - ph), (x0, y0)]
        best = None
        for cx, cy in candidates:
            cx, cy = min(max(int(cx), 0), max(width - pw, 0)), min(max(int(cy), 0), max(height - ph, 0))
            plate = (cx, cy, cx + pw, cy + ph)
            covered = sum(_overlap(plate, other) for other in placed + faces)
            if best is None or covered < best[0]:
                best = (covered, plate)
            if covered == 0:
                break
        placed.append(best[1])
    return placed


def draw_faces(photo, entry, draw_dir):
    """Write photo (uint8 [H, W, 3] RGB) with entry's faces (a `predict_faces` result) drawn, as a
    JPEG at drawn_path(draw_dir, entry["image"]); returns that path."""
    import cv2
    path = drawn_path(draw_dir, entry["image"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), drawn_bgr(photo, entry), [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise UserError(f"--draw: {path} could not be written")
    return path


def _style(shape):
    """Text style for a photo of `shape`: (font, size, thickness, padding, line height), growing with it."""
    import cv2
    scale = max(min(shape[:2]) / 500, 0.7)
    return cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, max(int(round(2 * scale)), 1), int(4 * scale), int(22 * scale) + 4


def layout(entry, shape):
    """[(plate (x0, y0, x1, y1), `label_lines`)] per face of entry, in the JSON's order: each plate
    sized to its text and placed by `place_plates` in a photo of `shape`."""
    import cv2
    font, size, thickness, pad, line_height = _style(shape)
    blocks = [label_lines(number, face) for number, face in enumerate(entry["faces"], 1)]
    sizes = [(max(cv2.getTextSize(text, font, size, thickness)[0][0] for text, _ in lines) + 2 * pad,
              line_height * len(lines) + 2 * pad) for lines in blocks]
    return list(zip(place_plates([f["box"] for f in entry["faces"]], sizes, shape), blocks))


def drawn_bgr(photo, entry):
    """photo (uint8 [H, W, 3] RGB) with entry's faces drawn, as OpenCV's BGR uint8 [H, W, 3]: each
    face's box and landmarks, and its `label_lines` on a dark plate (readable on any background)
    where `layout` puts it, so neighbouring faces' labels do not cover each other."""
    import cv2

    canvas = np.ascontiguousarray(photo[..., ::-1])  # OpenCV draws on BGR
    font, size, thickness, pad, line_height = _style(canvas.shape)
    for face in entry["faces"]:
        x, y, w, h = (int(round(v)) for v in face["box"])
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX[::-1], thickness)
        for lx, ly in face["landmarks"]:
            cv2.circle(canvas, (int(round(lx)), int(round(ly))), thickness + 1, BOX[::-1], -1)
    for (x0, y0, x1, y1), lines in layout(entry, canvas.shape):
        region = canvas[y0:y1, x0:x1]
        region[:] = (region * (1 - PLATE_OPACITY)).astype(np.uint8)  # darkened: light text reads on any photo
        for k, (text, colour) in enumerate(lines):
            origin = (x0 + pad, y0 + pad + line_height * (k + 1) - 6)
            cv2.putText(canvas, text, origin, font, size, colour[::-1], thickness, cv2.LINE_AA)
    return canvas
