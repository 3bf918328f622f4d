"""terse.torch: a PyTorch DistributedDataParallel communication hook that reduces each
gradient bucket with terse's compressed allreduce.

    import terse, terse.torch
    comm = terse.Comm("compressor=powersgd:rank=4; feedback=ef")
    ddp = torch.nn.parallel.DistributedDataParallel(model)          # gloo process group
    ddp.register_comm_hook(None, terse.torch.ddp_comm_hook(comm, model=model))

DDP keeps its own process group (gloo on CPU) for what it does besides gradients (the
parameter broadcast at construction, bucket rebuilding); the gradients travel through
``comm`` instead, terse's MPI communicator. Every parameter in a bucket is its own terse
layer with the parameter's shape, so PowerSGD and L-GreCo see the real matrices (a
convolution kernel ``(out, in, kh, kw)`` as ``out x in*kh*kw``), not a flat bucket.

Importing ``terse`` does not import this module, nor torch: ``terse.torch`` is loaded on
first use (``import terse.torch`` or the attribute). See docs/python.md, "PyTorch DDP".
"""
# No `from __future__ import annotations` here: DDP's register_comm_hook compares the hook's
# annotations with the real classes, and string annotations would fail that check.
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from ._comm import Comm
from ._errors import Status, TerseError

__all__ = ["ddp_comm_hook"]


class _BucketReducer:
    """What the hook does with a bucket, and the hook's state: the layer of each parameter.

    A parameter becomes a terse layer the first time a bucket carries it, named
    ``prefix + parameter name`` (with ``model``) or ``prefix + "p<k>"`` (k counts the
    parameters in the order the buckets first bring them). Buckets and their order are the
    same on every rank, so these names are too. Layers follow the parameters, not the
    buckets: when DDP rebuilds its buckets after the first iteration (another grouping,
    another order), each parameter keeps its layer and its feedback state.
    """

    def __init__(self, comm: Comm, config: Optional[str], model: Any, prefix: str) -> None:
        self.comm = comm
        self.config = config
        self.prefix = prefix
        self.layers: List[str] = []
        # id(parameter) -> (layer id, the parameter). Holding the parameter keeps its id from
        # being reused by another object.
        self._by_param: Dict[int, Tuple[int, torch.Tensor]] = {}
        self._names: Dict[int, str] = {}
        if model is not None:
            if isinstance(model, torch.nn.parallel.DistributedDataParallel):
                model = model.module  # names without DDP's "module." in front
            self._names = {id(p): n for n, p in model.named_parameters()}

    def _layer_of(self, param: torch.Tensor) -> int:
        entry = self._by_param.get(id(param))
        if entry is not None:
            return entry[0]
        name = self._names.get(id(param))
        name = self.prefix + (name if name is not None else f"p{len(self._by_param)}")
        lid = self.comm.layer(name, tuple(param.shape), config=self.config)
        self._by_param[id(param)] = (lid, param)
        self.layers.append(name)
        return lid

    def reduce(self, bucket: dist.GradBucket) -> torch.Tensor:
        buf = bucket.buffer()
        if buf.dtype != torch.float32 or buf.device.type != "cpu":
            raise TerseError(Status.ERR_ARG,
                             f"terse.torch.ddp_comm_hook: bucket {bucket.index()} holds "
                             f"{buf.dtype} gradients on '{buf.device}'; terse reduces CPU "
                             "torch.float32 gradients only")
        # The bucket is the parameters' gradients laid end to end, in bucket.parameters()
        # order: cut it into views with each parameter's shape and reduce those in place.
        params = bucket.parameters()
        total = sum(p.numel() for p in params)
        if total != buf.numel():
            raise TerseError(Status.ERR_STATE,
                             f"terse.torch.ddp_comm_hook: bucket {bucket.index()} has "
                             f"{buf.numel()} elements but its parameters {total}; this "
                             "torch lays buckets out in a way the hook does not know")
        items = []
        offset = 0
        for p in params:
            n = p.numel()
            if n > 0:
                items.append((buf[offset:offset + n].view(p.shape), self._layer_of(p)))
            offset += n
        self.comm.allreduce_many(items)  # the mean over the ranks, in place, in buf
        if bucket.is_last():
            self.comm.step_end()
        return buf


def ddp_comm_hook(comm: Comm, config: Optional[str] = None, *, min_size: Optional[int] = None,
                  model: Any = None, prefix: str = "ddp.") -> Callable[..., Any]:
    """A DistributedDataParallel communication hook that reduces the gradients through
    ``comm`` (a :class:`terse.Comm`) instead of DDP's process group.

    Register it with ``ddp.register_comm_hook(None, hook)`` (the state argument is not
    used). For each bucket, the hook cuts the flat gradient buffer into one view per
    parameter, with the parameter's shape, reduces them all with one
    :meth:`Comm.allreduce_many` (the mean over the ranks, as DDP's own allreduce gives), calls
    :meth:`Comm.step_end` after the last bucket of the backward pass, and returns a completed
    ``torch.futures.Future`` holding the buffer (a no-op hook's future, as DDP's
    documentation of ``register_comm_hook`` shows it). The reduction is synchronous: it runs in the
    backward pass, in the thread that calls the hook.

    Args:
        comm: the terse communicator; its ranks must be DDP's, in the same order.
        config: a per-layer configuration for every layer this hook registers (keys
            compressor, feedback, adapt, min_size, reduce, nonfinite), over the Comm's.
        min_size: shorthand for ``min_size=N`` in ``config``: parameters with fewer elements
            are reduced exactly (dense, no feedback). terse's default is 1024.
        model: the module (or the DDP wrapper): layers are then named after its parameters
            (``prefix + "fc1.weight"``), which reads better in ``comm.stats()``. Without it,
            they are ``prefix + "p0"``, ``"p1"``, ... in the order the buckets bring them.
        prefix: put before every layer name, to keep two hooks on one Comm apart.

    Returns the hook, a function ``hook(state, bucket)``, with two attributes: ``comm``, and
    ``layers``, the names of the layers it registered so far, in order.

    Each parameter keeps one layer, and its feedback state, for the whole run, whatever
    buckets DDP puts it in. Use the Comm only from this hook while DDP trains, or call it at
    the same point on every rank. With ``compressor=dgc``, the reduced gradient already holds
    dgc's momentum: give the optimizer no momentum of its own.
    """
    if not isinstance(comm, Comm):
        raise TerseError(Status.ERR_ARG, "ddp_comm_hook: comm must be a terse.Comm, not "
                         f"{type(comm).__module__}.{type(comm).__qualname__}")
    if not isinstance(prefix, str):
        raise TerseError(Status.ERR_ARG, f"ddp_comm_hook: prefix must be a str, not {prefix!r}")
    if config is not None and not isinstance(config, str):
        raise TerseError(Status.ERR_ARG, "ddp_comm_hook: config must be a str or None, not "
                         f"{config!r}")
    if model is not None and not callable(getattr(model, "named_parameters", None)):
        raise TerseError(Status.ERR_ARG, "ddp_comm_hook: model must be a torch.nn.Module (or "
                         "its DistributedDataParallel wrapper), not "
                         f"{type(model).__module__}.{type(model).__qualname__}")
    if min_size is not None:
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 0:
            raise TerseError(Status.ERR_ARG, "ddp_comm_hook: min_size must be an int >= 0, not "
                             f"{min_size!r}")
        if config is not None and re.search(r"(^|;)\s*min_size\s*=", config):
            raise TerseError(Status.ERR_ARG, "ddp_comm_hook: min_size is given twice (argument "
                             f"and config {config!r})")
        config = f"{config}; min_size={min_size}" if config else f"min_size={min_size}"
    reducer = _BucketReducer(comm, config, model, prefix)

    # A plain function, as DDP expects (it reads the name and checks the annotations).
    def terse_ddp_comm_hook(state: object,
                            bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
        fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        fut.set_result(reducer.reduce(bucket))
        return fut

    terse_ddp_comm_hook.comm = comm  # type: ignore[attr-defined]
    terse_ddp_comm_hook.layers = reducer.layers  # type: ignore[attr-defined]
    return terse_ddp_comm_hook
