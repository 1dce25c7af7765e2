"""tinynet.summary against the paper's table (Szegedy et al. 2014, table 1)."""

import re

import pytest

from tinynet import nn
from tinynet.models import Inception, googlenet_paper, googlenet_small
from tinynet.summary import summary

# Multiply-adds (M) and parameters of the paper's table. The table's params column counts
# weights in units of 1024 and omits biases; some of its rows (4a, 4c, 4d, 4e, 5a, 5b) disagree
# with its own channel counts, so only the rows that agree are pinned by parameter count.
PAPER_MACS = {
    "inception3a": 128,
    "inception3b": 304,
    "inception4a": 73,
    "inception4b": 88,
    "inception4c": 100,
    "inception4d": 119,
    "inception4e": 170,
    "inception5b": 71,
}
PAPER_PARAMS_K = {"inception3a": 159, "inception3b": 380, "inception4b": 437}


@pytest.fixture(scope="module")
def paper_summary():
    return summary(googlenet_paper(), (3, 224, 224))


def test_per_block_figures_match_the_paper(paper_summary):
    rows = {r.name: r for r in paper_summary.rows}
    for name, macs in PAPER_MACS.items():
        assert abs(rows[name].macs / 1e6 - macs) < 1, name  # the table rounds or truncates
    for name, kilo in PAPER_PARAMS_K.items():
        model_block = getattr(googlenet_paper(), name)
        weights = sum(p.size for n, p in model_block.named_parameters() if n.endswith("weight"))
        assert abs(weights / 1024 - kilo) <= 1, name
    assert rows["inception3a"].params == 163_696  # 163,328 weights + 368 biases
    assert rows["inception5b"].output_shape == (1, 1024, 7, 7)
    assert 1.5e9 <= paper_summary.total_macs <= 1.6e9  # "1.5 billion multiply-adds"


def test_totals_and_the_aux_heads(paper_summary):
    assert paper_summary.total_params == 13_378_280
    assert paper_summary.inference_params == 6_998_552
    rows = {r.name: r for r in paper_summary.rows}
    assert rows["aux1"].output_shape is None and rows["aux1"].params == 3_188_840
    text = str(paper_summary)
    assert "inception3a" in text and "not run in eval" in text
    assert "parameters: 13,378,280 (6,998,552 used at inference)" in text
    assert "multiply-adds per image: 1.583G" in text


def test_runs_without_a_graph_and_restores_the_mode():
    model = googlenet_small()
    model.train()
    result = summary(model, (4, 3, 32, 32), depth=2)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert any(r.name == "inception3a.branch2" for r in result.rows)
    # per image, whatever the batch
    assert result.total_macs == summary(model, (3, 32, 32)).total_macs


def test_bad_input_shape():
    with pytest.raises(
        ValueError, match=r"input_shape must be \(C, H, W\) or \(N, C, H, W\); got \(32, 32\)"
    ):
        summary(googlenet_small(), (32, 32))


# ------------------------------------------------------------------ the 1x1 bottleneck
def test_the_naive_block_costs_854m_and_the_reduced_one_the_papers_304m(paper_summary):
    # inception3b's input is the worked example: 28 x 28 x 256, with 128 1x1, 192 3x3 and 96
    # 5x5 filters. Naive: every convolution sees all 256 channels; the pool's pass through.
    pixels, depth = 28 * 28, 256
    naive_macs = pixels * depth * (128 * 1 + 192 * 3 * 3 + 96 * 5 * 5)
    assert naive_macs == 854_196_224  # "854M"
    naive_params = depth * (128 + 192 * 9 + 96 * 25) + (128 + 192 + 96)  # + biases
    # With the reductions (128 before the 3x3, 32 before the 5x5, a 64 pool projection):
    reduced_macs = pixels * (
        depth * 128  # 1x1
        + depth * 128 + 128 * 9 * 192  # 1x1 reduce -> 3x3
        + depth * 32 + 32 * 25 * 96  # 1x1 reduce -> 5x5
        + depth * 64  # pool -> 1x1 projection
    )
    assert reduced_macs == 304_267_264  # the paper's 304M
    reduced_params = reduced_macs // pixels + (128 + 128 + 192 + 32 + 96 + 64)
    row = next(r for r in paper_summary.bottlenecks if r.name == "inception3b")
    assert row.input_shape == (256, 28, 28)
    assert (row.macs, row.params) == (reduced_macs, reduced_params)
    assert (row.naive_macs, row.naive_params) == (naive_macs, naive_params)
    text = str(paper_summary)
    assert re.search(r"inception3b  256x28x28 +304\.3M +854\.2M +388,736 +1,089,952\n", text)


def test_every_block_and_the_totals_are_in_the_table(paper_summary):
    blocks = paper_summary.bottlenecks
    assert [r.name for r in blocks] == [f"inception{b}" for b in
                                        ("3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b")]
    rows = {r.name: r for r in paper_summary.rows}
    assert all(r.macs == rows[r.name].macs and r.params == rows[r.name].params for r in blocks)
    # 5b on 7 x 7 x 832: 384 1x1, 384 3x3, 128 5x5, by the same formula
    assert blocks[-1].naive_macs == 49 * 832 * (384 + 384 * 9 + 128 * 25)
    total_macs, total_naive = sum(r.macs for r in blocks), sum(r.naive_macs for r in blocks)
    assert re.search(
        rf"total +{total_macs / 1e6:,.1f}M +{total_naive / 1e6:,.1f}M +"
        rf"{sum(r.params for r in blocks):,} +{sum(r.naive_params for r in blocks):,}\n",
        str(paper_summary),
    )


def test_the_naive_cost_keeps_batchnorm_and_the_later_3x3():
    # Inception-v2's double 3x3: only the first 3x3 after the reduction takes the full depth.
    model = googlenet_small(branch3="double3x3")
    row = summary(model, (3, 32, 32)).bottlenecks[0]  # 3a on 16 x 16 x 48 at width 0.25
    block, (depth, h, w) = model.inception3a, row.input_shape
    c1, c3, c5 = (block.branch1.conv.out_channels, block.branch2[1].conv.out_channels,
                  block.branch3[1].conv.out_channels)  # fmt: skip
    weights = depth * (c1 + 9 * c3 + 9 * c5) + c5 * 9 * c5
    assert row.naive_macs == h * w * weights
    assert row.naive_params == weights + 2 * (c1 + c3 + c5 + c5)  # BatchNorm's γ and β



def test_a_bare_inception_block_is_costed_like_the_same_block_inside_the_network():
    block = Inception(256, 128, 128, 192, 32, 96, 64)  # the paper's inception3b
    result = summary(block, (256, 28, 28))
    (row,) = result.bottlenecks
    assert row.macs == result.total_macs
    assert round(row.macs / 1e6, 1) == 304.3
    assert round(row.naive_macs / 1e6, 1) == 854.2


def test_any_block_that_defines_a_naive_cost_gets_a_row_from_it():
    """summary asks the block (``naive_cost``), so a block it has never heard of is costed too,
    on the input it gets, and a block without the method gets no row."""

    class Widened(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 8, 3, padding=1)

        def forward(self, x):
            return self.conv(x)

        def naive_cost(self, input_shape):
            channels, height, width = input_shape
            return height * width * channels * 9 * 16, 7

    model = nn.Sequential(nn.Conv2d(3, 4, 1), Widened(), nn.Sequential(nn.ReLU()))
    result = summary(model, (3, 5, 6))
    (row,) = result.bottlenecks
    assert (row.name, row.input_shape) == ("1", (4, 5, 6))
    assert (row.macs, row.params) == (5 * 6 * 4 * 9 * 8, 8 * 4 * 9 + 8)
    assert (row.naive_macs, row.naive_params) == (5 * 6 * 4 * 9 * 16, 7)
