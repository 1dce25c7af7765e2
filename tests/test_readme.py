"""The README's promises: its two commands lead it, its first screen links every page of docs/,
and the Python snippets of the README and the docs run as written."""

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TEXT = README.read_text()
# The README's first screen leads to these pages; their snippets are held to the same promise.
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = TEXT + "".join(page.read_text() for page in DOCS)
SNIPPETS = re.findall(r"```python\n(.*?)```", PAGES, re.S)


def command_after(marker: str) -> str:
    """The command in the fenced block after ``<!-- marker -->``, as .ci/run reads it."""
    match = re.search(rf"<!-- {marker} -->\n```sh\n(.+)\n```", TEXT)
    assert match, f"README.md has no <!-- {marker} --> block"
    return match[1]


def test_the_two_commands_open_the_readme():
    head = TEXT[: TEXT.index("tinynet is a deep-learning framework")]
    main, tests = command_after("main-command"), command_after("test-command")
    assert main in head and tests in head
    assert main.endswith('pip install ".[train]" && tinynet train')
    assert tests.endswith('pip install -e ".[dev]" && python -m pytest')


@pytest.mark.parametrize(
    "snippet",
    [s for s in SNIPPETS if "googlenet.npz" not in s],  # that one needs downloaded weights
    ids=lambda s: s.splitlines()[-1][:40],
)
def test_python_snippets_run_as_written(snippet):
    for name in re.findall(r"^(?:import|from) (\w+)", snippet, re.M):
        if importlib.util.find_spec(name) is None:  # an optional reference, e.g. onnxruntime
            pytest.skip(f"this snippet needs {name}, which is not installed")
    result = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-c", snippet],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    if "summary" in snippet:
        assert "parameters: 13,378,280 (6,998,552 used at inference)" in result.stdout
        assert result.stdout.strip() in PAGES  # the table the docs show is the one printed


def test_the_first_screen_links_every_page_and_every_link_resolves():
    head = TEXT[: TEXT.index("## The main job")]
    assert len(head.splitlines()) < 40  # what tinynet is, the two commands, where to go next
    for page in DOCS:
        if page.suffix == ".md":
            assert f"](docs/{page.name})" in head, f"the README's first screen does not link {page}"
    for source in [README, *DOCS]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", source.read_text()):
            assert (source.parent / target).exists(), f"{source.name} links to missing {target}"


def test_the_main_job_s_figures_are_the_recorded_run_s():
    """The epochs the README shows are rows of benchmarks/digits.md, the run they come from."""
    record = (ROOT / "benchmarks" / "digits.md").read_text()
    rows = {
        int(epoch): rest
        for epoch, *rest in re.findall(
            r"^\| (\d) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+%) \| ([\d.]+) \| (\d+) \|$", record, re.M
        )
    }
    shown = re.findall(
        r"^epoch (\d)/6: train loss ([\d.]+), test loss ([\d.]+), test top-1 ([\d.]+%), "
        r"top-5 [\d.]+% \(([\d.]+) s, (\d+) img/s\)$",
        TEXT,
        re.M,
    )
    assert len(shown) == 2
    for epoch, *figures in shown:
        assert figures == rows[int(epoch)], f"epoch {epoch}: README {figures}, digits.md"
    final = rows[6][2]
    assert f"test top-1 {final} after 6 epochs" in TEXT and f"{final} test top-1" in TEXT


def test_the_benchmark_table_in_the_docs_is_the_recorded_run_s():
    """docs/development.md's table of times is the bench_googlenet run recorded in
    benchmarks/history (its medians rounded, its ratios as printed), not figures typed by hand."""
    history = (ROOT / "benchmarks" / "history" / "2026-11-28_issue15_four_passes.md").read_text()
    run = history[history.index("`python benchmarks/bench_googlenet.py`, 00:20") :]
    printed = {
        (row.strip(), framework): (float(median), ratio)
        for row, framework, median, ratio in re.findall(
            r"^    (\w[\w ]+?\d+ b\d+) +([\w-]+) +([\d.]+) +[\d.]+ +[\d.]+ +[\d.]+ +([\d.]+)",
            run,
            re.M,
        )[:17]
    }
    memory = dict(re.findall(r"^    train step 224 b32 +(\w+) +\d+ +\d+ +(\d+)$", run, re.M)[:2])
    doc = (ROOT / "docs" / "development.md").read_text()

    def ms(row, framework):
        return int(printed[(row, framework)][0] + 0.5)

    def ratio(row):
        return printed[(row, "tinynet")][1]

    b8, b1, train = "eval fwd 224 b8", "eval fwd 224 b1", "train step 224 b32"
    small_eval, small_train = "small eval fwd 32 b64", "small train step 32 b64"
    seconds = {k: f"{printed[(train, k)][0] / 1000:.2f} s" for k in ("tinynet", "torch")}
    expected = [
        f"| eval forward, batch 8 | {ms(b8, 'tinynet')} ms | {ms(b8, 'torch')} ms | "
        f"{ratio(b8)} | {ms(b8, 'onnxruntime')} ms |",
        f"| eval forward, batch 1 | {ms(b1, 'tinynet')} ms | {ms(b1, 'torch')} ms | "
        f"{ratio(b1)} | {ms(b1, 'onnxruntime')} ms |",
        f"| training step (aux heads, SGD), batch 32 | {seconds['tinynet']} | {seconds['torch']} "
        f"| {ratio(train)} | |",
        f"| peak memory of that step above the imports | {memory['tinynet']} MB | "
        f"{memory['torch']} MB | ",
        f"| small 32x32 net, eval / training step, batch 64 | {ms(small_eval, 'tinynet')} / "
        f"{ms(small_train, 'tinynet')} ms | {ms(small_eval, 'torch')} / "
        f"{ms(small_train, 'torch')} ms | {ratio(small_eval)} / {ratio(small_train)} | |",
    ]
    for line in expected:
        assert line in doc, line
    # the memory ratio of the unrounded peaks, which the printed MB bound to +-0.001
    shown = float(re.search(r"above the imports \| \d+ MB \| \d+ MB \| ([\d.]+) \|", doc)[1])
    assert abs(shown - int(memory["tinynet"]) / int(memory["torch"])) <= 0.005 + 0.001
