"""The explorer page in a real browser (headless Chromium): it loads without a console error,
shows the module tree and the Inception blocks' branches, a conv's shape on a click, and the
Backward control steps one op at a time to the input; the lesson-1 scalar graph steps too.

Each page is built once per module: the small GoogLeNet at its 32-pixel design size, and the
paper GoogLeNet at 64 pixels instead of 224 (the same 143 ops and modules; a 224-pixel page
takes half a minute to build, see docs/googlenet.md).
"""

from __future__ import annotations

import numpy as np
import pytest

import tinynet
from tinynet import functional as F
from tinynet.cli import main
from tinynet.explore import PageView, page_data, write_page

from browser import chromium, console_errors

BLOCKS = ("inception3a", "inception3b", "inception4a", "inception4b", "inception4c",
          "inception4d", "inception4e", "inception5a", "inception5b")  # fmt: skip
PAGES = {"small": [], "paper": ["--input-size", "64"]}


@pytest.fixture(scope="module")
def browser():
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture(scope="module", params=sorted(PAGES))
def network_page(request, tmp_path_factory):
    """The network's page, written once by the command."""
    path = tmp_path_factory.mktemp("explore") / f"{request.param}.html"
    options = ["--model", request.param, *PAGES[request.param], "--out", str(path)]
    assert main(["explore", *options]) == 0
    return path


@pytest.fixture
def page(browser, network_page):
    """(driver on a freshly loaded network page, the page's data)."""
    browser.get(network_page.as_uri())
    return browser, browser.execute_script("return window.TINYNET_DATA")


def css(driver, selector):
    return driver.find_elements("css selector", selector)


def open_module(driver, name):
    css(driver, f'#tree li.module[data-module="{name}"] > .module-name')[0].click()


def test_the_page_loads_without_a_console_error(page):
    driver, data = page
    assert css(driver, "svg.graph g.node"), "no graph drawn"
    assert console_errors(driver) == []
    assert driver.execute_script("return typeof window.tinynetExplorer.drawLineChart") == "function"


def test_the_module_tree_shows_the_inception_blocks(page):
    driver, _ = page
    tree = [li.get_attribute("data-module") for li in css(driver, "#tree > ul > li > ul > li")]
    assert [name for name in tree if name and name.startswith("inception")] == list(BLOCKS)
    # the model's graph has each block collapsed to one node
    collapsed = [g.get_attribute("data-module") for g in css(driver, "svg.graph g.node.module")]
    assert set(BLOCKS) <= set(collapsed)


def test_opening_inception3a_shows_its_four_branches_and_the_concat(page):
    driver, data = page
    open_module(driver, "inception3a")
    branches = [f"inception3a.branch{k}" for k in (1, 2, 3, 4)]
    groups = [g.get_attribute("data-group") for g in css(driver, "svg.graph g.cluster")]
    assert groups == branches
    children = css(driver, '#tree li[data-module="inception3a"] > ul > li')
    assert all(li.is_displayed() for li in children)
    names = [li.get_attribute("data-module") or li.text.split()[0] for li in children]
    assert names == [*branches, "concat"]
    labels = [g.text for g in css(driver, "svg.graph g.node.op")]
    assert sum(text.startswith("Concat") for text in labels) == 1
    assert "inception3a" in css(driver, "#graph h2")[0].text


def test_clicking_a_branch_s_conv_shows_its_shape(page):
    driver, data = page  # the maps: 8 channels, at most 32 x 32 pixels
    open_module(driver, "inception3a")
    conv = next(op for op in data["ops"]
                if op["op"] == "Conv2d" and "inception3a.branch2" in op["scope"])  # fmt: skip
    css(driver, f'svg.graph g.node[data-node="{conv["id"]}"]')[0].click()
    shape = "(" + ", ".join(str(n) for n in conv["shape"]) + ")"
    assert css(driver, "#node-shape")[0].text == shape
    assert css(driver, "#details canvas.histogram"), "no histogram of the activations"
    assert len(css(driver, "#details .maps canvas.map")) == 8, "no feature maps"
    weights = css(driver, "#details table.parameters")[0].text.splitlines()
    assert weights[1].startswith("weight (") and "(" in weights[1]  # its shape, mean and std
    assert console_errors(driver) == []


STEP_ALL = """
const status = document.getElementById("bw-status"), steps = [];
for (let i = 0; i < arguments[0]; i++) {
  document.getElementById("bw-step").click();
  const current = document.querySelector("svg.graph g.node.current");
  steps.push({node: status.dataset.node, kind: status.dataset.kind,
              highlighted: current ? current.dataset.node : null,
              sums: [...document.querySelectorAll("#bw-arrivals li.sum")].map(
                li => li.textContent)});
  if (status.textContent.includes("(done)")) break;
}
return steps;
"""


def test_stepping_the_backward_reaches_the_input(page):
    driver, data = page
    steps = driver.execute_script(STEP_ALL, len(data["backward"]) + 5)
    assert [step["node"] for step in steps] == [step["node"] for step in data["backward"]]
    assert steps[0]["node"] == data["output"]  # the loss first
    assert steps[-1]["kind"] == "input"  # the image last
    assert all(step["highlighted"] == step["node"] for step in steps), "the op is not highlighted"
    # the input of inception3a feeds its four branches: the sum builds up to 4 of 4
    sums = [text for step in steps for text in step["sums"]]
    assert any("1 of 4 contributions" in text for text in sums)
    assert any("4 of 4 contributions" in text for text in sums)
    assert console_errors(driver) == []


def test_after_the_backward_a_relu_shows_its_rule_with_the_numbers(page):
    driver, data = page
    css(driver, "#bw-end")[0].click()
    open_module(driver, "inception3a")
    relu = next(op for op in data["ops"] if op["op"] == "ReLU" and "inception3a" in op["scope"])
    css(driver, f'svg.graph g.node[data-node="{relu["id"]}"]')[0].click()
    rule = css(driver, "#details .rule pre")[0].text
    assert "grad_in[" in rule and "· [x[" in rule and "> 0]" in rule
    assert "ReLUFunction.backward gave" in rule
    assert "gradient dL/d(value)" in css(driver, "#details")[0].text


@pytest.fixture(scope="module")
def scalar_file(tmp_path_factory):
    """Lesson 1's graph, L = relu(a·b + c)² · d: (its page, the page's data)."""
    a, b, c, d = (tinynet.tensor(v, dtype=np.float64, requires_grad=True)
                  for v in (2.0, -1.5, 4.0, 0.5))  # fmt: skip
    loss = F.relu(a * b + c) ** 2 * d
    data = page_data(loss, title="lesson 1", names={"a": a, "b": b, "c": c, "d": d})
    return write_page(data, tmp_path_factory.mktemp("explore") / "scalar.html"), data


@pytest.fixture
def scalar_page(browser, scalar_file):
    browser.get(scalar_file[0].as_uri())
    return browser, scalar_file[1]


def test_the_scalar_graph_steps_through_every_node(scalar_page):
    driver, data = scalar_page
    assert console_errors(driver) == []
    texts = lambda: {g.get_attribute("data-node"): g.text for g in css(driver, "svg.graph g.node")}
    before = texts()
    assert len(before) == 5 + 4  # Mul, Add, ReLU, Pow, Mul and the leaves a, b, c, d
    assert not any("grad" in text for text in before.values())
    steps = driver.execute_script(STEP_ALL, 20)
    assert [step["node"] for step in steps] == [step["node"] for step in data["backward"]]
    assert {step["kind"] for step in steps[-4:]} == {"input"}
    after = texts()
    names = {leaf["id"]: leaf["name"] for leaf in data["leaves"]}
    grads = {names[key]: text.split("grad ")[1] for key, text in after.items() if key in names}
    assert grads == {"a": "-1.5", "b": "2", "c": "1", "d": "1"}
    assert "= 0.5" in after[data["output"]]
    relu = next(op["id"] for op in data["ops"] if op["op"] == "ReLU")
    css(driver, f'svg.graph g.node[data-node="{relu}"]')[0].click()
    rule = css(driver, "#details .rule")[0].text  # a scalar's rule, without empty brackets
    assert "input 0 (Add)\ngrad_in = grad_out · [x > 0]\n= 1 · [1 > 0]" in rule, rule


def test_the_inception_v3_page_opens_a_block_and_steps_to_the_input(browser, tmp_path):
    path = tmp_path / "v3.html"
    assert main(["explore", "--model", "inception_v3_small", "--out", str(path)]) == 0
    browser.get(path.as_uri())
    data = browser.execute_script("return window.TINYNET_DATA")
    open_module(browser, "Mixed_5b")
    groups = [g.get_attribute("data-group") for g in css(browser, "svg.graph g.cluster")]
    children = [m["name"] for m in data["modules"] if m["name"].count(".") == 1
                and m["name"].startswith("Mixed_5b.")]  # fmt: skip
    assert sorted(groups) == sorted(children) and len(children) == 7  # each in a column of its own
    steps = browser.execute_script(STEP_ALL, len(data["backward"]) + 5)
    assert len(steps) == len(data["backward"]) and steps[-1]["kind"] == "input"
    assert console_errors(browser) == []


def test_the_arrow_keys_step_the_backward(scalar_page):
    driver, data = scalar_page
    body = css(driver, "body")[0]
    body.send_keys("\ue014", "\ue014")  # → →
    assert css(driver, "#bw-status")[0].get_attribute("data-node") == data["backward"][1]["node"]
    body.send_keys("\ue012")  # ←
    assert css(driver, "#bw-status")[0].get_attribute("data-node") == data["backward"][0]["node"]


def test_the_page_works_inside_a_notebook_s_iframe(browser, scalar_file, tmp_path):
    notebook = tmp_path / "notebook.html"
    notebook.write_text(f"<html><body>{PageView(scalar_file[0])._repr_html_()}</body></html>")
    browser.get(notebook.as_uri())
    browser.switch_to.frame(css(browser, "iframe")[0])
    try:
        assert len(css(browser, "svg.graph g.node")) == 9
        css(browser, "#bw-end")[0].click()
        assert "(done)" in css(browser, "#bw-status")[0].text
    finally:
        browser.switch_to.default_content()
    assert console_errors(browser) == []


def test_play_steps_on_its_own_until_paused(scalar_page):
    from selenium.webdriver.support.wait import WebDriverWait  # the fixture found selenium

    driver, data = scalar_page
    css(driver, "#bw-play")[0].click()
    WebDriverWait(driver, 10).until(
        lambda d: "(done)" in css(d, "#bw-status")[0].text, "play did not reach the input"
    )
    assert css(driver, "#bw-play")[0].text == "play"  # it stopped at the end
    assert console_errors(driver) == []
