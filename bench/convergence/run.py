#!/usr/bin/python3
"""The EF21 convergence benchmark: examples/ef21_logreg over datasets x methods x factors.

    bench/convergence/run.py                      # the default grid (docs/convergence.md)
    bench/convergence/run.py --datasets mushrooms --factors 1,2,4,8,16,32,64,128,256 --iters 5000
    bench/convergence/run.py --acceptance         # the two acceptance checks of the doc

Each run is

    mpirun -np 20 --oversubscribe ef21_logreg --data DIR/DATASET.txt --compressor topk:k=1 \
        --feedback METHOD --factor F --iters T --x0 zero --report 0,1,2,5,E,2E,...,T

and its 'iter t gradnorm2 g bits b' lines go to RESULTS/DATASET.csv, one row per reported
iteration; RESULTS/final.csv has one row per run (the last and the smallest gradnorm2, the
exit status). A run that fails (EControl may leave the finite range: terse then stops it with
nonfinite=error) keeps the rows it printed and says so in final.csv.

Methods are ef, ef21, ef21-w, econtrol:eta=E; "econtrol:eta=alpha" is turned into
eta = k/d for the dataset (k = 1: 1/d), d read from the LibSVM file.

Paths: the binary is $TERSE_BUILD_DIR/examples/ef21_logreg (default build/, relative to the
repository root), or --bin; the data are in $TERSE_DATA (default ../shared/data/libsvm
relative to the repository root), or --data-dir. Debian's /usr/bin/python3, standard library
only. Runs are sequential: 20 oversubscribed ranks already fill a small machine.
"""
import argparse
import csv
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

DEFAULT_DATASETS = "mushrooms,phishing,a9a,w8a"
DEFAULT_METHODS = "ef,ef21,ef21-w,econtrol:eta=0.1,econtrol:eta=0.01,econtrol:eta=alpha"
DEFAULT_FACTORS = "1,4,16,64,256"

SERIES_FIELDS = ["dataset", "method", "factor", "gamma", "iter", "gradnorm2", "bits",
                 "paper_bits"]
FINAL_FIELDS = ["dataset", "method", "factor", "gamma", "alpha", "iters", "last_iter",
                "gradnorm2_last", "gradnorm2_min", "bits_last", "status", "seconds"]

ITER_RE = re.compile(r"^iter (\d+) gradnorm2 (\S+) bits (\d+)$")
GAMMA_RE = re.compile(r"gamma = .* = (\S+)$")
ALPHA_RE = re.compile(r"# stepsize: alpha (\S+) ")


def libsvm_dim(path):
    """The number of features of a LibSVM file: its largest feature index."""
    d = 0
    with open(path) as f:
        for line in f:
            for tok in line.split()[1:]:
                i = tok.find(":")
                if i > 0:
                    d = max(d, int(tok[:i]))
    return d


def report_list(iters, every):
    """0, 1, 2, 5, then every `every` iterations, and iters itself."""
    pts = {t for t in (0, 1, 2, 5) if t <= iters}
    pts.update(range(every, iters + 1, every))
    pts.add(iters)
    return sorted(pts)


def mpi_env():
    env = dict(os.environ)
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
    env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    return env


def run_one(args, data, method, factor, iters, report):
    """Runs ef21_logreg once. Returns (header lines, [(t, g, bits)], rc, stderr tail, s)."""
    cmd = ["mpirun", "-np", str(args.np), "--oversubscribe", args.bin,
           "--data", data, "--compressor", "topk:k=%d" % args.k, "--feedback", method,
           "--factor", repr(factor), "--iters", str(iters), "--x0", "zero",
           "--report", ",".join(str(t) for t in report)]
    t0 = time.time()
    try:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=args.timeout, env=mpi_env())
        out, err, rc = p.stdout, p.stderr, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err, rc = "timeout after %d s" % args.timeout, 124
    seconds = time.time() - t0
    header, rows = [], []
    for line in out.splitlines():
        m = ITER_RE.match(line)
        if m:
            rows.append((int(m.group(1)), float(m.group(2)), int(m.group(3))))
        elif line.startswith("#"):
            header.append(line)
    tail = " | ".join(l for l in err.strip().splitlines()[-2:])
    return cmd, header, rows, rc, tail, seconds


def header_value(header, regex):
    for line in header:
        m = regex.search(line)
        if m:
            return float(m.group(1))
    return float("nan")


def resolve_method(method, dim, k):
    if method == "econtrol:eta=alpha":
        return "econtrol:eta=%.6g" % (k / dim)
    return method


def sweep(args):
    datasets = args.datasets.split(",")
    methods = args.methods.split(",")
    factors = [float(f) for f in args.factors.split(",")]
    report = report_list(args.iters, args.every)
    os.makedirs(args.results, exist_ok=True)
    final_path = os.path.join(args.results, "final.csv")
    with open(final_path, "w", newline="") as ff:
        fw = csv.writer(ff)
        fw.writerow(FINAL_FIELDS)
        for ds in datasets:
            data = os.path.join(args.data_dir, ds + ".txt")
            dim = libsvm_dim(data)
            with open(os.path.join(args.results, ds + ".csv"), "w", newline="") as sf:
                sw = csv.writer(sf)
                sw.writerow(SERIES_FIELDS)
                for m in methods:
                    method = resolve_method(m, dim, args.k)
                    for f in factors:
                        cmd, header, rows, rc, tail, s = run_one(args, data, method, f,
                                                                 args.iters, report)
                        gamma = header_value(header, GAMMA_RE)
                        alpha = header_value(header, ALPHA_RE)
                        for t, g, b in rows:
                            sw.writerow([ds, method, "%g" % f, "%.6g" % gamma, t, "%.6e" % g,
                                         b, t * args.k * 32])
                        sf.flush()
                        status = "ok" if rc == 0 else "rc=%d: %s" % (rc, tail)
                        if rows:
                            last, gmin = rows[-1], min(r[1] for r in rows)
                            fw.writerow([ds, method, "%g" % f, "%.6g" % gamma, "%.6g" % alpha,
                                         args.iters, last[0], "%.6e" % last[1], "%.6e" % gmin,
                                         last[2], status, "%.1f" % s])
                        else:
                            fw.writerow([ds, method, "%g" % f, "%.6g" % gamma, "%.6g" % alpha,
                                         args.iters, "", "", "", "", status, "%.1f" % s])
                        ff.flush()
                        print("%-10s %-22s factor %-5g %5.1f s  %s  %s" % (
                            ds, method, f, s,
                            "last %.3e min %.3e" % (rows[-1][1], min(r[1] for r in rows))
                            if rows else "no rows", status), flush=True)


def acceptance(args):
    """The two acceptance checks of docs/convergence.md; raw output to acceptance.txt."""
    checks = [
        ("mushrooms", "ef21", 64, 10000, [1000, 10000], 10000, "<", 1e-9),
        ("mushrooms", "ef", 64, 10000, [1000, 10000], 10000, ">", 1e-4),
        ("phishing", "ef21", 16, 2000, list(range(100, 2001, 100)), 2000, "<", 1e-12),
        ("phishing", "ef", 16, 2000, list(range(100, 2001, 100)), 2000, ">", 1e-6),
    ]
    os.makedirs(args.results, exist_ok=True)
    failed = 0
    with open(os.path.join(args.results, "acceptance.txt"), "w") as out:
        for ds, method, factor, iters, report, at, op, bound in checks:
            data = os.path.join(args.data_dir, ds + ".txt")
            cmd, header, rows, rc, tail, s = run_one(args, data, method, factor, iters, report)
            shown = " ".join(os.path.relpath(c, ROOT) if c in (args.bin, data) else c
                             for c in cmd)
            out.write("$ " + shown + "\n")
            out.write("\n".join(h for h in header if "gamma" in h or "done" in h) + "\n")
            for t, g, b in rows:
                out.write("iter %d gradnorm2 %.6e bits %d\n" % (t, g, b))
            g = dict((t, g) for t, g, b in rows).get(at)
            if op == "<":
                ok = g is not None and g < bound
            else: # "stays above": every reported value, not only the last
                ok = g is not None and min(r[1] for r in rows) > bound
            failed += not ok
            verdict = "%s %s factor %g: gradnorm2 %s at iteration %d, min %s (want %s %g): " \
                "%s" % (
                ds, method, factor, "%.3e" % g if g is not None else "missing", at,
                "%.3e" % min(r[1] for r in rows) if rows else "missing",
                "last <" if op == "<" else "every reported >", bound, "PASS" if ok else "FAIL")
            out.write("# " + verdict + "\n\n")
            print(verdict, flush=True)
    return 1 if failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default=DEFAULT_DATASETS,
                    help="comma-separated LibSVM names (default %(default)s)")
    ap.add_argument("--methods", default=DEFAULT_METHODS,
                    help="comma-separated --feedback specs (default %(default)s)")
    ap.add_argument("--factors", default=DEFAULT_FACTORS,
                    help="comma-separated stepsize multipliers (default %(default)s)")
    ap.add_argument("--iters", type=int, default=2000, help="iterations per run (default 2000)")
    ap.add_argument("--every", type=int, default=50,
                    help="report every this many iterations, besides 0,1,2,5 (default 50)")
    ap.add_argument("--k", type=int, default=1, help="TopK k (default 1)")
    ap.add_argument("--np", type=int, default=20, help="ranks (default 20)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per run (default 600)")
    ap.add_argument("--bin", default=os.path.join(
        ROOT, os.environ.get("TERSE_BUILD_DIR", "build"), "examples", "ef21_logreg"),
        help="the ef21_logreg binary (default $TERSE_BUILD_DIR/examples/ef21_logreg)")
    ap.add_argument("--data-dir", default=os.environ.get(
        "TERSE_DATA", os.path.join(ROOT, "..", "shared", "data", "libsvm")),
        help="folder of the LibSVM files (default $TERSE_DATA or ../shared/data/libsvm)")
    ap.add_argument("--results", default=os.path.join(HERE, "results"),
                    help="output folder (default bench/convergence/results)")
    ap.add_argument("--acceptance", action="store_true",
                    help="run the two acceptance checks instead of the sweep")
    args = ap.parse_args()
    args.bin = os.path.abspath(os.path.join(ROOT, args.bin))
    args.data_dir = os.path.normpath(os.path.abspath(args.data_dir))
    if not os.access(args.bin, os.X_OK):
        sys.exit("run.py: %s is not an executable; build it (./dev.sh build) or give --bin"
                 % args.bin)
    if not os.path.isdir(args.data_dir):
        sys.exit("run.py: no data folder %s; set TERSE_DATA or give --data-dir" % args.data_dir)
    if args.acceptance:
        sys.exit(acceptance(args))
    sweep(args)


if __name__ == "__main__":
    main()
