#!/usr/bin/python3
"""terse.Comm() in a process where nothing else initialises MPI: terse initialises it, keeps
it running when the user's Comm is closed (a second Comm still works), lets mpi4py imported
afterwards use the same MPI, and finalises it once at exit, with a Comm left open. Run under
mpirun and as a singleton (no mpirun):

    TERSE_LIBRARY=build/libterse.so mpirun -np 2 /usr/bin/python3 tests/python/test_world.py
    TERSE_LIBRARY=build/libterse.so /usr/bin/python3 tests/python/test_world.py

mpirun reports an error if a rank exits without MPI_Finalize, or finalises twice.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

try:
    import numpy as np
except ImportError as e:
    print(f"test_world: skipped ({e})")
    sys.exit(77)

import terse

fails = []


def expect(cond, message):
    if not cond:
        fails.append(message)
        print(f"test_world: expected {message}", file=sys.stderr, flush=True)


def local_gradient(rank):
    return (np.arange(7, dtype=np.float32) - 3) * np.float32(rank + 1) / np.float32(3)


expect("mpi4py.MPI" not in sys.modules, "mpi4py not imported yet")
c = terse.Comm("compressor=none")
rank, size = c.rank, c.size
g = local_gradient(rank)
c.allreduce(g, "g")
want = np.zeros(7, np.float32)
for r in range(size):
    want += local_gradient(r)
want /= np.float32(size)
expect(g.tobytes() == want.tobytes(), f"the exact mean, got {g} want {want}")
c.close()

# MPI is still running: a second Comm works, and so does mpi4py imported now
c2 = terse.Comm("compressor=topk:k=1; feedback=ef; min_size=0")
expect(c2.size == size, "a second Comm after the first was closed")
try:
    from mpi4py import MPI
except ImportError:
    MPI = None
if MPI is not None:
    expect(MPI.Is_initialized() and not MPI.Is_finalized(), "mpi4py sees terse's MPI running")
    expect(MPI.COMM_WORLD.allgather(rank) == list(range(size)), "mpi4py works on terse's MPI")
    with terse.Comm(comm=MPI.COMM_WORLD) as c3:
        expect(c3.size == size, "a Comm over mpi4py's world")
h = np.array([1.0, -3.0 * (rank + 1), 2.0], np.float32)
c2.allreduce(h, "h")  # c2 stays open: the atexit hook closes it, then finalises MPI
expect(h[0] == 0 and h[2] == 0 and h[1] == np.float32(sum(-3.0 * (r + 1) for r in range(size)))
       / np.float32(size), f"top-1 mean, got {h}")

if rank == 0:
    print(f"test_world ({size} ranks): {0 if fails else 1} passed, {len(fails)} failed", flush=True)
sys.exit(1 if fails else 0)
