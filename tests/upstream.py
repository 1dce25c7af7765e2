"""Upstream model code (torchvision's and timm's own classes) as test oracles, on the CPU build
of torch.

PyPI's torchvision fails to import beside the CPU build of torch 2.13 (``operator
torchvision::nms does not exist``): its package ``__init__`` registers compiled operators. Its
model code needs none of them, so ``upstream_torchvision()`` makes ``torchvision`` a bare
namespace over the installed folder, without running that ``__init__``, and its model modules (and
timm, which imports them) then import as usual. Tests that take the fixtures skip cleanly when
the packages are not installed.
"""

import importlib.util
import sys
import types

import pytest


def upstream_torchvision():
    """The ``torchvision`` package with its model code importable (see the module docstring)."""
    pytest.importorskip("torch")
    if "torchvision" not in sys.modules:
        spec = importlib.util.find_spec("torchvision")
        if spec is None:
            pytest.skip("torchvision is not installed (pip install -e '.[dev,torch]')")
        package = types.ModuleType("torchvision")
        package.__path__ = list(spec.submodule_search_locations)
        package.__file__ = spec.origin
        sys.modules["torchvision"] = package
    return sys.modules["torchvision"]


def upstream_timm():
    """timm, importable beside the CPU build of torch (see the module docstring)."""
    upstream_torchvision()
    return pytest.importorskip("timm")
