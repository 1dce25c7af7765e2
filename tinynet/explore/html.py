"""``render_html``: the explorer's data as one self-contained HTML document.

Everything the page needs is inside the file: the style (``assets/explorer.css``), the script
(``assets/explorer.js``, which reads ``window.TINYNET_DATA``) and the data as JSON. It opens
from disk, with no server and no network. Further scripts (the live panel's) are appended
after the explorer's, so they can call what it exposes on ``window.tinynetExplorer``.
"""

from __future__ import annotations

import html
import json
from importlib import resources


def asset(name: str) -> str:
    """The text of ``tinynet/explore/assets/<name>`` (package data, also in a wheel)."""
    return resources.files("tinynet.explore").joinpath("assets", name).read_text("utf-8")


def _script(source: str) -> str:
    # "</" would end the <script> element early wherever it appears in a string.
    return "<script>\n" + source.replace("</", "<\\/") + "\n</script>"


class PageView:
    """A written page that shows itself in Jupyter: a notebook cell ending in
    ``PageView(path)`` draws the whole explorer inline (an iframe holding the document)."""

    def __init__(self, path, height: int = 720):
        self.path, self.height = path, height

    def _repr_html_(self) -> str:
        with open(self.path, encoding="utf-8") as file:
            document = html.escape(file.read(), quote=True)
        return (f'<iframe srcdoc="{document}" style="width: 100%; height: {self.height}px; '
                'border: 1px solid #ccc"></iframe>')  # fmt: skip


def render_html(data: dict, *, scripts: tuple[str, ...] = ()) -> str:
    """One HTML document showing ``data`` (``tinynet.explore.page.page_data``'s dict), with
    ``scripts`` (JavaScript sources) run after the explorer's own."""
    title = html.escape(str(data.get("title", "tinynet explorer")))
    # A JavaScript literal, not JSON: NaN and Infinity are numbers there, so a network gone bad
    # shows its NaNs instead of failing to make its page.
    payload = json.dumps(data, separators=(",", ":"))
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            "<head>",
            '<meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title>",
            "<style>\n" + asset("explorer.css") + "\n</style>",
            "</head>",
            "<body>",
            '<header id="header"></header>',
            '<main id="explorer">',
            '<nav id="tree" aria-label="modules"></nav>',
            '<section id="graph" aria-label="graph"></section>',
            '<aside id="details" aria-label="node details"></aside>',
            "</main>",
            '<section id="live"></section>',
            _script("window.TINYNET_DATA = " + payload + ";"),
            _script(asset("explorer.js")),
            *(_script(source) for source in scripts),
            "</body>",
            "</html>",
            "",
        ]
    )
