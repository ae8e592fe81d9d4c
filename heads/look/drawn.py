"""Photos with their faces drawn: each face's box and five landmarks, and beside it the attributes
the head decided (a name for a yes, "no" + name for a no, with the probability)."""

from pathlib import Path

import numpy as np

from cache.errors import UserError

YES, NO, BOX = (40, 200, 40), (200, 60, 40), (255, 210, 0)  # RGB


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


def _label_lines(face):
    return [(f"{a} {v['probability']:.2f}" if v["decision"] else f"no {a} {v['probability']:.2f}",
             YES if v["decision"] else NO) for a, v in face["attributes"].items()]


def draw_faces(photo, entry, draw_dir):
    """Write photo (uint8 [H, W, 3] RGB) with entry's faces (a `predict_faces` result) drawn, as a
    JPEG at drawn_path(draw_dir, entry["image"]); returns that path."""
    import cv2
    path = drawn_path(draw_dir, entry["image"])
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), drawn_bgr(photo, entry), [cv2.IMWRITE_JPEG_QUALITY, 92]):
        raise UserError(f"--draw: {path} could not be written")
    return path


def drawn_bgr(photo, entry):
    """photo (uint8 [H, W, 3] RGB) with entry's faces drawn, as OpenCV's BGR uint8 [H, W, 3]."""
    import cv2

    canvas = np.ascontiguousarray(photo[..., ::-1])  # OpenCV draws on BGR
    height, width = canvas.shape[:2]
    scale = max(min(height, width) / 500, 0.7)
    thickness = max(int(round(2 * scale)), 1)
    for number, face in enumerate(entry["faces"], 1):
        x, y, w, h = (int(round(v)) for v in face["box"])
        cv2.rectangle(canvas, (x, y), (x + w, y + h), BOX[::-1], thickness)
        for lx, ly in face["landmarks"]:
            cv2.circle(canvas, (int(round(lx)), int(round(ly))), thickness + 1, BOX[::-1], -1)
        lines = [(f"face {number} ({face['score']:.2f})", BOX)] + _label_lines(face)
        line_height = int(22 * scale) + 4
        (text_width, _), _ = cv2.getTextSize(max((t for t, _ in lines), key=len), cv2.FONT_HERSHEY_SIMPLEX,
                                             0.6 * scale, thickness)
        left = x + w + 6 if x + w + 6 + text_width < width else max(x - 6 - text_width, 0)
        for k, (text, colour) in enumerate(lines):
            origin = (left, min(y + line_height * (k + 1), height - 4))
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, (0, 0, 0), thickness + 2,
                        cv2.LINE_AA)
            cv2.putText(canvas, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, colour[::-1], thickness,
                        cv2.LINE_AA)
    return canvas
