#!/usr/bin/python3
"""The standard matrix's report: reads RESULTS/RATE/{sweep,point}-NAME.json (written by
bench/cluster/matrix.sh through terse-bench --json) and writes

* RESULTS/matrix.csv: one row per rate, codec and size, with the dense baseline of the same run;
* docs/img/perf-time-RATE.png (time per call against size, log-log, dense included) and
  docs/img/perf-speedup-RATE.png (dense time / codec time against size);
* the tables between the matrix markers of docs/performance.md (--doc), nccl-tests style:
  per rate, the dense time and each codec's speedup per size; then the acceptance points
  with the ideal time, wire bytes / link rate + codec time.

    bench/cluster/report.py [--results bench/cluster/results/matrix] [--doc docs/performance.md]

Debian's /usr/bin/python3 with matplotlib; exit 2 when matplotlib is missing.
"""
import argparse
import csv
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BEGIN, END = "<!-- matrix:begin -->", "<!-- matrix:end -->"
# the acceptance targets of the performance issue (speedup over dense at 1 Gbit/s, 100 MiB)
TARGETS = {"topk": 12, "onebit": 12, "dgc": 40, "powersgd": 10}

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    sys.stderr.write("report.py: matplotlib is missing: apt-get install python3-matplotlib, "
                     "and run this with /usr/bin/python3\n")
    sys.exit(2)


def rate_bits(rate):
    if rate == "loopback":
        return float("inf")  # no link: the ideal is the codec time alone
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg])bit", rate)
    if not m:
        raise SystemExit(f"report.py: cannot read the rate '{rate}'")
    return float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)]


def load(results):
    """{(rate, kind, name): [(dense_row, codec_row), ...]} from the JSON files."""
    runs = {}
    for path in sorted(glob.glob(os.path.join(results, "*", "*.json"))):
        rate = os.path.basename(os.path.dirname(path))
        kind, name = os.path.basename(path)[:-5].split("-", 1)
        try:
            with open(path) as f:
                rows = json.load(f)
        except (OSError, ValueError) as e:
            sys.stderr.write(f"report.py: skipping {path}: {e}\n")
            continue
        pairs, dense = [], None
        for r in rows:
            if r["codec"] == "dense":
                dense = r
            elif dense is not None and dense["size"] == r["size"]:
                pairs.append((dense, r))
        runs[(rate, kind, name)] = pairs
    return runs


def ideal_us(row, rate):
    """What the link alone allows: this rank's bytes on the wire at the link rate, plus the
    codec's own time."""
    return row["sent"] * 8 / rate_bits(rate) * 1e6 + row["compress_us"] + row["decompress_us"]


def write_csv(runs, path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["rate", "run", "name", "codec", "size", "time_us", "dense_time_us", "speedup",
                    "wire", "sent", "compress_us", "comm_us", "decompress_us", "ideal_us"])
        for (rate, kind, name), pairs in sorted(runs.items()):
            for d, r in pairs:
                w.writerow([rate, kind, name, r["codec"], r["size"], f"{r['time_us']:.1f}",
                            f"{d['time_us']:.1f}", f"{d['time_us'] / r['time_us']:.3f}",
                            int(r["wire"]), int(r["sent"]), f"{r['compress_us']:.1f}",
                            f"{r['comm_us']:.1f}", f"{r['decompress_us']:.1f}",
                            f"{ideal_us(r, rate):.1f}"])


def mib(b):
    return f"{b / 2**20:g} MiB"


def save_figure(draw, ylabel, title, path):
    """One log-log figure against the gradient size: draw(ax) adds the curves."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    draw(ax)
    ax.set(xscale="log", yscale="log", xlabel="gradient size (MiB of float32)", ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(runs, rates, img):
    os.makedirs(img, exist_ok=True)
    for rate in rates:
        sweeps = {name: pairs for (r, kind, name), pairs in runs.items() if r == rate and kind == "sweep" and pairs}
        if not sweeps:
            continue

        def times(ax):
            first = next(iter(sweeps.values()))
            ax.plot([d["size"] / 2**20 for d, _ in first], [d["time_us"] / 1e3 for d, _ in first], "k--",
                    label="dense (MPI_Allreduce)")
            for name, pairs in sorted(sweeps.items()):
                ax.plot([r["size"] / 2**20 for _, r in pairs], [r["time_us"] / 1e3 for _, r in pairs], "o-", ms=3,
                        label=name)

        def speedups(ax):
            for name, pairs in sorted(sweeps.items()):
                ax.plot([r["size"] / 2**20 for _, r in pairs], [d["time_us"] / r["time_us"] for d, r in pairs], "o-",
                        ms=3, label=name)
            ax.axhline(1.0, color="k", ls="--", lw=1)

        save_figure(times, "time per call (ms)", f"4 simulated hosts at {rate}: time per allreduce",
                    os.path.join(img, f"perf-time-{rate}.png"))
        save_figure(speedups, "speedup over dense (x)",
                    f"4 simulated hosts at {rate}: dense time / compressed time, same run",
                    os.path.join(img, f"perf-speedup-{rate}.png"))


def tables(runs, rates):
    out = []
    for rate in rates:
        sweeps = {name: pairs for (r, kind, name), pairs in runs.items()
                  if r == rate and kind == "sweep" and pairs and name != "auto"}
        if not sweeps:
            continue
        names = sorted(sweeps)
        sizes = sorted({r["size"] for pairs in sweeps.values() for _, r in pairs})
        out.append(f"### {rate} per link: speedup over dense, per size\n")
        out.append("Each cell is (dense time / codec time) from the same run; the dense column is the "
                   "median of those runs' dense times.\n")
        out.append("| size | dense (ms) | " + " | ".join(names) + " |")
        out.append("|---|---|" + "---|" * len(names))
        for s in sizes:
            cells, dense = [], []
            for n in names:
                hit = [(d, r) for d, r in sweeps[n] if r["size"] == s]
                if hit:
                    d, r = hit[0]
                    dense.append(d["time_us"])
                    cells.append(f"{d['time_us'] / r['time_us']:.2f}")
                else:
                    cells.append("-")
            dense.sort()
            med = dense[len(dense) // 2] / 1e3 if dense else float("nan")
            out.append(f"| {mib(s)} | {med:.1f} | " + " | ".join(cells) + " |")
        out.append(f"\n![time per call at {rate}](img/perf-time-{rate}.png)\n"
                   f"![speedup at {rate}](img/perf-speedup-{rate}.png)\n")
    out.append("### compressor=auto (with=topk, density 0.01, ef) against dense, same run\n")
    out.append("Each cell: auto's time / dense time (above 1.10 would fail the acceptance), "
               "and the path the layer chose (c: compressed, d: dense).\n")
    autos = {r: pairs for (r, kind, name), pairs in runs.items() if kind == "sweep" and name == "auto" and pairs}
    if autos:
        order = [r for r in rates if r in autos]
        out.append("| size | " + " | ".join(order) + " |")
        out.append("|---|" + "---|" * len(order))
        for s in sorted({r["size"] for pairs in autos.values() for _, r in pairs}):
            cells = []
            for rate in order:
                hit = [(d, r) for d, r in autos[rate] if r["size"] == s]
                if not hit:
                    cells.append("-")
                    continue
                d, r = hit[0]
                cells.append(f"{r['time_us'] / d['time_us']:.2f} ({'d' if r.get('dense_layers', 0) else 'c'})")
            out.append(f"| {mib(s)} | " + " | ".join(cells) + " |")
        worst = max(r["time_us"] / d["time_us"] for pairs in autos.values() for d, r in pairs)
        out.append(f"\nWorst ratio over every size and rate: {worst:.2f}.\n")
    out.append("### The acceptance points: 100 MiB (powersgd: the resnet50 layers)\n")
    out.append("| rate | codec | size | dense (ms) | codec (ms) | speedup | target | sent per rank | "
               "encode + decode (ms) | ideal (ms) | codec / ideal |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for rate in rates:
        for (r_, kind, name), pairs in sorted(runs.items()):
            if r_ != rate or kind != "point" or not pairs:
                continue
            d, r = pairs[0]
            ideal = ideal_us(r, rate)
            target = TARGETS.get(name)
            tgt = f"{target}x" if target and rate == "1gbit" else "-"
            out.append(f"| {rate} | {r['codec']} | {mib(r['size'])} | {d['time_us'] / 1e3:.1f} | "
                       f"{r['time_us'] / 1e3:.1f} | {d['time_us'] / r['time_us']:.2f} | {tgt} | "
                       f"{int(r['sent']):,} | {(r['compress_us'] + r['decompress_us']) / 1e3:.1f} | "
                       f"{ideal / 1e3:.1f} | {r['time_us'] / ideal:.2f} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default=os.path.join(ROOT, "bench/cluster/results/matrix"))
    ap.add_argument("--doc", default=os.path.join(ROOT, "docs/performance.md"))
    ap.add_argument("--img", default=os.path.join(ROOT, "docs/img"))
    a = ap.parse_args()
    runs = load(a.results)
    if not runs:
        raise SystemExit(f"report.py: no results under {a.results}")
    rates = sorted({k[0] for k in runs}, key=rate_bits)
    write_csv(runs, os.path.join(a.results, "matrix.csv"))
    plot(runs, rates, a.img)
    text = tables(runs, rates)
    doc = open(a.doc).read()
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + BEGIN + "\n" + text + END + rest.split(END, 1)[1]
        with open(a.doc, "w") as f:
            f.write(doc)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
