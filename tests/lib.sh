# shellcheck shell=bash disable=SC2034
# lib.sh — what every shell test shares (tests/examples, tests/fault, tests/pmpi), sourced
# first. It makes $tmp, a fresh folder removed on exit, sets failures=0 and defines
#   fail MSG...                      prints "FAIL: MSG" and counts it in $failures
#   take_launcher PROG MPIRUN [MPIRUN_ARGS...]
#                                    sets prog, mpirun and the array mpirun_args from the
#                                    arguments meson passes a test script

tmp=$(mktemp -d "${TMPDIR:-/tmp}/terse-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0

fail() {
    echo "FAIL: $*"
    failures=$((failures + 1))
}

take_launcher() {
    prog=$1
    mpirun=$2
    shift 2
    mpirun_args=("$@")
}
