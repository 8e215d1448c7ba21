"""The HTML of clearclass: the pages it writes (the evaluation report, the cleaning list) and
its notebook displays, rendered from the Jinja2 templates in clearclass/templates/; and the
Markdown model card that `clearclass push` uploads (`render_markdown`).

Every template is autoescaped: a file, folder or class name is text wherever it lands, even
one that reads as markup (`<img src=x onerror=...>`), so no forgotten escape call can let a
photo's name run a script in a page people open and share. Data for a page's script goes
through `script_json`, the one place that writes into a <script>.

Everything a page shows travels inside it: thumbnails as JPEG data URIs, figures as PNG
data URIs, styles and scripts inline. A page opened from disk makes no request at all, so it
works offline and can be mailed or archived as one file.

This module is a low layer: evaluation, cleaning, predict, progress and exploration use it,
and it imports none of them.
"""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup
from PIL import Image

from clearclass.data.decode import UnreadableImage, open_rgb
from clearclass.fileio import shown_name

THUMBNAIL_SIDE = 96  # pixels, the longer side; 2-4 KB each as JPEG
THUMBNAIL_QUALITY = 70

# One environment for every page: templates are compiled once and cached. StrictUndefined
# makes a variable a template names but `render` was not given an error, not an empty string.
ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("clearclass", "templates"),
    autoescape=True,  # every template, whatever its suffix (.html, .svg, .js)
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render(name: str, **context: Any) -> str:
    """The template `name` (in clearclass/templates/) filled with `context`, autoescaped.

    A file name that is not UTF-8 shows with \\xe9-style escapes, as everywhere else.

    Example:
        print(render("live_table.html", header=["epoch"], rows=[[1]]))
    """
    return shown_name(ENVIRONMENT.get_template(name).render(**context))


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
    return jpeg_uri(image, THUMBNAIL_QUALITY, optimize=True)


def jpeg_uri(image: Image.Image, quality: int, **options: Any) -> str:
    """`image` as a JPEG data URI."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality, **options)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_uri(data: bytes) -> str:
    """PNG bytes (a figure) as a data URI."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


# Inside <script>, the HTML parser looks for "</script" and, after "<!--", for "<script"
# too (it then needs two "</script>"): names such as "<!--<script>" would end the script
# early or swallow its end. JSON can say <, > and & as \u003c-style escapes, so none of them
# is ever in the script's text; U+2028 and U+2029 (line breaks to older JavaScript) neither.
_SCRIPT_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028",
                  "\u2029": "\\u2029"}


def script_json(data: Any) -> Markup:
    """`data` as a JavaScript value to put in an inline <script> (or a <script
    type="application/json"> block), whatever text it holds; names shown as `shown_name`
    shows them. In a template: `{{ data|script_json }}`.

    It is Markup because it must reach the script as it is: autoescaping would turn its
    quotes into &#34;, which a script does not decode. It is safe there: no <, > or & is
    left in it, so it can neither end the script nor start markup.

    Example:
        print(script_json({"name": "</script><!--<script>"}))
    """
    text = json.dumps(_with_shown_names(data), separators=(",", ":"), ensure_ascii=False)
    return Markup(re.sub("[<>&\u2028\u2029]", lambda m: _SCRIPT_UNSAFE[m.group()], text))


def _with_shown_names(data: Any) -> Any:
    """`data` with every string in it (keys too) as `fileio.shown_name` shows it."""
    if isinstance(data, str):
        return shown_name(data)
    if isinstance(data, dict):
        return {_with_shown_names(k): _with_shown_names(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_with_shown_names(v) for v in data]
    return data


ENVIRONMENT.filters["script_json"] = script_json


# --- Markdown (the model card of `clearclass push`) -----------------------------------------
# Markdown is not HTML: autoescaping would write &#34; for a quote where Markdown wants the
# character, and would not touch `|` (a table's cell border) or a line break (the end of a
# table row). So Markdown templates have their own environment, and every `{{ value }}` is
# escaped for Markdown by `finalize`, whatever the template says: a class name is text
# wherever it lands. What must reach the card as it is (the YAML front matter, built by
# huggingface_hub's yaml.dump; a checked repo id in code) is handed over as Markup (hub.py).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_\[\]{}#+!|~])")
_LINE_BREAKS = re.compile(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]+")


def markdown_text(value: Any) -> str:
    """`value` as literal text in Markdown, inline or in a table cell: on one line, its
    Markdown punctuation backslash-escaped, and <, > and & as HTML entities (so neither
    `<script>` nor `|` nor `{{ }}` is read as anything but text).

    Example:
        print(markdown_text("a | <b>\\nc"))  # a \\| &lt;b&gt; c
    """
    text = _LINE_BREAKS.sub(" ", shown_name(str(value)))
    text = _MARKDOWN_SPECIAL.sub(r"\\\1", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


MARKDOWN = jinja2.Environment(
    loader=jinja2.PackageLoader("clearclass", "templates"),
    autoescape=False,
    finalize=lambda value: value if isinstance(value, Markup) else markdown_text(value),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def render_markdown(name: str, **context: Any) -> str:
    """The Markdown template `name` (in clearclass/templates/) filled with `context`, each
    value escaped as `markdown_text` (unless marked `|safe`)."""
    return MARKDOWN.get_template(name).render(**context)
