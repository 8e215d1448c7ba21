"""Pieces of the self-contained HTML pages (the evaluation report, the cleaning list).

Everything a page shows travels inside it: thumbnails as JPEG data URIs, figures as PNG
data URIs, styles and scripts inline. A page opened from disk makes no request at all, so it
works offline and can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from PIL import Image

from clearclass.data.decode import UnreadableImage, open_rgb

THUMBNAIL_SIDE = 96  # pixels, the longer side; 2-4 KB each as JPEG
THUMBNAIL_QUALITY = 70

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222;
       padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.5em; text-align: left; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
h2 { margin-top: 2em; }
.thumbs { display: flex; flex-wrap: wrap; gap: 8px; }
.thumb { width: 124px; font-size: 11px; line-height: 1.25; overflow-wrap: anywhere; }
.thumb img { display: block; width: 96px; height: 96px; object-fit: contain;
             background: #f3f3f3; border: 1px solid #ddd; }
.muted { color: #666; }
"""


def thumbnail(path: str | Path, side: int = THUMBNAIL_SIDE) -> str:
    """A small JPEG of the photo at `path` as a data URI; "" when it cannot be read.

    Example:
        print(thumbnail(Path("rex.jpg"))[:23])  # data:image/jpeg;base64,
    """
    try:
        image = open_rgb(path, min_size=side)  # draft-mode decoding: large JPEGs fast
    except (UnreadableImage, OSError):
        return ""
    image.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def document(title: str, body: str, script: str = "", style: str = "") -> str:
    """A whole HTML page: title, the shared style (and `style`), the body, and an optional
    inline script."""
    script_tag = f"<script>\n{script}\n</script>" if script else ""
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}{style}</style></head><body>\n"
            f"{body}\n{script_tag}\n</body></html>\n")
