#!/usr/bin/python3
"""Logistic regression with numpy, data-parallel over MPI: each rank holds a shard of a
synthetic data set, and the gradients are averaged by terse's compressed allreduce.

    export PYTHONPATH=python TERSE_LIBRARY=build/libterse.so
    mpirun -np 4 /usr/bin/python3 examples/python/logreg_numpy.py
    mpirun -np 4 /usr/bin/python3 examples/python/logreg_numpy.py "compressor=none"

The argument is the terse configuration (default: top-1% with error feedback). Rank 0
prints the full loss every 50 steps and, at the end, the size of each rank's message.
"""
import sys

import numpy as np
from mpi4py import MPI

import terse

config = sys.argv[1] if len(sys.argv) > 1 else "compressor=topk:density=0.01; feedback=ef"
world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()

# 8000 samples of 2000 features from a planted model, in equal shards: rank r draws its own.
d, n, steps, lr = 2000, 8000, 200, 2.0
w_true = np.random.default_rng(0).standard_normal(d) / np.sqrt(d)
rng = np.random.default_rng([1, rank])
x = rng.standard_normal((n // size, d)).astype(np.float32)
y = (x @ w_true + 0.1 * rng.standard_normal(len(x)) > 0).astype(np.float32)


def full_loss(w):
    """The logistic loss over every rank's samples (an MPI sum of the local sums)."""
    z = x @ w
    local = np.sum(np.logaddexp(0, z) - y * z)
    return world.allreduce(float(local)) / (len(y) * size)


w = np.zeros(d, np.float32)
with terse.Comm(config, comm=world) as comm:
    for step in range(steps + 1):
        if step % 50 == 0:
            loss = full_loss(w)
            if rank == 0:
                print(f"step {step:4d}  loss {loss:.5f}", flush=True)
        if step == steps:
            break
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = (x.T @ (p - y) / len(y)).astype(np.float32)  # this rank's gradient
        comm.allreduce(grad, layer="w")                      # now the mean over the ranks
        w -= lr * grad
        comm.step_end()
    if rank == 0:
        s = comm.stats("w")
        print(f"{comm.config}\na {s['wire_bytes']}-byte message per rank and step "
              f"({4 * d} uncompressed)", flush=True)
