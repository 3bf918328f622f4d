#!/usr/bin/python3
"""PyTorch DistributedDataParallel on scikit-learn's digits (8x8 images, 10 classes): an MLP
trained with plain DDP, or with terse's compressed allreduce when --terse CONFIG is given.
Registering the hook is the only difference between the two (see `if args.terse` below).

    export PYTHONPATH=python TERSE_LIBRARY=build/libterse.so
    mpirun -np 2 /usr/bin/python3 examples/python/ddp_digits.py
    mpirun -np 2 /usr/bin/python3 examples/python/ddp_digits.py \\
        --terse "compressor=powersgd:rank=4; feedback=ef"

DDP itself runs over a gloo process group (MASTER_ADDR=127.0.0.1, --port); the ranks come
from mpirun (OMPI_COMM_WORLD_RANK / _SIZE). With --terse, the gradients travel through a
terse.Comm over MPI_COMM_WORLD instead. Every epoch, rank 0 prints the mean training loss,
the test accuracy and the time per step. Needs Debian's python3-torch and python3-sklearn.
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--terse", metavar="CONFIG", default=None,
                    help='reduce the gradients with terse, e.g. "compressor=topk:density=0.01; '
                         'feedback=ef" (default: plain DDP)')
parser.add_argument("--epochs", type=int, default=20)
parser.add_argument("--batch", type=int, default=64, help="global batch (split over the ranks)")
parser.add_argument("--lr", type=float, default=0.1)
parser.add_argument("--momentum", type=float, default=0.9,
                    help="SGD momentum (give 0 with compressor=dgc, which applies its own)")
parser.add_argument("--hidden", type=int, default=128)
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--port", type=int, default=int(os.environ.get("MASTER_PORT", 29500)),
                    help="gloo's rendezvous port on 127.0.0.1 (default: $MASTER_PORT or 29500)")
args = parser.parse_args()

rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", 0))
size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", 1))
os.environ["MASTER_ADDR"] = "127.0.0.1"
os.environ["MASTER_PORT"] = str(args.port)
dist.init_process_group("gloo", rank=rank, world_size=size)
torch.set_num_threads(1)  # one core per rank: several ranks often share a machine
torch.manual_seed(args.seed)

# Data: the same split on every rank; DistributedSampler gives each rank its share.
digits = load_digits()
x = torch.tensor(digits.data / 16.0, dtype=torch.float32)
y = torch.tensor(digits.target, dtype=torch.int64)
x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0,
                                                    stratify=y)
train = TensorDataset(x_train, y_train)
sampler = DistributedSampler(train, num_replicas=size, rank=rank, shuffle=True, seed=args.seed)
loader = DataLoader(train, batch_size=max(1, args.batch // size), sampler=sampler)

model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(),
                      nn.Linear(args.hidden, args.hidden), nn.ReLU(),
                      nn.Linear(args.hidden, 10))
ddp = nn.parallel.DistributedDataParallel(model)

if args.terse:  # ---- the only change: terse reduces the gradients -------------------------
    import terse
    import terse.torch
    comm = terse.Comm(args.terse)
    hook = terse.torch.ddp_comm_hook(comm, model=model)
    ddp.register_comm_hook(None, hook)
# --------------------------------------------------------------------------------------------

optimizer = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=args.momentum)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
loss_fn = nn.CrossEntropyLoss()
if rank == 0:
    print(f"digits: {len(train)} train, {len(y_test)} test, {size} ranks, global batch "
          f"{args.batch}, {sum(p.numel() for p in model.parameters())} parameters, "
          f"{args.terse or 'plain DDP'}", flush=True)

accuracy, all_seconds, all_steps = 0.0, 0.0, 0
for epoch in range(args.epochs):
    sampler.set_epoch(epoch)
    ddp.train()
    total, steps, seconds = torch.zeros(2), 0, 0.0
    for xb, yb in loader:
        t0 = time.perf_counter()
        optimizer.zero_grad()
        loss = loss_fn(ddp(xb), yb)
        loss.backward()
        optimizer.step()
        seconds += time.perf_counter() - t0
        steps += 1
        total += torch.tensor([loss.item() * len(yb), len(yb)])
    schedule.step()
    all_seconds, all_steps = all_seconds + seconds, all_steps + steps
    dist.all_reduce(total)  # the training loss over every rank's samples
    ddp.eval()
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    if rank == 0:
        print(f"epoch {epoch + 1:3d}  loss {total[0] / total[1]:.4f}  test accuracy "
              f"{100 * accuracy:.2f}%  {1000 * seconds / steps:.2f} ms/step", flush=True)

if rank == 0:
    print(f"final test accuracy {100 * accuracy:.2f}%, {1000 * all_seconds / all_steps:.2f} ms "
          f"per step ({all_steps} steps)", flush=True)
    if args.terse:
        stats = comm.stats()
        wire = sum(s["wire_bytes"] for s in stats.values())
        dense = 4 * sum(p.numel() for p in model.parameters())
        print(f"terse: {len(stats)} layers, a {wire}-byte message per rank and step "
              f"({dense} dense, {dense / max(wire, 1):.1f}x smaller)", flush=True)
dist.destroy_process_group()
