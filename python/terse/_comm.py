"""terse.Comm: a terse communicator, its layers, and the in-place compressed allreduce."""
from __future__ import annotations

import atexit
import ctypes
import itertools
import math
import operator
import os
import sys
import threading
import weakref
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union)

import numpy as np

from . import _library
from ._errors import Status, TerseError

#: A layer is named by the string given at registration, or by the id terse returned.
LayerKey = Union[str, int]
#: What allreduce accepts: a numpy array, or a CPU torch.Tensor (when torch is installed).
Buffer = Any
Shape = Union[int, Sequence[int]]

_STATS_FIELDS = ("count", "calls", "skipped", "step", "wire_bytes", "sent_bytes",
                 "total_sent_bytes", "compress_us", "comm_us", "decompress_us", "plan_version",
                 "plan_fallbacks", "plan_us", "plan_measure_us", "plan_solve_us",
                 "sent_inter_bytes", "hier_nodes")


#: The ranges of the C types the binding passes Python ints as: ctypes would silently keep
#: only the low bits of anything outside them (2**32 as a c_int is 0, 2**64 + 4 as a size_t
#: is 4), so every such int is checked against these first.
SIZE_MAX = (1 << (8 * ctypes.sizeof(ctypes.c_size_t))) - 1
INT_MIN = -(1 << (8 * ctypes.sizeof(ctypes.c_int) - 1))
INT_MAX = (1 << (8 * ctypes.sizeof(ctypes.c_int) - 1)) - 1


def _check(status: int) -> None:
    """Raises TerseError with terse_last_error() if a C call failed. Call it right after the
    call, in the same thread (the message is per thread)."""
    if status != 0:
        lib = _library.get()
        raise TerseError(status, lib.terse_last_error().decode("utf-8", "replace"))


def _arg_error(message: str) -> TerseError:
    return TerseError(Status.ERR_ARG, message)


def _encode(text: Optional[str], what: str) -> Optional[bytes]:
    if text is None:
        return None
    if not isinstance(text, str):
        raise _arg_error(f"{what} must be a str or None, not {type(text).__name__}")
    if "\0" in text:
        raise _arg_error(f"{what} contains a NUL character")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _arg_error(f"{what} cannot be encoded as UTF-8 ({e.reason} at index "
                         f"{e.start})") from None


def _path(path: Any, where: str) -> bytes:
    """A file path as the bytes C gets (``os.fsencode``), or a TerseError naming it."""
    if isinstance(path, bool) or path is None:
        raise _arg_error(f"{where}: path must be a str, bytes or os.PathLike, not {path!r}")
    try:
        p = os.fsencode(path)
    except TypeError:
        raise _arg_error(f"{where}: path must be a str, bytes or os.PathLike, not "
                         f"{type(path).__module__}.{type(path).__qualname__}") from None
    except UnicodeError as e:
        raise _arg_error(f"{where}: path {path!r} cannot be encoded for the file system "
                         f"({e})") from None
    if b"\0" in p:
        raise _arg_error(f"{where}: path {path!r} contains a NUL character")
    return p


def _real(value: Any, what: str) -> float:
    """A Python float from a real number (int, float, numpy scalar, 0-d tensor), or a
    TerseError naming the argument (a str, bytes or bool is refused, not converted)."""
    if isinstance(value, (str, bytes, bytearray, bool, np.bool_)):
        raise _arg_error(f"{what} must be a real number, not {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as e:
        raise _arg_error(f"{what} must be a real number, not {value!r} ({e})") from None
    except OverflowError:
        raise _arg_error(f"{what} = {value!r} is out of the range of a double") from None


def _matrix_shape(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """The rows x cols terse sees for a tensor of this shape: a scalar is 1 x 1, a vector
    n x 1, a matrix itself, and a tensor of 3 or more dimensions shape[0] x prod(rest), the
    view PowerSGD takes of a convolution kernel."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], 1
    cols = 1
    for d in shape[1:]:
        cols *= d
    return shape[0], cols


def _normalise_shape(shape: Shape) -> Tuple[int, ...]:
    try:
        dims: Tuple[int, ...] = (operator.index(shape),)  # type: ignore[arg-type]
    except TypeError:
        try:
            dims = tuple(operator.index(d) for d in shape)  # type: ignore[union-attr]
        except TypeError:
            raise _arg_error(f"shape must be an int or a sequence of ints, not {shape!r}") from None
    if any(d < 0 for d in dims):
        raise _arg_error(f"shape {dims} has a negative dimension")
    return dims


def _layer_matrix(dims: Tuple[int, ...]) -> Tuple[int, int]:
    """rows x cols of a normalised shape, refusing what a size_t cannot hold exactly (ctypes
    would pass 2**64 + 4 as 4): every dimension, rows, cols and their product. Sizes that
    fit but exceed TERSE_MAX_LAYER_COUNT are left to terse_layer_add, which refuses them."""
    for d in dims:
        if d > SIZE_MAX:
            raise _arg_error(f"shape {dims}: dimension {d} does not fit in a size_t (at most "
                             f"{SIZE_MAX}); terse's per-layer maximum is 2**28 elements "
                             "(TERSE_MAX_LAYER_COUNT)")
    rows, cols = _matrix_shape(dims)
    if cols > SIZE_MAX or rows * cols > SIZE_MAX:
        raise _arg_error(f"shape {dims} has {math.prod(dims)} elements, more than a size_t "
                         "holds; terse's per-layer maximum is 2**28 elements "
                         "(TERSE_MAX_LAYER_COUNT)")
    return rows, cols


def _torch_module():
    # Only a tensor of an already imported torch can be passed in: never import torch here.
    return sys.modules.get("torch")


def _as_array(buf: Buffer, where: str) -> np.ndarray:
    """A float32, C-contiguous, writable numpy view of `buf` sharing its memory, or a
    TerseError saying what is wrong with it."""
    torch = _torch_module()
    if torch is not None and isinstance(buf, torch.Tensor):
        if buf.layout != torch.strided:
            raise _arg_error(f"{where}: the tensor has layout {buf.layout}; terse needs a dense "
                             "(strided) tensor")
        if buf.device.type != "cpu":
            raise _arg_error(f"{where}: the tensor is on device '{buf.device}'; this binding "
                             "reduces CPU tensors only (move it with .cpu() and copy back)")
        if buf.dtype != torch.float32:
            raise _arg_error(f"{where}: the tensor's dtype is {buf.dtype}; terse reduces "
                             "torch.float32 only (convert with .float() and copy back)")
        if not buf.is_contiguous():
            raise _arg_error(f"{where}: the tensor is not contiguous (strides "
                             f"{tuple(buf.stride())}); pass .contiguous() and copy the result back")
        if getattr(buf, "is_neg", None) is not None and buf.is_neg():
            raise _arg_error(f"{where}: the tensor is a lazy negation (its negative bit is set); "
                             "pass .resolve_neg() and copy the result back")
        return buf.detach().numpy()  # a view: same memory, written in place
    if not isinstance(buf, np.ndarray):
        raise _arg_error(f"{where}: expected a numpy.ndarray or a torch.Tensor, got "
                         f"{type(buf).__module__}.{type(buf).__qualname__}")
    if buf.dtype != np.float32:
        raise _arg_error(f"{where}: the array's dtype is {buf.dtype} ('{buf.dtype.str}'); terse "
                         "reduces native float32 only (convert with a.astype(np.float32) and "
                         "copy back)")
    if not buf.flags.c_contiguous:
        raise _arg_error(f"{where}: the array is not C-contiguous (shape {buf.shape}, strides "
                         f"{buf.strides}); pass np.ascontiguousarray(a) and copy the result back")
    if not buf.flags.writeable:
        raise _arg_error(f"{where}: the array is read-only; the allreduce writes its result in "
                         "place")
    if not buf.flags.aligned:
        raise _arg_error(f"{where}: the array's data is not aligned for float32")
    return buf


class _Layer:
    __slots__ = ("name", "id", "shape", "rows", "cols", "config")

    def __init__(self, name: str, id: int, shape: Tuple[int, ...], config: Optional[str]):
        self.name, self.id, self.shape, self.config = name, id, shape, config
        self.rows, self.cols = _layer_matrix(shape)


# Open communicators, closed at interpreter exit (before mpi4py's own MPI_Finalize, which
# runs after every atexit function), newest first.
_open_comms: "weakref.WeakValueDictionary[int, Comm]" = weakref.WeakValueDictionary()
_serial = itertools.count()
# A communicator over MPI_COMM_WORLD that the binding keeps while terse itself initialised
# MPI, so that closing the user's last Comm does not finalise MPI: MPI then lives until the
# interpreter exits, as with mpi4py, and a later terse.Comm() still works.
_keeper: Optional[ctypes.c_void_p] = None
_keeper_lock = threading.Lock()


def _mpi_running(lib: ctypes.CDLL) -> Tuple[bool, bool]:
    init, fin = ctypes.c_int(0), ctypes.c_int(0)
    lib.MPI_Initialized(ctypes.byref(init))
    lib.MPI_Finalized(ctypes.byref(fin))
    return bool(init.value), bool(fin.value)


@atexit.register
def _close_all_at_exit() -> None:
    global _keeper
    for key in sorted(_open_comms.keys(), reverse=True):
        comm = _open_comms.get(key)
        if comm is not None:
            try:
                comm.close()
            except Exception:
                pass
    lib = _library.loaded()
    if _keeper is not None and lib is not None:
        lib.terse_comm_destroy(_keeper)  # the last world communicator: finalises MPI
        _keeper = None


class Comm:
    """A terse communicator: the ranks that reduce together, the configuration, and every
    layer's state (error feedback, counters).

    ``Comm(config)`` spans ``MPI_COMM_WORLD``. If MPI is not running yet, terse initialises it
    (``MPI_THREAD_SERIALIZED``) and finalises it when the interpreter exits; if MPI is already
    running (mpi4py imported first, or another library), terse neither initialises nor
    finalises it. ``Comm(config, comm=c)`` spans an mpi4py communicator ``c`` (terse
    duplicates it, so their traffic never mixes); an ``int`` is taken as a Fortran handle.

    ``config`` is a configuration string (docs/configuration.md), e.g.
    ``"compressor=topk:density=0.01; feedback=ef"``; None or "" gives the defaults, and the
    ``TERSE_*`` environment variables override it. Creating a Comm is collective.

    One thread at a time per Comm, enforced: a second thread entering a Comm that is inside a
    call gets TerseError(ERR_STATE) (different Comms may be used from different threads).
    Close it with :meth:`close`, a ``with`` block, or let it go: an open Comm is closed when
    it is garbage-collected and at interpreter exit.
    """

    def __init__(self, config: Optional[str] = None, comm: Any = None) -> None:
        global _keeper
        self._h: Optional[ctypes.c_void_p] = None
        self._serial = next(_serial)
        self._layers: Dict[str, _Layer] = {}
        self._by_id: List[_Layer] = []
        # Held by layer() and close(), never waited for: the id table must change together
        # with terse's (a check, the C call with the GIL released, the append), and close()
        # must not free the handle under them. A second thread finding it held gets
        # ERR_STATE, as C answers a second thread.
        self._lock = threading.Lock()
        lib = _library.get()
        cfg = _encode(config, "config")
        h = ctypes.c_void_p()
        if comm is None:
            initialised, _ = _mpi_running(lib)
            _check(lib.terse_comm_create_world(cfg, ctypes.byref(h)))
            with _keeper_lock:
                if not initialised and _keeper is None:
                    keeper = ctypes.c_void_p()
                    if lib.terse_comm_create_world(cfg, ctypes.byref(keeper)) == 0:
                        _keeper = keeper
        else:
            _check(lib.terse_comm_create_mpi_f(self._fortran_handle(comm), cfg, ctypes.byref(h)))
        self._h = h
        _open_comms[self._serial] = self
        rank, size = ctypes.c_int(), ctypes.c_int()
        _check(lib.terse_comm_rank(h, ctypes.byref(rank), ctypes.byref(size)))
        self._rank, self._size = rank.value, size.value

    @staticmethod
    def _fortran_handle(comm: Any) -> int:
        if hasattr(comm, "py2f"):  # mpi4py.MPI.Comm
            return int(comm.py2f())
        if isinstance(comm, (int, np.integer)) and not isinstance(comm, bool):
            if not INT_MIN <= int(comm) <= INT_MAX:  # a c_int would keep only the low bits
                raise _arg_error(f"comm: Fortran handle {int(comm)} is out of the range of a C "
                                 "int")
            return int(comm)
        raise _arg_error("comm must be an mpi4py communicator (or its Fortran handle, an int), "
                         f"not {type(comm).__module__}.{type(comm).__qualname__}")

    # ---- lifetime ---------------------------------------------------------------------------

    def close(self) -> None:
        """Frees the communicator and every layer's state. Idempotent. Call it on every rank
        (it is not collective). MPI stays initialised (see the class documentation).
        Raises TerseError(ERR_STATE), and the Comm stays open, if another thread is inside a
        call on it."""
        if getattr(self, "_h", None) is None:
            return
        lock = self._lock
        if not lock.acquire(blocking=False):
            raise self._busy("close")
        try:
            h = self._h
            if h is None:
                return
            lib = _library.loaded()
            if lib is not None:
                s = lib.terse_comm_destroy(h)
                if s == Status.ERR_STATE:  # another thread is inside a call: not destroyed
                    _check(s)
            self._h = None
            _open_comms.pop(self._serial, None)
        finally:
            lock.release()

    @staticmethod
    def _busy(call: str) -> TerseError:
        return TerseError(Status.ERR_STATE,
                          f"{call}: this terse.Comm is in use by another thread (inside "
                          "layer() or close()); a Comm is used by one thread at a time")

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has run."""
        return getattr(self, "_h", None) is None

    def __enter__(self) -> "Comm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter teardown, modules may already be gone
            pass

    def __repr__(self) -> str:
        if self.closed:
            return "<terse.Comm closed>"
        return f"<terse.Comm rank {self._rank} of {self._size}, {len(self._by_id)} layers>"

    def _handle(self) -> ctypes.c_void_p:
        h = getattr(self, "_h", None)
        if h is None:
            raise TerseError(Status.ERR_STATE, "this terse.Comm is closed")
        return h

    # ---- properties -------------------------------------------------------------------------

    @property
    def rank(self) -> int:
        """This process's rank in the communicator."""
        self._handle()
        return self._rank

    @property
    def size(self) -> int:
        """The number of ranks."""
        self._handle()
        return self._size

    @property
    def config(self) -> str:
        """The configuration in effect (after environment overrides), as a configuration
        string (``terse_comm_config``)."""
        h, lib = self._handle(), _library.get()
        n = 1024
        while True:
            buf = ctypes.create_string_buffer(n)
            s = lib.terse_comm_config(h, buf, n)
            if s == 0:
                return buf.value.decode("utf-8", "replace")
            if s != Status.ERR_ARG or n >= 1 << 20:
                _check(s)
            n *= 4

    @property
    def layers(self) -> List[str]:
        """The names of the registered layers, in registration (= id) order."""
        self._handle()
        return [l.name for l in self._by_id]

    # ---- layers -----------------------------------------------------------------------------

    def layer(self, name: str, shape: Shape, config: Optional[str] = None) -> int:
        """Registers a layer and returns its id (0, 1, 2, ... in registration order).

        ``shape`` is the gradient's shape (an int for a vector). terse sees it as a matrix:
        a vector of n is n x 1, a matrix itself, and 3 or more dimensions are
        ``shape[0] x prod(shape[1:])`` (PowerSGD's view of a convolution kernel). ``config``
        overrides the communicator's keys compressor, feedback, adapt, min_size, reduce and
        nonfinite for this layer. Every rank must register the same layers in the same order.
        :meth:`allreduce` registers a layer on first use; call this for a per-layer config or
        to allocate every layer's buffers up front.
        """
        self._handle()
        lib = _library.get()
        if not isinstance(name, str) or not name:
            raise _arg_error(f"a layer name must be a non-empty str, not {name!r}")
        bname = _encode(name, "layer name")
        bconfig = _encode(config, "config")
        dims = _normalise_shape(shape)
        entry = _Layer(name, -1, dims, config)  # refuses sizes a size_t cannot hold
        if not self._lock.acquire(blocking=False):
            raise self._busy("layer")
        try:
            h = self._handle()  # closed meanwhile?
            if name in self._layers:
                raise _arg_error(f"layer '{name}' is already registered (id "
                                 f"{self._layers[name].id})")
            lid = ctypes.c_int()
            _check(lib.terse_layer_add(h, bname, entry.rows, entry.cols, bconfig,
                                       ctypes.byref(lid)))
            entry.id = lid.value
            if entry.id != len(self._by_id):
                raise TerseError(Status.ERR_STATE, f"layer: terse returned id {entry.id} for "
                                 f"'{name}', the binding expected {len(self._by_id)}")
            self._layers[name] = entry
            self._by_id.append(entry)
            return entry.id
        finally:
            self._lock.release()

    def _lookup(self, layer: LayerKey) -> _Layer:
        """The layer of a name or of an id this binding handed out; anything else is a
        TerseError. An id is never passed through unchecked: ctypes would keep its low 32
        bits (2**32 is layer 0), and the buffer's size would go unchecked."""
        if isinstance(layer, str):
            l = self._layers.get(layer)
            if l is None:
                raise _arg_error(f"unknown layer '{layer}'; registered: "
                                 + (", ".join(repr(n) for n in self._layers) or "none"))
            return l
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise _arg_error(f"layer must be a name (str) or an id (int), not {layer!r}")
        i, n = int(layer), len(self._by_id)
        if not 0 <= i < n:
            raise _arg_error(f"unknown layer id {i}; " + (f"the registered ids are 0 to {n - 1}"
                                                          if n else "no layer is registered"))
        return self._by_id[i]

    def _prepare(self, buf: Buffer, layer: LayerKey, where: str) -> Tuple[int, np.ndarray]:
        """Validates one (buffer, layer) pair, registering the layer on first use by name.
        The buffer's shape is always checked against the layer's before C sees it."""
        a = _as_array(buf, where)
        if isinstance(layer, str) and layer not in self._layers:
            self.layer(layer, a.shape)
        l = self._lookup(layer)
        if tuple(a.shape) != l.shape:
            raise _arg_error(f"{where}: layer '{l.name}' was registered with shape {l.shape}; "
                             f"got shape {tuple(a.shape)}")
        return l.id, a

    # ---- the allreduce ----------------------------------------------------------------------

    def allreduce(self, buf: Buffer, layer: LayerKey) -> Buffer:
        """Compressed allreduce of one layer, in place; returns ``buf`` itself.

        ``buf`` is this rank's local gradient: a C-contiguous, writable numpy float32 array,
        or a contiguous CPU ``torch.float32`` tensor. On return it holds the aggregated
        estimate of the mean over the ranks (the sum with ``reduce=sum``), bitwise identical
        on every rank. ``layer`` is a name (registered on first use with ``buf``'s shape;
        later calls must pass the same shape) or an id from :meth:`layer` (any other int is
        refused; the shape is checked either way). Collective: every rank calls it with the
        same layer. Raises TerseError (TERSE_ERR_MISMATCH when ranks disagree,
        TERSE_ERR_NONFINITE for a NaN/Inf with nonfinite=error, ...).
        """
        h = self._handle()
        lid, a = self._prepare(buf, layer, f"allreduce(layer={layer!r})")
        _check(_library.get().terse_allreduce(h, lid, a.ctypes.data))
        return buf

    def iallreduce(self, buf: Buffer, layer: LayerKey) -> "Request":
        """Starts :meth:`allreduce` of one layer on terse's progress thread and returns at
        once with a :class:`Request`; ``buf`` holds the result after ``Request.wait()``.
        Leave ``buf`` alone until then (the request keeps it alive). Requests run one at a
        time in the order they were started, the same order on every rank; any other call
        on this Comm first waits for them. Overlap needs MPI initialised with at least
        MPI_THREAD_SERIALIZED (mpi4py's default is MPI_THREAD_MULTIPLE, and a Comm that
        starts MPI itself asks for MPI_THREAD_SERIALIZED); below it the allreduce runs inside
        this call. Argument errors raise here; errors of the exchange raise from ``wait()``."""
        h = self._handle()
        lid, a = self._prepare(buf, layer, f"iallreduce(layer={layer!r})")
        req = ctypes.c_void_p()
        _check(_library.get().terse_iallreduce(h, lid, a.ctypes.data, ctypes.byref(req)))
        return Request(req.value, buf, a, self)

    def allreduce_many(self, items: Union[Mapping[LayerKey, Buffer],
                                          Iterable[Tuple[Buffer, LayerKey]]]) -> List[Buffer]:
        """:meth:`allreduce` of several layers in one call, in the order given (the same on
        every rank). ``items`` is a sequence of ``(buf, layer)`` pairs, or a mapping
        ``{layer: buf}``. Every pair is checked before anything is reduced. Runs of small
        layers go as one fused exchange (the communicator's ``fuse=``), each layer's result
        the same as :meth:`allreduce` would give. An exchange error (a mismatch, a NaN) fails
        its layer and is raised; the rest of its bucket completes, later buckets do not run.
        Returns the buffers, in order.
        """
        h = self._handle()
        if isinstance(items, Mapping):
            pairs = [(b, k) for k, b in items.items()]
        elif isinstance(items, (str, bytes, bytearray)):
            raise _arg_error(f"allreduce_many: items must be a sequence of (buffer, layer) pairs "
                             f"or a mapping {{layer: buffer}}, not {type(items).__name__}")
        else:
            try:
                pairs = list(items)
            except TypeError:
                raise _arg_error("allreduce_many: items must be a sequence of (buffer, layer) "
                                 "pairs or a mapping {layer: buffer}, not "
                                 f"{type(items).__module__}.{type(items).__qualname__}") from None
        ids, arrays, bufs = [], [], []
        for i, pair in enumerate(pairs):
            try:
                b, k = pair
            except (TypeError, ValueError):
                raise _arg_error(f"allreduce_many: item {i} is not a (buffer, layer) "
                                 "pair") from None
            lid, a = self._prepare(b, k, f"allreduce_many item {i} (layer={k!r})")
            ids.append(lid)
            arrays.append(a)
            bufs.append(b)
        n = len(ids)
        c_ids = (ctypes.c_int * max(n, 1))(*ids)
        c_ptrs = (ctypes.c_void_p * max(n, 1))(*[a.ctypes.data for a in arrays])
        _check(_library.get().terse_allreduce_many(h, n, c_ids, c_ptrs))
        return bufs

    def step_end(self) -> None:
        """Marks the end of an optimizer step: advances the step counter that drives
        schedules (DGC warm-up, L-GreCo periods). Call it on every rank at the same point."""
        _check(_library.get().terse_step_end(self._handle()))

    def set_learning_rate(self, lr: float) -> None:
        """Sets gamma for layers with ``feedback=ef:lr=GAMMA`` (the learning-rate-inside
        form), from the next call on. Same value on every rank; finite and > 0."""
        h = self._handle()
        _check(_library.get().terse_set_learning_rate(h, _real(lr, "set_learning_rate: lr")))

    # ---- statistics and state ---------------------------------------------------------------

    def _stats_of(self, l: _Layer) -> Dict[str, Any]:
        s = _library.TerseStats()
        _check(_library.get().terse_layer_stats(self._handle(), l.id, ctypes.byref(s)))
        d: Dict[str, Any] = {"name": l.name, "id": l.id, "shape": l.shape,
                             "codec": s.codec.decode("utf-8", "replace"),
                             "feedback": s.feedback.decode("utf-8", "replace")}
        for f in _STATS_FIELDS:
            d[f] = getattr(s, f)
        d["dense"] = bool(s.dense)
        d["adapted"] = bool(s.adapted)
        return d

    def stats(self, layer: Optional[LayerKey] = None) -> Dict[str, Any]:
        """Statistics of one layer (``terse_layer_stats``) as a dict, or of every layer as
        ``{name: dict}`` in registration order when ``layer`` is None.

        Keys: name, id, shape, codec, feedback, count, calls, skipped, step, wire_bytes,
        sent_bytes, sent_inter_bytes (the part for ranks on other nodes), total_sent_bytes,
        compress_us, comm_us, decompress_us, dense, hier_nodes (the node count under the
        hierarchical protocol, 0 flat), and for adapt=lgreco: adapted, plan_version,
        plan_fallbacks, plan_us, plan_measure_us, plan_solve_us (the last decision). The byte and time figures are those of the
        layer's last call; codec shows the parameter L-GreCo has chosen.
        """
        self._handle()
        if layer is None:
            return {l.name: self._stats_of(l) for l in self._by_id}
        return self._stats_of(self._lookup(layer))

    def save(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Saves every layer's state so that :meth:`load` resumes bit for bit. Each rank
        writes ``<path>.rank<R>``, atomically. Collective; TERSE_ERR_IO on every rank if any
        rank failed to write."""
        h = self._handle()
        _check(_library.get().terse_state_save(h, _path(path, "save")))

    def load(self, path: Union[str, "os.PathLike[str]"]) -> None:
        """Loads what :meth:`save` wrote, into a Comm with the same rank count and the same
        layers registered in the same order (register them first, e.g. with :meth:`layer`).
        Collective and all-or-nothing: TERSE_ERR_IO or TERSE_ERR_MISMATCH leaves the state
        unchanged on every rank."""
        h = self._handle()
        _check(_library.get().terse_state_load(h, _path(path, "load")))


class Request:
    """A :meth:`Comm.iallreduce` in flight. ``wait()`` blocks until it has finished and
    returns the buffer; ``test()`` says whether it has finished without blocking (and, when
    it has, completes it as ``wait()`` would). A request is completed once; a request that is
    garbage-collected before that is waited for first, so its buffer is never freed under
    terse."""

    def __init__(self, handle: int, buf: Buffer, array: np.ndarray, comm: "Comm") -> None:
        self._h: Optional[int] = handle
        self._buf = buf
        self._array = array  # the memory terse writes to stays alive until the end
        self._comm = comm

    @property
    def done(self) -> bool:
        """True once the request has been completed by wait() or test()."""
        return self._h is None

    def wait(self) -> Buffer:
        """Waits for the allreduce and returns its buffer; raises TerseError if the exchange
        failed (on every rank, as a blocking allreduce would)."""
        h = self._h
        if h is None:
            raise _arg_error("Request.wait: this request was completed already")
        self._h = None
        try:
            _check(_library.get().terse_wait(h))
        finally:
            self._array = None
        return self._buf

    def test(self) -> bool:
        """True if the allreduce has finished (the request is then complete, and raises
        TerseError if it failed); False if it is still running."""
        h = self._h
        if h is None:
            raise _arg_error("Request.test: this request was completed already")
        done = ctypes.c_int(0)
        s = _library.get().terse_test(h, ctypes.byref(done))
        if done.value:
            self._h = None
            self._array = None
        _check(s)
        return bool(done.value)

    def __del__(self) -> None:
        h = getattr(self, "_h", None)
        if h is not None:
            self._h = None
            lib = _library.loaded()
            if lib is not None:
                lib.terse_wait(h)
