#!/usr/bin/python3
"""bench/peers/plot.py: docs/img/peers/race.png from bench/peers/results/race.csv (run.sh):
time per step (bars, with the speedup over plain DDP) and final test accuracy, per mode.

    /usr/bin/python3 bench/peers/plot.py [CSV] [PNG]
"""
import csv
import os
import sys

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
src = sys.argv[1] if len(sys.argv) > 1 else os.path.join(repo, "bench/peers/results/race.csv")
dst = sys.argv[2] if len(sys.argv) > 2 else os.path.join(repo, "docs/img/peers/race.png")

with open(src) as f:
    rows = list(csv.DictReader(f))
if not rows:
    sys.exit(f"plot.py: no rows in {src}")
labels = [r["label"] for r in rows]
ms = [float(r["ms_per_step"]) for r in rows]
acc = [100 * float(r["accuracy"]) for r in rows]
plain = next((float(r["ms_per_step"]) for r in rows if r["mode"] == "plain"), None)
colors = ["#777777" if r["mode"] == "plain" else "#d62728" if r["mode"] == "torch-powersgd"
          else "#1f77b4" for r in rows]

fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
y = range(len(rows))
a1.barh(y, ms, color=colors)
a1.set_yticks(list(y), labels)
a1.invert_yaxis()
a1.set_xlabel("time per step (ms), lower is better")
for i, v in enumerate(ms):
    note = f"{v:.0f} ms" + (f"  ({plain / v:.2f}x)" if plain else "")
    a1.text(v, i, " " + note, va="center", fontsize=8)
a1.set_xlim(0, max(ms) * 1.35)
a2.barh(y, acc, color=colors)
a2.set_yticks(list(y), [""] * len(rows))
a2.invert_yaxis()
a2.set_xlabel("final test accuracy (%)")
lo = max(0.0, min(acc) - 10)
a2.set_xlim(lo, 100)
for i, v in enumerate(acc):
    a2.text(v, i, f" {v:.1f}", va="center", fontsize=8)
r0 = rows[0]
fig.suptitle(f"DDP race, {r0['ranks']} simulated hosts at 1 Gbit/s: MLP of "
             f"{int(r0['params']) / 1e6:.1f}M parameters, {r0['steps']} steps "
             f"(mean over the last {r0['timed']})", fontsize=10)
fig.tight_layout()
os.makedirs(os.path.dirname(dst), exist_ok=True)
fig.savefig(dst, dpi=90)
print(f"plot.py: wrote {dst} ({os.path.getsize(dst)} bytes)")
