"""An mpi4py script that knows nothing of terse, for the PMPI preload (docs/pmpi.md).

    mpirun -np 2 env LD_PRELOAD=.../libterse_pmpi.so /usr/bin/python3 pmpi_mpi4py.py MODE [ITERS]

Each iteration makes, on COMM_WORLD, the large float32 sums a training loop would:
    A  Allreduce(IN_PLACE, a)       100003 floats, one persistent array
    R  Allreduce(s, r)              100003 floats, persistent arrays, other data
    F  Allreduce(s, np.empty(...))  100003 floats, a fresh result array every call
and the calls a preload must leave exact: a small float32 sum (1000), an int32 sum and a
float64 sum (100003 each), then one int MIN of its own to agree on the verdict.

MODE lossy: every large result is bitwise identical on every rank, and A, R and F miss more
than 5% of the exact sum on the first call (compressed), but at most all of it.
MODE ef: lossy, and error feedback per buffer: the running means of A and R come within half
of their first call's error, F's closer than its first call (numpy hands out a few addresses
in turn, each its own layer with its own residual).
MODE exact: A, R and F are bitwise the rank-order float32 sum (terse with codec none), except
that a call of F that terse gave back to MPI (the ranks' fresh arrays mapped to different
layers) may be MPI's own sum: within 1e-5.
The other calls are exact in both modes. Rank 0 prints
"pmpi_mpi4py: MODE ok: calls: large_float_sum=L other_allreduce=O". Exits 77 without mpi4py
or numpy."""
import sys

try:
    import numpy as np
    from mpi4py import MPI
except ImportError as e:  # the test is skipped, not failed
    print(f"pmpi_mpi4py: skipped: {e}")
    sys.exit(77)

N = 100003
comm = MPI.COMM_WORLD
rank, nranks = comm.Get_rank(), comm.Get_size()
failures = []
calls = {"large": 0, "other": 0}


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"pmpi_mpi4py: rank {rank}: {what}", file=sys.stderr, flush=True)


def grad(which, r, n=N):
    """Rank r's gradient: a shared component, 8x larger on every 16th coordinate, plus noise."""
    common = np.random.default_rng(100 + which).uniform(-1, 1, n).astype(np.float32)
    common[::16] *= 8
    noise = np.random.default_rng(1000 * which + r + 1).uniform(-1, 1, n).astype(np.float32)
    return common + np.float32(0.5) * noise


def rank_order_sum(which):
    s = grad(which, 0)
    for r in range(1, nranks):
        s = s + grad(which, r)  # float32 + float32: the serial reference, rounded as in C
    return s


def allreduce(send, recv, large, op=MPI.SUM):
    comm.Allreduce(send, recv, op=op)
    calls["large" if large else "other"] += 1


def same_everywhere(v, what):
    r0 = v.copy()
    comm.Bcast(r0, root=0)
    check(np.array_equal(r0.view(np.uint32), v.view(np.uint32)), f"{what} differs from rank 0's result")


def rel_err(got, want):
    return float(np.linalg.norm(got.astype(np.float64) - want) / np.linalg.norm(want.astype(np.float64)))


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    iters = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    if mode not in ("lossy", "ef", "exact") or iters < 1:
        print("usage: pmpi_mpi4py.py lossy|ef|exact [ITERS >= 1]", file=sys.stderr)
        return 2
    g = {w: grad(w, rank) for w in (0, 1, 2)}
    exact = {w: rank_order_sum(w) for w in (0, 1, 2)}
    a = np.empty(N, np.float32)
    r = np.empty(N, np.float32)
    acc = {w: np.zeros(N) for w in (0, 1, 2)}
    first = {}
    for it in range(iters):
        a[:] = g[0]
        allreduce(MPI.IN_PLACE, a, True)
        allreduce(g[1], r, True)
        f = np.empty(N, np.float32)
        allreduce(g[2], f, True)
        for w, v, name in ((0, a, "A"), (1, r, "R"), (2, f, "F")):
            same_everywhere(v, name)
            e = rel_err(v, exact[w])
            if mode == "exact" and w < 2:
                check(np.array_equal(v.view(np.uint32), exact[w].view(np.uint32)),
                      f"{name}, iteration {it}: not the rank-order sum (relative error {e:.3g})")
            elif mode == "exact":
                check(e < 1e-5, f"F, iteration {it}: relative error {e:.3g}, want < 1e-5")
            elif it == 0:
                first[w] = e
                check(0.05 < e <= 1.0, f"{name}, first call: relative error {e:.3g}, want a compressed sum")
            acc[w] += v

        small = (np.arange(1000) % 97 - 48).astype(np.float32) + np.float32(0.25 * rank)
        allreduce(MPI.IN_PLACE, small, False)
        want = nranks * (np.arange(1000) % 97 - 48).astype(np.float32) + np.float32(0.25 * nranks * (nranks - 1) / 2)
        check(np.array_equal(small, want), "small float32 sum is not exact")
        ints = (np.arange(N) % 1000 - 500 + rank).astype(np.int32)
        isum = np.empty_like(ints)
        allreduce(ints, isum, False)
        check(np.array_equal(isum, nranks * (np.arange(N) % 1000 - 500) + nranks * (nranks - 1) // 2),
              "int32 sum is not exact")
        dbl = (np.arange(N) % 1001 - 500) * 0.5 + rank
        allreduce(MPI.IN_PLACE, dbl, False)
        check(np.array_equal(dbl, nranks * ((np.arange(N) % 1001 - 500) * 0.5) + nranks * (nranks - 1) / 2),
              "float64 sum is not exact")

    if mode == "ef":
        means = {}
        for w, name, factor in ((0, "A", 0.5), (1, "R", 0.5), (2, "F", 1.0)):
            means[w] = rel_err(acc[w] / iters, exact[w])
            check(means[w] < first[w] * factor,
                  f"{name}: running mean error {means[w]:.3g} after {iters} calls, first {first[w]:.3g}: "
                  f"want < {factor:g} x first")
        if rank == 0:
            print(f"pmpi_mpi4py: relative error of one call / of the mean of {iters}: " +
                  ", ".join(f"{n} {first[w]:.3f} / {means[w]:.3f}" for w, n in ((0, "A"), (1, "R"), (2, "F"))))
    ok = np.array([0 if failures else 1], np.int32)
    all_ok = np.empty_like(ok)
    allreduce(ok, all_ok, False, op=MPI.MIN)
    if rank == 0:
        if all_ok[0]:
            print(f"pmpi_mpi4py: {mode} ok: calls: large_float_sum={calls['large']} "
                  f"other_allreduce={calls['other']}", flush=True)
        else:
            print(f"pmpi_mpi4py: {mode} FAILED (see the messages above)", flush=True)
    return 0 if all_ok[0] else 1


sys.exit(main())
