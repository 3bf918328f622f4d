#!/usr/bin/env bash
# terse developer entry point. On a fresh Debian 12 machine each command installs what is
# missing, configures, builds and runs.
#
#   ./dev.sh demo      4-rank compressed allreduce benchmark + a short distributed training run
#   ./dev.sh test      every test (unit, multi-rank 1..4 ranks, examples, Python, preload);
#                      fails if any fails
#   ./dev.sh sanitize  the C tests (unit, multi-rank, examples) built with AddressSanitizer
#                      and UndefinedBehaviorSanitizer (build-sanitize/)
#   ./dev.sh build     configure and build only (build/)
#   ./dev.sh cluster [--hosts N] [--ranks-per-host K] [--rate 1gbit] [--delay 0.1ms] -- ARGS
#                      terse-bench ARGS on a simulated cluster (network namespaces, tc)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"
build=${TERSE_BUILD_DIR:-build}

# Debian packages the build, the tests and the demo need.
packages=(build-essential meson ninja-build pkg-config libopenmpi-dev openmpi-bin
          libhwloc-dev check iproute2 python3-numpy python3-mpi4py python3-torch
          python3-sklearn)

log() { printf '==> %s\n' "$*" >&2; }

install_deps() {
    local missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

mpi_env() {
    # Open MPI refuses root without these; the tests run more ranks than this machine has cores.
    if [ "$(id -u)" -eq 0 ]; then
        export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    fi
    export OMPI_MCA_rmaps_base_oversubscribe=1
}

do_build() {
    install_deps
    if [ ! -f "$build/build.ninja" ]; then
        log "configuring $build/"
        meson setup "$build" >/dev/null
    fi
    log "building"
    ninja -C "$build" >/dev/null
}

data_dir() {
    local d=${TERSE_DATA:-$here/../shared/data/libsvm}
    if [ ! -f "$d/mushrooms.txt" ]; then
        echo "dev.sh: LibSVM data not found in $d (set TERSE_DATA to the folder with mushrooms.txt)" >&2
        exit 1
    fi
    (cd "$d" && pwd)
}

do_test() {
    do_build
    mpi_env
    log "running the test suite"
    local out rc=0
    out=$(mktemp)
    meson test -C "$build" --print-errorlogs --num-processes 1 2>&1 | tee "$out" || rc=$?
    local ok fail skip
    ok=$(awk '/^Ok:/ {print $2}' "$out"); fail=$(awk '/^Fail:/ {print $2}' "$out")
    skip=$(awk '/^Skipped:/ {print $2}' "$out"); local timeout
    timeout=$(awk '/^Timeout:/ {print $2}' "$out")
    rm -f "$out"
    fail=$(( ${fail:-0} + ${timeout:-0} ))
    echo "terse: ${ok:-0} passed, ${fail} failed, ${skip:-0} skipped"
    if [ "$rc" -ne 0 ] || [ "$fail" -ne 0 ] || [ "${ok:-0}" -eq 0 ]; then
        echo "dev.sh test: FAILED" >&2
        return 1
    fi
}

# The C suites under ASan + UBSan. Leak detection is off: Open MPI keeps allocations until
# exit by design, and LeakSanitizer would report them. Python and preload tests are left out:
# they load libterse into processes (python3, LD_PRELOAD) that were not built with ASan.
do_sanitize() {
    install_deps
    local sbuild=build-sanitize
    if [ ! -f "$sbuild/build.ninja" ]; then
        log "configuring $sbuild/ (address, undefined)"
        meson setup "$sbuild" -Db_sanitize=address,undefined -Db_lundef=false >/dev/null
    fi
    log "building with sanitizers"
    ninja -C "$sbuild" >/dev/null
    mpi_env
    export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    log "running the C suites under the sanitizers"
    meson test -C "$sbuild" --print-errorlogs --num-processes 1 --suite unit --suite mpi --suite examples
}

do_demo() {
    do_build
    mpi_env
    local data
    data=$(data_dir)
    log "4-rank compressed allreduce: TopK 1% with error feedback against dense MPI_Allreduce"
    mpirun -np 4 --bind-to none "$build/bench/terse-bench" --compressor topk:density=0.01 \
        --feedback ef --sizes 1M:32M --iters 5 --warmup 1 --baseline --check
    log "4-rank training: logistic regression on mushrooms, dense and TopK 5% + EF"
    mpirun -np 4 --bind-to none "$build/examples/logreg" --data "$data/mushrooms.txt" \
        --compressor none --iters 200 --report 50
    mpirun -np 4 --bind-to none "$build/examples/logreg" --data "$data/mushrooms.txt" \
        --compressor topk:density=0.05 --feedback ef --iters 200 --report 50
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    demo) do_demo ;;
    test) do_test ;;
    sanitize) do_sanitize ;;
    build) do_build ;;
    cluster) do_build; mpi_env; exec "$here/tools/cluster.sh" "$@" ;;
    *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
