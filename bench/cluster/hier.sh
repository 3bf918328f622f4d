#!/usr/bin/env bash
# bench/cluster/hier.sh — hierarchical vs flat on the simulated cluster (issue: topology-aware
# allreduce). 4 hosts x 2 ranks per host at 1 Gbit/s; for each codec, hier=on and hier=off
# alternate REPEATS times (the machine is shared and noisy: compare runs taken side by side).
# Writes every run's output to bench/cluster/results/hier/ and prints a markdown table:
# time per call (median of the repeats), and the bytes that crossed the network per call,
# from the hosts' link counters (whole run / calls: start-up is included, well under 1%).
#
#   bench/cluster/hier.sh [REPEATS]        (default 3; needs root, like ./dev.sh cluster)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here"
repeats=${1:-3}
out=bench/cluster/results/hier
mkdir -p "$out"
iters=5 warmup=1
# name | terse-bench arguments
cases=(
    "topk|--config compressor=topk:density=0.01;feedback=ef --sizes 64M:64M"
    "onebit|--config compressor=onebit;feedback=ef --sizes 64M:64M"
    "powersgd|--config compressor=powersgd:rank=4;feedback=ef --shape 4096x4096"
)
# the simulated hosts share this machine's cores: idle ranks must yield them
export TERSE_CLUSTER_MPIRUN_ARGS="--mca mpi_yield_when_idle 1"

run_one() {   # run_one NAME MODE REP ARGS...
    local name=$1 mode=$2 rep=$3; shift 3
    local args=("$@")
    args[1]="${args[1]};hier=$mode"
    ./dev.sh cluster --hosts 4 --ranks-per-host 2 --rate 1gbit -- "${args[@]}" \
        --iters "$iters" --warmup "$warmup" >"$out/$name-$mode-$rep.txt" 2>&1
}

for c in "${cases[@]}"; do
    name=${c%%|*}
    read -r -a args <<<"${c#*|}"
    for (( rep = 1; rep <= repeats; rep++ )); do
        for mode in off on; do
            echo "== $name hier=$mode run $rep" >&2
            run_one "$name" "$mode" "$rep" "${args[@]}"
        done
    done
done

# the table: medians over the repeats
calls=$(( iters + warmup ))
echo "| codec | mode | time per call (ms), median of $repeats | runs (ms) | network bytes per call | terse's inter-node bytes per call |"
echo "|---|---|---|---|---|---|"
for c in "${cases[@]}"; do
    name=${c%%|*}
    for mode in off on; do
        times=() nets=() inter=
        for (( rep = 1; rep <= repeats; rep++ )); do
            f="$out/$name-$mode-$rep.txt"
            times+=("$(awk '/^ +[0-9]/ { printf "%.1f", $5 / 1000 }' "$f")")
            nets+=("$(awk '/all hosts sent/ { print $6 }' "$f")")
            inter=$(awk '/inter-node bytes per call/ { for (i = 1; i <= NF; i++) if ($i == "ranks:") print $(i + 1) }' "$f")
        done
        med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
        net=$(printf '%s\n' "${nets[@]}" | sort -n | awk -v c="$calls" '{ v[NR] = $1 } END { printf "%.0f", v[int((NR + 1) / 2)] / c }')
        label=$([[ $mode == on ]] && echo hierarchical || echo flat)
        echo "| $name | $label | $med | ${times[*]} | $net | $inter |"
    done
done
