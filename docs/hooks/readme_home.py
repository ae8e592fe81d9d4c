"""MkDocs hook: the site's home page is README.md, its links into docs/ made relative to the site,
so the landing page has one source (`docs/index.md` is a placeholder)."""

import re
from pathlib import Path

LINKS = ((re.compile(r"\]\(docs/"), "]("), (re.compile(r"\]\(examples/quickstart\.ipynb\)"), "](quickstart.ipynb)"),
         (re.compile(r"\]\(bench/RESULTS\.md\)"), "](reference/results.md)"))


def home_markdown(readme):
    """README.md's text with its repository links rewritten for the site's root."""
    text = Path(readme).read_text(encoding="utf-8")
    for pattern, replacement in LINKS:
        text = pattern.sub(replacement, text)
    return text


def on_page_read_source(page, config):
    if page.file.src_uri == "index.md":
        return home_markdown(Path(config.config_file_path).parent / "README.md")
    return None
