"""terse: compressed gradient allreduce for data-parallel training (a ctypes binding).

Example (run it under ``mpirun -np N``)::

    import numpy as np, terse
    with terse.Comm("compressor=topk:density=0.01; feedback=ef") as comm:
        grad = np.ones((256, 64), dtype=np.float32)       # this rank's local gradient
        comm.allreduce(grad, layer="fc1")                  # in place: now the mean
        comm.step_end()

Names follow the C API (include/terse.h): :class:`Comm` (``terse_comm_*``, layers, the
allreduce, statistics, state), :class:`TerseError` and :class:`Status`, and
:func:`lgreco_solve`; ``terse.torch.ddp_comm_hook`` for PyTorch DDP (that submodule, and
torch, are imported on first use only). The shared library is found through
``TERSE_LIBRARY``, next to this package, in the repository's ``build/`` folder, or on the
system path (docs/python.md).
"""
from __future__ import annotations

import importlib
from typing import Any, Tuple

from . import _library
from ._comm import Comm, Request
from ._errors import Status, TerseError
from ._planner import lgreco_solve

__all__ = ["Comm", "Request", "TerseError", "Status", "lgreco_solve", "library_path", "library_version",
           "__version__"]

#: The version of this binding (the C library's is :func:`library_version`).
__version__ = "0.1.0"


def library_path() -> str:
    """The path of the libterse.so in use (loading it if needed)."""
    return _library.path()


def library_version() -> Tuple[int, int, int]:
    """The version of the loaded libterse (``terse_version``), as (major, minor, patch)."""
    v = int(_library.get().terse_version())
    return v // 10000, v // 100 % 100, v % 100


def __getattr__(name: str) -> Any:
    # terse.torch imports torch: load it on first use only, so that `import terse` works
    # (and stays fast) without torch.
    if name == "torch":
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'terse' has no attribute {name!r}")
