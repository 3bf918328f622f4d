# lib.sh — what the examples' end-to-end tests share; sourced by test_*.sh, which then set
#   prog          the program under test (its basename starts its error messages)
#   mpirun        the launcher, and the array mpirun_args of its options
# (take_launcher). On top of ../lib.sh ($tmp, fail, take_launcher) it defines:
#   run NAME NP ARGS...                runs the program on NP ranks: stdout in $tmp/NAME.out,
#                                      stderr in $tmp/NAME.err, the exit status in $rc
#   less A B                           A < B, for two numbers in any notation awk reads
#   expect_usage_error NAME NP MESSAGE_PART ARGS...
#                                      exit status 2, the message once on stderr (a line
#                                      "PROG: ..."), no report lines. NP 0 runs the program
#                                      alone, without mpirun (a launch costs seconds on a
#                                      loaded machine).

source "$(dirname "${BASH_SOURCE[0]}")/../lib.sh"

run() {
    local name=$1 np=$2
    shift 2
    "$mpirun" "${mpirun_args[@]}" -np "$np" "$prog" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
    rc=$?
}

less() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a + 0 < b + 0) }'; }

expect_usage_error() {
    local name=$1 np=$2 want=$3
    shift 3
    if [ "$np" -eq 0 ]; then
        "$prog" "$@" >"$tmp/$name.out" 2>"$tmp/$name.err"
        rc=$?
    else
        run "$name" "$np" "$@"
    fi
    [ "$rc" -eq 2 ] || fail "$name: exit status $rc, want 2"
    local n
    n=$(grep "^${prog##*/}: " "$tmp/$name.err" | grep -cF -- "$want")
    [ "$n" -eq 1 ] || { fail "$name: '$want' printed $n times, want once:"; cat "$tmp/$name.err"; }
    ! grep -q '^iter' "$tmp/$name.out" || fail "$name: report lines after a usage error"
}
