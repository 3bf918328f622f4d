#!/usr/bin/env bash
# hetero_lsq end to end, 4 ranks, d = 20, TopK k = 1, factor 8, 300 iterations, seed 1
# (ALGORITHMS.md §3.2, §4.1, §5; the numbers below were measured first, and the bounds leave
# a margin of 7x or more):
#   * the output format: '#' lines, then exactly
#     "iter <t> gradnorm2 <%.6e> dist2 <%.6e> bits <integer>" at the report iterations asked
#     for, and a closing '# done' line; the header's x* solves the normal equations
#     (|grad f(x*)|^2 < 1e-20) and the ranks' minimisers differ (zeta^2 > 1);
#   * bits: EF21's first call uncompressed (4d bytes), then 4 + 8k = 12 bytes a call; EF14
#     (ef) 12 bytes from the first call on;
#   * behaviour, with one stepsize for all: EF21 and EControl (eta = 0.05 = alpha) lower
#     |grad f|^2 by more than 1e4 in 300 iterations (measured: 65.7 -> 9.6e-6 and 2.9e-5),
#     while EF14 stays above 0.05 from iteration 100 on (measured: 0.38 at least); with
#     --hetero 0 (one common minimiser) EF14 converges too (measured: 15.4 -> 4.3e-6);
#   * bad usage: exit status 2 and one message, from rank 0 only.
#
# usage: test_hetero_lsq.sh PROGRAM MPIRUN [MPIRUN_ARGS...]
set -u

# tmp, fail, take_launcher, run, less, expect_usage_error
source "$(dirname "$0")/lib.sh"
take_launcher "$@"

# column COL of report iteration T in file F: gradnorm2 is column 4, dist2 6, bits 8
col() { awk -v t="$2" -v c="$3" '$1 == "iter" && $2 == t { print $c }' "$1"; }
times() { awk -v a="$1" -v b="$2" 'BEGIN { print a * b }'; }

report=0,1,10,100,150,200,250,300
common=(--compressor topk:k=1 --factor 8 --iters 300 --seed 1 --report "$report")

# ---- the output format ----------------------------------------------------------------------
check_format() {
    local name=$1 f=$tmp/$1.out
    [ "$rc" -eq 0 ] || { fail "$name: exit status $rc"; cat "$tmp/$name.err"; return 1; }
    local e='[0-9]\.[0-9]{6}e[+-][0-9]{2,3}' int='(0|[1-9][0-9]*)'
    local bad
    bad=$(grep -v '^#' "$f" | grep -Ev "^iter $int gradnorm2 $e dist2 $e bits $int\$")
    [ -z "$bad" ] || fail "$name: lines not in the format 'iter <t> gradnorm2 <g> dist2 <d>" \
                          "bits <b>': $bad"
    local iters
    iters=$(awk '$1 == "iter" { printf "%s%s", sep, $2; sep = "," }' "$f")
    [ "$iters" = "$report" ] || fail "$name: reported iterations $iters, asked for $report"
    grep -q '^# done: 300 iterations' "$f" || fail "$name: no '# done: 300 iterations' line"
    return 0
}

d=20 # the default --dim
run ef21 4 "${common[@]}" --feedback ef21
check_format ef21
head=$(grep '^# solution:' "$tmp/ef21.out")
gstar=$(sed -n 's/.*|grad f(x\*)|^2 \([^;]*\);.*/\1/p' <<<"$head")
zeta2=$(sed -n 's/.*zeta^2 = mean_i |grad f_i(x\*)|^2 = \(.*\)$/\1/p' <<<"$head")
xstar2=$(sed -n 's/.*|x\*|^2 \([^,]*\),.*/\1/p' <<<"$head")
{ [ -n "$gstar" ] && less "$gstar" 1e-20; } ||
    fail "ef21: |grad f(x*)|^2 '$gstar' in '$head', want < 1e-20"
{ [ -n "$zeta2" ] && less 1 "$zeta2"; } || fail "ef21: zeta^2 '$zeta2' in '$head', want > 1"
dist0=$(col "$tmp/ef21.out" 0 6)
awk -v a="$dist0" -v b="$xstar2" 'BEGIN { exit !(b > 0 && (a - b) ^ 2 < (1e-5 * b) ^ 2) }' ||
    fail "ef21: dist2 at iteration 0 is $dist0, want |x*|^2 = $xstar2 (x0 = 0)"
for t in ${report//,/ }; do
    want=$(( t == 0 ? 0 : 8 * (4 * d + 12 * (t - 1)) ))
    got=$(col "$tmp/ef21.out" "$t" 8)
    [ "$got" = "$want" ] || fail "ef21: bits at iteration $t: $got, want $want"
done
g0=$(col "$tmp/ef21.out" 0 4)
g300=$(col "$tmp/ef21.out" 300 4)
less "$g300" "$(times "$g0" 1e-4)" ||
    fail "ef21: gradnorm2 went from $g0 to $g300 in 300 iterations, want a decrease by > 1e4"
less "$(col "$tmp/ef21.out" 300 6)" "$(times "$dist0" 1e-4)" ||
    fail "ef21: dist2 went from $dist0 to $(col "$tmp/ef21.out" 300 6), want a decrease by > 1e4"
gamma=$(grep -o 'gamma = .*' "$tmp/ef21.out")

# ---- EControl, and EF14, with the same stepsize ---------------------------------------------
run econtrol 4 "${common[@]}" --feedback econtrol:eta=0.05
if check_format econtrol; then
    ec300=$(col "$tmp/econtrol.out" 300 4)
    less "$ec300" "$(times "$g0" 1e-4)" ||
        fail "econtrol: gradnorm2 went from $g0 to $ec300, want a decrease by > 1e4"
    [ "$(grep -o 'gamma = .*' "$tmp/econtrol.out")" = "$gamma" ] ||
        fail "econtrol: the stepsize differs from EF21's '$gamma'"
fi

run ef 4 "${common[@]}" --feedback ef
if check_format ef; then
    for t in ${report//,/ }; do
        got=$(col "$tmp/ef.out" "$t" 8)
        [ "$got" = "$((96 * t))" ] || fail "ef: bits at iteration $t: $got, want $((96 * t))"
    done
    for t in 100 150 200 250 300; do
        g=$(col "$tmp/ef.out" "$t" 4)
        less 0.05 "$g" || fail "ef: EF14 reached gradnorm2 $g at iteration $t; want it to" \
                               "stall above 0.05 on this heterogeneous problem"
    done
    ef300=$(col "$tmp/ef.out" 300 4)
    [ "$(grep -o 'gamma = .*' "$tmp/ef.out")" = "$gamma" ] ||
        fail "ef: the stepsize differs from EF21's '$gamma'"
fi

# ---- EF14 on identical minimisers -----------------------------------------------------------
run homog 4 "${common[@]}" --feedback ef --hetero 0
if check_format homog; then
    h0=$(col "$tmp/homog.out" 0 4)
    h300=$(col "$tmp/homog.out" 300 4)
    less "$h300" "$(times "$h0" 1e-4)" ||
        fail "homog: EF14 with --hetero 0 went from $h0 to $h300, want a decrease by > 1e4"
fi

# ---- bad usage ------------------------------------------------------------------------------
# expect_usage_error (lib.sh)

expect_usage_error unknown 2 "unknown option '--bogus'" --bogus 1
expect_usage_error codec 2 "k=0" --compressor topk:k=0
expect_usage_error rows 0 "--rows 10 is below --dim 20" --rows 10
expect_usage_error dim 0 "--dim '0'" --dim 0
expect_usage_error hetero 0 "--hetero '-1'" --hetero -1
expect_usage_error beyond 0 "--report 20 is beyond --iters 5" --iters 5 --report 1,20

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed; the EF21 run printed:"
    cat "$tmp/ef21.out"
    exit 1
fi
echo "ok: ef21 $g0 -> $g300, econtrol:eta=0.05 $ec300, ef $ef300 (stalls), ef --hetero 0" \
     "$h0 -> $h300 (factor 8, 300 iterations, 4 ranks)"
