#!/usr/bin/python3
"""Plots of the convergence benchmark: ||grad f||^2 against bits sent per worker.

    bench/convergence/plot.py [--results bench/convergence/results] [--out docs/img/convergence]

Reads RESULTS/DATASET.csv and RESULTS/final.csv (written by run.py) and writes, per dataset,
OUT/DATASET.png: one panel per method, one curve per stepsize factor; and OUT/final.png:
the last ||grad f||^2 against the factor, one panel per dataset, one line per method.
--table prints the last values as the markdown tables of docs/convergence.md instead.
Debian's /usr/bin/python3 with matplotlib (Agg backend); exit 2 when matplotlib is missing.
"""
import argparse
import csv
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.stderr.write("plot.py: matplotlib is missing; install it with\n"
                     "    apt-get install python3-matplotlib\n"
                     "and run this script with /usr/bin/python3\n")
    sys.exit(2)

LABELS = {"ef": "EF (EF14)", "ef21": "EF21", "ef21-w": "EF21-W"}


def is_eta_alpha(method):
    """run.py's econtrol:eta=alpha, written out as eta = k/d, which differs per dataset."""
    return method.startswith("econtrol:eta=") and method.split("=", 1)[1] not in ("0.1", "0.01")


def label(method):
    if method == "econtrol:eta=1/d":
        return "EControl, $\\eta$ = 1/d = $\\alpha$"
    if method.startswith("econtrol:eta="):
        eta = method.split("=", 1)[1]
        return "EControl, $\\eta$ = %s%s" % (eta, " = $\\alpha$" if is_eta_alpha(method) else "")
    return LABELS.get(method, method)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def in_order(seq):
    """The distinct values of seq in the order they first appear."""
    out = []
    for v in seq:
        if v not in out:
            out.append(v)
    return out


def plot_dataset(ds, rows, out, dpi):
    methods = in_order(r["method"] for r in rows)
    factors = sorted(in_order(r["factor"] for r in rows), key=float)
    cmap = plt.get_cmap("viridis")
    colour = {f: cmap(i / max(1, len(factors) - 1)) for i, f in enumerate(factors)}
    ncol = 3 if len(methods) > 4 else 2
    nrow = int(math.ceil(len(methods) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.2 * nrow), sharex=True,
                             sharey=True, squeeze=False)
    positive = [float(r["gradnorm2"]) for r in rows if float(r["gradnorm2"]) > 0]
    lo, hi = min(positive), max(positive)
    for ax, m in zip(axes.flat, methods):
        for f in factors:
            pts = [(int(r["bits"]), float(r["gradnorm2"])) for r in rows
                   if r["method"] == m and r["factor"] == f and float(r["gradnorm2"]) > 0]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], color=colour[f], lw=1.2,
                        label="factor %s" % f)
        ax.set_yscale("log")
        ax.set_ylim(lo / 3, hi * 3)
        ax.set_title(label(m), fontsize=10)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes.flat[len(methods):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("bits sent per worker")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"$\|\nabla f(x_t)\|^2$")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle("%s, 20 workers, top-1, x0 = 0" % ds, fontsize=11)
    fig.tight_layout()
    path = os.path.join(out, ds + ".png")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def plot_final(final, out, dpi):
    datasets = in_order(r["dataset"] for r in final)
    methods = in_order(r["method"] for r in final)
    # the EControl eta=alpha runs carry a different eta per dataset: one line for all of them
    def key(m):
        return "econtrol:eta=1/d" if is_eta_alpha(m) else m
    keys = in_order(key(m) for m in methods)
    markers = "osD^vx*+"
    ncol = min(2, len(datasets))
    nrow = int(math.ceil(len(datasets) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5 * ncol, 3.4 * nrow), squeeze=False)
    for ax, ds in zip(axes.flat, datasets):
        for i, k in enumerate(keys):
            pts = sorted((float(r["factor"]), float(r["gradnorm2_last"])) for r in final
                         if r["dataset"] == ds and key(r["method"]) == k
                         and r["gradnorm2_last"] not in ("", "nan")
                         and float(r["gradnorm2_last"]) > 0)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=markers[i % 8],
                        ms=4, lw=1, label=label(k))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(ds, fontsize=10)
        ax.set_xlabel("stepsize factor")
        ax.set_ylabel(r"$\|\nabla f(x_T)\|^2$")
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(datasets):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    iters = final[0]["iters"] if final else "?"
    fig.suptitle(r"$\|\nabla f(x_T)\|^2$, T = %s, against the stepsize factor" % iters,
                 fontsize=11)
    fig.tight_layout()
    path = os.path.join(out, "final.png")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def print_table(final):
    """The last ||grad f||^2 of every run as markdown: one table per dataset, methods by
    factors; a run that did not finish is marked with its last reported iteration."""
    for ds in in_order(r["dataset"] for r in final):
        rows = [r for r in final if r["dataset"] == ds]
        factors = sorted(in_order(r["factor"] for r in rows), key=float)
        print("**%s** (T = %s)\n" % (ds, rows[0]["iters"]))
        print("| method | " + " | ".join("factor %s" % f for f in factors) + " |")
        print("|---|" + "---:|" * len(factors))
        for m in in_order(r["method"] for r in rows):
            cells = []
            for f in factors:
                r = [x for x in rows if x["method"] == m and x["factor"] == f]
                if not r or not r[0]["gradnorm2_last"]:
                    cells.append("—")
                    continue
                c = "%.2e" % float(r[0]["gradnorm2_last"])
                if r[0]["status"] != "ok":
                    c += " (stopped at %s)" % r[0]["last_iter"]
                cells.append(c)
            name = label(m).replace("$\\eta$", "η").replace("$\\alpha$", "α")
            print("| %s | %s |" % (name, " | ".join(cells)))
        print()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "img", "convergence"))
    ap.add_argument("--dpi", type=int, default=80)
    ap.add_argument("--table", action="store_true",
                    help="print the final values as markdown tables instead of plotting")
    args = ap.parse_args()
    final_path = os.path.join(args.results, "final.csv")
    if not os.path.exists(final_path):
        sys.exit("plot.py: no %s; run bench/convergence/run.py first" % final_path)
    final = read_csv(final_path)
    if args.table:
        print_table(final)
        return
    os.makedirs(args.out, exist_ok=True)
    written = []
    for ds in in_order(r["dataset"] for r in final):
        rows = read_csv(os.path.join(args.results, ds + ".csv"))
        if rows:
            written.append(plot_dataset(ds, rows, args.out, args.dpi))
    written.append(plot_final(final, args.out, args.dpi))
    for p in written:
        print("%s (%d KB)" % (os.path.relpath(p, ROOT), (os.path.getsize(p) + 1023) // 1024))


if __name__ == "__main__":
    main()
