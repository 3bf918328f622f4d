"""What the Python tests share: per-rank pass/fail counts (like tests/mpi/mpitest.h), the
check that a call raises TerseError with a given status, and the loop that runs the tests
and prints "NAME (N ranks): N passed, N failed" on rank 0. Import it after numpy, mpi4py and
terse have been imported (the scripts skip with exit 77 when they are missing)."""
import sys
import traceback

import numpy as np
from mpi4py import MPI

from terse import Status, TerseError

WORLD = MPI.COMM_WORLD
RANK, NRANKS = WORLD.Get_rank(), WORLD.Get_size()

passed = failed = 0
current = "?"  # the test running, for messages


def expect(cond, message):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print(f"rank {RANK}: {current}: expected {message}", file=sys.stderr, flush=True)


def expect_error(status, fn, needle=None, names=True):
    """fn() must raise TerseError with this status (and a message containing needle); with
    names, its status name and text must also read as documented. Returns the error."""
    try:
        fn()
    except TerseError as e:
        expect(e.status == status, f"status {Status(status).name}, got {e.status_name}: {e.message}")
        if names:
            expect(isinstance(e.status, Status) and e.status_name == "TERSE_" + Status(status).name,
                   f"status name TERSE_{Status(status).name}, got {e.status_name!r}")
            expect(str(e).startswith(e.status_name + ": ") and e.message in str(e),
                   f"str(err) to read 'NAME: description: message', got {str(e)!r}")
        if needle is not None:
            expect(needle in e.message, f"{needle!r} in the message {e.message!r}")
        return e
    except Exception as e:  # noqa: BLE001 - any other exception is a failure
        expect(False, f"TerseError {Status(status).name}, got {type(e).__name__}: {e}")
        return None
    expect(False, f"TerseError {Status(status).name}, got no exception")
    return None


def run(tests):
    """Runs each test; an exception counts as one failure and the next test goes on."""
    global current, failed
    for fn in tests:
        current = fn.__name__
        try:
            fn()
        except Exception:  # noqa: BLE001 - report and go on with the next test
            failed += 1
            print(f"rank {RANK}: {current}: unexpected exception:\n{traceback.format_exc()}",
                  file=sys.stderr, flush=True)


def totals():
    """(passed, failed) summed over the ranks: collective."""
    t = WORLD.allreduce(np.array([passed, failed]), op=MPI.SUM)
    return int(t[0]), int(t[1])


def report(name, counts):
    """Prints the summary on rank 0 and returns the exit status."""
    if RANK == 0:
        print(f"{name} ({NRANKS} ranks): {counts[0]} passed, {counts[1]} failed", flush=True)
    return 1 if counts[1] else 0
