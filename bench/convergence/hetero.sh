#!/usr/bin/env bash
# The heterogeneous least-squares experiment (docs/convergence.md, "Heterogeneous data"):
# examples/hetero_lsq with EF14, EF21 and EControl at a few stepsizes, on data whose ranks
# have strongly different minimisers, and a control run in which they share one.
#
#     bench/convergence/hetero.sh                      # the grid of the doc, about a minute
#     bench/convergence/hetero.sh --factors "4 16 32 64" --iters 3000
#     /usr/bin/python3 bench/convergence/plot_hetero.py
#
# Each run is
#
#     mpirun -np NP --oversubscribe hetero_lsq --compressor topk:k=1 --feedback METHOD \
#         --factor F --iters T --dim D --hetero Z --seed S --report 0,1,2,5,20,40,...,T
#
# with METHOD in ef, ef21, econtrol:eta=E for every E of --etas, and F in --factors, on the
# heterogeneous data (Z = --hetero); then the control: ef, ef21 and econtrol:eta=0.05 at the
# factor --control-factor on --hetero 0. The stepsize of a factor is the same for all methods.
#
# Output: RESULTS/hetero.csv, one row per reported iteration of every run, and
# RESULTS/hetero_final.csv, one row per run (the last, smallest and largest gradnorm2 over
# the second half of the run, the exit status: ok, diverged or failed). RESULTS is
# bench/convergence/results. The binary is $TERSE_BUILD_DIR/examples/hetero_lsq (default
# build/, relative to the repository root), or --bin. Runs are sequential: NP oversubscribed
# ranks already fill a small machine.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

np=10
iters=1000
dim=20
hetero=3
seed=1
factors="4 16 32"
etas="0.01 0.05 0.1"
control_factor=16
every=20
bin=""
results=$here/results

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
    cat <<EOF
Options (defaults in brackets):
  --np N               ranks [$np]
  --iters T            iterations per run [$iters]
  --dim D              columns [$dim]
  --hetero Z           spread of the ranks' minimisers [$hetero]
  --seed S             the data's seed [$seed]
  --factors "F ..."    stepsize factors [$factors]
  --etas "E ..."       EControl's eta values [$etas]
  --control-factor F   the factor of the --hetero 0 control runs, or none [$control_factor]
  --every N            report every N iterations [$every]
  --bin PATH           the hetero_lsq binary [\$TERSE_BUILD_DIR/examples/hetero_lsq]
  --results DIR        where the CSV files go [bench/convergence/results]
EOF
}

while [ $# -gt 0 ]; do
    case $1 in -h | --help) usage; exit 0 ;; esac
    [ $# -ge 2 ] || { echo "hetero.sh: $1 needs a value" >&2; exit 2; }
    case $1 in
        --np) np=$2 ;;
        --iters) iters=$2 ;;
        --dim) dim=$2 ;;
        --hetero) hetero=$2 ;;
        --seed) seed=$2 ;;
        --factors) factors=$2 ;;
        --etas) etas=$2 ;;
        --control-factor) control_factor=$2 ;;
        --every) every=$2 ;;
        --bin) bin=$2 ;;
        --results) results=$2 ;;
        *) echo "hetero.sh: unknown option '$1' (--help lists them)" >&2; exit 2 ;;
    esac
    shift 2
done

build=${TERSE_BUILD_DIR:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
bin=${bin:-$build/examples/hetero_lsq}
[ -x "$bin" ] || { echo "hetero.sh: no program at $bin: build it (ninja -C $build) or" \
                        "give --bin" >&2; exit 2; }
export OMPI_ALLOW_RUN_AS_ROOT=${OMPI_ALLOW_RUN_AS_ROOT:-1}
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=${OMPI_ALLOW_RUN_AS_ROOT_CONFIRM:-1}

# 0, 1, 2, 5, then every $every iterations, and $iters itself
report=$(awk -v T="$iters" -v e="$every" 'BEGIN {
    n = split("0 1 2 5", a, " ")
    for (i = 1; i <= n; i++) if (a[i] <= T && (a[i] < e || a[i] % e)) { printf "%s%d", s, a[i]; s = "," }
    for (t = e; t <= T; t += e) { printf "%s%d", s, t; s = "," }
    if (T % e) printf "%s%d", s, T
}')

mkdir -p "$results"
series=$results/hetero.csv
final=$results/hetero_final.csv
echo "hetero,factor,method,gamma,iter,gradnorm2,dist2,bits" >"$series"
echo "hetero,factor,method,gamma,zeta2,iters,last_iter,gradnorm2_last,gradnorm2_tail_min,\
gradnorm2_tail_max,dist2_last,bits_last,status,seconds" >"$final"

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# run_one Z F METHOD: one run, its rows appended to the two CSV files.
run_one() {
    local z=$1 f=$2 m=$3 rc=0 t0 t1
    t0=$(date +%s.%N)
    mpirun -np "$np" --oversubscribe "$bin" --compressor topk:k=1 --feedback "$m" \
        --factor "$f" --iters "$iters" --dim "$dim" --hetero "$z" --seed "$seed" \
        --report "$report" >"$out" || rc=$?
    t1=$(date +%s.%N)
    local status=ok
    [ "$rc" -eq 0 ] || status=failed
    [ "$rc" -eq 3 ] && status=diverged
    local gamma zeta2
    gamma=$(sed -n 's/^#   gamma = .* = //p' "$out")
    zeta2=$(sed -n 's/.*mean_i |grad f_i(x\*)|^2 = //p' "$out")
    awk -v z="$z" -v f="$f" -v m="$m" -v g="$gamma" \
        '$1 == "iter" { print z "," f "," m "," g "," $2 "," $4 "," $6 "," $8 }' \
        "$out" >>"$series"
    awk -v z="$z" -v f="$f" -v m="$m" -v g="$gamma" -v zeta2="$zeta2" -v T="$iters" \
        -v st="$status" -v s="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" '
        $1 == "iter" {
            last = $2; gl = $4; dl = $6; bl = $8
            if ($2 >= T / 2) { if (n++ == 0 || $4 < lo) lo = $4; if ($4 > hi) hi = $4 }
        }
        END { print z "," f "," m "," g "," zeta2 "," T "," last "," gl "," lo "," hi "," \
                    dl "," bl "," st "," s }' "$out" >>"$final"
    printf "hetero %-4s factor %-4s %-20s %-8s gradnorm2 %s at %s (%ss)\n" "$z" "$f" "$m" \
        "$status" "$(awk '$1 == "iter" { g = $4 } END { print g }' "$out")" \
        "$(awk '$1 == "iter" { t = $2 } END { print t }' "$out")" \
        "$(tail -1 "$final" | awk -F, '{ print $NF }')"
}

methods="ef ef21"
for e in $etas; do methods="$methods econtrol:eta=$e"; done
for f in $factors; do
    for m in $methods; do run_one "$hetero" "$f" "$m"; done
done
if [ "$control_factor" != none ]; then
    for m in ef ef21 econtrol:eta=0.05; do run_one 0 "$control_factor" "$m"; done
fi
echo "wrote $series and $final"
