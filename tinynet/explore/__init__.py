"""``tinynet explore``: one self-contained HTML page that shows a network from the inside.

    from tinynet.explore import page_data, write_page
    loss = F.cross_entropy(model(x), label)
    write_page(page_data(loss, model, title="my network"), "page.html")

The page (``render_html``) holds the module tree, the graph of each module with its ops'
output shapes, every value's statistics, histogram and feature maps, the same for its
gradient, each op's backward rule with the numbers of one element, and a Backward control
that steps through the backward one op at a time. ``network_page`` builds it for a network
and an image, as the command does; ``PageView(path)`` shows a written page inside Jupyter.
This is machinery: ``import tinynet`` does not import it.
"""

from tinynet.explore.html import PageView, render_html
from tinynet.explore.network import network_page, write_page
from tinynet.explore.page import page_data

__all__ = ["PageView", "network_page", "page_data", "render_html", "write_page"]
