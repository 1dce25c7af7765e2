"""tinynet: a from-scratch NumPy + numba deep-learning framework that builds GoogLeNet.

import tinynet
import tinynet.functional as F

x = tinynet.tensor(data, requires_grad=True)
loss = F.cross_entropy(model(x), labels)
loss.backward()

Importing tinynet changes nothing in the process; ``tinynet.runtime.configure()`` applies the
thread and memory policy a training run wants (the commands and the Trainer call it).
"""

# isort: off
from tinynet.tensor import Tensor, ones, tensor, zeros  # Tensor before the ops that use it

# isort: on
from tinynet import functional, models, nn, optim, runtime
from tinynet.anomaly import AnomalyError, detect_anomaly
from tinynet.capture import capture
from tinynet.function import Function, enable_grad, is_grad_enabled, no_grad
from tinynet.gradcheck import GradcheckError, check_gradients, gradcheck
from tinynet.graph import draw_graph
from tinynet.inference import inference  # the function; the package stays in sys.modules
from tinynet.io import load, save
from tinynet.reference import use_reference
from tinynet.rng import manual_seed
from tinynet.summary import summary  # the function; the module stays tinynet.summary in sys.modules
from tinynet.trace import trace  # the function, as summary

__version__ = "0.1.0"

__all__ = [
    "AnomalyError",
    "Function",
    "GradcheckError",
    "Tensor",
    "capture",
    "check_gradients",
    "detect_anomaly",
    "draw_graph",
    "enable_grad",
    "functional",
    "gradcheck",
    "inference",
    "is_grad_enabled",
    "load",
    "manual_seed",
    "models",
    "nn",
    "no_grad",
    "ones",
    "optim",
    "runtime",
    "save",
    "summary",
    "tensor",
    "trace",
    "use_reference",
    "zeros",
]
