"""The offline L-GreCo planner: one compression candidate per layer under an error budget."""
from __future__ import annotations

import ctypes
import operator
from typing import Any, List

import numpy as np

from . import _library
from ._comm import SIZE_MAX, _arg_error, _check, _real


def lgreco_solve(sizes: Any, errors: Any, budget: float, buckets: int = 10000) -> List[int]:
    """Chooses one candidate per layer (``terse_lgreco_solve``).

    ``sizes`` and ``errors`` are ``n_layers x n_candidates`` array-likes of numbers: the
    compressed size and the compression error of each candidate for each layer. Returns the
    choice (a candidate index per layer) that minimises the total size among those whose
    discretised errors ``ceil(errors[l][c] * buckets / budget)`` add up to at most
    ``buckets`` (so the true total error is at most ``budget``); ties go to the
    lexicographically smallest choice. An infinite error excludes a candidate.

    Raises TerseError (TERSE_ERR_ARG) for shapes that differ or are not 2-D, an empty table,
    a NaN or negative value, a budget that is not a positive finite number, buckets that is
    not an int from 1 to SIZE_MAX, or no feasible choice.

    >>> lgreco_solve([[1, 2], [3, 4]], [[2, 1], [2, 1]], budget=3.5)
    [0, 1]
    """
    try:
        s = np.ascontiguousarray(sizes, dtype=np.float64)
        e = np.ascontiguousarray(errors, dtype=np.float64)
    except (TypeError, ValueError, OverflowError) as ex:
        raise _arg_error("lgreco_solve: sizes and errors must be 2-D tables of numbers "
                         f"({ex})") from None
    if s.ndim != 2 or e.ndim != 2:
        raise _arg_error(f"lgreco_solve: sizes and errors must be 2-D (n_layers x n_candidates); "
                         f"got shapes {s.shape} and {e.shape}")
    if s.shape != e.shape:
        raise _arg_error(f"lgreco_solve: sizes {s.shape} and errors {e.shape} differ in shape")
    if isinstance(buckets, (bool, np.bool_)):
        raise _arg_error(f"lgreco_solve: buckets must be an int, not {buckets!r}")
    try:
        nb = operator.index(buckets)
    except TypeError:
        raise _arg_error(f"lgreco_solve: buckets must be an int, not {buckets!r}") from None
    if nb < 1:
        raise _arg_error(f"lgreco_solve: buckets is {nb}; it must be at least 1")
    if nb > SIZE_MAX:  # a size_t would keep only the low bits (2**64 + 10 would be 10)
        raise _arg_error(f"lgreco_solve: buckets is {nb}; it must fit in a size_t (at most "
                         f"{SIZE_MAX})")
    b = _real(budget, "lgreco_solve: budget")
    n_layers, n_cand = s.shape
    choice = (ctypes.c_size_t * max(n_layers, 1))()
    dbl = ctypes.POINTER(ctypes.c_double)
    _check(_library.get().terse_lgreco_solve(n_layers, n_cand, s.ctypes.data_as(dbl),
                                             e.ctypes.data_as(dbl), b, nb, choice))
    return [int(choice[i]) for i in range(n_layers)]
