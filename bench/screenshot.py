"""Save a screenshot of an HTML report (default: the demo's) for the README, rendered in headless
Chromium (Debian's chromium package; `make browser` installs it)."""

from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@click.command()
@click.option("--page", default=str(ROOT / "demo-output" / "report.html"), show_default=True,
              type=click.Path(exists=True, dir_okay=False))
@click.option("--out", default=str(ROOT / "docs" / "report.png"), show_default=True, type=click.Path(dir_okay=False))
@click.option("--height", default=1400, show_default=True, help="Pixels of the page to capture.")
@click.option("--full-page", is_flag=True, help="Capture the whole page instead of the top --height pixels.")
def main(page, out, height, full_page):
    """Render the page at 1200 px wide and save the top `height` pixels (or all) as a PNG."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        tab = browser.new_page(viewport={"width": 1200, "height": height})
        tab.goto(Path(page).resolve().as_uri())
        tab.screenshot(path=out, full_page=full_page)
        browser.close()
    click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()
