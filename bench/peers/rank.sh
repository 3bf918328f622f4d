#!/bin/sh
# bench/peers/rank.sh: what tools/cluster.sh starts on each simulated host (--bin): sets
# the environment the ranks need inside the namespaces, where mpirun forwards little of
# the caller's, then runs race.py with the arguments given after `--`.
repo=$(cd "$(dirname "$0")/../.." && pwd)
export PYTHONPATH="$repo/python${PYTHONPATH:+:$PYTHONPATH}"
export TERSE_LIBRARY="${TERSE_LIBRARY:-$repo/build/libterse.so}"
export MASTER_ADDR="${MASTER_ADDR:-10.213.0.1}"      # host 0 in tools/cluster.sh
export MASTER_PORT="${MASTER_PORT:-29500}"
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-tnet0}"
export OMP_NUM_THREADS=1
exec /usr/bin/python3 "$repo/bench/peers/race.py" "$@"
