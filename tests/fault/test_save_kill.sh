#!/usr/bin/env bash
# No checkpoint file is left half-written (README.md here). 3 ranks of ckpt_train save a
# checkpoint after every step (--save-every 1) with an extra 1M-element layer, so that each
# rank writes two 4 MB files a step (terse's state, its parameters; each fsynced) and spends
# much of its time saving. Five times:
#   * once the first checkpoint is on disk, wait a random 0.2 to 1.4 s and SIGKILL a random
#     rank from outside (by the pid it printed); mpirun must then exit non-zero within
#     `timeout 120`;
#   * ckpt_train --verify on the files left: every parameter file present and every rank's
#     terse file must be complete (header, length, checksum), and terse_state_load must load
#     one consistent step; never a truncated or corrupted file, never an accepted mix of
#     steps. Leftover *.tmp files are counted.
# Then once, deterministically, a rank dies inside terse_state_save after every rank has
# written its temporary file and before it renames its own (ckpt_train --die-in-save): the
# other ranks' files move to the new step, the dead rank's stays at the previous one with
# the new one complete as its .tmp, and the loader must roll it forward: step 3 on every rank.
#
# usage: test_save_kill.sh CKPT_TRAIN MPIRUN [MPIRUN_ARGS...]
set -u

# prog, mpirun, mpirun_args, tmp, fail, now, elapsed, launch, count, show
source "$(dirname "$0")/lib.sh" "$@"

np=3 kills=5 extra=1000000 limit=120
cfg="compressor=topk:density=0.01; feedback=ef; min_size=0"

# verify NAME CK: runs --verify, sets $vrc and prints a summary of the files in $summary
verify() {
    local name=$1 ck=$2
    launch $limit "$name" $np --config "$cfg" --extra $extra --checkpoint "$ck" --verify
    vrc=$rc
    local steps tmps
    steps=$(sed -n 's/^rank \([0-9]*\): terse file step \([0-9]*\).*/\1:\2/p' "$tmp/$name.out" | sort |
            sed 's/^[0-9]*://' | tr '\n' '/')
    tmps=$(count "$ck".*.tmp)
    params=$(count "$ck".params-*.rank[0-9] "$ck".params-*.rank[0-9][0-9])
    summary="terse files at steps ${steps%/}, $params parameter files, $tmps *.tmp"
}

# judge NAME: the verdict on a --verify run
judge() {
    local name=$1 what=$2
    case $vrc in
    0) echo "ok   $what: $summary; loaded step" \
            "$(sed -n 's/^rank 0: .*loaded step \([0-9]*\)$/\1/p' "$tmp/$name.out")";;
    3) fail "$what: $summary; load refused with TERSE_ERR_MISMATCH (files of different steps," \
            "not rolled forward from the .tmp)";;
    5) fail "$what: an incomplete checkpoint file: $summary"; grep -E 'INCOMPLETE|parameter file for' "$tmp/$name.out";;
    6) fail "$what: terse_state_load accepted files from different steps: $summary";;
    *) fail "$what: --verify exit status $vrc (a load error other than a mismatch): $summary"
       show "$name";;
    esac
}

for ((k = 1; k <= kills; k++)); do
    dir=$tmp/k$k
    mkdir -p "$dir"
    ck=$dir/ck
    out=$tmp/k$k-run.out
    t0=$(now)
    timeout -k 5 $limit "$mpirun" "${mpirun_args[@]}" -np $np "$prog" --config "$cfg" \
        --extra $extra --steps 1000000 --checkpoint "$ck" --save-every 1 >"$out" 2>"$tmp/k$k-run.err" &
    job=$!
    # the first checkpoint complete on every rank (at most 60 s)
    for ((w = 0; w < 600; w++)); do
        n=0
        for ((r = 0; r < np; r++)); do [ -f "$ck.rank$r" ] && n=$((n + 1)); done
        [ "$n" -eq $np ] && break
        kill -0 $job 2>/dev/null || break
        sleep 0.1
    done
    if [ "$n" -ne $np ]; then
        fail "kill $k: no first checkpoint within 60 s"; kill $job 2>/dev/null; wait $job; continue
    fi
    victim=$((RANDOM % np))
    delay=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", 0.2 + 1.2 * r / 32768 }')
    sleep "$delay"
    pid=$(sed -n "s/^rank $victim: pid \\([0-9]*\\)\$/\\1/p" "$out")
    if [ -z "$pid" ] || ! kill -KILL "$pid" 2>/dev/null; then
        fail "kill $k: could not kill rank $victim (pid '$pid')"; wait $job; continue
    fi
    killed=$(now)
    wait $job
    mrc=$?
    took=$(elapsed "$killed" "$(now)")
    if awk -v t="$(elapsed "$t0" "$(now)")" -v l=$limit 'BEGIN { exit !(t >= l - 0.5) }'; then
        fail "kill $k: mpirun hung after rank $victim was killed (timeout $limit)"; continue
    fi
    [ "$mrc" -ne 0 ] || fail "kill $k: mpirun exited with status 0 after rank $victim was killed"
    verify "k$k-verify" "$ck"
    judge "k$k-verify" "kill $k: rank $victim SIGKILLed ${delay}s after the first checkpoint, mpirun exit $mrc after ${took}s"
done

# ---- a death between the ranks' renames -----------------------------------------------------
dir=$tmp/rename
mkdir -p "$dir"
launch $limit rename-run $np --config "$cfg" --extra $extra --steps 4 --checkpoint "$dir/ck" --save-every 1 \
    --die-in-save 3 --die-rank 1
if [ "$hung" -eq 1 ] || [ "$rc" -eq 0 ] || ! grep -q 'killing itself in terse_state_save' "$tmp/rename-run.out"; then
    fail "rename: rank 1 did not die inside terse_state_save, or mpirun hung (status $rc)"
    show rename-run
else
    verify rename-verify "$dir/ck"
    judge rename-verify "death between the ranks' renames (rank 1, save of step 3)"
    grep -q '^rank 1: terse file step 2 .*loaded step 3$' "$tmp/rename-verify.out" ||
        fail "rename: rank 1's file is not at step 2, or the load did not roll it forward to step 3"
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: $kills kills during saves and one between the ranks' renames left only complete files"
