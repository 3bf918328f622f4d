#!/usr/bin/env bash
# When one rank dies mid-run, the job ends with an error within a bounded time instead of
# hanging (README.md here). 4 ranks of ckpt_train train for up to 100000 steps; in step 30
# rank 2, after computing its gradients, dies before its allreduce, so that the three others
# are blocked in a terse collective:
#   * kill:     raise(SIGKILL), with topk (allgather-based protocol) and with powersgd
#               (its low-rank protocol);
#   * exit:     _exit(1) without MPI_Finalize;
#   * kill, with --mca odls_base_sigkill_timeout 0 (the runtime's grace period, default 1 s).
# Each must make mpirun exit non-zero, by itself, before `timeout 120` would end it; no rank may
# report "done". Prints, for each, the time from the death (the rank prints a timestamp just
# before it dies) to mpirun's exit, with no threshold other than the hang bound.
#
# What ends the survivors is Open MPI's runtime, not an MPI error: terse's communicator has
# MPI_ERRORS_RETURN, but a collective waiting for a dead peer never returns (README.md).
#
# usage: test_rank_death.sh CKPT_TRAIN MPIRUN [MPIRUN_ARGS...]
set -u

# prog, mpirun, mpirun_args, tmp, fail, now, elapsed, launch, count, show
source "$(dirname "$0")/lib.sh" "$@"

np=4 victim=2 step=30 limit=120

# run_case NAME HOW CONFIG [MPIRUN_OPTIONS...]
run_case() {
    local name=$1 how=$2 cfg=$3
    shift 3
    local saved=("${mpirun_args[@]}")
    mpirun_args+=("$@")
    launch $limit "$name" $np --config "$cfg; min_size=0" --steps 100000 \
        --die-at $step --die-rank $victim --die-how "$how"
    mpirun_args=("${saved[@]}")
    local died
    died=$(sed -n "s/^rank $victim: .* at step $step at \\([0-9.]*\\)\$/\\1/p" "$tmp/$name.out")
    if [ "$hung" -eq 1 ]; then
        fail "$name: mpirun hung after rank $victim died ($how): ended by timeout $limit"
        show "$name"; return
    fi
    if [ -z "$died" ]; then
        fail "$name: rank $victim did not reach step $step (exit status $rc)"; show "$name"; return
    fi
    if [ "$rc" -eq 0 ]; then
        fail "$name: mpirun exited with status 0 although rank $victim died"; show "$name"; return
    fi
    if grep -q '^done' "$tmp/$name.out"; then
        fail "$name: a rank finished its run although rank $victim died"; return
    fi
    printf 'ok   %-9s %-40s rank %d of %d died in step %d; mpirun exit %3d %.2fs after the death (run %ss)\n' \
        "$name" "$cfg${*:+ $*}" $victim $np $step "$rc" \
        "$(elapsed "$died" "$ended")" "$took"
}

run_case kill      kill "compressor=topk:density=0.1; feedback=ef"
run_case kill-psgd kill "compressor=powersgd:rank=2; feedback=ef"
run_case exit      exit "compressor=topk:density=0.1; feedback=ef"
run_case kill-0s   kill "compressor=topk:density=0.1; feedback=ef" --mca odls_base_sigkill_timeout 0

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: a dead rank ends the job (Open MPI's runtime kills the others); no hang"
