#!/usr/bin/python3
"""The Python binding under mpirun (1, 2, 3 ranks), against a serial numpy reference of the
same algorithms: results equal the C library's, bit for bit, and are identical on all ranks;
errors raise terse.TerseError with the right status.

    TERSE_LIBRARY=build/libterse.so mpirun -np 3 /usr/bin/python3 tests/python/test_binding.py

Uses the package in this repository's python/ folder (not an installed one). Exits 77 (skip)
without numpy or mpi4py; the torch checks are skipped without torch. Prints
"test_binding: N passed, N failed" on rank 0 and exits 1 if anything failed.
"""
import hashlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

try:
    import numpy as np
    from mpi4py import MPI  # initialises MPI: terse must then neither initialise nor finalise it
except ImportError as e:
    print(f"test_binding: skipped ({e})")
    sys.exit(77)

try:
    import torch
except ImportError:
    torch = None

import terse
from terse import Status, TerseError

from harness import NRANKS, RANK, WORLD, expect, expect_error  # noqa: E402
import harness  # noqa: E402


def same_on_all_ranks(arrays, comm=WORLD):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return len(set(comm.allgather(h.hexdigest()))) == 1


def bitwise_equal(a, b):
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


# ---- the serial reference --------------------------------------------------------------------

def gradient(rank, call, shape, seed=0):
    """Rank `rank`'s gradient at call `call`: half multiples of 1/8 (exact ties in magnitude,
    both signs), half normal draws. Every rank can rebuild every other rank's."""
    rng = np.random.default_rng([seed, rank, call])
    n = int(np.prod(shape, dtype=np.int64))
    q = rng.integers(-16, 17, n).astype(np.float32) * np.float32(0.125)
    x = np.where(rng.random(n) < 0.5, q, rng.standard_normal(n).astype(np.float32))
    return x.astype(np.float32).reshape(shape)


def ref_topk(p, k):
    """The k entries of largest |p| (ties: the lower index), the rest zero."""
    flat = p.reshape(-1)
    keep = np.argsort(-np.abs(flat), kind="stable")[:min(k, flat.size)]
    d = np.zeros_like(flat)
    d[keep] = flat[keep]
    return d.reshape(p.shape)


def ref_reduce(messages, mean=True):
    """Sum in rank order in float32 starting from zero, then divide by n (as terse does)."""
    acc = np.zeros_like(messages[0])
    for m in messages:
        acc += m
    if mean:
        acc /= np.float32(len(messages))
    return acc


class RefTopkEF:
    """Serial simulation of topk:k=K with feedback=ef on every rank: p = g + e,
    d = topk(p), e = p - d, result = mean of d."""

    def __init__(self, k, shape, nranks):
        self.k = k
        self.e = [np.zeros(shape, np.float32) for _ in range(nranks)]

    def step(self, grads):
        ds = []
        for r, g in enumerate(grads):
            p = g + self.e[r]
            d = ref_topk(p, self.k)
            self.e[r] = p - d
            ds.append(d)
        return ref_reduce(ds)


# ---- tests -----------------------------------------------------------------------------------

def test_library_is_the_one_asked_for():
    want = os.environ.get("TERSE_LIBRARY")
    if want:
        expect(os.path.samefile(terse.library_path(), want),
               f"the library from TERSE_LIBRARY={want}, got {terse.library_path()}")
    expect(terse.library_version()[:2] == (0, 1), f"version 0.1.x, got {terse.library_version()}")


def test_world_comm_spans_mpi4py_world_and_leaves_mpi_running():
    c = terse.Comm()
    expect((c.rank, c.size) == (RANK, NRANKS), f"rank/size {(RANK, NRANKS)}, got {(c.rank, c.size)}")
    expect("compressor=none" in c.config, f"default config, got {c.config!r}")
    c.close()
    c.close()  # idempotent
    expect(c.closed, "closed after close()")
    expect_error(Status.ERR_STATE, lambda: c.allreduce(np.zeros(3, np.float32), "x"), "closed")
    expect(MPI.Is_initialized() and not MPI.Is_finalized(),
           "MPI still running after closing a world Comm over mpi4py's MPI")
    expect(WORLD.allreduce(1) == NRANKS, "mpi4py still works")
    with terse.Comm("compressor=none") as c2:  # a second world Comm works after the first closed
        expect(c2.size == NRANKS, "second Comm")
    expect(c2.closed, "closed by the with block")


def test_mpi4py_subcommunicator():
    sub = WORLD.Split(color=RANK % 2, key=RANK)
    members = [r for r in range(NRANKS) if r % 2 == RANK % 2]
    with terse.Comm("compressor=none", comm=sub) as c:
        expect((c.rank, c.size) == (sub.Get_rank(), len(members)),
               f"rank/size in the split {(sub.Get_rank(), len(members))}, got {(c.rank, c.size)}")
        g = gradient(RANK, 0, (50,), seed=1)
        c.allreduce(g, "g")
        want = ref_reduce([gradient(r, 0, (50,), seed=1) for r in members])
        expect(bitwise_equal(g, want), "the mean over the sub-communicator's members")
        expect(same_on_all_ranks([g], sub), "identical on the sub-communicator's ranks")
    with terse.Comm(comm=WORLD) as c:  # mpi4py's world, through its Fortran handle
        expect(c.size == NRANKS, "Comm(comm=MPI.COMM_WORLD) spans the world")
    sub.Free()


def test_none_is_the_exact_mean_bit_for_bit():
    for cfg, mean in (("compressor=none", True), ("compressor=none; reduce=sum", False)):
        with terse.Comm(cfg) as c:
            shapes = {"empty": (0,), "one": (1,), "vec": (5,), "mat": (31, 33), "odd": (4099,),
                      "conv": (3, 4, 5, 6)}
            outs = []
            for call in range(3):
                for name, shape in shapes.items():
                    g = gradient(RANK, call, shape)
                    ret = c.allreduce(g, layer=name)
                    expect(ret is g, "allreduce returns its argument")
                    want = ref_reduce([gradient(r, call, shape) for r in range(NRANKS)], mean)
                    expect(bitwise_equal(g, want), f"'{cfg}' layer {name} call {call}: equal to "
                           f"the reference (max diff {np.max(np.abs(g - want), initial=0)})")
                    outs.append(g.copy())
            expect(same_on_all_ranks(outs), f"'{cfg}': identical on all ranks")
            st = c.stats("conv")
            expect(st["count"] == 360 and st["shape"] == (3, 4, 5, 6) and st["dense"],
                   f"conv stats: 360 elements, dense; got {st}")


def test_topk_ef_matches_serial_reference():
    k = 5
    shapes = {"bias": (37,), "fc": (6, 7), "conv": (3, 4, 5)}
    refs = {name: RefTopkEF(k, shape, NRANKS) for name, shape in shapes.items()}
    with terse.Comm(f"compressor=topk:k={k}; feedback=ef; min_size=0") as c:
        outs = []
        for call in range(4):
            for name, shape in shapes.items():
                g = gradient(RANK, call, shape, seed=2)
                c.allreduce(g, name)
                want = refs[name].step([gradient(r, call, shape, seed=2) for r in range(NRANKS)])
                expect(bitwise_equal(g, want), f"topk+ef layer {name} call {call}: equal to the "
                       f"serial reference (max diff {np.max(np.abs(g - want))})")
                expect(np.count_nonzero(g) <= k * NRANKS, "at most k nonzeros per rank")
                outs.append(g.copy())
            c.step_end()
        expect(same_on_all_ranks(outs), "topk+ef identical on all ranks")
        st = c.stats()
        expect(list(st) == ["bias", "fc", "conv"], f"stats of every layer in order, got {list(st)}")
        fc = st["fc"]
        expect(fc["codec"] == f"topk:k={k}" and fc["feedback"] == "ef" and not fc["dense"],
               f"fc codec topk:k={k}, feedback ef, not dense; got {fc}")
        expect(fc["count"] == 42 and fc["calls"] == 4 and fc["step"] == 4 and fc["skipped"] == 0,
               f"fc count 42, 4 calls, step 4; got {fc}")
        expect(fc["wire_bytes"] == 4 + 8 * k, f"topk wire bytes 4 + 8k = {4 + 8 * k}, got {fc['wire_bytes']}")
        expect(fc["total_sent_bytes"] >= fc["sent_bytes"] >= 0, f"sent byte counters, got {fc}")
        expect(all(isinstance(fc[f], float) and fc[f] >= 0
                   for f in ("compress_us", "comm_us", "decompress_us")), f"times, got {fc}")
        expect(st["conv"]["count"] == 60 and c.stats(2)["name"] == "conv", "stats by id")


def test_allreduce_many_equals_one_by_one():
    shapes = {"a": (300,), "b": (10, 10), "c": (0,)}
    with terse.Comm("compressor=topk:k=3; feedback=ef; min_size=0") as c:
        refs = {n: RefTopkEF(3, s, NRANKS) for n, s in shapes.items()}
        for call in range(3):
            gs = {n: gradient(RANK, call, s, seed=3) for n, s in shapes.items()}
            if call % 2 == 0:
                out = c.allreduce_many([(gs[n], n) for n in shapes])
            else:
                out = c.allreduce_many({n: gs[n] for n in shapes})
            expect(all(o is gs[n] for o, n in zip(out, shapes)), "returns the buffers in order")
            for n, s in shapes.items():
                want = refs[n].step([gradient(r, call, s, seed=3) for r in range(NRANKS)])
                expect(bitwise_equal(gs[n], want), f"allreduce_many layer {n} call {call}")
        expect(c.allreduce_many([]) == [], "an empty list is fine")
        expect_error(Status.ERR_ARG, lambda: c.allreduce_many([np.zeros(3, np.float32)]), "pair")
        before = c.stats("a")["calls"]
        expect_error(Status.ERR_ARG, lambda: c.allreduce_many(
            [(np.zeros(300, np.float32), "a"), (np.zeros(100, np.float64), "b")]), "float32")
        expect(c.stats("a")["calls"] == before, "nothing reduced when a later item is invalid")


def test_iallreduce_equals_allreduce():
    shapes = {"a": (300,), "b": (10, 10)}
    with terse.Comm("compressor=topk:k=3; feedback=ef; min_size=0") as c:
        refs = {n: RefTopkEF(3, s, NRANKS) for n, s in shapes.items()}
        for call in range(3):
            gs = {n: gradient(RANK, call, s, seed=4) for n, s in shapes.items()}
            reqs = [c.iallreduce(gs[n], n) for n in shapes]
            expect(all(isinstance(r, terse.Request) for r in reqs), "returns Requests")
            if call == 1:
                while not reqs[0].test():
                    pass
                expect(reqs[0].done, "test() completed it")
                expect(reqs[1].wait() is gs["b"], "wait returns the buffer")
            else:
                for r, n in reversed(list(zip(reqs, shapes))):
                    expect(r.wait() is gs[n], "wait returns the buffer")
            for n, s in shapes.items():
                want = refs[n].step([gradient(r, call, s, seed=4) for r in range(NRANKS)])
                expect(bitwise_equal(gs[n], want), f"iallreduce layer {n} call {call}")
        r = c.iallreduce(np.zeros(300, np.float32), "a")
        r.wait()
        expect_error(Status.ERR_ARG, r.wait, "completed already")
        expect_error(Status.ERR_ARG, lambda: c.iallreduce(np.zeros(3, np.float32), "a"), "shape")
        expect_error(Status.ERR_ARG, lambda: c.iallreduce(np.zeros(300, np.float64), "a"), "float32")
        # a request dropped without wait() is waited for when collected; a later call is fine
        c.iallreduce(np.zeros(300, np.float32), "a")
        expect(c.stats("a")["calls"] == 5, "every request ran, in order")
    # requests outlive their Comm: close() runs them first
    c = terse.Comm("compressor=none")
    g = np.full(8, float(RANK + 1), np.float32)
    r = c.iallreduce(g, "x")
    c.close()
    expect(r.wait() is g and float(g[0]) == (NRANKS + 1) / 2, "a request waited for after close")


def test_layer_registration():
    with terse.Comm("compressor=topk:k=2; feedback=ef; min_size=0") as c:
        expect(c.layer("w", (8, 3)) == 0, "first id 0")
        expect(c.layer("dense", 50, config="compressor=none") == 1, "second id 1")
        expect(c.layer("t", (2, 3, 4)) == 2 and c.layer("s", ()) == 3, "ids in order")
        expect(c.layers == ["w", "dense", "t", "s"], f"layer names, got {c.layers}")
        st = c.stats("dense")
        expect(st["dense"] and st["codec"] == "none" and st["count"] == 50,
               f"the per-layer config override, got {st}")
        expect(c.stats("t")["count"] == 24 and c.stats("s")["count"] == 1, "3-D and 0-D counts")
        expect_error(Status.ERR_ARG, lambda: c.layer("w", (8, 3)), "already registered")
        expect_error(Status.ERR_ARG, lambda: c.layer("neg", (-1, 3)), "negative")
        expect_error(Status.ERR_ARG, lambda: c.layer("bad", "x"), "shape")
        expect_error(Status.ERR_ARG, lambda: c.layer("", 3), "name")
        expect_error(Status.ERR_ARG, lambda: c.layer("cfg", 3, config="compressor=nope"), "nope")
        expect_error(Status.ERR_ARG, lambda: c.layer("huge", (1 << 20, 1 << 20)), "maximum")
        g = gradient(RANK, 0, (2, 3, 4))
        c.allreduce(g, 2)  # by id
        want = RefTopkEF(2, (2, 3, 4), NRANKS).step([gradient(r, 0, (2, 3, 4)) for r in range(NRANKS)])
        expect(bitwise_equal(g, want), "allreduce by id, 3-D layer as 2 x 12")


def test_save_load_resumes_bit_for_bit():
    cfg = "compressor=topk:k=4; feedback=ef; min_size=0"
    shapes = {"a": (40,), "b": (5, 9)}
    tmp = WORLD.bcast(tempfile.mkdtemp(prefix="terse-py-") if RANK == 0 else None)
    ckpt = Path(tmp) / "ckpt"
    try:
        with terse.Comm(cfg) as c:
            for call in range(2):
                for n, s in shapes.items():
                    c.allreduce(gradient(RANK, call, s, seed=4), n)
                c.step_end()
            c.save(ckpt)
            expect((Path(tmp) / f"ckpt.rank{RANK}").is_file(), "save writes <path>.rank<R>")
            uninterrupted = []
            for call in range(2, 4):
                for n, s in shapes.items():
                    uninterrupted.append(c.allreduce(gradient(RANK, call, s, seed=4), n))
        with terse.Comm(cfg) as c2:
            for n, s in shapes.items():
                c2.layer(n, s)
            expect_error(Status.ERR_IO, lambda: c2.load(Path(tmp) / "missing"))
            c2.load(str(ckpt))
            expect(c2.stats("a")["calls"] == 2 and c2.stats("a")["step"] == 2,
                   f"counters restored, got {c2.stats('a')}")
            resumed = []
            for call in range(2, 4):
                for n, s in shapes.items():
                    resumed.append(c2.allreduce(gradient(RANK, call, s, seed=4), n))
            expect(all(bitwise_equal(x, y) for x, y in zip(resumed, uninterrupted)),
                   "the resumed run equals the uninterrupted one bit for bit")
        with terse.Comm(cfg) as c3:  # other layers: the load is refused, state untouched
            c3.layer("a", 41)
            expect_error(Status.ERR_MISMATCH, lambda: c3.load(ckpt))
    finally:
        WORLD.Barrier()
        if RANK == 0:
            shutil.rmtree(tmp, ignore_errors=True)


def test_errors_raise_terse_error():
    expect_error(Status.ERR_ARG, lambda: terse.Comm("compresor=topk"), "compresor")
    expect_error(Status.ERR_ARG, lambda: terse.Comm("compressor=topk:density=2"), "density")
    expect_error(Status.ERR_ARG, lambda: terse.Comm("compressor=auto:with=none"), "with=none")
    expect_error(Status.ERR_ARG, lambda: terse.Comm(comm="world"), "mpi4py")
    expect_error(Status.ERR_ARG, lambda: terse.Comm(config=3), "config")
    with terse.Comm("compressor=topk:k=2; feedback=ef; min_size=0") as c:
        g = np.zeros((4, 6), np.float32)
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g.astype(np.float64), "x"), "float32")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g.astype(np.int32), "x"), "float32")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g.astype(">f4"), "x"), "float32")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g[:, ::2], "x"), "C-contiguous")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g.T, "x"), "C-contiguous")
        ro = g.copy()
        ro.flags.writeable = False
        expect_error(Status.ERR_ARG, lambda: c.allreduce(ro, "x"), "read-only")
        expect_error(Status.ERR_ARG, lambda: c.allreduce([1.0, 2.0], "x"), "numpy.ndarray")
        expect(c.layers == [], f"no layer registered by a refused call, got {c.layers}")
        c.allreduce(g, "x")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(np.zeros(24, np.float32), "x"), "shape")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(np.zeros((6, 4), np.float32), "x"), "(4, 6)")
        expect_error(Status.ERR_ARG, lambda: c.stats("nope"), "unknown layer 'nope'")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g, 7), "unknown layer id 7")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g, 1.5), "name")
        expect_error(Status.ERR_ARG, lambda: c.set_learning_rate(-1.0))
        if NRANKS > 1:  # ranks disagree on the size: every rank gets TERSE_ERR_MISMATCH
            expect_error(Status.ERR_MISMATCH,
                         lambda: c.allreduce(np.ones(10 + (RANK > 0), np.float32), "mm"))
        bad = gradient(RANK, 0, (4, 6))
        if RANK == 0:
            bad[1, 2] = np.nan
        expect_error(Status.ERR_NONFINITE, lambda: c.allreduce(bad, "x"))
        # the communicator is still usable, and its state untouched by the failed calls
        g = gradient(RANK, 0, (4, 6), seed=5)
        c.allreduce(g, "x")
        ref = RefTopkEF(2, (4, 6), NRANKS)
        ref.step([np.zeros((4, 6), np.float32)] * NRANKS)
        want = ref.step([gradient(r, 0, (4, 6), seed=5) for r in range(NRANKS)])
        expect(bitwise_equal(g, want), "usable after errors, state unchanged by them")
        expect(c.stats("x")["calls"] == 2, f"2 completed calls, got {c.stats('x')['calls']}")
    e = TerseError(Status.ERR_IO, "disk full")
    expect(e.status_name == "TERSE_ERR_IO" and str(e) == "TERSE_ERR_IO: state file error: disk full",
           f"TerseError text, got {str(e)!r}")


def test_foreign_layer_id_is_refused_not_masked():
    # ctypes keeps the low 32 bits of an int passed as a c_int: 2**32 would reach C as layer 0,
    # with a buffer whose size the binding never checked. Only ids the binding handed out
    # are accepted, and the buffer's shape is always checked.
    with terse.Comm("compressor=none") as c:
        expect(c.layer("a", 4) == 0, "first id 0")
        wrong_shape = np.ones((2, 2), np.float32)  # 4 floats, so a masked id cannot overrun it
        right = np.ones(4, np.float32)
        for bad in (2**32, 2**32 + 1, -2**32, 2**63, 1, -1, np.int64(2**32), np.uint64(2**32)):
            expect_error(Status.ERR_ARG, lambda: c.allreduce(wrong_shape, bad),
                         f"unknown layer id {int(bad)}")
            expect_error(Status.ERR_ARG, lambda: c.allreduce(right, bad), "unknown layer id")
            expect_error(Status.ERR_ARG, lambda: c.allreduce_many([(right, 0), (wrong_shape, bad)]),
                         "unknown layer id")
            expect_error(Status.ERR_ARG, lambda: c.stats(bad), "unknown layer id")
        for bad in (True, False, np.bool_(False)):  # bools are not ids
            expect_error(Status.ERR_ARG, lambda: c.allreduce(right, bad), "id (int)")
            expect_error(Status.ERR_ARG, lambda: c.allreduce_many([(right, bad)]), "id (int)")
            expect_error(Status.ERR_ARG, lambda: c.stats(bad), "id (int)")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(wrong_shape, 0), "shape")
        expect(c.stats("a")["calls"] == 0, f"nothing reduced, got {c.stats('a')['calls']} calls")
        c.allreduce(right, 0)
        expect(c.stats(0)["calls"] == 1 and bitwise_equal(right, np.ones(4, np.float32)),
               "a real id still works")


def test_sizes_beyond_size_t_are_refused_not_masked():
    # ctypes keeps the low 64 bits of an int passed as a size_t: 2**64 + 4 would register a
    # layer of 4 elements, (2, 2**63, 2) one of 2 x 0.
    with terse.Comm("compressor=none") as c:
        for shape in (2**64 + 4, (2**64 + 4,), (2, 2**63, 2), (2**64, 1), (1, 2**64),
                      (3, 2**70, 0), (0, 2**40, 2**40), (2**40, 2**40, 2**40)):
            expect_error(Status.ERR_ARG, lambda: c.layer("big", shape), "size_t")
        expect_error(Status.ERR_ARG, lambda: c.layer("big", np.uint64(2**64 - 1)), "maximum")
        expect_error(Status.ERR_ARG, lambda: c.layer("big", (2**32, 2**32)), "maximum")  # C's
        expect(c.layers == [], f"nothing registered, got {c.layers}")
        expect(c.layer("ok", (2**40, 0)) == 0 and c.stats("ok")["count"] == 0,
               "an empty layer with a large dimension that fits")
    S, E = [[1, 2], [3, 4]], [[2, 1], [2, 1]]
    expect(terse.lgreco_solve(S, E, 3.5, 10) == [0, 1], "the documented example")
    for bad in (2**64 + 10, 2**64, 2**100):
        expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(S, E, 3.5, bad), "size_t")
    for bad in (True, 10.0, "10", None):
        expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(S, E, 3.5, bad), "buckets")
    expect_error(Status.ERR_ARG, lambda: terse.Comm(comm=2**32), "range")  # a c_int handle
    expect_error(Status.ERR_ARG, lambda: terse.Comm(comm=-2**31 - 1), "range")


def test_bad_argument_types_raise_terse_error():
    with terse.Comm("compressor=none") as c:
        g = np.ones(3, np.float32)
        c.allreduce(g, "g")
        for bad in ("x", "1.5", None, b"1", True, [1.0], 10**400):
            expect_error(Status.ERR_ARG, lambda: c.set_learning_rate(bad), "lr")
        c.set_learning_rate(np.float32(0.5))  # numpy scalars are numbers
        c.set_learning_rate(1)
        for method in (c.save, c.load):
            for bad in (None, 5, 1.5, True, ["p"]):
                expect_error(Status.ERR_ARG, lambda: method(bad), "path")
            expect_error(Status.ERR_ARG, lambda: method("ckpt\0x"), "NUL")  # C would see "ckpt"
            expect_error(Status.ERR_ARG, lambda: method("\ud800"), "path")
        for bad in (5, None, 1.5, "ab", b"ab"):
            expect_error(Status.ERR_ARG, lambda: c.allreduce_many(bad), "items")
        expect_error(Status.ERR_ARG, lambda: c.layer("\ud800", 3), "layer name")
        expect_error(Status.ERR_ARG, lambda: c.layer("u", 3, config="\udcff"), "config")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(g, "\ud800"), "layer name")
        expect(c.layers == ["g"], f"nothing registered by a refused call, got {c.layers}")
    expect_error(Status.ERR_ARG, lambda: terse.Comm("\ud800"), "config")
    S, E = [[1, 2], [3, 4]], [[2, 1], [2, 1]]
    for bad in ("x", "3.5", None, [3.5], True, 10**400):
        expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(S, E, budget=bad), "budget")
    expect(terse.lgreco_solve(S, E, budget=np.float64(3.5)) == [0, 1], "a numpy budget")
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve([[10**400]], [[1]], 3.5), "sizes")
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve([[1, 2], [3]], [[1, 2], [3]], 3.5),
                 "sizes")
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(5, 5, 3.5), "2-D")


def test_every_call_after_close_raises_err_state():
    with terse.Comm("compressor=none") as c:
        c.layer("a", 3)
    expect(c.closed, "closed by the with block")
    g = np.zeros(3, np.float32)
    calls = {
        "rank": lambda: c.rank,
        "size": lambda: c.size,
        "config": lambda: c.config,
        "layers": lambda: c.layers,
        "layer": lambda: c.layer("b", 3),
        "allreduce by name": lambda: c.allreduce(g, "a"),
        "allreduce by id": lambda: c.allreduce(g, 0),
        "allreduce_many": lambda: c.allreduce_many([(g, "a")]),
        "allreduce_many {}": lambda: c.allreduce_many({}),
        "step_end": lambda: c.step_end(),
        "set_learning_rate": lambda: c.set_learning_rate(0.1),
        "stats()": lambda: c.stats(),
        "stats(name)": lambda: c.stats("a"),
        "save": lambda: c.save("unused-path"),
        "load": lambda: c.load("unused-path"),
    }
    for what, fn in calls.items():
        harness.current = f"test_every_call_after_close_raises_err_state: {what}"
        expect_error(Status.ERR_STATE, fn, "closed")
    c.close()  # still idempotent
    expect(not os.path.exists(f"unused-path.rank{RANK}"), "save after close wrote nothing")


def test_more_argument_errors():
    with terse.Comm("compressor=none") as c:
        for bad in (5, None, b"w", ("w",)):
            expect_error(Status.ERR_ARG, lambda: c.layer(bad, 3), "name")
        expect_error(Status.ERR_ARG, lambda: c.layer("a\0b", 3), "NUL")
        expect_error(Status.ERR_ARG, lambda: c.layer("w", 3, config="compressor=none\0x"), "NUL")
        expect_error(Status.ERR_ARG, lambda: c.layer("w", 3, config=5), "config")
        for bad in (3.0, (2, 1.5), [2.0], np.array([2.0, 3.0]), None, object()):
            expect_error(Status.ERR_ARG, lambda: c.layer("w", bad), "shape")
        expect(c.layers == [], f"nothing registered, got {c.layers}")
        c.layer("w", (2, 3))
        expect_error(Status.ERR_ARG, lambda: c.stats(1), "unknown layer id 1")
        expect_error(Status.ERR_ARG, lambda: c.stats(-1), "unknown layer id -1")
        expect_error(Status.ERR_ARG, lambda: c.stats(0.0), "name")
        expect_error(Status.ERR_ARG, lambda: c.stats(1.5), "name")
        expect_error(Status.ERR_ARG, lambda: c.save(""))
        expect_error(Status.ERR_ARG, lambda: c.load(""))
        for bad in (float("nan"), float("inf"), float("-inf"), 0.0, -1.0):
            expect_error(Status.ERR_ARG, lambda: c.set_learning_rate(bad), "lr")
        if torch is not None:
            t = torch.zeros(2, 3)._neg_view()  # .numpy() would raise RuntimeError
            expect_error(Status.ERR_ARG, lambda: c.allreduce(t, "w"), "resolve_neg")
            import terse.torch as tt
            expect_error(Status.ERR_ARG, lambda: tt.ddp_comm_hook(c, config=5, min_size=3), "config")
            expect_error(Status.ERR_ARG, lambda: tt.ddp_comm_hook(c, config=5), "config")
            expect_error(Status.ERR_ARG, lambda: tt.ddp_comm_hook(c, model=5), "model")


def test_corrupted_state_file_is_err_io_on_every_rank():
    cfg = "compressor=topk:k=2; feedback=ef; min_size=0"
    tmp = WORLD.bcast(tempfile.mkdtemp(prefix="terse-py-") if RANK == 0 else None)
    ckpt = Path(tmp) / "ckpt"
    try:
        with terse.Comm(cfg) as c:
            ref = RefTopkEF(2, (5, 6), NRANKS)
            g = gradient(RANK, 0, (5, 6), seed=7)
            c.allreduce(g, "w")
            ref.step([gradient(r, 0, (5, 6), seed=7) for r in range(NRANKS)])
            c.step_end()
            c.save(ckpt)
            mine = Path(f"{ckpt}.rank{RANK}")
            data = bytearray(mine.read_bytes())
            WORLD.Barrier()
            if RANK == NRANKS - 1:  # one rank's file only: every rank must refuse the load
                bad = bytearray(data)
                bad[len(bad) // 2] ^= 0x10
                mine.write_bytes(bytes(bad))
            WORLD.Barrier()
            before = c.stats("w")
            expect_error(Status.ERR_IO, lambda: c.load(ckpt))
            after = c.stats("w")
            expect(after["calls"] == before["calls"] == 1 and after["step"] == before["step"] == 1,
                   f"state unchanged by the failed load, before {before}, after {after}")
            # the Comm is still usable, its state untouched
            g = gradient(RANK, 1, (5, 6), seed=7)
            c.allreduce(g, "w")
            want = ref.step([gradient(r, 1, (5, 6), seed=7) for r in range(NRANKS)])
            expect(bitwise_equal(g, want), "usable after the failed load, feedback unchanged")
            WORLD.Barrier()
            mine.write_bytes(bytes(data))  # repaired: the load succeeds
            WORLD.Barrier()
            c.load(ckpt)
            expect(c.stats("w")["calls"] == 1, f"loaded, got {c.stats('w')}")
    finally:
        WORLD.Barrier()
        if RANK == 0:
            shutil.rmtree(tmp, ignore_errors=True)


def test_lgreco_solve_reference_example():
    # ALGORITHMS.md §10.2 item 5: ranks 2..8 on four layers, budget = error of uniform rank 4
    E = [[0.615979, 0.517996, 0.453673, 0.407209, 0.37154, 0.342977, 0.319388],
         [1.098684, 0.92388, 0.776887, 0.653281, 0.549342, 0.46194, 0.388443],
         [3.199059, 2.983395, 2.810809, 2.664704, 2.536529, 2.421271, 2.315719],
         [2.150429, 2.071476, 2.010227, 1.95985, 1.916858, 1.879225, 1.845667]]
    S = [[256, 384, 512, 640, 768, 896, 1024],
         [768, 1152, 1536, 1920, 2304, 2688, 3072],
         [128, 192, 256, 320, 384, 448, 512],
         [1536, 2304, 3072, 3840, 4608, 5376, 6144]]
    budget = sum(row[2] for row in E)
    expect(abs(budget - 6.051596) < 1e-9, f"budget 6.051596, got {budget}")
    choice = terse.lgreco_solve(S, E, budget, 10000)
    expect(choice == [2, 0, 6, 0], f"choice [2, 0, 6, 0] (ranks 4, 2, 8, 2), got {choice}")
    expect(sum(S[l][c] for l, c in enumerate(choice)) == 3328, "size 3328")
    expect(sum(E[l][c] for l, c in enumerate(choice)) <= budget, "error within the budget")
    expect(terse.lgreco_solve(np.array(S), np.array(E), budget) == choice, "numpy input, default buckets")
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(S, E, -1.0), "budget")
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(S, E, 1.0))  # infeasible
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(S, E[:3], budget), "shape")
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve([1, 2], [1, 2], budget), "2-D")
    expect_error(Status.ERR_ARG, lambda: terse.lgreco_solve(S, E, budget, 0), "buckets")


def test_lgreco_plan_in_stats():
    cfg = "compressor=topk:density=0.1; feedback=ef; min_size=0; adapt=lgreco:period=2,window=1"
    with terse.Comm(cfg) as c:
        for call in range(3):
            c.allreduce(gradient(RANK, call, (30, 40), seed=9), "w")
            c.step_end()
        st = c.stats("w")
        expect(st["adapted"] and st["plan_version"] == 1 and st["plan_us"] > 0,
               f"one L-GreCo decision reported, got {st}")
        expect(st["codec"].startswith("topk:density="), f"the density in force, got {st['codec']}")
        expect(len(set(WORLD.allgather(st["codec"]))) == 1, "the same plan on every rank")
    expect_error(Status.ERR_ARG, lambda: terse.Comm("compressor=onebit; adapt=lgreco"), "cannot adapt")


def test_torch_tensors():
    if torch is None:
        if RANK == 0:
            print("test_binding: torch not installed: torch checks skipped", flush=True)
        return
    with terse.Comm("compressor=topk:k=3; feedback=ef; min_size=0") as c:
        ref = RefTopkEF(3, (6, 5), NRANKS)
        for call in range(2):
            t = torch.from_numpy(gradient(RANK, call, (6, 5), seed=6).copy())
            out = c.allreduce(t, "t")
            expect(out is t, "returns the tensor itself")
            want = ref.step([gradient(r, call, (6, 5), seed=6) for r in range(NRANKS)])
            expect(bitwise_equal(t.numpy(), want), f"torch tensor call {call} equals the reference")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(torch.zeros(6, 5, dtype=torch.float64), "t"),
                     "float32")
        expect_error(Status.ERR_ARG, lambda: c.allreduce(torch.zeros(5, 6).t(), "t"), "contiguous")
        if torch.cuda.is_available():
            expect_error(Status.ERR_ARG, lambda: c.allreduce(torch.zeros(6, 5, device="cuda"), "t"), "CPU")


def test_comm_left_open_is_collected():
    c = terse.Comm("compressor=none")
    c.allreduce(np.ones(4, np.float32), "x")
    del c  # __del__ closes it; a Comm still open at exit is closed by an atexit hook
    expect(MPI.Is_initialized() and not MPI.Is_finalized(), "MPI untouched")


TESTS = [v for k, v in list(globals().items()) if k.startswith("test_") and callable(v)]

if __name__ == "__main__":
    harness.run(TESTS)
    left_open = terse.Comm("compressor=none")  # closed by terse's atexit hook, before MPI ends
    sys.exit(harness.report("test_binding", harness.totals()))
