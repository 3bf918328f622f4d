#!/usr/bin/env bash
# Valgrind memcheck over the multi-rank tests: every tests/mpi program under mpirun at 2
# ranks (or the NP given), each rank in its own valgrind. Any memcheck report (invalid read
# or write, use of uninitialised values, invalid free) fails the run; the MPI runtime's own
# reports are suppressed (tools/valgrind.supp). Called by ./dev.sh sanitize.
#
#   tools/valgrind.sh BUILD_DIR [NP ...]
set -uo pipefail

build=${1:?usage: tools/valgrind.sh BUILD_DIR [NP ...]}
shift
nps=("$@")
[ ${#nps[@]} -eq 0 ] && nps=(2)
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
logs=$build/valgrind
mkdir -p "$logs"
supp=(--suppressions="$here/tools/valgrind.supp")
[ -f /usr/share/openmpi/openmpi-valgrind.supp ] && supp+=(--suppressions=/usr/share/openmpi/openmpi-valgrind.supp)

failed=0 runs=0
for exe in "$build"/tests/mpi/test_mpi_*; do
    [ -x "$exe" ] && [ -f "$exe" ] || continue
    name=$(basename "$exe")
    # test_mpi_alloc counts allocations by interposing malloc, which valgrind replaces
    [ "$name" = test_mpi_alloc ] && continue
    args=()
    [ "$name" = test_mpi_soak ] && args=(500) # the soak's steps, fewer under valgrind
    for np in "${nps[@]}"; do
        log=$logs/$name-np$np.log
        start=$SECONDS
        mpirun --allow-run-as-root --oversubscribe --bind-to none --mca btl self,vader,tcp -np "$np" \
            valgrind -q --error-exitcode=99 "${supp[@]}" "$exe" "${args[@]}" >"$log" 2>&1
        rc=$?
        reports=$(grep -c '^==[0-9]*== [A-Z]' "$log")
        runs=$((runs + 1))
        if [ $rc -ne 0 ] || [ "$reports" -ne 0 ]; then
            failed=$((failed + 1))
            echo "valgrind $name np$np: FAILED (exit $rc, $reports memcheck reports; $log)"
        else
            echo "valgrind $name np$np: clean ($((SECONDS - start)) s)"
        fi
    done
done
echo "valgrind: $((runs - failed)) of $runs runs clean"
[ $failed -eq 0 ]
