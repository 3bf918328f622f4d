#!/usr/bin/env bash
# bench/cluster/matrix.sh — the standard matrix of the performance issue on the simulated
# cluster: 4 hosts (one rank each), each link at 1 Gbit/s and then 10 Gbit/s; every codec
# over sizes 1 MiB .. 256 MiB, each run with its own dense MPI_Allreduce baseline (so every
# speedup is a ratio taken within one run), plus the acceptance points at 100 MiB
# (powersgd on the resnet50 layer shapes, about 98 MiB), plus compressor=auto (topk 1 %
# with ef; 9 warm-up calls: its 8 trials and the dense call that flushes ef's error) at
# each rate and on plain loopback (4 ranks on this machine, shared memory, no namespaces).
#
#   bench/cluster/matrix.sh [--rates 1gbit,10gbit] [--sizes 1M:256M] [--iters 3] [--out DIR]
#                           [--codecs NAME,...]
#
# --codecs reruns only the named rows (fp16 onebit topk randk dgc qsgd4 qsgd8 powersgd auto;
# auto includes its loopback sweep) into DIR, keeping the other rows' files there: for a
# change that touches some codecs only. The report then mixes runs: say so where it is quoted.
#
# Needs root, like ./dev.sh cluster. Writes DIR/RATE/NAME.json (terse-bench --json) and the
# raw outputs, then runs bench/cluster/report.py, which writes DIR/matrix.csv, the PNG plots
# in docs/img/ and the tables of docs/performance.md. DIR defaults to
# bench/cluster/results/matrix.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here"

rates=1gbit,10gbit sizes=1M:256M iters=3 out=bench/cluster/results/matrix only=
while (( $# )); do
    case $1 in
        --rates) rates=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --codecs) only=,$2,; shift 2 ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "matrix.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

# name | configuration (error feedback where the method is meant to run with it)
codecs=(
    "fp16|compressor=fp16"
    "onebit|compressor=onebit;feedback=ef"
    "topk|compressor=topk:density=0.01;feedback=ef"
    "randk|compressor=randk:density=0.01;feedback=ef"
    "dgc|compressor=dgc:density=0.001"
    "qsgd4|compressor=qsgd:bits=4"
    "qsgd8|compressor=qsgd:bits=8"
    "powersgd|compressor=powersgd:rank=4;feedback=ef"
)
# the simulated hosts share this machine's cores: idle ranks must yield them
export TERSE_CLUSTER_MPIRUN_ARGS="--mca mpi_yield_when_idle 1"

run() {   # run RATE LABEL WARMUP ARGS...: one terse-bench run on the cluster
    local rate=$1 label=$2 warmup=$3; shift 3
    echo "== $rate $label" >&2
    ./dev.sh cluster --hosts 4 --rate "$rate" -- "$@" --baseline --iters "$iters" --warmup "$warmup" \
        --json "$out/$rate/$label.json" >"$out/$rate/$label.txt" 2>&1 ||
        echo "matrix.sh: $rate $label failed (see $out/$rate/$label.txt)" >&2
}
auto_cfg="compressor=auto:with=topk,density=0.01;feedback=ef;min_size=0"
wanted() { [[ -z $only || $only == *,$1,* ]]; }

IFS=, read -r -a rate_list <<<"$rates"
for rate in "${rate_list[@]}"; do
    mkdir -p "$out/$rate"
    for c in "${codecs[@]}"; do
        name=${c%%|*} cfg=${c#*|}
        wanted "$name" || continue
        run "$rate" "sweep-$name" 1 --config "$cfg;min_size=0" --sizes "$sizes"
        if [[ $name == powersgd ]]; then
            run "$rate" "point-$name" 1 --config "$cfg;min_size=0" --shape resnet50
        else
            run "$rate" "point-$name" 1 --config "$cfg;min_size=0" --sizes 100M:100M
        fi
    done
    if wanted auto; then run "$rate" sweep-auto 9 --config "$auto_cfg" --sizes "$sizes"; fi
done
if wanted auto; then
    mkdir -p "$out/loopback"
    echo "== loopback sweep-auto" >&2
    OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe --bind-to none \
        --mca mpi_yield_when_idle 1 -np 4 build/bench/terse-bench --config "$auto_cfg" --sizes "$sizes" \
        --baseline --iters "$iters" --warmup 9 --json "$out/loopback/sweep-auto.json" \
        >"$out/loopback/sweep-auto.txt" 2>&1 || echo "matrix.sh: loopback sweep-auto failed" >&2
fi
/usr/bin/python3 bench/cluster/report.py --results "$out"
