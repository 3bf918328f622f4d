#!/usr/bin/python3
"""terse.torch.ddp_comm_hook under mpirun (2 ranks in the meson suite; any count works): DDP
over gloo with terse reducing the gradients.

* with compressor=none, the parameters after a few SGD steps equal plain DDP's: bit for bit
  on 2 ranks (both compute the mean of a and b exactly: DDP as a/2 + b/2, terse as
  (a + b)/2, and both are the correctly rounded (a + b)/2 in float32, since halving is
  exact); within a relative 1e-5 on more ranks, where the two sum in different orders;
* the steps cross DDP's bucket rebuild (one bucket in the first iteration, several after):
  every parameter keeps its one layer, named after the model's parameters or p0, p1, ...;
* with powersgd and topk (feedback=ef), training a small convnet drives the loss down, and
  the parameters stay identical on every rank;
* the hook's arguments are checked.

    TERSE_LIBRARY=build/libterse.so mpirun -np 2 /usr/bin/python3 tests/python/test_ddp.py

Exits 77 (skipped) without numpy, mpi4py or torch. Prints "test_ddp: N passed, N failed" on
rank 0 and exits 1 if anything failed.
"""
import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "python"))

try:
    import numpy as np
    from mpi4py import MPI
    import torch
    import torch.distributed as dist
    import torch.nn as nn
except ImportError as e:
    print(f"test_ddp: skipped ({e})")
    sys.exit(77)

import terse
import terse.torch
from terse import Status

from harness import NRANKS, RANK, WORLD, expect, expect_error  # noqa: E402
import harness  # noqa: E402


def same_on_all_ranks(tensors):
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().contiguous().numpy().tobytes())
    return len(set(WORLD.allgather(h.hexdigest()))) == 1


# ---- a small convnet, data, and a few steps of DDP ------------------------------------------

def convnet():
    """Parameters of 4 kinds: a conv kernel (8, 1, 3, 3), vectors, matrices (128 x 288,
    10 x 128: the two above min_size), so the per-parameter views are real tensors."""
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 6 * 6, 128), nn.ReLU(), nn.Linear(128, 10))


def batch(step, n=16):
    """This rank's batch at a step: 8x8 images whose class is the brightest of 10 fixed
    patterns (learnable in a few steps)."""
    g = torch.Generator().manual_seed(1000 * step + RANK)
    patterns = torch.Generator().manual_seed(7)
    basis = torch.randn(10, 1, 8, 8, generator=patterns)
    y = torch.randint(0, 10, (n,), generator=g)
    x = basis[y] + 0.3 * torch.randn(n, 1, 8, 8, generator=g)
    return x, y


def train(steps, hook=None, lr=0.05, momentum=0.9, model=None):
    """Trains a convnet with DDP for `steps` SGD steps; returns (model, [loss per step])."""
    model = model if model is not None else convnet()
    # Small buckets: DDP's first iteration has one bucket, the rebuilt ones are several (the
    # first of them is capped by dist._DEFAULT_FIRST_BUCKET_BYTES, 1 MB, which the reducer
    # reads when it is built).
    first = dist._DEFAULT_FIRST_BUCKET_BYTES
    dist._DEFAULT_FIRST_BUCKET_BYTES = 4096
    try:
        ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=0.02)
    finally:
        dist._DEFAULT_FIRST_BUCKET_BYTES = first
    if hook is not None:
        ddp.register_comm_hook(None, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=momentum)
    losses = []
    for step in range(steps):
        x, y = batch(step)
        opt.zero_grad()
        loss = nn.functional.cross_entropy(ddp(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return model, losses


# ---- tests -----------------------------------------------------------------------------------

def test_none_equals_plain_ddp():
    plain, _ = train(6)
    with terse.Comm("compressor=none", comm=WORLD) as comm:
        model = convnet()
        hook = terse.torch.ddp_comm_hook(comm, model=model)
        buckets = []  # bucket indices, in the order DDP hands the buckets over

        def recording(state, bucket):
            buckets.append(bucket.index())
            return hook(state, bucket)

        hooked, _ = train(6, recording, model=model)
        expect(buckets[0] == 0 and buckets[1] == 0 and max(buckets) >= 1,
               f"one bucket in the first iteration, several after DDP's rebuild, got {buckets}")
        names = ["ddp." + n for n, _ in model.named_parameters()]
        expect(sorted(hook.layers) == sorted(names),
               f"one layer per parameter, named after it: {names}, got {hook.layers}")
        expect(comm.layers == hook.layers, f"the Comm's layers are the hook's, got {comm.layers}")
        expect(all(s["step"] == 6 for s in comm.stats().values()),
               "step_end once per backward pass (6), got "
               f"{[s['step'] for s in comm.stats().values()]}")
        calls = [s["calls"] for s in comm.stats().values()]
        expect(all(c == 6 for c in calls), f"each layer reduced once per step, got {calls}")
        shapes = {s["name"]: s["shape"] for s in comm.stats().values()}
        expect(shapes["ddp.0.weight"] == (8, 1, 3, 3) and shapes["ddp.3.weight"] == (128, 288),
               f"layers with the parameters' shapes, got {shapes}")
    for (name, a), b in zip(plain.named_parameters(), hooked.parameters()):
        if NRANKS == 2:
            ok = torch.equal(a, b)
        else:
            ok = torch.allclose(a, b, rtol=1e-5, atol=1e-7)
        diff = (a - b).abs().max().item()
        expect(ok, f"{name} equal to plain DDP's ({'bitwise' if NRANKS == 2 else 'rtol 1e-5'}), "
                   f"max difference {diff:g}")


def test_compressed_training_lowers_the_loss():
    for config in ("compressor=powersgd:rank=2; feedback=ef",
                   "compressor=topk:density=0.05; feedback=ef"):
        with terse.Comm(config, comm=WORLD) as comm:
            hook = terse.torch.ddp_comm_hook(comm)  # no model: layers ddp.p0, ddp.p1, ...
            model, losses = train(30, hook)
            first, last = np.mean(losses[:3]), np.mean(losses[-3:])
            expect(last < 0.5 * first, f"{config}: the loss falls by half, from {first:.3f} to "
                                       f"{last:.3f}")
            expect(same_on_all_ranks(model.parameters()), f"{config}: parameters identical on "
                                                          "every rank")
            expect(sorted(hook.layers) == [f"ddp.p{i}" for i in range(6)],
                   f"{config}: six layers ddp.p0..p5 across the bucket rebuild, got {hook.layers}")
            st = comm.stats()
            big = [n for n, s in st.items() if not s["dense"]]
            expect(len(big) == 2, f"{config}: the two large matrices compressed, the rest dense "
                                  f"(min_size 1024), got compressed {big}")
            expect(all(st[n]["wire_bytes"] < 4 * np.prod(st[n]["shape"]) for n in big),
                   f"{config}: compressed messages smaller than dense")


def test_hook_options():
    with terse.Comm("compressor=topk:density=0.1; feedback=ef", comm=WORLD) as comm:
        model = convnet()
        hook = terse.torch.ddp_comm_hook(comm, "feedback=none", min_size=0, model=model,
                                         prefix="net/")
        train(2, hook, model=model)
        st = comm.stats()
        expect(list(st)[0].startswith("net/"), f"the prefix in the names, got {list(st)}")
        expect(all(not s["dense"] for s in st.values()), "min_size=0: every layer compressed")
        expect(all(s["feedback"] == "none" for s in st.values()),
               f"the per-hook config applies, got {[s['feedback'] for s in st.values()]}")
        expect(hook.comm is comm, "hook.comm is the Comm")
        expect_error(Status.ERR_ARG, lambda: terse.torch.ddp_comm_hook(object()), "terse.Comm",
                     names=False)
        expect_error(Status.ERR_ARG, lambda: terse.torch.ddp_comm_hook(comm, min_size=-1),
                     "min_size", names=False)
        expect_error(Status.ERR_ARG,
                     lambda: terse.torch.ddp_comm_hook(comm, "min_size=4", min_size=8), "twice",
                     names=False)


TESTS = [test_none_equals_plain_ddp, test_compressed_training_lowers_the_loss, test_hook_options]

if __name__ == "__main__":
    torch.set_num_threads(1)
    # gloo meets through a file in a folder rank 0 creates: no port to choose or collide on.
    folder = tempfile.mkdtemp(prefix="terse-ddp-") if RANK == 0 else None
    folder = WORLD.bcast(folder)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=RANK,
                            world_size=NRANKS)
    harness.run(TESTS)
    dist.destroy_process_group()
    counts = harness.totals()
    if RANK == 0:
        shutil.rmtree(folder, ignore_errors=True)
    sys.exit(harness.report("test_ddp", counts))
