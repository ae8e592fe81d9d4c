"""Save a screenshot of an HTML report (default: the demo's) for the docs, rendered in headless
Chromium (Debian's chromium package; `make browser` installs it); or, with --camera RUN, of serve's
page running on the webcam (a fake camera playing real faces of the shared sample)."""

from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def camera_page(url, camera, seconds, screenshot=None):
    """Open serve's page at url in headless Chromium whose fake camera plays `camera` (a y4m), click
    Camera, wait `seconds`; returns (the frames/s the page shows, faces drawn on the last frame),
    after saving a screenshot if asked."""
    import time

    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            *CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={camera}"])
        tab = browser.new_page(viewport={"width": 1000, "height": 760})
        tab.goto(url)
        tab.click("#camera")
        time.sleep(seconds)
        fps, faces = tab.text_content("#fps"), tab.get_attribute("#overlay", "data-faces")
        if screenshot:
            tab.screenshot(path=screenshot)
        browser.close()
    return (float(fps.split()[0]) if fps else 0.0), int(faces)


@click.command()
@click.option("--page", default=str(ROOT / "demo-output" / "report.html"), show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--out", default=str(ROOT / "docs" / "report.png"), show_default=True, type=click.Path(dir_okay=False))
@click.option("--height", default=1400, show_default=True, help="Pixels of the page to capture.")
@click.option("--full-page", is_flag=True, help="Capture the whole page instead of the top --height pixels.")
@click.option("--camera", "camera_run", type=click.Path(exists=True, file_okay=False),
              help="Instead: serve this run and capture serve's page on a fake camera of two real sample faces "
                   "($CELEBA_SAMPLE or ../shared/celeba-sample).")
def main(page, out, height, full_page, camera_run):
    """Render the page at 1200 px wide and save the top `height` pixels (or all) as a PNG."""
    from playwright.sync_api import sync_playwright

    if camera_run:
        import tempfile

        from bench.common import SAMPLE
        from harness.serving import camera_frames, served, write_y4m
        from heads.serve.predict import Predictor
        from heads.serve.service import make_app
        real = sorted((SAMPLE / "img_align_celeba").glob("*.jpg"))
        with tempfile.TemporaryDirectory() as folder, served(make_app(Predictor(camera_run))) as url:
            camera = write_y4m(camera_frames(real[24:26], n=30), f"{folder}/camera.y4m")
            fps, faces = camera_page(url, camera, 8, screenshot=out)
        click.echo(f"wrote {out}: {fps} frames/s, {faces} faces")
        return
    if not Path(page).is_file():
        raise click.BadParameter(f"{page} does not exist (make demo writes the demo's report)", param_hint="--page")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1200, "height": height})
        tab.goto(Path(page).resolve().as_uri())
        tab.screenshot(path=out, full_page=full_page)
        browser.close()
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
