#!/usr/bin/python3
"""The plot and the table of the heterogeneous least-squares experiment (hetero.sh).

    /usr/bin/python3 bench/convergence/plot_hetero.py [--results bench/convergence/results]
        [--out docs/img/convergence]

Reads RESULTS/hetero.csv and RESULTS/hetero_final.csv and writes OUT/hetero.png:
||grad f||^2 against the iteration, one panel per stepsize factor on the heterogeneous data
and one for the control run (--hetero 0), one curve per method. Prints the table of
docs/convergence.md ("Heterogeneous data") in markdown on stdout. Debian's /usr/bin/python3
with matplotlib (Agg backend); exit 2 when matplotlib is missing.
"""
import argparse
import csv
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.stderr.write("plot_hetero.py: matplotlib is missing; install it with\n"
                     "    apt-get install python3-matplotlib\n"
                     "and run this script with /usr/bin/python3\n")
    sys.exit(2)

# The y range of the panels: the float32 floor of EF21 and EControl is near 1e-14; EF14 on
# the control data goes to 1e-32 (its gradients vanish exactly), shown leaving the panel.
YMIN, YMAX = 1e-16, 1e8


def label(method):
    if method.startswith("econtrol:eta="):
        return "EControl, $\\eta$ = " + method.split("=", 1)[1]
    return {"ef": "EF14 (ef)", "ef21": "EF21"}.get(method, method)


def style(method, etas):
    """Colour and line style: EF14 red, EF21 blue, EControl greens from light to dark."""
    if method == "ef":
        return {"color": "tab:red", "lw": 1.6}
    if method == "ef21":
        return {"color": "tab:blue", "lw": 1.6}
    if method.startswith("econtrol:eta="):
        cmap = plt.get_cmap("Greens")
        i = etas.index(method)
        return {"color": cmap(0.45 + 0.5 * i / max(1, len(etas) - 1)), "lw": 1.2, "ls": "--"}
    return {"color": "grey", "lw": 1}


def in_order(seq):
    out = []
    for v in seq:
        if v not in out:
            out.append(v)
    return out


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--results", default=os.path.join(HERE, "results"))
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "img", "convergence"))
    ap.add_argument("--dpi", type=int, default=90)
    args = ap.parse_args()

    series = read_csv(os.path.join(args.results, "hetero.csv"))
    final = read_csv(os.path.join(args.results, "hetero_final.csv"))
    panels = in_order((r["hetero"], r["factor"]) for r in series)
    methods = in_order(r["method"] for r in series)
    etas = [m for m in methods if m.startswith("econtrol:eta=")]

    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels), 3.4), sharey=True,
                             squeeze=False)
    for ax, (z, f) in zip(axes[0], panels):
        rows = [r for r in series if r["hetero"] == z and r["factor"] == f]
        for m in methods:
            pts = [(int(r["iter"]), float(r["gradnorm2"])) for r in rows if r["method"] == m]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label(m),
                        **style(m, etas))
        gamma = float(rows[0]["gamma"])
        what = "control: one minimiser" if float(z) == 0 else "heterogeneous"
        ax.set_title("%s, Z = %s\nfactor %s ($\\gamma$ = %.3g)" % (what, z, f, gamma),
                     fontsize=9)
        ax.set_yscale("log")
        ax.set_ylim(YMIN, YMAX)
        ax.set_xlabel("iteration (96 bits per worker each)", fontsize=8)
        ax.grid(True, which="major", alpha=0.3)
        ax.tick_params(labelsize=8)
    axes[0][0].set_ylabel("$\\|\\nabla f(x_t)\\|^2$", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8,
               frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, "hetero.png")
    fig.savefig(png, dpi=args.dpi)
    plt.close(fig)
    sys.stderr.write("wrote %s (%d bytes)\n" % (png, os.path.getsize(png)))

    # The table: gradnorm2 at a few iterations, over the second half, and dist2 at the end.
    at = {}
    for r in series:
        at[(r["hetero"], r["factor"], r["method"], int(r["iter"]))] = r["gradnorm2"]
    iters = int(final[0]["iters"])
    marks = [t for t in (100, 300) if t < iters]
    print("| Z | factor | γ | method | " + " | ".join("t = %d" % t for t in marks) +
          " | t = %d | min, max over t ≥ %d | ‖x − x*‖² at %d | status |"
          % (iters, iters // 2, iters))
    print("|---" * (8 + len(marks)) + "|")
    for r in final:
        key = (r["hetero"], r["factor"], r["method"])
        cells = ["%.2g" % float(at[key + (t,)]) if key + (t,) in at else "–" for t in marks]
        print("| %s | %s | %.4g | %s | %s | %.2g | %.2g, %.2g | %.2g | %s |" % (
            r["hetero"], r["factor"], float(r["gamma"]), label(r["method"]).replace(
                "$\\eta$", "η"), " | ".join(cells), float(r["gradnorm2_last"]),
            float(r["gradnorm2_tail_min"]), float(r["gradnorm2_tail_max"]),
            float(r["dist2_last"]), r["status"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
