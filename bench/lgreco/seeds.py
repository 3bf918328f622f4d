#!/usr/bin/python3
"""The acceptance figures of several bench/lgreco/run.py runs of the same training with other
seeds, per codec and seed and their mean:

    /usr/bin/python3 bench/lgreco/seeds.py bench/lgreco/results-resnet \
        bench/lgreco/results-resnet-seed1 bench/lgreco/results-resnet-seed2 [--csv FILE]

For each codec: how many times fewer wire bytes per step L-GreCo sends than the uniform
setting (after the first plan), the test accuracy of both and its change in points, and the
planner's time per decision as a share of the L-GreCo run's step (mean over the decisions,
and the slowest decision). Prints a Markdown table; --csv writes the same rows."""
import argparse
import csv
import os
import sys

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("dirs", nargs="+", help="run.py --out folders, one per seed")
parser.add_argument("--csv", help="also write the rows here")
args = parser.parse_args()


def load(d):
    with open(os.path.join(d, "summary.csv"), newline="") as f:
        return {r["run"]: r for r in csv.DictReader(f)}


def figures(runs, codec):
    u, g = runs.get(f"{codec}-uniform"), runs.get(f"{codec}-lgreco")
    if not u or not g:
        return None
    step = float(g["step_ms"])
    return {
        "bytes_fewer": float(u["wire_bytes_per_step_after_first_plan"]) / float(g["wire_bytes_per_step_after_first_plan"]),
        "acc_uniform": 100 * float(u["test_accuracy"]),
        "acc_lgreco": 100 * float(g["test_accuracy"]),
        "acc_change": 100 * (float(g["test_accuracy"]) - float(u["test_accuracy"])),
        "plan_share": 100 * float(g["plan_ms_mean"]) / step,
        "plan_share_max": 100 * float(g["plan_ms_max"]) / step,
        "identical": int(g["models_identical_on_all_ranks"]) and int(u["models_identical_on_all_ranks"]),
    }


def main():
    tables = [(d, load(d)) for d in args.dirs]
    codecs = []
    for _, runs in tables:
        for name in runs:
            if name.endswith("-lgreco") and name[:-7] not in codecs:
                codecs.append(name[:-7])
    rows = []
    for codec in codecs:
        per = [(d, figures(runs, codec)) for d, runs in tables]
        per = [(d, f) for d, f in per if f]
        for d, f in per:
            rows.append({"codec": codec, "run": d, **f})
        n = len(per)
        mean = {k: sum(f[k] for _, f in per) / n for k in per[0][1] if k != "identical"}
        mean["plan_share_max"] = max(f["plan_share_max"] for _, f in per)
        mean["identical"] = int(all(f["identical"] for _, f in per))
        rows.append({"codec": codec, "run": f"mean of {n}", **mean})
    print("| codec | run | bytes fewer | accuracy uniform → L-GreCo | change (points) | planner share of a step (slowest) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['codec']} | {r['run']} | {r['bytes_fewer']:.2f}× | {r['acc_uniform']:.2f} → {r['acc_lgreco']:.2f} "
              f"| {r['acc_change']:+.2f} | {r['plan_share']:.1f}% ({r['plan_share_max']:.1f}%) |")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
