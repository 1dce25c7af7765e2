"""Every kernel runs as plain Python with ``NUMBA_DISABLE_JIT=1``, so a reader can step through
it in a debugger ("How to read tinynet" in docs/core.md), and it computes what the compiled kernel
computes: the small GoogLeNet's forward and backward, in training mode, with the JIT off and on.

numba reads the variable when it is imported, so each run is its own process. float64, so that
the only differences are the order of a few floating-point sums (compiled loops may use fused
multiply-adds): agreement to 1e-12 relative, where a wrong index would be off by O(1).
"""

import inspect
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

from tinynet.kernels import im2col

FORWARD_AND_BACKWARD = """
import sys
import numpy as np
import tinynet
from tinynet.kernels import im2col
from tinynet.models import googlenet_small
from tinynet.models.googlenet import googlenet_loss

jitted = hasattr(im2col.im2col.threaded, "py_func")
assert jitted == (sys.argv[2] == "on"), f"im2col is jitted: {jitted}"
tinynet.manual_seed(0)
model = googlenet_small().double()
x = np.random.default_rng(0).standard_normal((2, 3, 16, 16))
x = tinynet.tensor(x, requires_grad=True)
loss = googlenet_loss(model(x), np.array([3, 7]))
loss.backward()
grads = {name: p.grad for name, p in model.named_parameters()}
np.savez(sys.argv[1], loss=loss.data, input=x.grad, **grads)
"""


def run(path, jit: str) -> dict:
    env = {**os.environ, "NUMBA_DISABLE_JIT": "1" if jit == "off" else "0"}
    result = subprocess.run(
        [sys.executable, "-c", FORWARD_AND_BACKWARD, str(path), jit],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    with np.load(path) as arrays:
        return dict(arrays)


def test_small_googlenet_gives_the_same_numbers_with_the_jit_disabled(tmp_path):
    compiled = run(tmp_path / "compiled.npz", "on")
    python = run(tmp_path / "python.npz", "off")
    assert compiled.keys() == python.keys()
    assert len(compiled) > 100  # the loss, the input's gradient and every parameter's
    for name, expected in compiled.items():
        assert np.all(np.isfinite(expected)), name
        scale = np.max(np.abs(expected))
        assert scale > 0, f"{name}: all zero, so the comparison would prove nothing"
        np.testing.assert_allclose(python[name], expected, rtol=0, atol=1e-12 * scale, err_msg=name)


def test_the_readme_breakpoint_is_inside_im2col_loop():
    readme = (Path(__file__).resolve().parent.parent / "docs" / "core.md").read_text()
    line = int(re.search(r"b tinynet/kernels/im2col\.py:(\d+)", readme)[1])
    source, first = inspect.getsourcelines(im2col.im2col.threaded)
    loop = next(i for i, text in enumerate(source) if "in prange(" in text)
    assert first + loop < line < first + len(source), "docs/core.md's breakpoint is not in the loop"
