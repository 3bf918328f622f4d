#!/usr/bin/env bash
# A run killed after step N and resumed from its checkpoint ends with parameters bitwise equal
# to the uninterrupted run, for every codec and feedback method (README.md here). For each
# configuration, on 3 ranks:
#   (a) ckpt_train, 40 steps, uninterrupted;
#   (b) the same with a checkpoint every 10 steps, and one rank (a different one per line)
#       SIGKILLs itself in step 27, after its gradient, before its allreduce: mpirun must exit
#       non-zero within `timeout 120` (a hang fails), leaving the step-20 checkpoint and no
#       *.tmp file;
#   (c) --resume from that checkpoint to step 40;
# then every rank's final parameters of (c) must be byte for byte those of (a), and (a)'s
# the same on every rank, and the layers' final codecs (L-GreCo's plans), calls and step
# counters those of (a). A control run (topk, ef, resumed from (b)'s checkpoint without
# terse's state) must end elsewhere, so that the comparison is known to see the state.
# One line per configuration; exit status 1 if any check fails.
#
# usage: test_resume.sh CKPT_TRAIN MPIRUN [MPIRUN_ARGS...]
set -u

# prog, mpirun, mpirun_args, tmp, fail, now, elapsed, launch, count, show
source "$(dirname "$0")/lib.sh" "$@"

np=3 steps=40 every=10 die=27 saved=20
control="compressor=topk:density=0.1; feedback=ef"
layers='min_size=0' # every layer compresses, the 10-vector included

# Every codec with the feedback it is meant to run with (docs/configuration.md): dgc owns its
# memory (feedback=none); the EF21 family and EControl on topk; dgc's warm-up (30 steps) and
# L-GreCo's plans (a decision every 7 steps, a 3-step window: the step-20 checkpoint falls
# inside a window) are driven by terse_step_end and so must resume too; qsgd (stochastic) and
# randk draw random numbers.
configs=(
    "compressor=none"
    "compressor=fp16; feedback=ef"
    "compressor=bf16"
    "compressor=topk:density=0.1; feedback=ef"
    "compressor=topk:density=0.1; feedback=ef21"
    "compressor=topk:density=0.1; feedback=ef21sgdm:eta=0.1"
    "compressor=topk:density=0.1; feedback=econtrol:eta=0.1"
    "compressor=randk:density=0.1; feedback=ef"
    "compressor=dgc:density=0.05,sample=0.5,warmup=30"
    "compressor=onebit; feedback=ef"
    "compressor=qsgd:bits=4; feedback=ef"
    "compressor=powersgd:rank=2; feedback=ef"
    "compressor=topk:density=0.1; feedback=ef; adapt=lgreco:period=7,window=3"
    "compressor=powersgd:rank=2; feedback=ef; adapt=lgreco:period=7,window=3"
)

# same_files A B: every rank's A.rank<R> equals B.rank<R>; prints the ranks that differ
same_files() {
    local r differ=""
    for ((r = 0; r < np; r++)); do
        cmp -s "$1.rank$r" "$2.rank$r" || differ="$differ $r"
    done
    echo "$differ"
}

i=0
for cfg in "${configs[@]}"; do
    config="$cfg; $layers"
    name=c$i
    victim=$((i % np))
    ck=$tmp/$name/ckpt/ck
    mkdir -p "$tmp/$name/ckpt"
    before=$failures
    i=$((i + 1))

    launch 120 "$name-a" $np --config "$config" --steps $steps --out "$tmp/$name/a"
    if [ "$rc" -ne 0 ]; then
        fail "$cfg: uninterrupted run: exit status $rc"; show "$name-a"; continue
    fi
    for ((r = 1; r < np; r++)); do
        cmp -s "$tmp/$name/a.rank0" "$tmp/$name/a.rank$r" ||
            fail "$cfg: uninterrupted run: rank $r's parameters differ from rank 0's"
    done

    # the runtime's grace period before it kills the survivors (1 s by default, which
    # test_rank_death.sh measures) is set to 0 here: about 1 s saved per configuration
    saved_args=("${mpirun_args[@]}")
    mpirun_args+=(--mca odls_base_sigkill_timeout 0)
    launch 120 "$name-b" $np --config "$config" --steps $steps --checkpoint "$ck" \
        --save-every $every --die-at $die --die-rank $victim
    mpirun_args=("${saved_args[@]}")
    die_rc=$rc die_took=$took
    if [ "$hung" -eq 1 ]; then
        fail "$cfg: the run in which rank $victim died hung: killed by timeout 120 (status $rc)"
        show "$name-b"; continue
    fi
    if [ "$rc" -eq 0 ]; then
        fail "$cfg: the run in which rank $victim died exited with status 0"; show "$name-b"; continue
    fi
    grep -q "rank $victim: killing itself at step $die" "$tmp/$name-b.out" ||
        { fail "$cfg: rank $victim did not reach step $die"; show "$name-b"; continue; }
    for ((r = 0; r < np; r++)); do
        [ -f "$ck.rank$r" ] || fail "$cfg: no terse state file $ck.rank$r after the kill"
        [ -f "$ck.params-$saved.rank$r" ] ||
            fail "$cfg: no parameter file $ck.params-$saved.rank$r after the kill"
    done
    left=""
    for f in "$tmp/$name/ckpt"/*; do
        case ${f##*/} in
        ck.rank[0-9] | ck.params-$saved.rank[0-9]) ;;
        *) left="$left ${f##*/}";;
        esac
    done
    [ -z "$left" ] || fail "$cfg: unexpected files beside the checkpoint:$left"

    if [ "$cfg" = "$control" ]; then
        # a resume without terse's state (the control) must not be the same run; it runs
        # before (c), which moves the checkpoint on to steps 30 and 40, and does not save
        launch 120 "$name-x" $np --config "$config" --steps $steps --checkpoint "$ck" \
            --save-every 1000 --resume --forget-state --out "$tmp/$name/x"
        if [ "$rc" -ne 0 ]; then
            fail "control: resumed run without terse's state: exit status $rc"; show "$name-x"
        elif [ -z "$(same_files "$tmp/$name/a" "$tmp/$name/x")" ]; then
            fail "control: $cfg resumed without terse's error-feedback state ended bitwise" \
                 "equal too; the comparison cannot see the state"
        else
            echo "ok   control: $cfg resumed without terse's state ends elsewhere, as it must"
        fi
    fi
    launch 120 "$name-c" $np --config "$config" --steps $steps --checkpoint "$ck" \
        --save-every $every --resume --out "$tmp/$name/c"
    if [ "$rc" -ne 0 ]; then
        fail "$cfg: resumed run: exit status $rc"; show "$name-c"; continue
    fi
    grep -q "^resumed at step $saved\$" "$tmp/$name-c.out" ||
        { fail "$cfg: resumed run did not start at step $saved"; show "$name-c"; continue; }
    differ=$(same_files "$tmp/$name/a" "$tmp/$name/c")
    [ -z "$differ" ] ||
        fail "$cfg: resumed run's parameters differ from the uninterrupted run's on rank(s)$differ"
    # the codecs in force at the end (L-GreCo's plans), calls and step counters: the same
    [ "$(grep '^layer' "$tmp/$name-a.out")" = "$(grep '^layer' "$tmp/$name-c.out")" ] ||
        { fail "$cfg: the layers' final state differs:"
          diff <(grep '^layer' "$tmp/$name-a.out") <(grep '^layer' "$tmp/$name-c.out"); }
    case $cfg in
    *lgreco*) grep -q "plan_version 5\$" "$tmp/$name-c.out" ||
        fail "$cfg: L-GreCo did not take its 5 decisions in 40 steps";;
    esac
    [ "$failures" -eq "$before" ] || continue
    printf 'ok   %-72s rank %d died in step %d: mpirun exit %d (run %ss); resumed at %d: %d ranks bitwise equal\n' \
        "$cfg" "$victim" "$die" "$die_rc" "$die_took" "$saved" "$np"
done

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: ${#configs[@]} configurations, $np ranks, killed at step $die, resumed at $saved, bitwise equal"
