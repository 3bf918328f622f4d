#!/usr/bin/python3
"""L-GreCo against the uniform default and dense, on a small convnet trained on sklearn's
digits (or, with --model resnet, a thin ResNet with a large linear head on digits; with
--model mlp, a 7-layer MLP on LibSVM's a9a) with terse's compressed allreduce
(data-parallel, one shard per rank).

    export PYTHONPATH=python TERSE_LIBRARY=build/libterse.so
    mpirun -np 4 /usr/bin/python3 bench/lgreco/run.py --out bench/lgreco/results
    mpirun -np 4 /usr/bin/python3 bench/lgreco/run.py --model resnet --out bench/lgreco/results-resnet
    mpirun -np 4 /usr/bin/python3 bench/lgreco/run.py --model mlp \\
        --data ../shared/data/libsvm/a9a.txt --out bench/lgreco/results-mlp

For each of powersgd, topk and qsgd it trains the same model from the same initial weights
on the same batches three ways: dense (compressor=none, once, shared by the three), the
codec's uniform default with error feedback, and the same plus adapt=lgreco (alpha=1: the
uniform default's error is the budget). Per run it reports the wire bytes per step (the
sum over layers of each rank's compressed message, terse_layer_stats' wire_bytes), the
final training loss and test accuracy, the time per step and the planner's time per
decision. Files in --out:
  summary.csv  one row per run
  curves.csv   run, step, training loss (mean of the last --log-every steps), wire bytes
  choices.csv  run, step, layer, shape, the codec in force after every L-GreCo decision
Every rank computes the same model (terse's results are bitwise identical on all ranks), so
rank 0 evaluates it and writes the files. Needs python3-torch, python3-sklearn, mpi4py.
bench/lgreco/seeds.py sums up runs with other --seed values; plot.py draws one folder.
"""
import argparse
import csv
import hashlib
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
from mpi4py import MPI
from sklearn.datasets import load_svmlight_file

import terse

CODECS = {
    "powersgd": "compressor=powersgd:rank=4; feedback=ef",
    "topk": "compressor=topk:density=0.01; feedback=ef",
    "qsgd": "compressor=qsgd:bits=4; feedback=ef",
}
WIDTHS = [123, 256, 256, 128, 128, 64, 32, 2]  # the MLP: 7 Linear layers, every shape different

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--model", choices=["convnet", "resnet", "mlp"], default="convnet",
                    help="convnet: 4 convolutions and 3 linear layers on sklearn's digits (default); "
                    "resnet: 16 convolutions (7 residual blocks) and 2 linear layers on digits, "
                    "one of them holding 97%% of the weights; "
                    "mlp: 7 linear layers on LibSVM's a9a (--data)")
parser.add_argument("--data", default=os.path.join(os.path.dirname(__file__), "../../../shared/data/libsvm/a9a.txt"))
parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
parser.add_argument("--codecs", default="powersgd,topk,qsgd")
parser.add_argument("--steps", type=int, default=400)
parser.add_argument("--batch", type=int, help="per rank (default: 32 convnet, 256 mlp)")
parser.add_argument("--lr", type=float, default=0.05)
parser.add_argument("--momentum", type=float, default=0.9)
parser.add_argument("--period", type=int, default=100, help="L-GreCo: steps between decisions")
parser.add_argument("--window", type=int, default=10, help="L-GreCo: steps accumulated before each")
parser.add_argument("--lgreco", default="", help="more L-GreCo parameters, e.g. lo=0.25,hi=4")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--log-every", type=int, default=25)
args = parser.parse_args()
if args.batch is None:
    args.batch = 256 if args.model == "mlp" else 32

world = MPI.COMM_WORLD
rank, size = world.Get_rank(), world.Get_size()
torch.set_num_threads(1)  # one core per rank: the ranks share the machine

# ---- data: one fixed 80/20 split; rank r trains on every size-th training example -------------
if args.model != "mlp":
    from sklearn.datasets import load_digits
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
else:
    X, y = load_svmlight_file(args.data, n_features=WIDTHS[0])
    X = np.asarray(X.todense(), dtype=np.float32)
    y = (y > 0).astype(np.int64)
perm = np.random.RandomState(12345).permutation(len(y))
n_test = len(y) // 5
test_idx, train_idx = perm[:n_test], perm[n_test:]
x_test, y_test = torch.from_numpy(X[test_idx]), torch.from_numpy(y[test_idx])
x_train_all, y_train_all = torch.from_numpy(X[train_idx]), torch.from_numpy(y[train_idx])
mine = np.arange(rank, len(train_idx), size)
x_mine, y_mine = x_train_all[mine], y_train_all[mine]


def make_convnet():
    """8x8 digits: 3x3 convolutions 1-16-32-32 at 8x8 and 32-64 at 4x4, then linear
    1024-1024-256-10: seven weight tensors of different shapes, from 16x9 to 1024x1024, the
    classifier layers holding most of the parameters (as in VGG or AlexNet)."""
    conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
    return nn.Sequential(
        conv(1, 16), nn.ReLU(), conv(16, 32), nn.ReLU(), conv(32, 32), nn.ReLU(), nn.MaxPool2d(2),
        conv(32, 64), nn.ReLU(), nn.Flatten(),
        nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 256), nn.ReLU(), nn.Linear(256, 10))


class Residual(nn.Module):
    """x -> relu(x + f(x)): a ResNet basic block without normalisation."""

    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, x):
        return torch.relu(x + self.f(x))


def make_resnet():
    """8x8 digits: a thin ResNet trunk, a 3x3 convolution 1-16 and seven residual blocks of
    two 3x3 16-16 convolutions, all at 8x8, widened by a 3x3 convolution 16-256, then a linear
    head on the flattened 256x8x8 features, 16384-128-10 (as VGG's classifier on the last
    feature map): 18 weight tensors, 16 convolutions and 2 linear layers, the first of which
    holds 97% of the 2.17 M parameters."""
    conv = lambda i, o: nn.Conv2d(i, o, 3, padding=1)
    block = lambda: Residual(nn.Sequential(conv(16, 16), nn.ReLU(), conv(16, 16)))
    return nn.Sequential(
        conv(1, 16), nn.ReLU(), *[block() for _ in range(7)], conv(16, 256), nn.ReLU(), nn.Flatten(),
        nn.Linear(256 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, 10))


def make_model():
    torch.manual_seed(args.seed)  # the same initial weights on every rank and in every run
    if args.model == "convnet":
        return make_convnet()
    if args.model == "resnet":
        return make_resnet()
    layers = []
    for i in range(len(WIDTHS) - 1):
        layers.append(nn.Linear(WIDTHS[i], WIDTHS[i + 1]))
        # He initialisation: with PyTorch's default a net this deep stays at the majority class
        nn.init.kaiming_normal_(layers[-1].weight, nonlinearity="relu")
        nn.init.zeros_(layers[-1].bias)
        if i < len(WIDTHS) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def batches(steps):
    """The same batch sequence in every run: epochs of this rank's shard, reshuffled."""
    rng = np.random.RandomState(1000 * args.seed + rank)
    order, pos = rng.permutation(len(y_mine)), 0
    for _ in range(steps):
        if pos + args.batch > len(order):
            order, pos = rng.permutation(len(y_mine)), 0
        idx = order[pos:pos + args.batch]
        pos += args.batch
        yield x_mine[idx], y_mine[idx]


def train(name, config):
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    lossf = nn.CrossEntropyLoss()
    comm = terse.Comm(config=config, comm=world)
    params = [(n.replace(".", "_"), p) for n, p in model.named_parameters()]
    for n, p in params:
        comm.layer(n, tuple(p.shape))
    curves, choices = [], []
    loss_sum, wire_sum, wire_steady, steady_steps = 0.0, 0.0, 0.0, 0
    plan_seen, plan_times, measure_times = 0, [], []
    world.Barrier()
    t0 = time.perf_counter()
    for step, (xb, yb) in enumerate(batches(args.steps)):
        opt.zero_grad()
        loss = lossf(model(xb), yb)
        loss.backward()
        for n, p in params:
            comm.allreduce(p.grad, layer=n)
        comm.step_end()
        opt.step()
        stats = comm.stats()
        wire = sum(s["wire_bytes"] for s in stats.values())
        loss_sum += loss.item()
        wire_sum += wire
        first = next(iter(stats.values()))
        if first["plan_version"] > 0:
            wire_steady += wire
            steady_steps += 1
        if first["plan_version"] != plan_seen:
            plan_seen = first["plan_version"]
            plan_times.append(first["plan_us"])
            measure_times.append(first["plan_measure_us"] + first["plan_solve_us"])
            for ln, s in stats.items():
                if s["adapted"]:
                    choices.append((name, step, ln, "x".join(map(str, s["shape"])), s["codec"]))
        if (step + 1) % args.log_every == 0:
            curves.append((name, step + 1, loss_sum / args.log_every, wire))
            loss_sum = 0.0
    elapsed = time.perf_counter() - t0
    # the slowest rank's time; rank 0's planner time (it decides, the others wait in the broadcast)
    elapsed = world.allreduce(elapsed, op=MPI.MAX)
    with torch.no_grad():
        test_acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        train_loss = lossf(model(x_train_all), y_train_all).item()
    flat = torch.cat([p.detach().flatten() for p in model.parameters()]).numpy()
    digest = world.allgather(hashlib.sha1(flat.tobytes()).hexdigest())
    comm.close()
    steps = args.steps
    row = {
        "run": name, "config": config, "ranks": size, "steps": steps,
        "wire_bytes_per_step": wire_sum / steps,
        "wire_bytes_per_step_after_first_plan": wire_steady / steady_steps if steady_steps else wire_sum / steps,
        "dense_bytes_per_step": 4 * sum(p.numel() for _, p in params),
        "final_train_loss": train_loss, "test_accuracy": test_acc,
        "step_ms": 1e3 * elapsed / steps,
        "decisions": len(plan_times),
        "plan_ms_mean": 1e-3 * float(np.mean(plan_times)) if plan_times else 0.0,
        "plan_ms_max": 1e-3 * float(np.max(plan_times)) if plan_times else 0.0,
        "measure_solve_ms_mean": 1e-3 * float(np.mean(measure_times)) if measure_times else 0.0,
        "models_identical_on_all_ranks": int(len(set(digest)) == 1),
    }
    if rank == 0:
        print(f"{name:18s} wire/step {row['wire_bytes_per_step_after_first_plan']:10.0f} B  "
              f"loss {train_loss:.5f}  test acc {100 * test_acc:.2f}%  step {row['step_ms']:.1f} ms  "
              f"plan {row['plan_ms_mean']:.2f} ms (max {row['plan_ms_max']:.2f})", flush=True)
    return row, curves, choices


def main():
    runs = [("dense", "compressor=none")]
    extra = ("," + args.lgreco) if args.lgreco else ""
    for codec in args.codecs.split(","):
        base = CODECS[codec]
        runs.append((f"{codec}-uniform", base))
        runs.append((f"{codec}-lgreco", f"{base}; adapt=lgreco:period={args.period},window={args.window}{extra}"))
    rows, curves, choices = [], [], []
    for name, config in runs:
        r, c, ch = train(name, config)
        rows.append(r)
        curves += c
        choices += ch
    if rank != 0:
        return
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "summary.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(args.out, "curves.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "train_loss", "wire_bytes"])
        w.writerows(curves)
    with open(os.path.join(args.out, "choices.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "step", "layer", "shape", "codec"])
        w.writerows(choices)
    print(f"wrote {args.out}/summary.csv, curves.csv, choices.csv")


if __name__ == "__main__":
    sys.exit(main())
