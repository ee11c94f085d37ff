"""Look at a report the way a person does: render it in headless Chromium, then check that the page has
non-empty tables and images and that the screenshot shows them (ink and colour, not a blank page).

Uses Debian's ``chromium`` (``apt-get install chromium``); no browser is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

from rerank.errors import RerankError

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--hide-scrollbars",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str | None:
    for name in (os.environ.get("RERANK_CHROMIUM", ""), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class _Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables = self.rows = self.cells = self.images = 0
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.tables += 1
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows += 1
        elif tag == "td":
            self.cells += 1
        elif tag == "img" and (a.get("src") or "").startswith(("data:image/png", "data:image/svg")):
            self.images += 1

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False


def check_page(
    page: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    *,
    width: int = 1280,
    height: int = 2400,
    timeout: float = 120.0,
) -> dict:
    """Render ``page`` in headless Chromium: counts from the rendered DOM, and the share of inked and of
    coloured pixels in a screenshot (written to ``screenshot`` if given). Raises if the page shows no
    table or no image."""
    import matplotlib.image as mpimg

    exe = find_chromium()
    if exe is None:
        raise RerankError("no Chromium to render the page with", hint="apt-get install chromium (Debian)")
    p = Path(page).resolve()
    if not p.is_file():
        raise RerankError(f"{p} does not exist", hint="give a report's index.html")
    url = p.as_uri()
    with tempfile.TemporaryDirectory() as tmp:
        base = [exe, *FLAGS, f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}"]
        try:
            dom = subprocess.run([*base, "--dump-dom", url], capture_output=True, text=True, timeout=timeout)
            shot = Path(screenshot) if screenshot else Path(tmp) / "shot.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            snap = subprocess.run(
                [*base, f"--screenshot={shot}", url], capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise RerankError(f"Chromium did not finish rendering {p} in {timeout:.0f} s", hint="") from e
        if dom.returncode != 0 or snap.returncode != 0 or not shot.is_file():
            raise RerankError(f"Chromium failed on {p}: {(dom.stderr or snap.stderr).strip()[-200:]}", hint="")
        counter = _Counter()
        counter.feed(dom.stdout)
        img = mpimg.imread(str(shot))[..., :3]
    ink = float((img.min(axis=2) < 0.9).mean())
    colour = float(((img.max(axis=2) - img.min(axis=2)) > 0.25).mean())
    facts = {
        "page": str(p),
        "tables": counter.tables,
        "body_rows": counter.rows,
        "cells": counter.cells,
        "images": counter.images,
        "inked_pixels": round(ink, 4),
        "coloured_pixels": round(colour, 4),
        "screenshot": str(screenshot) if screenshot else None,
        "chromium": exe,
    }
    problems = [f"no {k.replace('_', ' ')}" for k in ("tables", "body_rows", "images") if not facts[k]]
    if ink < 0.01:
        problems.append("a blank screenshot")
    if problems:
        raise RerankError(f"{p} renders with {', '.join(problems)}", hint="regenerate the report")
    return facts
