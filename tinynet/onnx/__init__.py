"""ONNX in and out (the onnx extra): ``export`` writes a tinynet model as standard ONNX ops,
``load`` reads an ONNX file (tinynet's or another tool's) into a trainable tinynet Module."""

try:
    import onnx  # noqa: F401 - the absolute package, not this one
except ImportError as error:
    raise ImportError(
        f"tinynet.onnx needs the onnx package: pip install 'tinynet[onnx]' ({error})"
    ) from error

from tinynet.onnx.reader import (
    OnnxImportError,
    OnnxModule,
    convert_onnx,
    load,
    load_for_prediction,
)
from tinynet.onnx.writer import OnnxExportError, export

__all__ = [
    "OnnxExportError", "OnnxImportError", "OnnxModule", "convert_onnx", "export", "load",
    "load_for_prediction",
]
