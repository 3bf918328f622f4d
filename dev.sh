#!/usr/bin/env bash
# terse developer entry point. On a fresh Debian 12 machine each command installs what is
# missing, configures, builds and runs.
#
#   ./dev.sh demo      4-rank compressed allreduce benchmark + a short distributed training run
#   ./dev.sh test      every test (unit, multi-rank 1..4 ranks, examples, Python, preload),
#                      then each libFuzzer target for 5 s; fails if any fails or crashes
#   ./dev.sh sanitize  the C tests (unit, multi-rank, examples, faults) built with
#                      AddressSanitizer and UndefinedBehaviorSanitizer (build-sanitize/), then
#                      every multi-rank test at 2 ranks under valgrind memcheck
#                      (build-valgrind/, tools/valgrind.sh); fails on any report
#   ./dev.sh fuzz [SECONDS]
#                      each libFuzzer target (config parser, state loader, codec decoders)
#                      for SECONDS (default 60) under ASan + UBSan (build-fuzz/); corpus in
#                      build-fuzz/corpus/<target>, crashing inputs in build-fuzz/crashes/;
#                      fails if a target crashes (docs/fuzzing.md)
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
          python3-sklearn clang libclang-rt-14-dev valgrind)

log() { printf '==> %s\n' "$*" >&2; }

# Runs a command with its output kept aside; when it fails, shows the output's end (the
# compiler's error) on stderr and returns its status.
quiet() {
    local out rc=0
    out=$(mktemp)
    "$@" >"$out" 2>&1 || rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "dev.sh: '$*' failed (exit $rc); its output ends with:" >&2
        tail -n 80 "$out" >&2
    fi
    rm -f "$out"
    return "$rc"
}

# CUDA and NCCL are not Debian packages: where the toolkit is installed (TERSE_GPU_PREFIX,
# default /usr/local/cuda), put nvcc on the PATH so that meson's -Dcuda=auto and -Dnccl=auto
# find them and build the GPU code (its tests skip on a machine without a GPU). The builds
# for the sanitizers, valgrind and the fuzzers leave it out (no_gpu): the CUDA runtime does
# not run under AddressSanitizer's shadow memory layout by default.
gpu_prefix=${TERSE_GPU_PREFIX:-/usr/local/cuda}
if [ -x "$gpu_prefix/bin/nvcc" ]; then
    case ":$PATH:" in *":$gpu_prefix/bin:"*) ;; *) export PATH="$gpu_prefix/bin:$PATH" ;; esac
fi
no_gpu=(-Dcuda=disabled -Dnccl=disabled)

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
        quiet meson setup "$build" -Dgpu_prefix="$gpu_prefix"
    fi
    # meson 1.0 gives nvcc no dependency file: rebuild the CUDA objects when a header is
    # newer than their library (docs/gpu.md)
    if [ -f "$build/libterse_cuda.a" ] &&
        [ -n "$(find include src compressors collectives -name '*.h' -newer "$build/libterse_cuda.a" -print -quit)" ]; then
        quiet ninja -C "$build" -t clean libterse_cuda.a
    fi
    log "building"
    quiet ninja -C "$build"
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
    # The fuzz targets, briefly: their seeds and working corpus replay (regressions), then
    # a few seconds of new inputs. Each target counts as one test.
    log "fuzzing each target for ${fuzz_test_seconds} s (./dev.sh fuzz SECONDS for longer)"
    if fuzz_build; then
        for t in "${fuzz_targets[@]}"; do
            if fuzz_run "$t" "$fuzz_test_seconds"; then ok=$(( ${ok:-0} + 1 )); else fail=$(( fail + 1 )); fi
        done
    else
        echo "fuzz: the fuzz targets did not build (clang, libclang-rt-14-dev); counted as ${#fuzz_targets[@]} failures" >&2
        fail=$(( fail + ${#fuzz_targets[@]} ))
    fi
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
        quiet meson setup "$sbuild" "${no_gpu[@]}" -Db_sanitize=address,undefined -Db_lundef=false
    fi
    log "building with sanitizers"
    quiet ninja -C "$sbuild"
    mpi_env
    export ASAN_OPTIONS=detect_leaks=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    log "running the C suites under the sanitizers"
    meson test -C "$sbuild" --print-errorlogs --num-processes 1 --suite unit --suite mpi --suite examples \
        --suite fault
    local vbuild=build-valgrind
    if [ ! -f "$vbuild/build.ninja" ]; then
        log "configuring $vbuild/ (debugoptimized, for valgrind)"
        quiet meson setup "$vbuild" "${no_gpu[@]}" --buildtype=debugoptimized
    fi
    log "building for valgrind"
    quiet ninja -C "$vbuild"
    log "running the multi-rank tests under valgrind memcheck (about 10 minutes)"
    "$here/tools/valgrind.sh" "$vbuild"
}

# ---- Fuzzing (tests/fuzz, docs/fuzzing.md) ----
fuzz_targets=(config decode state)
fuzz_build_dir=build-fuzz
fuzz_test_seconds=5

# Configures build-fuzz/ (clang, libFuzzer, ASan + UBSan, assertions on) and builds the fuzz
# targets only. Returns non-zero, instead of exiting, when that fails, so that do_test can
# count it.
fuzz_build() {
    install_deps || return 1
    if [ ! -f "$fuzz_build_dir/build.ninja" ]; then
        log "configuring $fuzz_build_dir/ (clang, libFuzzer, address, undefined)"
        CC=clang quiet meson setup "$fuzz_build_dir" "${no_gpu[@]}" -Dfuzz=true -Dtests=false --buildtype=debugoptimized \
            -Db_ndebug=false -Db_sanitize=address,undefined -Db_lundef=false || return 1
    fi
    log "building the fuzz targets"
    quiet ninja -C "$fuzz_build_dir" "${fuzz_targets[@]/#/tests/fuzz/fuzz_}" || return 1
}

# Runs target $1 for $2 seconds on its working corpus build-fuzz/corpus/$1 (seeded from
# tests/fuzz/seeds/$1, so every committed regression input runs first) and prints
#   fuzz <target>: N executions in S s, C crashes
# A crashing input is written to build-fuzz/crashes/<target>-crash-<sha1> and the log's end
# is shown; the return status is then non-zero. Leak detection is off: Open MPI keeps
# allocations until exit by design.
fuzz_run() {
    local name=$1 secs=$2
    local corpus=$fuzz_build_dir/corpus/$name crashes=$fuzz_build_dir/crashes
    local flog=$fuzz_build_dir/fuzz-$name.log
    mkdir -p "$corpus" "$crashes"
    cp -n "tests/fuzz/seeds/$name"/* "$corpus"/ 2>/dev/null || true
    local args=(-max_total_time="$secs" -timeout=30 -print_final_stats=1
                -artifact_prefix="$crashes/$name-")
    [ -f "tests/fuzz/$name.dict" ] && args+=(-dict="tests/fuzz/$name.dict")
    local before rc=0 t0=$SECONDS
    before=$(find "$crashes" -name "$name-*" | wc -l)
    mpi_env
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$fuzz_build_dir/tests/fuzz/fuzz_$name" "${args[@]}" "$corpus" >"$flog" 2>&1 || rc=$?
    local runs secs_done crashed
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$flog" | tail -n 1)
    secs_done=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$flog" | tail -n 1)
    crashed=$(( $(find "$crashes" -name "$name-*" | wc -l) - before ))
    [ "$rc" -ne 0 ] && [ "$crashed" -eq 0 ] && crashed=1
    echo "fuzz $name: ${runs:-0} executions in ${secs_done:-$(( SECONDS - t0 ))} s, $crashed crashes"
    if [ "$rc" -ne 0 ]; then
        tail -n 40 "$flog" >&2
        echo "fuzz $name: CRASHED (exit $rc); input in $crashes/, full log $flog" >&2
        return 1
    fi
}

do_fuzz() {
    local secs=${1:-60}
    if ! [[ "$secs" =~ ^[1-9][0-9]*$ ]]; then
        echo "dev.sh fuzz: SECONDS must be a positive integer, got '$secs'" >&2
        exit 2
    fi
    fuzz_build || { echo "dev.sh fuzz: the fuzz targets did not build" >&2; return 1; }
    log "fuzzing each target for $secs s"
    local failed=0
    for t in "${fuzz_targets[@]}"; do fuzz_run "$t" "$secs" || failed=$(( failed + 1 )); done
    if [ "$failed" -ne 0 ]; then
        echo "dev.sh fuzz: FAILED ($failed target(s) crashed; reproduce with" \
             "$fuzz_build_dir/tests/fuzz/fuzz_<target> $fuzz_build_dir/crashes/<file>)" >&2
        return 1
    fi
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
    fuzz) do_fuzz "$@" ;;
    build) do_build ;;
    cluster) do_build; mpi_env; exec "$here/tools/cluster.sh" "$@" ;;
    *) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; exit 2 ;;
esac
