"""`serve`'s app on a real socket for tests and benchmarks: uvicorn in a thread of this process,
listening on a free loopback port, stopped (requests in flight finished) when the block ends."""

import contextlib
import threading
import time

import uvicorn

from heads.serve.service import listening_socket, url_of


@contextlib.contextmanager
def served(app, host="127.0.0.1", start_timeout=30.0, **config):
    """Yields the URL of `app` served on host (loopback) and a free port; config: uvicorn.Config's."""
    sock = listening_socket(host, 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    try:
        yield url_of(sock)
    finally:
        server.should_exit = True
        thread.join(start_timeout)
        sock.close()


def camera_frames(images, n=20, width=640, height=480, seed=0):
    """n webcam-like RGB frames uint8 [height, width, 3]: two real aligned faces (paths to CelebA
    178x218 images) pasted side by side on a textured background, drifting a little frame to frame."""
    import numpy as np
    from PIL import Image

    from embed.scenes import paste, texture
    faces = [np.asarray(Image.open(p).convert("RGB")) for p in images[:2]]
    frames = []
    for k in range(n):
        rng = np.random.default_rng(seed)  # the same placement every frame, then a small drift
        frame = texture(rng, height, width)
        for face, cell in zip(faces, ((0, width // 2), (width // 2, width))):
            paste(frame, face, rng, cell, (1.3, 1.4), 5.0)
        frames.append(np.roll(frame, 2 * (k % 5), axis=1))
    return frames


def write_y4m(frames, path, fps=10):
    """RGB frames as a YUV4MPEG2 (4:2:0) file: what Chromium's fake camera plays
    (--use-file-for-fake-video-capture)."""
    import cv2
    height, width = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in frames:
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


def sample_pixels(predictor, sample, n, partition=2):
    """(preprocessed pixels float32 [n', S, S, C] of the first n images of a split of a CelebA-layout
    folder (default test), the run's probabilities float32 [n', k] for them): what an exported file
    is compared against. predictor: a heads.serve.predict.Predictor on a one-backbone run."""
    import numpy as np
    import pandas as pd
    import tensorflow as tf

    from embed.pipeline import decode_file_bytes, preprocess
    from heads.serve.predict import run_view_features
    prep = predictor.backbones[0].preprocessing
    split = pd.read_csv(sample / "list_eval_partition.csv")
    paths = [sample / "img_align_celeba" / i for i in split[split.partition == partition].image_id[:n]]
    pixels = np.stack([preprocess(decode_file_bytes(p.read_bytes(), prep.channels, 10**8)[0], prep).numpy()
                       for p in paths])
    features = run_view_features(predictor.run, predictor.backbones[0], tf.constant(pixels)).numpy()
    return pixels, predictor.head.predict_proba(predictor.transform.transform(features))
