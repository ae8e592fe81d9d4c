"""serve: `cli.py serve` in a process of its own on loopback, loaded by client threads of this process (bounded counts, loopback only): photos/s with 8 concurrent clients against predict's own photos/s on the same photos (the run loaded once, start-up excluded), p50 and p99 latency at 1 and 8 clients, the dynamic batch's size and wait measured as a grid; the bad-input matrix (each case's status, the server alive after all of them) and the server's peak RSS under a flood of decompression-bomb headers and the largest photos allowed."""

import io
import socket
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from bench.common import SAMPLE, group, row
from bench.groups.faces import gender_head

JPEG = {"Content-Type": "image/jpeg"}


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`cli.py serve --run RUN ...` in a fresh interpreter, up once /healthz answers; stopped by SIGTERM."""

    def __init__(self, run_dir, *options):
        from harness import processes
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = processes.start("serve", "--run", run_dir, "--port", self.port, *options, capture=True,
                                       fork=False)

    def __enter__(self):
        import httpx
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.process.kill()
        raise RuntimeError(f"serve did not come up: {self.process.communicate()[1][-1000:]}")

    def peak_rss_mb(self):
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1024

    def __exit__(self, *exc):
        import signal
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=60)


def load(url, photos, clients, per_client, params=None):
    """(latencies in s, wall seconds): `clients` threads, each posting `per_client` photos in turn."""
    import httpx
    latencies, failures = [], []

    def client(k):
        with httpx.Client(timeout=120) as session:
            for i in range(per_client):
                data = photos[(k * per_client + i) % len(photos)]
                began = time.perf_counter()
                answer = session.post(f"{url}/v1/predict", content=data, headers=JPEG, params=params or {})
                latencies.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    failures.append(answer.text)
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if failures:
        raise RuntimeError(f"{len(failures)} requests failed: {failures[0]}")
    return np.array(latencies), time.perf_counter() - began


def predict_rate(predictor, paths, batch_size=32):
    """predict's photos/s on the photo files: read, detect, align, backbone, head, `batch_size` photos a
    call as `predict --faces all` goes (`Predictor.entries`), the run loaded once."""
    from embed.defaults import MAX_PIXELS
    from embed.faces import read_photo
    began = time.perf_counter()
    for start in range(0, len(paths), batch_size):
        predictor.entries([(str(p), *read_photo(p, MAX_PIXELS)) for p in paths[start:start + batch_size]])
    return len(paths) / (time.perf_counter() - began)


def _bomb(width, height):
    """A PNG header claiming width x height (checksum right), without the pixels."""
    from PIL import Image
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(data[12:29]).to_bytes(4, "big")
    return bytes(data)


def _largest_allowed(max_pixels):
    """A real JPEG of about max_pixels pixels (a photo the server must decode)."""
    from PIL import Image
    side = int(max_pixels ** 0.5) - 1
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).resize((side, side)).save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def bad_inputs(good):
    return [
        ("empty body", dict(content=b"", headers=JPEG)),
        ("not an image", dict(content=b"GIF89a but not really" * 20, headers=JPEG)),
        ("truncated JPEG", dict(content=good[:len(good) // 2], headers=JPEG)),
        ("a header claiming 60000x60000 pixels", dict(content=_bomb(60_000, 60_000), headers={"Content-Type": "image/png"})),
        ("a body over --max-bytes", dict(content=good * 200, headers=JPEG)),
        ("text/plain", dict(content=good, headers={"Content-Type": "text/plain"})),
        ("multipart without the field image", dict(files={"photo": ("p.jpg", good, "image/jpeg")})),
        ("unknown query parameter", dict(content=good, headers=JPEG, params={"face": "all"})),
        ("faces=al", dict(content=good, headers=JPEG, params={"faces": "al"})),
    ]


@group("serve", order=16)
def run(ctx):
    import httpx

    from embed.scenes import make_scenes
    work = ctx.workdir / "serve"
    work.mkdir(parents=True, exist_ok=True)
    run_dir = work / "antialias" if (work / "antialias").exists() else gender_head(work, antialias=True)
    split = pd.read_csv(SAMPLE / "list_eval_partition.csv")
    ids = split[split.partition > 0].image_id.tolist()[:12 if ctx.quick else 96]
    make_scenes([SAMPLE / "img_align_celeba" / i for i in ids], work / "scenes", seed=4, faces_per_scene=(1,))
    paths = sorted((work / "scenes" / "scenes").glob("*.jpg"))
    photos = [p.read_bytes() for p in paths]
    rows = []
    per_client = 4 if ctx.quick else 24
    note = (f"{len(paths)} one-face 400x400 scenes of real val/test photos; gender CNN add_4 head; faces=all (the "
            "default of an --align run); 8 client threads posting each photo's bytes in turn over loopback")
    grid = [] if ctx.quick else [(1, 8, 5), (1, 4, 5), (2, 8, 5), (2, 16, 5), (2, 4, 0), (2, 4, 20)]
    for workers, max_batch, max_wait in grid:  # the defaults' neighbours: photos/s at 8 clients, p50 at 1
        with Server(run_dir, "--workers", workers, "--max-batch", max_batch, "--max-wait", max_wait) as server:
            load(server.url, photos, 8, 2, {"faces": "all"})  # warm-up: trace the batch shapes
            one, _ = load(server.url, photos, 1, per_client, {"faces": "all"})
            eight, seconds = load(server.url, photos, 8, per_client, {"faces": "all"})
        rows.append(row(f"serve: 8 clients, --workers {workers} --max-batch {max_batch} --max-wait {max_wait} ms",
                        round(8 * per_client / seconds, 1), "photos/s",
                        note=f"p50 at 1 client {1000 * np.median(one):.0f} ms, at 8 {1000 * np.median(eight):.0f} ms"))
    from heads.serve.predict import Predictor
    predictor = Predictor(run_dir)
    predict_rate(predictor, paths)  # warm-up
    rates, ones, eights = [], [], []
    with Server(run_dir) as server:  # the defaults, paired with predict in alternating rounds
        load(server.url, photos, 8, 2, {"faces": "all"})
        for _ in range(1 if ctx.quick else 3):
            base = predict_rate(predictor, paths)
            one, _ = load(server.url, photos, 1, per_client, {"faces": "all"})
            eight, seconds = load(server.url, photos, 8, per_client, {"faces": "all"})
            rates.append((8 * per_client / seconds, base))
            ones.append(one)
            eights.append(eight)
    ratio = float(np.median([served / base for served, base in rates]))
    rows.append(row("serve: photos/s at 8 clients / predict's photos/s (defaults: --workers 2 --max-batch 4 "
                    "--max-wait 5 ms)", round(ratio, 3), "ratio", ">= 0.8", ratio >= 0.8,
                    note + "; median of paired rounds, serve/predict photos/s: "
                    + ", ".join(f"{a:.1f}/{b:.1f}" for a, b in rates)
                    + " (predict: Predictor.entries on 32 photos a call, the run loaded once)"))
    for clients, latencies in ((1, np.concatenate(ones)), (8, np.concatenate(eights))):
        rows.append(row(f"serve: latency at {clients} client(s), p50 / p99", f"{1000 * np.median(latencies):.0f} / "
                        f"{1000 * np.quantile(latencies, 0.99):.0f}", "ms", note=f"{len(latencies)} requests; " + note))
    rows.append(page_rate(run_dir, work, 8 if ctx.quick else 30))
    good = photos[0]
    max_pixels = 4_000_000 if ctx.quick else 16_000_000
    with Server(run_dir, "--max-bytes", 2 * 2**20, "--max-pixels", max_pixels) as server:
        statuses = []
        with httpx.Client(timeout=60) as session:
            for name, request in bad_inputs(good):
                statuses.append(f"{name} {session.post(f'{server.url}/v1/predict', **request).status_code}")
            alive = session.post(f"{server.url}/v1/predict", content=good, headers=JPEG).status_code == 200
        rows.append(row("serve: the bad-input matrix, each case's status", "; ".join(statuses), "", "4xx each, alive "
                        "after", alive and all(s.split()[-1].startswith("4") for s in statuses),
                        f"alive after all of them: {alive}"))
        bombs = [_bomb(60_000, 60_000)] * 4
        load_bombs = threading.Thread(target=lambda: _flood(server.url, bombs, 8, 20 if ctx.quick else 200))
        load_bombs.start()
        largest = _largest_allowed(max_pixels)
        load(server.url, [largest], 2, 2 if ctx.quick else 6, {"faces": "all"})
        load_bombs.join(600)
        peak = server.peak_rss_mb()
        rows.append(row("serve: peak RSS under a flood of bomb headers and the largest photos allowed",
                        round(peak), "MB", "< 3000", peak < 3000,
                        f"8 clients sending {'160' if ctx.quick else '1,600'} PNG headers claiming 60000x60000 pixels "
                        f"(each a 413 from its header) while 2 clients send {max_pixels / 1e6:.0f} M pixel JPEGs "
                        f"(decoded, searched for faces); --max-pixels {max_pixels}"))
    return rows


def page_rate(run_dir, work, seconds):
    """The page's predicted frames/s with a 640x480 fake camera playing two real faces, in headless
    Chromium (Debian's), against `cli.py serve` in its own process."""
    from bench.screenshot import camera_page
    from harness.serving import camera_frames, write_y4m
    real = sorted((SAMPLE / "img_align_celeba").glob("*.jpg"))
    camera = write_y4m(camera_frames(real[24:26], n=30), work / "camera.y4m")
    with Server(run_dir) as server:
        fps, faces = camera_page(server.url, camera, seconds)
    return row("serve: the page's webcam, 640x480, two faces a frame", fps, "frames/s", ">= 3", fps >= 3,
               f"predicted frames/s the page shows after {seconds} s (one frame in flight at a time), {faces} faces "
               "drawn on the last; headless Chromium with a fake camera (y4m of real sample faces); gender CNN head")


def _flood(url, bodies, clients, per_client):
    """Post bodies that must each be refused 413; raise if one is not."""
    import httpx
    statuses = []

    def client():
        with httpx.Client(timeout=60) as session:
            for i in range(per_client):
                statuses.append(session.post(f"{url}/v1/predict", content=bodies[i % len(bodies)],
                                             headers={"Content-Type": "image/png"}).status_code)
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    if set(statuses) != {413}:
        raise RuntimeError(f"a bomb header was answered {sorted(set(statuses))}, not 413")
