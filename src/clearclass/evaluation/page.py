"""Pieces of the self-contained HTML pages (the evaluation report, the cleaning list).

Everything a page shows travels inside it: thumbnails as JPEG data URIs, figures as PNG
data URIs, styles and scripts inline. A page opened from disk makes no request at all, so it
works offline and can be mailed or archived as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path
from typing import Any

from PIL import Image

from clearclass.data.decode import UnreadableImage, open_rgb
from clearclass.fileio import shown_name

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
    inline script (data goes into it through `script_json`). A file name that is not UTF-8
    shows with \\xe9-style escapes."""
    script_tag = f"<script>\n{script}\n</script>" if script else ""
    return shown_name(f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">\n'
                      f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
                      f"<title>{html.escape(title)}</title>\n<style>{STYLE}{style}</style>"
                      f"</head><body>\n{body}\n{script_tag}\n</body></html>\n")


# Inside <script>, the HTML parser looks for "</script" and, after "<!--", for "<script"
# too (it then needs two "</script>"): names such as "<!--<script>" would end the script
# early or swallow its end. JSON can say <, > and & as \u003c-style escapes, so none of them
# is ever in the script's text; U+2028 and U+2029 (line breaks to older JavaScript) neither.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                  "\u2029": "\\u2029"}


def script_json(data: Any) -> str:
    """`data` as a JavaScript value to put in an inline <script>, whatever text it holds
    (names shown as `shown_name` shows them).

    Example:
        print(script_json({"name": "</script><!--<script>"}))
    """
    text = json.dumps(_shown(data), separators=(",", ":"), ensure_ascii=False)
    return re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_UNSAFE[m.group()], text)


def _shown(data: Any) -> Any:
    if isinstance(data, str):
        return shown_name(data)
    if isinstance(data, dict):
        return {_shown(k): _shown(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_shown(v) for v in data]
    return data
