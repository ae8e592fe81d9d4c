"""`serve`: the HTTP API over a real socket on loopback (uvicorn in a thread; the command itself in a
process of its own), answering what `predict --json` answers; its batching, limits and access rules.

The run is a tiny probe backbone's head on the generated sample; the photos are real faces from the
shared sample (alone and pasted into a scene of three), so the face path's detector finds real faces."""

import asyncio
import io
import json
import socket
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cli
from harness.serving import served

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(sample_dir, probe_saved_model, tmp_path_factory):
    from embed.backbones import BackboneSpec, load_backbone
    from embed.dataset import load_dataset, locate
    from embed.runner import EmbedSpec, embed
    from heads.run.fit import train_heads
    from heads.run.task import TaskSpec
    root = tmp_path_factory.mktemp("served")
    labels, partition, images = locate(sample_dir)
    embed(load_dataset(labels, images, partition), load_backbone(BackboneSpec(str(probe_saved_model), image_size=32)),
          root / "cache.h5", EmbedSpec(batch_size=16, feature_dtype="float32"))
    train_heads(TaskSpec(root / "cache.h5", "Male,Smiling,Young"), root / "run", epochs=2, plots=False)
    return root / "run"


@pytest.fixture(scope="module")
def photos(celeba_sample, tmp_path_factory):
    """Three real aligned photos and one 1200x400 scene holding three more faces."""
    from embed.scenes import make_scenes
    folder = tmp_path_factory.mktemp("photos")
    real = sorted((celeba_sample / "img_align_celeba").glob("*.jpg"))
    make_scenes(real[10:13], folder / "scene", seed=2, faces_per_scene=(3,), scale_range=(0.8, 1.0), max_angle=10)
    return real[:3] + sorted((folder / "scene" / "scenes").glob("*.jpg"))


def make(run, **limits):
    from heads.serve.predict import Predictor
    from heads.serve.service import Access, Limits, make_app
    access = limits.pop("access", Access())
    return make_app(Predictor(run), Limits(**limits), access)


@pytest.fixture(scope="module")
def url(run):
    with served(make(run)) as address:
        yield address


def cli_json(run, images, *args):
    out = CliRunner().invoke(cli.main, ["predict", "--run", str(run), "--json", *args, *map(str, images)])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)


def assert_same_entry(got, expected):
    """Equal but for the last bits of floats: the server's batches are not predict's (another batch
    shape may take another oneDNN kernel), so landmarks move by < 1e-3 px and boxes and landmarks,
    rounded to 0.01, may round the other way."""
    assert set(got) == set(expected) - {"image"}
    for key in ("ok", "error", "note", "size"):
        assert got.get(key) == expected.get(key)
    pairs = [(got["attributes"], expected["attributes"])] if "attributes" in expected else []
    assert len(got.get("faces", [])) == len(expected.get("faces", []))
    for face, want in zip(got.get("faces", []), expected.get("faces", [])):
        np.testing.assert_allclose(face["box"], want["box"], atol=0.011)
        np.testing.assert_allclose(face["landmarks"], want["landmarks"], atol=0.011)
        assert face["score"] == pytest.approx(want["score"], abs=1e-4)
        assert face["landmarks_outside"] == want["landmarks_outside"]
        pairs.append((face["attributes"], want["attributes"]))
    for attributes, wanted in pairs:
        assert list(attributes) == list(wanted)
        for name, value in wanted.items():
            assert attributes[name]["probability"] == pytest.approx(value["probability"], abs=1e-4)
            assert attributes[name]["decision"] == value["decision"]
            assert attributes[name]["threshold"] == value["threshold"]


def test_served_predictions_are_predicts_own(run, url, photos):
    """Whole images (the default for a run on aligned images), every face, the best face: as the
    body and as the multipart field "image", from 4 clients at once; each answer is the entry
    `predict --json` prints for the photo."""
    expected = {mode: cli_json(run, photos, *(["--faces", mode] if mode else [])) for mode in (None, "all", "best")}
    assert sum(len(e["faces"]) for e in expected["all"]) >= 6  # the real faces were found

    def ask(client, k, mode, multipart):
        data = photos[k].read_bytes()
        params = {"faces": mode} if mode else {}
        if multipart:
            return client.post(f"{url}/v1/predict", params=params, files={"image": ("p.jpg", data, "image/jpeg")})
        return client.post(f"{url}/v1/predict", params=params, content=data, headers={"Content-Type": "image/jpeg"})

    cases = [(k, mode, multipart) for mode in (None, "all", "best") for k in range(len(photos))
             for multipart in (False, True)]
    answers = [None] * len(cases)

    def client_loop(worker):
        with httpx.Client(timeout=60) as client:
            for i in range(worker, len(cases), 4):
                answers[i] = ask(client, *cases[i])
    threads = [threading.Thread(target=client_loop, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for (k, mode, _), answer in zip(cases, answers):
        assert answer.status_code == 200, answer.text
        assert_same_entry(answer.json(), expected[mode][k])
    metrics = httpx.get(f"{url}/metrics").text
    assert 'celeba_heads_requests_total{route="/v1/predict",status="200"}' in metrics
    assert "celeba_heads_batch_size_count" in metrics and "celeba_heads_faces_total" in metrics
    faces = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("celeba_heads_faces_total")))
    assert faces >= 2 * sum(len(e["faces"]) for e in expected["all"] + expected["best"])


def test_run_health_metrics_and_schema(run, url):
    info = httpx.get(f"{url}/v1/run").json()
    assert info["attributes"] == ["Male", "Smiling", "Young"] and info["default_faces"] == "none"
    assert info["thresholds"] == {"Male": 0.5, "Smiling": 0.5, "Young": 0.5} and info["alignment"] is None
    assert info["backbones"][0]["preprocessing"]["image_size"] == 32 and set(info["test"]["Male"]) >= {"accuracy"}
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    page = httpx.get(f"{url}/")
    assert page.headers["content-type"].startswith("text/html") and 'id="camera"' in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")  # nothing from elsewhere
    assert "://" not in page.text.split("<script>")[0] and "src=\"http" not in page.text
    schema = httpx.get(f"{url}/openapi.json").json()
    parameters = {p["name"] for p in schema["paths"]["/v1/predict"]["post"]["parameters"]}
    assert parameters == {"faces", "min_face"}
    assert set(schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]) >= {"image/*", "multipart/form-data"}
    missing = httpx.get(f"{url}/nothing/../../etc/passwd")
    assert missing.status_code == 404 and list(missing.json()) == ["error"]
    assert 'celeba_heads_requests_total{route="other",status="404"}' in httpx.get(f"{url}/metrics").text


def _png_header(width, height):
    """A PNG whose header claims width x height, checksum and all (a decompression bomb's header,
    without the bomb)."""
    import zlib
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    data[29:33] = zlib.crc32(data[12:29]).to_bytes(4, "big")  # the IHDR chunk's CRC
    return bytes(data)


def test_every_bad_input_gets_one_line_of_json_and_a_4xx(run, photos):
    good = photos[0].read_bytes()
    jpeg = {"Content-Type": "image/jpeg"}
    cases = [
        ("empty", dict(content=b"", headers=jpeg), 400, "empty body"),
        ("not an image", dict(content=b"hello, world" * 10, headers=jpeg), 400, "not an image file"),
        ("truncated", dict(content=good[:len(good) // 3], headers=jpeg), 400, "cannot decode image"),
        ("truncated, faces", dict(content=good[:len(good) // 3], headers=jpeg, params={"faces": "all"}), 400,
         "cannot decode image"),
        ("too many pixels", dict(content=_png_header(12_000, 10_000), headers={"Content-Type": "image/png"}), 413,
         "image is 12000x10000 = 120.0 M pixels, more than the server's --max-pixels 100000000"),
        ("far too many pixels", dict(content=_png_header(60_000, 60_000), headers={"Content-Type": "image/png"}),
         413, "image is far more than the server's --max-pixels"),
        ("body too large", dict(content=good + b"\0" * 5000, headers=jpeg), 413, "over the server's --max-bytes"),
        ("body too large, chunked", dict(content=iter([good, b"\0" * 5000]), headers=jpeg), 413,
         "over the server's --max-bytes"),
        ("text body", dict(content=good, headers={"Content-Type": "text/plain"}), 415, "Content-Type 'text/plain'"),
        ("no content type", dict(content=good), 415, "Content-Type '(none)'"),
        ("multipart without image", dict(files={"photo": ("p.jpg", good, "image/jpeg")}), 400, 'field "image"'),
        ("unknown parameter", dict(content=good, headers=jpeg, params={"face": "all"}), 400,
         "unknown query parameter 'face'"),
        ("bad faces", dict(content=good, headers=jpeg, params={"faces": "al"}), 400, "faces: Input should be"),
        ("min_face too small", dict(content=good, headers=jpeg, params={"faces": "all", "min_face": 3}), 400,
         "min_face: Input should be greater than or equal to 12"),
        ("min_face without faces", dict(content=good, headers=jpeg, params={"min_face": 30}), 400,
         "min_face needs faces=all or best"),
    ]
    with served(make(run, max_bytes=len(good) + 1000, max_pixels=10**8)) as address, httpx.Client(timeout=60) as client:
        for name, request, status, message in cases:
            answer = client.post(f"{address}/v1/predict", **request)
            assert answer.status_code == status, (name, answer.text)
            assert list(answer.json()) == ["error"] and message in answer.json()["error"], (name, answer.text)
            assert "\n" not in answer.text, name
        assert client.get(f"{address}/v1/predict").status_code == 405
        after = client.post(f"{address}/v1/predict", content=good, headers=jpeg)  # still answering
        assert after.status_code == 200 and after.json()["ok"]


def test_a_slow_client_gets_408_and_does_not_hold_the_others(run, photos):
    good = photos[0].read_bytes()
    with served(make(run, request_timeout=2.0)) as address:
        warm = httpx.post(f"{address}/v1/predict", content=good, headers={"Content-Type": "image/jpeg"}, timeout=60)
        assert warm.status_code == 200  # the graph traced before the clock starts
        host, port = address.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as slow:
            slow.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                         b"Content-Length: 100000\r\n\r\n" + good[:100])  # and then nothing
            began = time.monotonic()
            other = httpx.post(f"{address}/v1/predict", content=good, headers={"Content-Type": "image/jpeg"}, timeout=30)
            assert other.status_code == 200 and time.monotonic() - began < 2.0  # answered while the slow one waits
            answer = b""
            while b"}" not in answer:  # the headers and the JSON body may come in two segments
                chunk = slow.recv(4096)
                assert chunk, answer
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within 2 s" in answer


def test_a_full_queue_answers_503_at_once_and_the_queued_requests_still_get_theirs(run, photos):
    good = photos[0].read_bytes()
    app = make(run, workers=1, max_batch=1, max_queue=1)
    batcher, gate = app.state.service.batcher, threading.Event()
    work = batcher.work
    batcher.work = lambda items: (gate.wait(30), work(items))[1]  # the model held until the gate opens
    answers = []

    def post():
        answers.append(httpx.post(f"{address}/v1/predict", content=good, headers={"Content-Type": "image/jpeg"},
                                  timeout=60))
    with served(app) as address:
        held = [threading.Thread(target=post) for _ in range(2)]  # one running, one waiting
        for t in held:
            t.start()
        deadline = time.monotonic() + 30
        while batcher.pending < 2:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        refused = httpx.post(f"{address}/v1/predict", content=good, headers={"Content-Type": "image/jpeg"})
        gate.set()
        for t in held:
            t.join(60)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json() == {"error": "busy: 1 request is already waiting; try again shortly"}
    assert [a.status_code for a in answers] == [200, 200]


def test_a_token_guards_the_v1_routes_and_loopback_is_the_default(run, photos):
    from cache.errors import UsageError
    from heads.serve.service import Access, check_access
    with pytest.raises(UsageError, match="--host 0.0.0.0 listens beyond this machine: give --token"):
        check_access("0.0.0.0", None, False)
    check_access("0.0.0.0", "s3cret", False)
    check_access("0.0.0.0", None, True)
    check_access("::1", None, False)
    with pytest.raises(UsageError, match="contradict"):
        check_access("127.0.0.1", "s3cret", True)
    good = photos[0].read_bytes()
    with served(make(run, access=Access("s3cret"))) as address:
        for headers, status in (({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                ({"Authorization": "Bearer s3cret"}, 200)):
            answer = httpx.post(f"{address}/v1/predict", content=good,
                                headers={"Content-Type": "image/jpeg", **headers}, timeout=30)
            assert answer.status_code == status, answer.text
            assert httpx.get(f"{address}/v1/run", headers=headers).status_code == status
        assert httpx.get(f"{address}/v1/run").json() == {"error": "missing or wrong bearer token "
                                                                  "(Authorization: Bearer TOKEN)"}
        assert httpx.get(f"{address}/healthz").status_code == 200  # probes need no token
        assert "access-control-allow-origin" not in httpx.get(f"{address}/healthz",
                                                              headers={"Origin": "http://x.example"}).headers
    with served(make(run, access=Access(cors_origins=("http://app.example",)))) as address:
        answer = httpx.get(f"{address}/healthz", headers={"Origin": "http://app.example"})
        assert answer.headers["access-control-allow-origin"] == "http://app.example"


def test_the_batcher_gathers_concurrent_requests_and_refuses_past_its_queue():
    from heads.serve.batching import Batcher, QueueFull
    batches, gate, running = [], threading.Event(), threading.Event()

    def work(items):
        running.set()
        gate.wait(30)
        batches.append(list(items))
        return [item * 10 for item in items]

    async def until(condition):
        for _ in range(3000):  # 30 s at most
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    async def scenario():
        batcher = Batcher(work, max_batch=4, max_wait=0.05, max_queue=6)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(0))  # runs alone while the gate is shut
        await until(running.is_set)
        rest = [asyncio.ensure_future(batcher.submit(k)) for k in range(1, 7)]
        await until(lambda: batcher.waiting == 6)
        with pytest.raises(QueueFull, match="6 requests are already waiting"):
            await batcher.submit(99)
        gate.set()
        results = await asyncio.gather(first, *rest)
        alone = await batcher.submit(7)  # waits max_wait for company, then runs alone
        await batcher.stop()
        return results, alone
    results, alone = asyncio.run(scenario())
    assert results == [0, 10, 20, 30, 40, 50, 60] and alone == 70
    assert batches == [[0], [1, 2, 3, 4], [5, 6], [7]]


def test_two_workers_run_two_batches_at_once():
    from heads.serve.batching import Batcher
    both = threading.Barrier(2, timeout=10)  # passes only when two batches run together

    def work(items):
        both.wait()
        return items

    async def scenario():
        batcher = Batcher(work, max_batch=1, max_wait=0, max_queue=4, workers=2)
        batcher.start()
        results = await asyncio.gather(batcher.submit(1), batcher.submit(2))
        await batcher.stop()
        return results
    assert asyncio.run(scenario()) == [1, 2]


def test_the_batcher_hands_a_failed_batch_to_each_of_its_requests():
    from heads.serve.batching import Batcher

    def work(items):
        raise ValueError("the model broke")

    async def scenario():
        batcher = Batcher(work, max_batch=2, max_wait=0.01, max_queue=4)
        batcher.start()
        outcomes = await asyncio.gather(batcher.submit(1), batcher.submit(2), return_exceptions=True)
        await batcher.stop()
        return outcomes
    assert [str(o) for o in asyncio.run(scenario())] == ["the model broke"] * 2


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_serve_command_prints_its_url_and_sigterm_finishes_the_request_in_flight(run, photos):
    import signal

    from harness import processes
    port = _free_port()
    proc = processes.start("serve", "--run", run, "--port", port, "--max-wait", 1500, capture=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "serve did not come up"
            time.sleep(0.2)
        answers = []
        client = threading.Thread(target=lambda: answers.append(httpx.post(
            f"{url}/v1/predict", content=photos[0].read_bytes(), headers={"Content-Type": "image/jpeg"}, timeout=60)))
        client.start()
        while "celeba_heads_requests_in_flight 1.0" not in httpx.get(f"{url}/metrics", timeout=5).text:
            assert client.is_alive() and time.monotonic() < deadline, "the request never arrived"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # the request waits 1.5 s for company in its batch: in flight
        client.join(60)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert answers and answers[0].status_code == 200 and answers[0].json()["ok"]
    assert proc.returncode == 0, stderr
    assert f"serving {run} at {url} (POST {url}/v1/predict; Ctrl-C to stop)" in stdout
    assert "stopped: every request in flight was answered" in stdout


@pytest.mark.parametrize("args, message", [
    (["--host", "0.0.0.0"], "--host 0.0.0.0 listens beyond this machine: give --token"),
    (["--token", "x", "--no-auth"], "--token and --no-auth contradict each other"),
    (["--max-batch", "0"], "0 is not in the range 1<=x<=1024"),
    (["--port", "70000"], "70000 is not in the range 0<=x<=65535"),
    (["--max-wait", "nan"], "'nan' is not a finite number"),
])
def test_serve_options_are_checked_in_one_line_before_anything_loads(run, args, message):
    out = CliRunner().invoke(cli.main, ["serve", "--run", str(run), *args])
    assert out.exit_code == 2 and message in out.output and "Traceback" not in out.output, out.output


def test_a_port_in_use_is_one_line(run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = CliRunner().invoke(cli.main, ["serve", "--run", str(run), "--port", str(taken.getsockname()[1])])
    assert out.exit_code == 1 and "cannot listen on 127.0.0.1:" in out.output and "Traceback" not in out.output


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
def _until(page, read, done, timeout=90):
    """Poll read(page) until done(value) (the page's Content-Security-Policy forbids the eval that
    wait_for_function uses, so the test reads the DOM instead); returns the value."""
    deadline = time.monotonic() + timeout
    while True:
        value = read(page)
        if done(value):
            return value
        assert time.monotonic() < deadline, f"still {value!r} after {timeout} s"
        page.wait_for_timeout(200)


DRAWN = """() => { const c = document.getElementById('overlay'); const d = c.getContext('2d')
                   .getImageData(0, 0, c.width, c.height).data; let n = 0;
                   for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (make browser installs it)")
def test_the_page_predicts_a_photo_and_the_webcam_and_draws_every_face(run, celeba_sample, photos, tmp_path):
    """As a person uses it, in headless Chromium: a chosen photo's faces drawn and tabled; then the
    Camera button, a fake camera playing real faces (y4m), predictions arriving frame after frame
    with both faces drawn; nothing loaded from elsewhere, no script error."""
    from playwright.sync_api import sync_playwright

    from harness.serving import camera_frames, write_y4m
    real = sorted((celeba_sample / "img_align_celeba").glob("*.jpg"))
    camera = write_y4m(camera_frames(real[24:26], n=10), tmp_path / "camera.y4m")
    with served(make(run)) as address, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        errors, elsewhere = [], []
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("request", lambda request: None if request.url.startswith((address, "blob:", "data:"))
                else elsewhere.append(request.url))
        page.goto(address)
        _until(page, lambda p: p.text_content("#run"), lambda text: text.startswith("run "))
        page.set_input_files("#file", str(photos[3]))  # the scene of three faces
        _until(page, lambda p: p.get_attribute("#overlay", "data-faces"), lambda faces: faces == "3")
        assert len(page.query_selector_all("#faces tbody tr")) == 3 and page.evaluate(DRAWN) > 1000
        rects = json.loads(page.get_attribute("#overlay", "data-plates"))  # 3 plates, then the 3 faces' boxes
        for i, plate in enumerate(rects[:3]):  # as predict --draw: no plate covers another plate or any face
            for other in rects[:i] + rects[3:]:
                assert min(plate["x"] + plate["w"], other["x"] + other["w"]) <= max(plate["x"], other["x"]) or \
                    min(plate["y"] + plate["h"], other["y"] + other["h"]) <= max(plate["y"], other["y"]), rects
        page.click("#camera")
        _until(page, lambda p: int(p.get_attribute("#overlay", "data-frames")), lambda frames: frames >= 6)
        faces = page.get_attribute("#overlay", "data-faces")
        fps = page.text_content("#fps")
        drawn = page.evaluate(DRAWN)
        page.click("#camera")  # stop
        browser.close()
    assert faces == "2" and drawn > 1000 and fps.endswith("frames/s") and float(fps.split()[0]) > 0
    assert errors == [] and elsewhere == []
