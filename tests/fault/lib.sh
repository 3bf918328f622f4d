# shellcheck shell=bash disable=SC2154,SC2034
# lib.sh — what the fault tests share; sourced by test_*.sh with their arguments
#   CKPT_TRAIN MPIRUN [MPIRUN_ARGS...]
# which it takes as prog, mpirun and mpirun_args. On top of ../lib.sh ($tmp, fail) it
# defines:
#   now                      seconds since the epoch, with nanoseconds
#   elapsed T0 T1            T1 - T0 in seconds, 2 decimals
#   launch LIMIT NAME NP ARGS...
#                            ckpt_train on NP ranks under `timeout LIMIT` (then SIGKILL 5 s
#                            later): stdout in $tmp/NAME.out, stderr in $tmp/NAME.err, the
#                            exit status in $rc, the wall time in $took, the time it ended
#                            in $ended (as `now` prints it), and hung=1 if
#                            timeout had to end it (hung=0 otherwise)
#   count GLOB...            how many of the arguments name existing files (for globs)
#   show NAME                the last lines of a run's output, indented, for a failure report

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"
take_launcher "$@"

# Open MPI refuses root without these (mpirun_args may carry --allow-run-as-root already).
if [ "$(id -u)" -eq 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

launch() {
    local limit=$1 name=$2 np=$3
    shift 3
    local t0
    t0=$(now)
    timeout -k 5 "$limit" "$mpirun" "${mpirun_args[@]}" -np "$np" "$prog" "$@" \
        >"$tmp/$name.out" 2>"$tmp/$name.err"
    rc=$?
    ended=$(now)
    took=$(elapsed "$t0" "$ended")
    hung=$(awk -v t="$took" -v l="$limit" 'BEGIN { print (t + 0 >= l - 0.5) ? 1 : 0 }')
}

count() {
    local n=0 f
    for f in "$@"; do [ -e "$f" ] && n=$((n + 1)); done
    echo $n
}

show() {
    tail -n 8 "$tmp/$1.out" "$tmp/$1.err" 2>/dev/null | sed 's/^/    /'
}
