"""Status codes and the one exception the binding raises: :class:`TerseError`."""
from __future__ import annotations

import enum


class Status(enum.IntEnum):
    """``terse_status_t``: zero is success, every error is negative (include/terse.h)."""

    OK = 0
    ERR_ARG = -1
    ERR_NOMEM = -2
    ERR_BACKEND = -3
    ERR_MISMATCH = -4
    ERR_UNSUPPORTED = -5
    ERR_STATE = -6
    ERR_NONFINITE = -7
    ERR_IO = -8


class TerseError(Exception):
    """A terse call failed, or the binding refused an argument before calling terse.

    Attributes:
        status: the :class:`Status` (an ``int``; an unknown code stays a plain ``int``).
        status_name: the C enumerator, e.g. ``"TERSE_ERR_ARG"``.
        description: the short text of ``terse_status_string`` ("invalid argument").
        message: what was wrong, in words a user can act on: ``terse_last_error()`` for an
            error from the library, or the binding's own sentence for one it caught first.

    ``str(err)`` reads ``"TERSE_ERR_ARG: invalid argument: <message>"``.
    """

    def __init__(self, status: int, message: str) -> None:
        try:
            self.status: int = Status(status)
        except ValueError:
            self.status = int(status)
        text = _status_string(self.status)
        name, _, description = text.partition(": ")
        self.status_name: str = name
        self.description: str = description
        self.message: str = message
        super().__init__(f"{text}: {message}" if message else text)

    def __reduce__(self):  # keep the two arguments through pickling (multiprocessing)
        return (type(self), (int(self.status), self.message))


def _status_string(status: int) -> str:
    """``terse_status_string`` from the library if it is loaded, or the same text here."""
    from . import _library

    lib = _library.loaded()
    if lib is not None:
        return lib.terse_status_string(int(status)).decode("utf-8", "replace")
    try:
        s = Status(status)
    except ValueError:
        return "unknown terse status"
    return f"TERSE_{s.name}: " + _DESCRIPTIONS[s]


_DESCRIPTIONS = {
    Status.OK: "success",
    Status.ERR_ARG: "invalid argument",
    Status.ERR_NOMEM: "out of memory",
    Status.ERR_BACKEND: "communication backend error",
    Status.ERR_MISMATCH: "ranks disagree",
    Status.ERR_UNSUPPORTED: "not supported by this build",
    Status.ERR_STATE: "call out of order",
    Status.ERR_NONFINITE: "non-finite value in input",
    Status.ERR_IO: "state file error",
}
