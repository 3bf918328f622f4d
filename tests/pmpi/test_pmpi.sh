#!/usr/bin/env bash
# The PMPI preload (docs/pmpi.md) under programs that know nothing of terse, run as
#     mpirun ... -np N env LD_PRELOAD=libterse_pmpi.so TERSE_...=... PROGRAM MODE [ITERS]
# The program checks its own results (pmpi_app.c and pmpi_mpi4py.py say what each mode
# expects) and prints "...: MODE ok: calls: large_float_sum=L other_allreduce=O"; this script
# checks that rank 0's summary line at MPI_Finalize agrees: "terse-pmpi: L compressed calls,
# O passed through", so the large float sums took the terse path and nothing else did.
#
#   c:       pmpi_app, 2 and 3 ranks: topk:density=0.01 + ef (lossy; on 3 ranks also
#            converging over 50 iterations), topk alone (the acceptance command: lossy), codec none (exact
#            rank-order sums), no preload (plain MPI), buffers that disagree across ranks
#            and a NaN (both summed by MPI instead), the restrictions
#            TERSE_PMPI_COMMS=none|world, TERSE_MIN_SIZE and TERSE_LOG=error|info, and bad
#            settings (a clear line on every rank and a failed run)
#   mpi4py:  pmpi_mpi4py.py under /usr/bin/python3: topk + ef on 2 ranks (lossy), codec
#            none on 3 (exact), and topk + ef with TERSE_PMPI_MAX_LAYERS=3 on 2 ranks (a fresh
#            array each call recycles one layer; all three converge over 50 iterations);
#            skipped (77) without mpi4py or numpy
#
# usage: test_pmpi.sh c|mpi4py LIBTERSE_PMPI PROGRAM MPIRUN [MPIRUN_ARGS...]
#        (PROGRAM is the script's path for mpi4py)
set -u

what=$1
lib=$2

# tmp, fail, take_launcher
source "$(dirname "$0")/../lib.sh"
take_launcher "${@:3}"

# the environment of the test is the one each run states, nothing inherited
unset TERSE_CONFIG TERSE_COMPRESSOR TERSE_FEEDBACK TERSE_ADAPT TERSE_MIN_SIZE TERSE_LOG \
      TERSE_PMPI_COMMS TERSE_PMPI_MAX_LAYERS

python=/usr/bin/python3
if [ "$what" = mpi4py ]; then
    if ! "$python" -c 'import mpi4py, numpy' 2>/dev/null; then
        echo "skipped: $python cannot import mpi4py and numpy"
        exit 77
    fi
    launch=("$python" "$prog")
    name=pmpi_mpi4py
else
    launch=("$prog")
    name=pmpi_app
fi

# run NAME NP PRELOAD(yes|no) [VAR=VALUE...] -- PROGRAM_ARGS...: stdout and stderr of every
# rank in $tmp/NAME.log, the exit status in $rc.
run() {
    local id=$1 np=$2 preload=$3
    shift 3
    local vars=()
    while [ "$1" != -- ]; do
        vars+=("$1")
        shift
    done
    shift
    [ "$preload" = yes ] && vars=("LD_PRELOAD=$lib" "${vars[@]}")
    "$mpirun" "${mpirun_args[@]}" -np "$np" env "${vars[@]}" "${launch[@]}" "$@" \
        >"$tmp/$id.log" 2>&1
    rc=$?
}

# expect_ok ID MODE: the program passed, and its call counts in $large and $other.
expect_ok() {
    local id=$1 mode=$2 line
    line=$(grep "^$name: $mode ok: calls:" "$tmp/$id.log")
    if [ "$rc" -ne 0 ] || [ -z "$line" ]; then
        fail "$id: exit status $rc, no '$name: $mode ok' line; the run printed:"
        cat "$tmp/$id.log"
        return 1
    fi
    large=$(sed -n 's/.*large_float_sum=\([0-9]*\).*/\1/p' <<<"$line")
    other=$(sed -n 's/.*other_allreduce=\([0-9]*\).*/\1/p' <<<"$line")
    return 0
}

# expect_summary ID COMPRESSED PASSED [FELL_BACK]: rank 0's one summary line says so.
expect_summary() {
    local id=$1 comp=$2 pass=$3 back=${4:-0} lines want
    lines=$(grep -c '^terse-pmpi: [0-9]* compressed calls' "$tmp/$id.log")
    [ "$lines" -eq 1 ] || { fail "$id: $lines summary lines, want 1 (rank 0's)"; return; }
    want="terse-pmpi: $comp compressed calls, $pass passed through"
    [ "$back" -gt 0 ] && want="$want, $back summed by MPI instead (mismatched layers or NaN/Inf)"
    grep -q "^$want\(;\|\$\)" "$tmp/$id.log" ||
        fail "$id: want '$want', got '$(grep '^terse-pmpi: [0-9]* compressed' "$tmp/$id.log")'"
}

topk=(TERSE_COMPRESSOR=topk:density=0.01 TERSE_FEEDBACK=ef)

if [ "$what" = c ]; then
    # ---- compressed: every large float sum through terse, everything else exact -------------
    run lossy2 2 yes "${topk[@]}" -- lossy 5
    expect_ok lossy2 lossy && expect_summary lossy2 "$large" "$other"
    run ef3 3 yes "${topk[@]}" TERSE_LOG=info -- ef 50
    if expect_ok ef3 ef; then
        expect_summary ef3 "$large" "$other"
        # one layer per (communicator, buffer, count): A and R share a count, not a layer
        for l in "MPI_COMM_WORLD/100003#0: 100003 floats, 50 calls" \
                 "MPI_COMM_WORLD/100003#1: 100003 floats, 50 calls" \
                 "MPI_COMM_WORLD/65536#2: 65536 floats, 50 calls"; do
            grep -q "^terse-pmpi:   layer $l, codec topk:density=0.01, feedback ef," \
                "$tmp/ef3.log" || fail "ef3: no per-layer line 'layer $l, codec topk...'"
        done
        grep -q "^terse-pmpi: compressing float MPI_SUM allreduces of >= 65536 elements on MPI_COMM_WORLD (3 ranks) with compressor=topk:density=0.01; feedback=ef;" \
            "$tmp/ef3.log" || fail "ef3: no info line for MPI_COMM_WORLD"
    fi

    # the acceptance command: topk alone (feedback=none), as a user would first try it
    run accept 3 yes TERSE_COMPRESSOR=topk:density=0.01 -- lossy 3
    expect_ok accept lossy && expect_summary accept "$large" "$other"

    # ---- codec none: the terse path, exact (the rank-order sum) --------------------------
    for np in 2 3; do
        run exact$np "$np" yes TERSE_COMPRESSOR=none TERSE_FEEDBACK=ef -- exact 3
        expect_ok exact$np exact && expect_summary exact$np "$large" "$other"
    done

    # ---- no preload: the program is right on its own ---------------------------------------
    run plain 2 no -- plain 2
    expect_ok plain plain
    ! grep -q '^terse-pmpi' "$tmp/plain.log" || fail "plain: terse-pmpi lines without the preload"

    # ---- buffers that disagree across ranks, then a NaN: summed by MPI (one warning for the
    # mismatch, none for the NaN), compressed again in between ----------------------------
    run fallback 3 yes "${topk[@]}" -- fallback
    if expect_ok fallback fallback; then
        expect_summary fallback 2 "$other" 2
        n=$(grep -c "^terse-pmpi: MPI_COMM_WORLD: the ranks' buffers map to different layers" "$tmp/fallback.log")
        [ "$n" -eq 1 ] || fail "fallback: $n warnings, want 1 (rank 0's)"
    fi

    # ---- restricting it ----------------------------------------------------------------------
    run comms_none 2 yes "${topk[@]}" TERSE_PMPI_COMMS=none -- plain 2
    expect_ok comms_none plain && expect_summary comms_none 0 $((large + other))
    # 2 ranks: MPI's sum of two floats is the rank-order sum, so "exact" holds for D as well
    run comms_world 2 yes TERSE_COMPRESSOR=none TERSE_PMPI_COMMS=world -- exact 2
    expect_ok comms_world exact && expect_summary comms_world 6 $((other + 2))
    run min_size 2 yes "${topk[@]}" TERSE_MIN_SIZE=100004 TERSE_LOG=error -- plain 2
    expect_ok min_size plain
    ! grep -q '^terse-pmpi' "$tmp/min_size.log" || fail "min_size: terse-pmpi lines with TERSE_LOG=error"

    # ---- bad settings: a clear line, and the run fails ---------------------------------------
    # Every rank that reaches the call prints its line; MPI_ERRORS_ARE_FATAL then ends the run,
    # which may stop the other rank before it gets there: one line at least.
    run bogus 2 yes TERSE_COMPRESSOR=bogus -- lossy 2
    [ "$rc" -ne 0 ] || fail "bogus: exit status 0 with TERSE_COMPRESSOR=bogus"
    n=$(grep "^terse-pmpi: rank [01]: MPI_Allreduce of 100003 floats on MPI_COMM_WORLD: " "$tmp/bogus.log" |
        grep -c "unknown method 'bogus'")
    [ "$n" -ge 1 ] || { fail "bogus: no line naming 'bogus':"; cat "$tmp/bogus.log"; }
    run bad_min 2 yes TERSE_MIN_SIZE=abc -- plain 2
    [ "$rc" -ne 0 ] || fail "bad_min: exit status 0 with TERSE_MIN_SIZE=abc"
    n=$(grep -c "^terse-pmpi: rank [01]: environment TERSE_MIN_SIZE='abc' is not accepted; accepted: an integer in \[0, " "$tmp/bad_min.log")
    [ "$n" -ge 1 ] || { fail "bad_min: no line naming TERSE_MIN_SIZE='abc':"; cat "$tmp/bad_min.log"; }
else
    # expect_counts ID: the large sums were compressed, or (a fresh result array that maps to
    # different layers on different ranks) summed by MPI and counted as such
    expect_counts() {
        local id=$1 comp back
        comp=$(sed -n 's/^terse-pmpi: \([0-9]*\) compressed calls.*/\1/p' "$tmp/$id.log")
        back=$(sed -n 's/^terse-pmpi: .*, \([0-9]*\) summed by MPI instead.*/\1/p' "$tmp/$id.log")
        expect_summary "$id" "${comp:-0}" "$other" "${back:-0}"
        [ $(( ${comp:-0} + ${back:-0} )) -eq "$large" ] ||
            fail "$id: ${comp:-0} compressed + ${back:-0} summed by MPI, want $large large float sums"
        [ "${comp:-0}" -ge $((large * 2 / 3)) ] || fail "$id: only ${comp:-0} of $large compressed"
    }
    run lossy2 2 yes "${topk[@]}" -- lossy 10
    expect_ok lossy2 lossy && expect_counts lossy2
    run exact3 3 yes TERSE_COMPRESSOR=none -- exact 3
    expect_ok exact3 exact && expect_counts exact3
    # three layers at most: F's fresh array takes over F's previous layer each call (the least
    # recently used of its size), so F keeps one residual and converges like A and R
    run recycle 2 yes "${topk[@]}" TERSE_PMPI_MAX_LAYERS=3 TERSE_LOG=info -- ef 50
    if expect_ok recycle ef; then
        expect_counts recycle
        n=$(grep -c '^terse-pmpi:   layer MPI_COMM_WORLD/100003#[012]: 100003 floats, 50 calls,' "$tmp/recycle.log")
        [ "$n" -eq 3 ] || fail "recycle: $n layers of 50 calls, want 3:" "$(grep layer "$tmp/recycle.log")"
        errs=$(grep -o 'F [0-9.]* / [0-9.]*' "$tmp/recycle.log")
        awk -v a="${errs#F }" 'BEGIN { split(a, x, " / "); exit !(x[2] < x[1] / 2) }' ||
            fail "recycle: F's errors (first / mean) '$errs', want the mean below half the first"
    fi
fi

if [ "$failures" -ne 0 ]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "ok: $what: every large float sum took the terse path, every other call stayed exact"
