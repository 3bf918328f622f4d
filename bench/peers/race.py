#!/usr/bin/python3
"""Race terse's DDP hook against plain DDP and PyTorch's own PowerSGD hook: the same DDP
training (an MLP of about 4.2 million parameters on scikit-learn's digits, upsampled to
32x32), a fixed number of SGD steps, time per step after a warm-up and final test accuracy.

    race.py --mode plain
    race.py --mode torch-powersgd --start 10            # powerSGD_hook, rank 4
    race.py --mode terse --config "compressor=powersgd:rank=4,start=10; feedback=ef"

Meant to run under bench/peers/run.sh, one rank per simulated host of tools/cluster.sh:
the ranks come from mpirun (OMPI_COMM_WORLD_RANK / _SIZE); DDP's gloo process group meets
at --master (the first host's address, 10.213.0.1 in cluster.sh) over the interface
$GLOO_SOCKET_IFNAME. In terse mode the gradients travel through a terse.Comm over MPI's
world instead (Open MPI's TCP between the hosts); everything else DDP does stays on gloo.

Rank 0 prints one summary line and, with --csv FILE, appends one row to FILE.
"""
import argparse
import csv
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--mode", choices=["plain", "torch-powersgd", "terse"], required=True)
parser.add_argument("--config", default=None, help="terse configuration (--mode terse)")
parser.add_argument("--label", default=None, help="name of the row (default: from the mode)")
parser.add_argument("--rank", type=int, default=4, dest="psgd_rank",
                    help="PowerSGD rank for --mode torch-powersgd (default 4)")
parser.add_argument("--start", type=int, default=10,
                    help="torch-powersgd: start_powerSGD_iter (plain allreduce before it)")
parser.add_argument("--steps", type=int, default=80, help="SGD steps in all")
parser.add_argument("--warmup", type=int, default=15,
                    help="first steps not timed (keep it >= --start)")
parser.add_argument("--batch", type=int, default=64, help="global batch (split over the ranks)")
parser.add_argument("--side", type=int, default=32, help="images upsampled to side x side")
parser.add_argument("--hidden", type=int, default=2048)
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--momentum", type=float, default=0.9,
                    help="SGD momentum (give 0 with compressor=dgc, which applies its own)")
parser.add_argument("--bucket-mb", type=float, default=64.0,
                    help="DDP's bucket cap, also its first bucket's (default 64: one bucket; "
                         "powerSGD_hook over gloo crashes with several, see run.sh)")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--master", default=os.environ.get("MASTER_ADDR", "127.0.0.1"))
parser.add_argument("--port", type=int, default=int(os.environ.get("MASTER_PORT", 29500)))
parser.add_argument("--csv", default=None, help="append rank 0's row to this CSV file")
args = parser.parse_args()
if args.mode == "terse" and not args.config:
    parser.error("--mode terse needs --config")

rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", 0))
size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", 1))
os.environ["MASTER_ADDR"] = args.master
os.environ["MASTER_PORT"] = str(args.port)
dist.init_process_group("gloo", rank=rank, world_size=size)
torch.set_num_threads(1)  # the simulated hosts share this machine's cores
torch.manual_seed(args.seed)

# ---- data: digits 8x8 -> side x side (bilinear), the same split on every rank -------------
digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32).view(-1, 1, 8, 8)
x = F.interpolate(x, size=(args.side, args.side), mode="bilinear", align_corners=False)
x = x.flatten(1).contiguous()
y = torch.tensor(digits.target, dtype=torch.int64)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0,
                                                    stratify=y)
local_batch = max(1, args.batch // size)
gen = np.random.default_rng(args.seed)  # one global stream of batches; each rank its slice


def batch_indices():
    """Every step, the same global batch on every rank; rank r takes its slice of it."""
    idx = gen.choice(len(x_train), size=local_batch * size, replace=False)
    return torch.from_numpy(idx[rank * local_batch:(rank + 1) * local_batch])


model = nn.Sequential(nn.Linear(args.side * args.side, args.hidden), nn.ReLU(),
                      nn.Linear(args.hidden, args.hidden // 2), nn.ReLU(),
                      nn.Linear(args.hidden // 2, 10))
params = sum(p.numel() for p in model.parameters())
# One bucket for every mode (the whole model is 16.8 MB): the first bucket's cap is a module
# global that DDP reads when it builds its reducer.
dist._DEFAULT_FIRST_BUCKET_BYTES = int(args.bucket_mb * 1024 * 1024)
ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=args.bucket_mb)

comm = None
label = args.label
if args.mode == "plain":
    label = label or "plain DDP (gloo allreduce)"
elif args.mode == "torch-powersgd":
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as psgd
    state = psgd.PowerSGDState(process_group=None, matrix_approximation_rank=args.psgd_rank,
                               start_powerSGD_iter=args.start)
    ddp.register_comm_hook(state, psgd.powerSGD_hook)
    label = label or f"torch powerSGD_hook rank={args.psgd_rank}"
else:
    import terse
    import terse.torch
    comm = terse.Comm(args.config)
    ddp.register_comm_hook(None, terse.torch.ddp_comm_hook(comm, model=model))
    label = label or f"terse {args.config}"


def estimated_bytes_per_step():
    """Bytes a rank hands to the network per step, in the ring model 2(n-1)/n per allreduce
    (gloo's actual algorithm is not visible): every gradient for plain DDP; for
    powerSGD_hook, P and Q of every matrix it compresses (as torch decides: rank
    min(r, rows, cols), only where (rows + cols) r * 2 < rows * cols) plus the rest dense.
    terse reports its own (sent_bytes of every layer's last call)."""
    ring = 2.0 * (size - 1) / size
    if args.mode == "plain":
        return ring * 4 * params
    if args.mode == "torch-powersgd":
        floats = 0
        for p in model.parameters():
            if p.dim() <= 1:
                floats += p.numel()
                continue
            rows, cols = p.shape[0], p.numel() // p.shape[0]
            r = min(args.psgd_rank, rows, cols)
            floats += (rows + cols) * r if (rows + cols) * r * 2 < rows * cols else p.numel()
        return ring * 4 * floats
    return float(sum(s["sent_bytes"] for s in comm.stats().values()))


optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)
loss_fn = nn.CrossEntropyLoss()
if rank == 0:
    print(f"race: {label}; {size} ranks, {params} parameters, global batch "
          f"{local_batch * size}, {args.steps} steps ({args.warmup} untimed), "
          f"lr {args.lr}, momentum {args.momentum}", flush=True)

seconds = 0.0
losses = []
t_start = time.perf_counter()
for step in range(args.steps):
    idx = batch_indices()
    xb, yb = x_train[idx], y_train[idx]
    t0 = time.perf_counter()
    optimizer.zero_grad()
    loss = loss_fn(ddp(xb), yb)
    loss.backward()  # the gradient exchange happens in here (DDP waits for it)
    optimizer.step()
    if step >= args.warmup:
        seconds += time.perf_counter() - t0
    losses.append(loss.item())
wall = time.perf_counter() - t_start
timed = args.steps - args.warmup
bytes_per_step = estimated_bytes_per_step()

# the slowest rank's mean time per step (they are in lock step anyway), and the last
# steps' training loss over every rank
summary = torch.tensor([1000.0 * seconds / max(timed, 1)], dtype=torch.float64)
dist.all_reduce(summary, op=dist.ReduceOp.MAX)
last = torch.tensor([float(np.mean(losses[-10:]))], dtype=torch.float64)
dist.all_reduce(last)
with torch.no_grad():
    accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()

if rank == 0:
    ms = summary.item()
    print(f"race: {label}: {ms:.1f} ms/step, final test accuracy {100 * accuracy:.2f}%, "
          f"train loss (last 10 steps) {last.item() / size:.4f}, "
          f"{bytes_per_step / 1e6:.3f} MB sent per rank and step, {wall:.1f} s in all",
          flush=True)
    if args.csv:
        new = not os.path.exists(args.csv) or os.path.getsize(args.csv) == 0
        with open(args.csv, "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["label", "mode", "config", "ranks", "params", "steps", "timed",
                            "ms_per_step", "accuracy", "train_loss", "bytes_per_step",
                            "bytes_source", "lr", "momentum", "start"])
            w.writerow([label, args.mode, args.config or "", size, params, args.steps, timed,
                        f"{ms:.3f}", f"{accuracy:.4f}", f"{last.item() / size:.5f}",
                        f"{bytes_per_step:.0f}",
                        "terse sent_bytes" if args.mode == "terse" else "ring model",
                        args.lr, args.momentum,
                        args.start if args.mode == "torch-powersgd" else ""])
if comm is not None:
    comm.close()
dist.destroy_process_group()
