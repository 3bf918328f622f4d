#!/usr/bin/env bash
# bench/peers/run.sh: race terse's DDP hook against plain DDP and PyTorch's powerSGD_hook on
# the simulated cluster (tools/cluster.sh via ./dev.sh cluster: 4 hosts, one rank each,
# 1 Gbit/s links), one run per mode, one CSV row per run; then the plot.
#
#   bench/peers/run.sh [--rate 1gbit] [--hosts 4] [--steps 80] [--warmup 15] [--start 10]
#                      [--out bench/peers/results/race.csv]
#
# Needs root (network namespaces). Every run tears its cluster down (cluster.sh's trap).
# The log of every run goes to the CSV's name with .log.
#
# All modes run DDP with one gradient bucket (race.py --bucket-mb 64): torch 1.13's
# powerSGD_hook over gloo aborts with several buckets (gloo enforce
# "op.preamble.length <= op.nbytes": the buckets' chained allreduces are issued from
# different threads and reach the ranks in different orders).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

rate=1gbit hosts=4 steps=80 warmup=15 start=10 out=bench/peers/results/race.csv
while [[ $# -gt 0 ]]; do
    case $1 in
        --rate) rate=$2; shift 2 ;;
        --hosts) hosts=$2; shift 2 ;;
        --steps) steps=$2; shift 2 ;;
        --warmup) warmup=$2; shift 2 ;;
        --start) start=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
done
(( warmup >= start )) || { echo "run.sh: --warmup must be >= --start" >&2; exit 2; }

mkdir -p "$(dirname "$out")"
log=${out%.csv}.log
: >"$out"
: >"$log"

# label | race.py arguments (the same seed, data, model and steps for all)
modes=(
    "plain DDP|--mode plain"
    "torch powerSGD_hook r=4|--mode torch-powersgd --rank 4 --start $start"
    "terse powersgd r=4|--mode terse --config compressor=powersgd:rank=4,start=$start;feedback=ef"
    "terse topk 1%|--mode terse --config compressor=topk:density=0.01;feedback=ef"
    "terse dgc 1%|--mode terse --momentum 0 --config compressor=dgc:density=0.01"
    "terse onebit|--mode terse --config compressor=onebit;feedback=ef"
    "terse none|--mode terse --config compressor=none"
)

for m in "${modes[@]}"; do
    label=${m%%|*}
    read -r -a margs <<<"${m#*|}"
    echo "==> $label ($rate, $hosts hosts)" | tee -a "$log"
    ./dev.sh cluster --hosts "$hosts" --rate "$rate" --bin bench/peers/rank.sh -- \
        "${margs[@]}" --label "$label" --steps "$steps" --warmup "$warmup" --csv "$out" \
        2>&1 | tee -a "$log" | grep '^race:\|rror' || true
    [[ -z $(ip netns list | grep '^terse-') ]] || echo "run.sh: namespaces left over!" >&2
done

# the documented plot from the default CSV; any other CSV gets its plot beside it
png=docs/img/peers/race.png
[[ $out -ef bench/peers/results/race.csv ]] || png=${out%.csv}.png
/usr/bin/python3 bench/peers/plot.py "$out" "$png"
