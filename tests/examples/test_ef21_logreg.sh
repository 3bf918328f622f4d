#!/usr/bin/env bash
# ef21_logreg end to end on mushrooms, 4 ranks, TopK k = 1 (ALGORITHMS.md §4.1, §10.1):
#   * the output format: '#' lines, then exactly "iter <t> gradnorm2 <%.6e> bits <integer>"
#     at the report iterations asked for, and a closing '# done' line;
#   * bits: 8 x the bytes sent, EF21's first call uncompressed (4d bytes), then 4 + 8k = 12
#     bytes a call; EF14 (ef) sends 12 bytes from the first call on;
#   * behaviour: with factor 64, EF21 lowers |grad f|^2 by more than 100x in 300 iterations,
#     while EF14 with the same stepsize stalls at least 5x higher; EF21-W takes its stepsize
#     from L_AM, passes each rank its weight, and converges too;
#   * bad usage: exit status 2 and one message, from rank 0 only, for bad options, numbers,
#     files and configurations.
#
# usage: test_ef21_logreg.sh PROGRAM DEFAULT_DATA_DIR MPIRUN [MPIRUN_ARGS...]
# The data folder is $TERSE_DATA, or DEFAULT_DATA_DIR; without mushrooms.txt there the test is
# skipped (exit 77).
set -u

data=${TERSE_DATA:-$2}
if [ ! -f "$data/mushrooms.txt" ]; then
    echo "SKIP: $data/mushrooms.txt not found (set TERSE_DATA to the LibSVM data folder)"
    exit 77
fi
mushrooms=$data/mushrooms.txt

# tmp, fail, take_launcher, run, less, expect_usage_error
source "$(dirname "$0")/lib.sh"
take_launcher "$1" "${@:3}"

# The gradnorm2 column of report iteration T in file F.
gradnorm2() { awk -v t="$2" '$1 == "iter" && $2 == t { print $4 }' "$1"; }
bits() { awk -v t="$2" '$1 == "iter" && $2 == t { print $6 }' "$1"; }

report=0,1,10,100,300
common=(--data "$mushrooms" --compressor topk:k=1 --factor 64 --iters 300 --x0 zero
        --report "$report")

# ---- the output format ----------------------------------------------------------------------
check_format() {
    local name=$1 f=$tmp/$1.out
    [ "$rc" -eq 0 ] || { fail "$name: exit status $rc"; cat "$tmp/$name.err"; return; }
    local bad
    local int='(0|[1-9][0-9]*)'
    local line_re="^iter $int gradnorm2 [0-9]\\.[0-9]{6}e[+-][0-9]{2,3} bits $int\$"
    bad=$(grep -v '^#' "$f" | grep -Ev "$line_re")
    [ -z "$bad" ] || fail "$name: lines not in the format 'iter <t> gradnorm2 <g> bits <b>': $bad"
    local iters
    iters=$(awk '$1 == "iter" { printf "%s%s", sep, $2; sep = "," }' "$f")
    [ "$iters" = "$report" ] || fail "$name: reported iterations $iters, asked for $report"
    grep -q '^# done: 300 iterations' "$f" || fail "$name: no '# done: 300 iterations' line"
    local prev=""
    for t in ${report//,/ }; do
        local g
        g=$(gradnorm2 "$f" "$t")
        if [ -n "$prev" ] && ! less "$g" "$prev"; then
            fail "$name: gradnorm2 did not decrease at iteration $t ($prev -> $g)"
        fi
        prev=$g
    done
}

d=112 # mushrooms' features
run ef21 4 "${common[@]}" --feedback ef21
check_format ef21
grep -q "x $d features" "$tmp/ef21.out" || fail "ef21: the header does not give $d features"
grep -q 'L_QM sqrt(beta/theta))' "$tmp/ef21.out" || fail "ef21: the stepsize does not use L_QM"
for t in ${report//,/ }; do
    want=$(( t == 0 ? 0 : 8 * (4 * d + 12 * (t - 1)) ))
    got=$(bits "$tmp/ef21.out" "$t")
    [ "$got" = "$want" ] || fail "ef21: bits at iteration $t: $got, want $want"
done
g0=$(gradnorm2 "$tmp/ef21.out" 0)
g300=$(gradnorm2 "$tmp/ef21.out" 300)
less "$g300" "$(awk -v g="$g0" 'BEGIN { print g / 100 }')" ||
    fail "ef21: gradnorm2 went from $g0 to $g300 in 300 iterations, want a decrease by > 100x"

# ---- EF14 with the same stepsize ------------------------------------------------------------
run ef 4 "${common[@]}" --feedback ef
if [ "$rc" -ne 0 ]; then
    fail "ef: exit status $rc"
    cat "$tmp/ef.err"
else
    for t in ${report//,/ }; do
        got=$(bits "$tmp/ef.out" "$t")
        [ "$got" = "$((96 * t))" ] || fail "ef: bits at iteration $t: $got, want $((96 * t))"
    done
    ef300=$(gradnorm2 "$tmp/ef.out" 300)
    less "$(awk -v g="$g300" 'BEGIN { print 5 * g }')" "$ef300" ||
        fail "ef: EF14 reached gradnorm2 $ef300, EF21 $g300 with the same stepsize;" \
             "want EF14 >= 5x higher"
    gamma_ef21=$(grep -o 'gamma = .*' "$tmp/ef21.out")
    gamma_ef=$(grep -o 'gamma = .*' "$tmp/ef.out")
    [ "$gamma_ef21" = "$gamma_ef" ] ||
        fail "ef: stepsize '$gamma_ef' differs from EF21's '$gamma_ef21'"
fi

# ---- EF21-W ---------------------------------------------------------------------------------
run ef21w 4 "${common[@]}" --feedback ef21-w
check_format ef21w
grep -q 'L_AM sqrt(beta/theta))' "$tmp/ef21w.out" || fail "ef21-w: the stepsize does not use L_AM"
grep -q 'feedback=ef21:weight=0\.[0-9]' "$tmp/ef21w.out" ||
    fail "ef21-w: no weight in the configuration"
w300=$(gradnorm2 "$tmp/ef21w.out" 300)
less "$w300" "$(awk -v g="$g0" 'BEGIN { print g / 100 }')" ||
    fail "ef21-w: gradnorm2 went from $g0 to $w300 in 300 iterations, want a decrease by > 100x"

# ---- bad usage ------------------------------------------------------------------------------
# expect_usage_error (lib.sh). Two cases run on 2 ranks, to see that only rank 0 prints: one
# found before MPI starts, one found by terse.

expect_usage_error unknown 2 "unknown option '--bogus'" --data "$mushrooms" --bogus 1
expect_usage_error codec 2 "k=0" --data "$mushrooms" --compressor topk:k=0
expect_usage_error method 0 "unknown method 'efx'" --data "$mushrooms" --feedback efx
expect_usage_error nodata 0 "--data FILE is required" --iters 3
expect_usage_error missing 0 "cannot open it" --data "$tmp/no-such-file.txt"
expect_usage_error factor 0 "--factor '0'" --data "$mushrooms" --factor 0
expect_usage_error iters 0 "--iters 'ten'" --data "$mushrooms" --iters ten
expect_usage_error order 0 "--report '10,1'" --data "$mushrooms" --report 10,1
expect_usage_error beyond 0 "--report 20 is beyond --iters 5" --data "$mushrooms" --iters 5 \
    --report 1,20
expect_usage_error x0 0 "--x0 'ones'" --data "$mushrooms" --x0 ones
expect_usage_error weight 0 "ef21-w" --data "$mushrooms" --feedback ef21:weight=0.5

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed; the EF21 run printed:"
    cat "$tmp/ef21.out"
    exit 1
fi
echo "ok: ef21 $g0 -> $g300, ef $ef300, ef21-w $w300 (factor 64, 300 iterations, 4 ranks)"
