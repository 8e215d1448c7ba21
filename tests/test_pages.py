"""clearclass.pages: every template autoescapes, a missing variable is an error, and
`script_json` puts any text into a <script> so that it parses back exactly."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser

import jinja2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clearclass import pages
from clearclass.progress import LiveTable

PAYLOAD = "<img src=x onerror=alert(1)>\"'&amp;{{ 7*7 }}"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;&#34;&#39;&amp;amp;{{ 7*7 }}"
TEMPLATES = sorted(name for name in pages.ENVIRONMENT.list_templates()
                   if not name.startswith("."))


def test_render_escapes_every_value_and_never_evaluates_it():
    table = pages.render("live_table.html", header=["class", PAYLOAD], rows=[[PAYLOAD, 1]])
    assert table.count(ESCAPED) == 2 and "<img" not in table and "49" not in table


def test_every_template_is_autoescaped_whatever_its_suffix():
    # True, not select_autoescape(): .svg, .js and .css templates escape too.
    assert pages.ENVIRONMENT.autoescape is True
    assert pages.ENVIRONMENT.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    assert {"base.html", "report.html", "cleaning_page.html", "report_matrix.svg"} <= set(TEMPLATES)


def test_no_template_lets_markup_through():
    """`|safe` or `Markup` on a name would undo the escaping; only script_json may."""
    for name in TEMPLATES:
        source = pages.ENVIRONMENT.loader.get_source(pages.ENVIRONMENT, name)[0]
        assert "|safe" not in source.replace(" ", "") and "Markup" not in source, name
        assert "autoescape false" not in source, name


def test_a_variable_the_template_is_not_given_is_an_error():
    with pytest.raises(jinja2.UndefinedError, match="rows"):
        pages.render("live_table.html", header=["epoch"])


def test_a_name_that_is_not_utf8_shows_escaped():
    name = os.fsdecode(b"caf\xe9.jpg")
    assert "caf\\xe9.jpg" in pages.render("live_table.html", header=[name], rows=[])


def test_the_notebook_table_is_the_same_as_before():
    table = LiveTable(["epoch", "accuracy"], [5, 8], live=False)
    table.add_row([1, "<0.5>"])
    assert table._repr_html_().replace("\n", "") == (
        '<table class="clearclass-epochs"><thead><tr style="text-align:left"><th>epoch</th>'
        "<th>accuracy</th></tr></thead><tbody><tr><td>1</td><td>&lt;0.5&gt;</td></tr>"
        "</tbody></table>")


class _Scripts(HTMLParser):
    """The text of each <script> as a browser's HTML parser splits it off."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.scripts: list[str] = []
        self._in = False

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self._in = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.scripts[-1] += data


# Text that ends or confuses a script: tags, comments, CDATA, line separators.
_TRICKY = st.sampled_from(["</script>", "</SCRIPT ", "<!--", "-->", "<script>", "]]>", "&amp;",
                           "\u2028", "\u2029", "\\", '"', "'", "{{", "}}", "\x00"])


@given(st.lists(st.one_of(st.text(), _TRICKY)).map("".join))
def test_script_json_gives_back_any_text_from_a_page(text):
    data = {"name": text, "names": [text, text[::-1]]}
    page = pages.ENVIRONMENT.from_string(
        '<script type="application/json">{{ data|script_json }}</script>'
        "<script>const DATA = {{ data|script_json }};</script><p>after</p>").render(data=data)
    parser = _Scripts()
    parser.feed(page)
    assert len(parser.scripts) == 2
    assert json.loads(parser.scripts[0]) == data
    assert json.loads(parser.scripts[1].removeprefix("const DATA = ").removesuffix(";")) == data
    for script in parser.scripts:
        assert not set(script) & {"<", ">", "&", "\u2028", "\u2029"}


def test_script_json_shows_names_that_are_not_utf8_as_escapes():
    assert json.loads(pages.script_json([os.fsdecode(b"caf\xe9")])) == ["caf\\xe9"]
