"""`predict --video`: every frame of a video through a run's face path (`predict.Predictor`),
annotated frames written as a new video, and one CSV row per frame x face x attribute. OpenCV reads
and writes the video (and does nothing else here).

OUT.csv columns: frame (0-based), time_s, face (1-based, in the order of the run's face rule:
main by default, the large face near the centre first; `embed.faces.ranked`), x, y, w, h, score,
attribute, probability, decision.
"""

import csv
import time
from pathlib import Path

from cache.errors import UserError
from cache.outputs import beside
from heads.serve.predict import Predictor

CSV_COLUMNS = ("frame", "time_s", "face", "x", "y", "w", "h", "score", "attribute", "probability", "decision")


def predict_video(run_dir, video, out, *, faces="all", min_face=None, refine=None, min_score=None, mirror_score=None,
                  frames_per_batch=8, trust_model=False, on_frames=None):
    """Read `video`, predict every face of every frame, write the annotated video to `out` (mp4v) and
    the table to out with suffix .csv. Frames are detected `frames_per_batch` at a time (one shape:
    one detector call), and all their faces go through the head as one batch. on_frames(done,
    total or None): after each batch. Returns {"frames", "frames_with_faces", "faces", "seconds",
    "frames_per_second", "video", "csv"}."""
    import cv2

    from heads.look.drawn import drawn_bgr

    predictor = Predictor(run_dir, min_face=min_face, refine=refine, min_score=min_score, mirror_score=mirror_score,
                          trust_model=trust_model)
    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise UserError(f"--video {video}: OpenCV cannot open it as a video (missing, not a video, or a codec "
                        "it lacks)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table_path = beside(out, ".csv")
    writer, counts, began = None, {"frames": 0, "frames_with_faces": 0, "faces": 0}, time.perf_counter()
    try:
        with open(table_path, "w", newline="") as handle:
            table = csv.writer(handle)
            table.writerow(CSV_COLUMNS)
            while True:
                frames = _read_frames(capture, frames_per_batch)
                if not frames:
                    break
                if writer is None:
                    height, width = frames[0].shape[:2]
                    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
                    if not writer.isOpened():
                        raise UserError(f"--out {out}: OpenCV cannot write an mp4 video there")
                first = counts["frames"]
                items = [(str(first + k), frame, "") for k, frame in enumerate(frames)]
                for k, (frame, entry) in enumerate(zip(frames, predictor.entries(items, faces))):
                    _write_rows(table, first + k, (first + k) / fps, entry)
                    counts["frames_with_faces"] += bool(entry["faces"])
                    counts["faces"] += len(entry["faces"])
                    writer.write(drawn_bgr(frame, entry))
                counts["frames"] += len(frames)
                if on_frames:
                    on_frames(counts["frames"], total)
    finally:
        capture.release()
        if writer is not None:
            writer.release()
    if counts["frames"] == 0:
        raise UserError(f"--video {video}: no frame could be read")
    seconds = time.perf_counter() - began
    return {**counts, "seconds": seconds, "frames_per_second": counts["frames"] / seconds, "video": str(out),
            "csv": str(table_path)}


def _read_frames(capture, n):
    """Up to n frames as RGB uint8 [H, W, 3]."""
    frames = []
    while len(frames) < n:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame[..., ::-1].copy())
    return frames


def _write_rows(table, frame, seconds, entry):
    for number, face in enumerate(entry["faces"], 1):
        x, y, w, h = face["box"]
        for attribute, value in face["attributes"].items():
            table.writerow([frame, f"{seconds:.3f}", number, f"{x:.1f}", f"{y:.1f}", f"{w:.1f}", f"{h:.1f}",
                            f"{face['score']:.4f}", attribute, f"{value['probability']:.5f}", value["decision"]])
