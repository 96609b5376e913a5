"""edgegen: make generative models small and fast enough for edge devices.

Importing edgegen loads the C++ extension (which registers ``torch.ops.edgegen.*``) and the
Python registrations of those ops. It never imports mlflow, matplotlib or transformers.
"""

from edgegen._extension import load as _load

_C = _load()

from edgegen import ops  # noqa: E402  (registers fake/autograd kernels)
from edgegen import distill  # noqa: E402
from edgegen import memory  # noqa: E402
from edgegen.isa import cpu_isa, cpu_levels, kernel_paths, max_isa  # noqa: E402

__version__ = "0.1.0"

__all__ = ["distill", "memory", "ops", "cpu_isa", "cpu_levels", "kernel_paths", "max_isa", "__version__"]
