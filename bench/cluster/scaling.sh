#!/usr/bin/env bash
# bench/cluster/scaling.sh — how the protocols scale with the host count on the simulated
# cluster: 2, 4 and 8 hosts (one rank each) at 1 Gbit/s, 16 MiB and 64 MiB, dense
# MPI_Allreduce against topk (allgather: each rank receives every other rank's message, so
# its bytes grow with the hosts) and onebit (reduce-scatter + allgather: about twice the
# message whatever the count). Prints a markdown table of time per call and bytes each rank
# sent per call; the raw outputs go to bench/cluster/results/scaling/.
#
#   bench/cluster/scaling.sh [HOSTS...]     (default 2 4 8; needs root)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$here"
out=bench/cluster/results/scaling
mkdir -p "$out"
hosts=("${@:-2 4 8}")
read -r -a hosts <<<"${hosts[*]}"
export TERSE_CLUSTER_MPIRUN_ARGS="--mca mpi_yield_when_idle 1"
cases=("topk|compressor=topk:density=0.01;feedback=ef;min_size=0"
       "onebit|compressor=onebit;feedback=ef;min_size=0")
for h in "${hosts[@]}"; do
    for c in "${cases[@]}"; do
        name=${c%%|*}
        echo "== $h hosts $name" >&2
        ./dev.sh cluster --hosts "$h" --rate 1gbit -- --config "${c#*|}" --sizes 16M:64M --baseline \
            --iters 3 --warmup 1 --json "$out/$name-$h.json" >"$out/$name-$h.txt" 2>&1 ||
            echo "scaling.sh: $h hosts $name failed" >&2
    done
done
/usr/bin/python3 - "$out" "${hosts[@]}" <<'PY'
import json, sys
out, hosts = sys.argv[1], sys.argv[2:]
print("| hosts | size | dense (ms) | topk (ms) | topk sent/rank | onebit (ms) | onebit sent/rank |")
print("|---|---|---|---|---|---|---|")
for h in hosts:
    rows = {}
    for name in ("topk", "onebit"):
        try:
            data = json.load(open(f"{out}/{name}-{h}.json"))
        except (OSError, ValueError):
            continue
        for r in data:
            rows.setdefault(r["size"], {})["dense" if r["codec"] == "dense" else name] = r
    for size in sorted(rows):
        r = rows[size]
        def ms(k):
            return f"{r[k]['time_us'] / 1e3:.1f}" if k in r else "-"
        def sent(k):
            return f"{int(r[k]['sent']):,}" if k in r else "-"
        print(f"| {h} | {size >> 20} MiB | {ms('dense')} | {ms('topk')} | {sent('topk')} | "
              f"{ms('onebit')} | {sent('onebit')} |")
PY
