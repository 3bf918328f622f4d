"""Finding and loading libterse.so, and the ctypes prototypes of the C API (include/terse.h).

Lookup order (the first that exists wins; TERSE_LIBRARY is final when set):

1. ``TERSE_LIBRARY``: the library file, or a folder that holds ``libterse.so``;
2. next to this package: ``terse/libterse.so``, ``terse/libterse.so.0``, ...;
3. the repository's build folder, ``<repo>/build/libterse.so`` (the package lives in
   ``<repo>/python/terse/``);
4. the system's search path, through ``ctypes.util.find_library("terse")`` (an installed
   ``meson install``).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from pathlib import Path
from typing import List, Optional

# The C library must be this major version (and at least this minor) for the prototypes below.
_MAJOR, _MIN_MINOR = 0, 1

_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_path: Optional[str] = None


class TerseStats(ctypes.Structure):
    """terse_stats_t (include/terse.h), field for field."""

    _fields_ = [
        ("name", ctypes.c_char * 64),
        ("codec", ctypes.c_char * 128),
        ("feedback", ctypes.c_char * 64),
        ("count", ctypes.c_size_t),
        ("calls", ctypes.c_uint64),
        ("skipped", ctypes.c_uint64),
        ("step", ctypes.c_uint64),
        ("wire_bytes", ctypes.c_size_t),
        ("sent_bytes", ctypes.c_size_t),
        ("total_sent_bytes", ctypes.c_uint64),
        ("compress_us", ctypes.c_double),
        ("comm_us", ctypes.c_double),
        ("decompress_us", ctypes.c_double),
        ("dense", ctypes.c_int),
        ("adapted", ctypes.c_int),
        ("plan_version", ctypes.c_uint64),
        ("plan_fallbacks", ctypes.c_uint64),
        ("plan_us", ctypes.c_double),
        ("plan_measure_us", ctypes.c_double),
        ("plan_solve_us", ctypes.c_double),
        ("sent_inter_bytes", ctypes.c_size_t),
        ("hier_nodes", ctypes.c_int),
    ]


def _candidates() -> List[Path]:
    here = Path(__file__).resolve().parent
    found = sorted(here.glob("libterse.so*"), key=lambda p: (len(p.name), p.name))
    if not found:
        found = [here / "libterse.so"]
    return found + [here.parent.parent / "build" / "libterse.so"]


def _open(path: str) -> ctypes.CDLL:
    # RTLD_GLOBAL: libterse's own dependency, libmpi, then serves the MPI components that
    # Open MPI may dlopen later (and mpi4py, if imported after us, finds the same libmpi).
    return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)


def _find_and_open() -> "tuple[ctypes.CDLL, str]":
    env = os.environ.get("TERSE_LIBRARY")
    if env:
        p = Path(env)
        if p.is_dir():
            p = p / "libterse.so"
        if not p.is_file():
            raise OSError(f"terse: TERSE_LIBRARY is set to '{env}', but {p} is not a file; "
                          "point it at libterse.so (or the folder that holds it), or unset it")
        try:
            return _open(str(p)), str(p)
        except OSError as e:
            raise OSError(f"terse: cannot load TERSE_LIBRARY={env}: {e}") from e

    tried = []
    for p in _candidates():
        if p.is_file():
            try:
                return _open(str(p)), str(p)
            except OSError as e:
                tried.append(f"{p} (exists but failed to load: {e})")
        else:
            tried.append(f"{p} (not there)")
    name = ctypes.util.find_library("terse")
    if name:
        try:
            return _open(name), name
        except OSError as e:
            tried.append(f"find_library('terse') -> {name} (failed to load: {e})")
    else:
        tried.append("find_library('terse') (not on the system's library path)")
    raise OSError("terse: libterse.so not found. Looked, in order, at:\n"
                  "  TERSE_LIBRARY (not set)\n  " + "\n  ".join(tried)
                  + "\nBuild it (meson setup build && ninja -C build), then set TERSE_LIBRARY to "
                  "build/libterse.so, copy it next to the package, or meson install it.")


def _declare(lib: ctypes.CDLL) -> None:
    c_int, c_size_t, c_double = ctypes.c_int, ctypes.c_size_t, ctypes.c_double
    c_char_p, c_void_p = ctypes.c_char_p, ctypes.c_void_p
    P = ctypes.POINTER
    protos = {
        "terse_status_string": (c_char_p, [c_int]),
        "terse_last_error": (c_char_p, []),
        "terse_version": (ctypes.c_uint, []),
        "terse_comm_create_world": (c_int, [c_char_p, P(c_void_p)]),
        "terse_comm_create_mpi_f": (c_int, [c_int, c_char_p, P(c_void_p)]),
        "terse_comm_destroy": (c_int, [c_void_p]),
        "terse_comm_rank": (c_int, [c_void_p, P(c_int), P(c_int)]),
        "terse_comm_config": (c_int, [c_void_p, c_char_p, c_size_t]),
        "terse_layer_add": (c_int, [c_void_p, c_char_p, c_size_t, c_size_t, c_char_p, P(c_int)]),
        "terse_allreduce": (c_int, [c_void_p, c_int, c_void_p]),
        "terse_allreduce_many": (c_int, [c_void_p, c_int, P(c_int), P(c_void_p)]),
        "terse_iallreduce": (c_int, [c_void_p, c_int, c_void_p, P(c_void_p)]),
        "terse_wait": (c_int, [c_void_p]),
        "terse_test": (c_int, [c_void_p, P(c_int)]),
        "terse_set_learning_rate": (c_int, [c_void_p, c_double]),
        "terse_step_end": (c_int, [c_void_p]),
        "terse_layer_stats": (c_int, [c_void_p, c_int, P(TerseStats)]),
        "terse_state_save": (c_int, [c_void_p, c_char_p]),
        "terse_state_load": (c_int, [c_void_p, c_char_p]),
        "terse_lgreco_solve": (c_int, [c_size_t, c_size_t, P(c_double), P(c_double), c_double,
                                       c_size_t, P(c_size_t)]),
        # from libmpi, which libterse links: lets the binding see whether MPI is running
        "MPI_Initialized": (c_int, [P(c_int)]),
        "MPI_Finalized": (c_int, [P(c_int)]),
    }
    for name, (restype, argtypes) in protos.items():
        try:
            fn = getattr(lib, name)
        except AttributeError as e:
            raise OSError(f"terse: {_path} has no symbol {name}: not a libterse of this version "
                          "(rebuild it, or point TERSE_LIBRARY at the right one)") from e
        fn.restype = restype
        fn.argtypes = argtypes


def get() -> ctypes.CDLL:
    """The loaded library, loading it on first use. Raises OSError if it cannot be found."""
    global _lib, _path
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is None:
            lib, path = _find_and_open()
            _path = path
            _declare(lib)
            v = lib.terse_version()
            major, minor = v // 10000, v // 100 % 100
            if major != _MAJOR or minor < _MIN_MINOR:
                raise OSError(f"terse: {path} is version {major}.{minor}.{v % 100}; this binding "
                              f"needs {_MAJOR}.{_MIN_MINOR} or a later {_MAJOR}.x")
            _lib = lib
    return _lib


def loaded() -> Optional[ctypes.CDLL]:
    """The library if it is already loaded, else None (never loads it)."""
    return _lib


def path() -> str:
    """Where the library was loaded from (loading it if needed)."""
    get()
    assert _path is not None
    return _path
