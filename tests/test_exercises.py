"""tinynet's exercises: every solution passes its check, every untouched stub fails it, a file
that takes its answer from tinynet is not the learner's work, a wrong answer gets its hint, and
`tinynet exercises` works end to end (list, start, check, solution, exit codes)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tinynet.exercises as exercises
from tinynet.cli import main
from tinynet.exercises import FAILING, NOT_STARTED, NOT_YOURS, PASSED
from tinynet.exercises.provenance import borrowed

from datafiles import needs_sklearn

pytest.importorskip("hypothesis", reason="the op exercises are checked by check_op (hypothesis)")

NAMES = list(exercises.EXERCISES)
# training_loop trains on the digits scikit-learn ships.
CHECKED = [pytest.param(n, marks=needs_sklearn) if n == "training_loop" else n for n in NAMES]
FEW = 12  # cases per op exercise: enough to reach strides, padding, ties; seconds, not minutes


def grade(folder, name, text, **options):
    (folder / f"{name}.py").write_text(text, encoding="utf-8")
    (result,) = exercises.check(folder, [name], max_examples=FEW, **options)
    return result


def test_the_eleven_exercises_in_order():
    assert NAMES == [
        "scalar_backward", "linear_backward", "softmax_cross_entropy_backward", "im2col",
        "conv2d_forward", "conv2d_backward", "max_pool2d_backward", "batch_norm_backward",
        "inception_block", "training_loop", "fold_batch_norm",
    ]  # fmt: skip


@pytest.mark.parametrize("name", CHECKED)
def test_the_solution_passes_its_check(tmp_path, name):
    result = grade(tmp_path, name, exercises.solution_text(name))
    assert result.status == PASSED, result.detail


@pytest.mark.parametrize("name", CHECKED)
def test_an_untouched_stub_is_not_started_and_fails_its_check(tmp_path, name):
    exercises.start(tmp_path)
    (result,) = exercises.check(tmp_path, [name], max_examples=FEW)
    assert result.status == NOT_STARTED
    namespace = {}
    exec(exercises.stub_text(name), namespace)  # noqa: S102
    exercise = exercises.EXERCISES[name]
    with pytest.raises((AssertionError, NotImplementedError)):
        exercise.check(namespace[exercise.entry], max_examples=FEW, seed=0)
    # Started (a line added) but still the stub: failing, saying what is left.
    with open(tmp_path / f"{name}.py", "a", encoding="utf-8") as file:
        file.write("# started\n")
    (result,) = exercises.check(tmp_path, [name], max_examples=FEW)
    assert result.status == FAILING and "NotImplementedError" in result.detail


def test_the_stub_keeps_the_signature_and_the_docstring_and_drops_the_answer():
    stub = exercises.stub_text("conv2d_backward")
    assert "def conv2d_backward(grad_output, input, weight, bias, stride, padding)" in stub
    assert "Hint:" in stub and "dL/dW[o, c, i, j]" in stub
    assert "einsum" not in stub and stub.count("    raise NotImplementedError\n") == 1
    assert "einsum" in exercises.solution_text("conv2d_backward")
    scalar = exercises.stub_text("scalar_backward")
    assert scalar.count("        raise NotImplementedError\n") == 5  # add, mul, pow, tanh, backward
    assert "def __radd__" in scalar  # the sugar written with them is given


def test_start_never_overwrites_a_learners_file(tmp_path):
    mine = tmp_path / "im2col.py"
    mine.write_text("# my work\n")
    written = dict(exercises.start(tmp_path))
    assert written[mine] is False and mine.read_text() == "# my work\n"
    assert all(written[tmp_path / f"{name}.py"] for name in NAMES if name != "im2col")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        exercises.start(tmp_path / "file")


# Files that would pass with tinynet's own code, each reaching it another way.
CONV_FROM_TINYNET = [
    "from tinynet.ops.conv import conv2d\n\ndef conv2d_forward(input, weight, bias, stride, "
    "padding):\n    return conv2d(input, weight, bias, stride, padding).data\n",
    "import tinynet.reference as r\n\ndef conv2d_forward(input, weight, bias, stride, padding):\n"
    "    return r.conv2d(input, weight, bias, stride, padding).data\n",
    "import tinynet\n\ndef conv2d_forward(input, weight, bias, stride, padding):\n"
    "    return tinynet.functional.conv2d(input, weight, bias, stride, padding).data\n",
    "from tinynet import functional as F\n\ndef conv2d_forward(input, weight, bias, stride, "
    "padding):\n    return F.conv2d(input, weight, bias, stride, padding).data\n",
    "import importlib\n\ndef conv2d_forward(input, weight, bias, stride, padding):\n"
    "    F = importlib.import_module('tinynet.functional')\n"
    "    return F.conv2d(input, weight, bias, stride, padding).data\n",
    "def conv2d_forward(input, weight, bias, stride, padding):\n"
    "    F = __import__('tinynet.functional', fromlist=['conv2d'])\n"
    "    return F.conv2d(input, weight, bias, stride, padding).data\n",
    "from tinynet.exercises.conv2d_forward import conv2d_forward  # noqa: F401\n",
    "import torch\n\ndef conv2d_forward(input, weight, bias, stride, padding):\n"
    "    return torch.nn.functional.conv2d(*map(torch.as_tensor, (input, weight))).numpy()\n",
]


@pytest.mark.parametrize("source", CONV_FROM_TINYNET, ids=range(len(CONV_FROM_TINYNET)))
def test_a_file_that_uses_tinynet_s_answer_is_not_the_learners_work(tmp_path, source):
    result = grade(tmp_path, "conv2d_forward", source)
    assert result.status == NOT_YOURS, result
    assert "line " in result.detail and "conv2d_forward.py" in result.detail


def test_what_each_exercise_allows_from_tinynet():
    # inception_block: tinynet.nn layers, and cat and relu; nothing else of functional
    allowed = exercises.EXERCISES["inception_block"].allowed
    ok = "import tinynet.functional as F\nfrom tinynet import nn\nF.cat([nn.ReLU()], dim=1)\n"
    assert borrowed(ok, allowed) == []
    assert borrowed("import tinynet.functional as F\nF.conv2d\n", allowed) == [
        "line 2: tinynet.functional.conv2d (tinynet's functional ops)"
    ]
    assert borrowed("import tinynet.functional as F\ng = F\n", allowed)  # the module itself
    # training_loop: the model, Tensor and the loss, not tinynet.optim
    allowed = exercises.EXERCISES["training_loop"].allowed
    assert borrowed("import tinynet\nx = tinynet.Tensor\n", allowed) == []
    assert borrowed("from tinynet.optim import SGD\n", allowed) == [
        "line 1: tinynet.optim.SGD (tinynet's optimisers)"
    ]
    # the op exercises: nothing of tinynet, not even autograd
    assert borrowed("from tinynet import Tensor\n") and borrowed("import sys\nsys.modules\n")
    for dynamic in ("globals()['__builtins__']", "import runpy", "import builtins", "exec('')"):
        assert borrowed(dynamic), dynamic
    assert borrowed("import numpy as np\nfrom math import tanh\nnp.pad\n") == []


def test_loading_a_file_leaves_the_host_as_it_was(tmp_path):
    (tmp_path / "helper.py").write_text("VALUE = 1\n")
    source = (
        "import os\nimport sys\nimport numpy as np\n"
        "sys.path.insert(0, os.path.dirname(__file__))\nimport helper\nos.chdir('/')\n"
        "np.seterr(all='raise')\nnp.set_printoptions(precision=1)\n"
        "def im2col(input, kernel_size, stride, padding):\n    return 0\n"
    )
    path, errors, printing = list(sys.path), np.geterr(), np.get_printoptions()
    cwd = os.getcwd()
    result = grade(tmp_path, "im2col", source)
    assert result.status == FAILING and "cols of shape ()" in result.detail
    assert sys.path == path and np.geterr() == errors and np.get_printoptions() == printing
    assert os.getcwd() == cwd
    assert "helper" not in sys.modules
    assert not [name for name in sys.modules if name.startswith("tinynet_exercise")]


def test_an_exception_in_the_learners_file_is_that_exercise_s_failure(tmp_path):
    result = grade(tmp_path, "im2col", "import numpy as np\n\nx = 1 / 0\n")
    assert result.status == FAILING
    assert result.detail == "ZeroDivisionError: division by zero (at im2col.py line 3: x = 1 / 0)"
    result = grade(tmp_path, "im2col", "def im2col(:\n")
    assert result.status == FAILING and "line 1: SyntaxError" in result.detail
    result = grade(tmp_path, "linear_backward", "import numpy as np\n")
    assert result.status == FAILING and "defines no linear_backward" in result.detail
    # sys.exit() left in a file is that exercise's failure, not the end of the grader
    result = grade(tmp_path, "im2col", "import sys\n\nsys.exit(3)\n")
    assert result.status == FAILING
    assert result.detail == "SystemExit: 3 (at im2col.py line 3: sys.exit(3))"
    # the learner's own assert is their error, with its line, not an empty finding of the check
    result = grade(tmp_path, "im2col", "import numpy as np\n\nassert 1 == 2\n")
    assert result.status == FAILING
    assert result.detail == "AssertionError (at im2col.py line 3: assert 1 == 2)"
    # reusing one's own im2col.py: the file is graded alone, and the message says so
    result = grade(tmp_path, "conv2d_forward", "from im2col import im2col\n")
    assert result.status == FAILING
    assert result.detail.splitlines() == [
        "ModuleNotFoundError: No module named 'im2col' (at conv2d_forward.py line 1: from im2col "
        "import im2col)",
        "hint: each exercise file is graded alone (so only what it holds is read as your work): "
        "copy what you need from im2col.py into conv2d_forward.py",
    ]


def test_an_error_raised_during_the_check_names_its_line_in_the_learners_file(tmp_path):
    text = wrong("conv2d_backward", "grad_weight[:, :, i, j] =", "grad_weight[:, :, i, j + 9] =")
    result = grade(tmp_path, "conv2d_backward", text)
    assert result.status == FAILING
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "j + 9" in s)
    first = result.detail.splitlines()[0]
    assert first.startswith("check_op('conv2d'): backward raised IndexError: index 9 is out")
    assert first.endswith(f"(at conv2d_backward.py line {line}: grad_weight[:, :, i, j + 9] = "
                          'np.einsum("nohw,nchw->oc", grad_output, x[tap]))')  # fmt: skip
    assert "smallest failing case:" in result.detail


def wrong(name, old, new):
    """tinynet's solution of ``name`` with one classic mistake planted."""
    text = exercises.solution_text(name)
    assert old in text, f"{name}'s solution no longer has {old!r}"
    return text.replace(old, new)


MISTAKES = [
    ("scalar_backward", "self.grad += out.grad", "self.grad = out.grad", "overwriting (=)"),
    ("scalar_backward", "(1 - t * t)", "(1 - t)", "1 - tanh(x)²"),
    ("conv2d_backward", "grad_x[tap] += ", "grad_x[tap] = ", "col2im must add"),
    (
        "linear_backward",
        "grad_weight = rows.T @ input.reshape(-1, in_features)",
        "grad_weight = input.reshape(-1, in_features).T @ rows",
        "transposed",
    ),
    (
        "im2col",
        "((0, 0), (0, 0), (ph, ph), (pw, pw))",
        "((0, 0), (0, 0), (ph, ph), (0, 2 * pw))",
        "pad ph rows with zeros above and below and pw columns left and right",
    ),
    (
        "inception_block",
        "ConvReLU(ch5x5red, ch5x5, 5, padding=2)",
        "ConvReLU(ch5x5red, ch5x5, 3, padding=1)",
        "branch3 is a 1x1 conv to ch5x5red",
    ),
    (
        "conv2d_forward",
        "weight[:, :, i, j])",
        "weight[:, :, kh - 1 - i, kw - 1 - j])",
        "PyTorch's conv2d is a cross-correlation",
    ),
    (
        "batch_norm_backward",
        "var = input.var(axis=axes, keepdims=True)",
        "var = input.var(axis=axes, keepdims=True, ddof=1)",
        "uses the unbiased batch variance",
    ),
    ("inception_block", "self.branch4 = ", "self.pool_branch = ", "name the layers"),
    (
        "training_loop",
        "g = parameter.grad + weight_decay * parameter.data",
        "g = parameter.grad",
        "weight decay left out",
    ),
    ("training_loop", "        model.zero_grad()\n", "", "clear them (model.zero_grad())"),
]


@pytest.mark.parametrize(
    "name, old, new, hint",
    [pytest.param(*m, marks=[needs_sklearn] if m[0] == "training_loop" else []) for m in MISTAKES],
    ids=[m[3][:20] for m in MISTAKES],
)
def test_a_wrong_answer_fails_with_its_hint(tmp_path, name, old, new, hint):
    result = grade(tmp_path, name, wrong(name, old, new))
    assert result.status == FAILING
    assert hint in result.detail, result.detail


def test_the_command_end_to_end(tmp_path, capsys):
    assert main(["exercises", "list"]) == 0
    listed = capsys.readouterr().out
    assert [line.split()[1] for line in listed.splitlines()[: 2 * len(NAMES) : 2]] == NAMES
    folder = tmp_path / "work"
    assert main(["exercises", "start", str(folder)]) == 0
    assert capsys.readouterr().out.count("wrote ") == len(NAMES)
    assert main(["exercises", "start", str(folder)]) == 0
    assert capsys.readouterr().out.count("your work is not touched") == len(NAMES)

    assert main(["exercises", "check", str(folder), "im2col", "--max-examples", "3"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[:3] == ["exercise  status", "--------  -------------",
                                    "im2col    not started"]  # fmt: skip
    assert "0 of 1 passed" in out
    assert main(["exercises", "check", str(folder), "im2col", "im2col"]) == 1  # graded once
    assert capsys.readouterr().out.count("im2col    not started") == 1

    assert main(["exercises", "solution", "im2col"]) == 0
    (folder / "im2col.py").write_text(capsys.readouterr().out)
    mistake = wrong("conv2d_backward", "grad_x[tap] += ", "grad_x[tap] = ")
    (folder / "conv2d_backward.py").write_text(mistake)
    code = main(["exercises", "check", str(folder), "im2col", "conv2d_backward",
                 "--max-examples", str(FEW)])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 1
    assert "im2col           passed" in out and "conv2d_backward  failing" in out
    assert "smallest failing case" in out and "col2im must add" in out
    assert main(["exercises", "check", str(folder), "im2col"]) == 0
    assert "1 of 1 passed" in capsys.readouterr().out

    assert main(["exercises", "check", str(folder), "no_such"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("tinynet exercises: error: no exercise 'no_such'") and err.count("\n") == 1
    )
    a_file = folder / "im2col.py"
    for action, target, said in (
        ("check", tmp_path / "nowhere", "exercises check: no folder"),
        ("check", a_file, f"exercises check: {a_file} is a file, not a folder"),
        ("start", a_file / "sub", f"exercises start: cannot create {a_file / 'sub'} (Not a dir"),
    ):
        assert main(["exercises", action, str(target)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"tinynet exercises: error: {said}") and err.count("\n") == 1, err


def test_the_command_in_its_own_process(tmp_path):
    """As a learner runs it: `tinynet exercises ...` (python -m tinynet), exit codes included."""

    def tinynet(*args):
        return subprocess.run([sys.executable, "-m", "tinynet", "exercises", *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)  # fmt: skip

    assert tinynet("start", "work").returncode == 0
    checked = tinynet("check", "work", "scalar_backward")
    assert checked.returncode == 1 and "scalar_backward  not started" in checked.stdout
    solution = tinynet("solution", "scalar_backward")
    assert solution.returncode == 0 and solution.stdout == exercises.solution_text(
        "scalar_backward"
    )
    (tmp_path / "work" / "scalar_backward.py").write_text(solution.stdout)
    checked = tinynet("check", "work", "scalar_backward")
    assert checked.returncode == 0 and "1 of 1 passed" in checked.stdout
    missing = tinynet("check", "nowhere")
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no folder nowhere" in missing.stderr


ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "examples" / "lessons").glob("[0-9][0-9]_*.py"))


def practised_by(lesson: str) -> list[str]:
    return [name for name, e in exercises.EXERCISES.items() if lesson in e.lessons]


def test_each_lesson_ends_by_naming_the_exercises_that_practise_it():
    assert {lesson for e in exercises.EXERCISES.values() for lesson in e.lessons} == {
        path.name for path in LESSONS
    }
    for path in LESSONS:
        last = re.split(r"^# %%", path.read_text(encoding="utf-8"), flags=re.M)[-1]
        assert last.startswith(" [markdown]\n# **Practise it.**"), path.name
        assert re.findall(r"^# - `(\w+)`", last, re.M) == practised_by(path.name), path.name


def test_the_readme_and_the_lessons_page_list_lessons_and_exercises_side_by_side():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    path = readme[readme.index("## The learning path") :]
    rows = re.findall(r"^\| (\d)\. [^|]+ \| (.+) \|$", path, re.M)
    assert [int(number) for number, _ in rows] == list(range(1, len(LESSONS) + 1))
    for (_, names), lesson in zip(rows, LESSONS):
        assert re.findall(r"`(\w+)`", names) == practised_by(lesson.name), lesson.name
    page = (ROOT / "docs" / "lessons.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| ([\d, ]+) \|$", page, re.M)
    assert [name for name, _ in rows] == NAMES
    for name, lessons in rows:
        numbers = [int(lesson[:2]) for lesson in exercises.EXERCISES[name].lessons]
        assert [int(n) for n in lessons.split(", ")] == numbers, name
