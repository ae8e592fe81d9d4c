"""Drawn photos (`predict --draw`, `predict --video`): each face's label plate is readable on any
background, clear of the other faces and their plates, and says what the JSON says."""

import itertools

import numpy as np
import pytest

from heads.look.drawn import drawn_bgr, label_lines, layout, place_plates


def face(x, y, w, h, score=0.987, probabilities=(0.8734, 0.1216, 0.5)):
    names = ("Male", "Smiling", "Young")
    return {"box": [x, y, w, h], "landmarks": [[x + w * 0.3, y + h * 0.4], [x + w * 0.7, y + h * 0.4],
                                               [x + w * 0.5, y + h * 0.6], [x + w * 0.35, y + h * 0.8],
                                               [x + w * 0.65, y + h * 0.8]], "score": score,
            "attributes": {a: {"probability": p, "decision": int(p >= 0.5), "threshold": 0.5}
                           for a, p in zip(names, probabilities)}}


def overlap(a, b):
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))


@pytest.mark.parametrize("shape, boxes", [
    ((480, 640), [(100, 150, 90, 110), (200, 150, 90, 110)]),                      # two faces side by side
    ((480, 1280), [(150, 100, 120, 150), (560, 100, 120, 150), (970, 100, 120, 150)]),  # a row of three
    ((480, 640), [(540, 20, 90, 110), (540, 300, 90, 110)]),                       # at the right edge, stacked
    ((720, 1280), [(300, 200, 80, 100), (390, 205, 80, 100), (480, 195, 80, 100), (570, 210, 80, 100)]),  # a group
])
def test_neighbouring_faces_plates_cover_no_plate_and_no_other_face(shape, boxes):
    sizes = [(150, 100)] * len(boxes)
    plates = place_plates(boxes, sizes, shape)
    faces = [(x, y, x + w, y + h) for x, y, w, h in boxes]
    for (k, a), (j, b) in itertools.combinations(enumerate(plates), 2):
        assert overlap(a, b) == 0, (k, j, plates)
    for k, plate in enumerate(plates):
        assert 0 <= plate[0] and plate[2] <= shape[1] and 0 <= plate[1] and plate[3] <= shape[0]
        assert all(overlap(plate, f) == 0 for f in faces), (k, plates)  # its own face too


def test_the_drawn_numbers_are_the_jsons_as_predict_prints_them():
    lines = [text for text, _ in label_lines(2, face(0, 0, 50, 50))]
    assert lines == ["face 2  0.987", "Male 0.873", "no Smiling 0.122", "Young 0.500"]


@pytest.mark.parametrize("background", ["white", "black", "noise"])
def test_labels_sit_on_a_dark_plate_readable_on_any_background(background):
    rng = np.random.default_rng(0)
    photo = {"white": np.full((480, 640, 3), 255, np.uint8), "black": np.zeros((480, 640, 3), np.uint8),
             "noise": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)}[background]
    entry = {"faces": [face(100, 150, 90, 110), face(200, 150, 90, 110)]}
    brightness = drawn_bgr(photo, entry).max(axis=2)
    plates = layout(entry, photo.shape)
    assert overlap(plates[0][0], plates[1][0]) == 0
    for (x0, y0, x1, y1), _ in plates:
        plate = brightness[y0:y1, x0:x1]
        assert np.mean(plate <= 60) > 0.6  # mostly dark: the photo under the text is darkened ...
        assert np.mean(plate >= 150) > 0.03  # ... and the text on it is light
