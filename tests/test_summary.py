"""tinynet.summary against the paper's table (Szegedy et al. 2014, table 1)."""

import pytest

from tinynet.models import googlenet_paper, googlenet_small
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
