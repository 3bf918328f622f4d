#!/usr/bin/python3
"""Plots of bench/lgreco/run.py's results: bytes per step, training loss, and the per-layer
choices over time.

    /usr/bin/python3 bench/lgreco/plot.py bench/lgreco/results

writes bytes.png, loss.png and choices.png next to the CSV files (needs python3-matplotlib).
"""
import csv
import os
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PARAM = {"powersgd": "rank", "topk": "density", "qsgd": "bits"}


def read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def param_of(codec_text):
    name = codec_text.split(":")[0]
    m = re.search(PARAM.get(name, "?") + r"=([0-9.e+-]+)", codec_text)
    return float(m.group(1)) if m else float("nan")


def main(out):
    summary = {r["run"]: r for r in read(os.path.join(out, "summary.csv"))}
    curves = read(os.path.join(out, "curves.csv"))
    choices = read(os.path.join(out, "choices.csv"))
    codecs = [r.split("-")[0] for r in summary if r.endswith("-uniform")]

    fig, ax = plt.subplots(figsize=(6, 3.5))
    xs = range(len(codecs))
    uni = [float(summary[c + "-uniform"]["wire_bytes_per_step_after_first_plan"]) for c in codecs]
    lg = [float(summary[c + "-lgreco"]["wire_bytes_per_step_after_first_plan"]) for c in codecs]
    ax.bar([x - 0.2 for x in xs], uni, 0.4, label="uniform default")
    ax.bar([x + 0.2 for x in xs], lg, 0.4, label="L-GreCo (alpha = 1)")
    for x, u, l in zip(xs, uni, lg):
        ax.text(x + 0.2, l, f"{u / l:.2f}x", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs))
    ax.set_xticklabels(codecs)
    ax.set_yscale("log")
    ax.set_ylabel("wire bytes per step (per rank)")
    ax.set_title("after the first decision; dense: %.0f B" % float(summary["dense"]["dense_bytes_per_step"]),
                 fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "bytes.png"), dpi=120)

    fig, axes = plt.subplots(1, len(codecs), figsize=(4 * len(codecs), 3.2), sharey=True)
    for ax, c in zip(axes, codecs):
        for run in ("dense", c + "-uniform", c + "-lgreco"):
            pts = [(int(r["step"]), float(r["train_loss"])) for r in curves if r["run"] == run]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=run)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("training loss (batch mean)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "loss.png"), dpi=120)

    fig, axes = plt.subplots(1, len(codecs), figsize=(4 * len(codecs), 3.2))
    for ax, c in zip(axes, codecs):
        rows = [r for r in choices if r["run"] == c + "-lgreco"]
        for layer in dict.fromkeys(r["layer"] for r in rows):
            pts = [(int(r["step"]), param_of(r["codec"])) for r in rows if r["layer"] == layer]
            shape = next(r["shape"] for r in rows if r["layer"] == layer)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{layer} {shape}")
        ax.set_title(f"{c}: {PARAM[c]} per layer", fontsize=9)
        ax.set_xlabel("decision at step")
        if c == "topk":
            ax.set_yscale("log")
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "choices.png"), dpi=120)
    print(f"wrote {out}/bytes.png, loss.png, choices.png")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "results"))
