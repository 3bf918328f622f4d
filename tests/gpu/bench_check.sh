#!/bin/bash
# terse-bench on device buffers: --check (results agree on every rank, every call succeeds)
# for every codec over the host-staged MPI path at 2, 3 and 4 ranks (which may share one
# GPU), over NCCL at 1 rank, and the CUDA kernel benchmark once. Skipped (77) where
# terse-info finds no CUDA device.
#   bench_check.sh TERSE_BENCH TERSE_INFO HAVE_NCCL
set -u
bench=$1 info=$2 nccl=$3
if ! "$info" 2>/dev/null | grep -Eq 'devices: [1-9]'; then
    echo "SKIP gpu-bench-check: no CUDA device (terse-info: $("$info" 2>&1 | grep -m1 'CUDA:'))"
    exit 77
fi
mpirun=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
codecs=(none fp16 bf16 topk:density=0.01 randk:density=0.01 onebit qsgd:bits=4 qsgd:bits=8
        dgc:density=0.01 powersgd:rank=4)
fail=0
run() {
    if ! "$@" >/tmp/terse-gpu-bench.$$ 2>&1; then
        echo "FAILED: $*"
        tail -20 /tmp/terse-gpu-bench.$$
        fail=1
    else
        grep -v '^#' /tmp/terse-gpu-bench.$$ | tail -1
    fi
}
for np in 2 3 4; do
    for c in "${codecs[@]}"; do
        run "${mpirun[@]}" -np "$np" "$bench" --device cuda --check --compressor "$c" --sizes 1M:4M --iters 2 --warmup 1
    done
done
if [ "$nccl" = 1 ]; then
    for c in "${codecs[@]}"; do
        run "${mpirun[@]}" -np 1 "$bench" --device cuda --transport nccl --check --baseline --compressor "$c" \
            --sizes 1M:4M --iters 2 --warmup 1
    done
fi
run "$bench" --kernels --device cuda --sizes 1M:1M --iters 2 --warmup 1
rm -f /tmp/terse-gpu-bench.$$
exit $fail
