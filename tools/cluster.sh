#!/usr/bin/env bash
# tools/cluster.sh — run an MPI program on a simulated cluster of N hosts on this machine.
#
# Called by `./dev.sh cluster` (DESIGN.md §7):
#   tools/cluster.sh [--hosts N] [--ranks-per-host K] [--rate 1gbit] [--delay 0.1ms]
#                    [--bin PATH] -- ARGS...
#
# Topology (P = $$, this script's pid, so two runs never collide; nothing is created in,
# and no address is added to, the root network namespace):
#
#   netns terse-h0-P        netns terse-h1-P               netns terse-h{N-1}-P
#   +-----------------+     +-----------------+            +-----------------+
#   | mpirun (HNP)    |     | orted           |            | orted           |
#   | K ranks         |     | K ranks         |    ...     | K ranks         |
#   | tnet0           |     | tnet0           |            | tnet0           |
#   | 10.213.0.1/24   |     | 10.213.0.2/24   |            | 10.213.0.N/24   |
#   +---[egress: netem delay -> tbf rate]-----------------------------------+
#          | veth              | veth                            | veth
#   +------+-------------------+---------------------------------+---------+
#   |    h0                   h1                              h{N-1}        |
#   |   [egress: tbf rate] on each bridge port (limits traffic *into* a host)|
#   |                  bridge br0          netns terse-br-P                  |
#   +------------------------------------------------------------------------+
#
# * Each host's link is limited to --rate in both directions (tbf on the host end of its
#   veth for traffic leaving the host, tbf on the bridge end for traffic entering it).
# * --delay is the one-way host-to-host latency: netem on each host's egress only, so a
#   ping between two hosts sees an RTT of 2*delay.
# * Each host also gets its own UTS namespace (hostname terse-hI) and its own TMPDIR, so
#   MPI_Get_processor_name differs per host and Open MPI's session directories never clash.
# * mpirun runs inside terse-h0-P; it starts orted on the other hosts through a small
#   rsh agent (written to a temp dir) that maps an address to its namespace and runs the
#   command there with `ip netns exec`. TCP between hosts (btl tcp, interface tnet0),
#   shared memory (vader) only between ranks of the same host. Ranks are not bound to
#   cores: all "hosts" share this machine's cores.
# * At the end each host's link counter (bytes sent on tnet0, the whole run) is printed as
#   "# network: ..." lines: the bytes that crossed the simulated network.
# * Everything (namespaces, bridge, processes left in them, temp dir) is removed on exit,
#   also after a failure or Ctrl-C. The exit status is mpirun's.
#
# Extra mpirun options can be given in TERSE_CLUSTER_MPIRUN_ARGS (split on whitespace).

# The teardown functions are only reached through `trap`, which shellcheck cannot see:
# shellcheck disable=SC2317
set -euo pipefail

readonly SUBNET=10.213.0          # /24 private to the namespaces made here
readonly IFACE=tnet0              # the host end of each veth, inside its namespace
readonly BRIDGE=br0

usage() {
    cat <<'EOF'
usage: tools/cluster.sh [options] -- ARGS...

Build a simulated cluster of network namespaces joined by a bridge, run
`mpirun BIN ARGS...` across it over TCP, then tear it all down.

options:
  --hosts N            number of simulated hosts (default 4, at most 200)
  --ranks-per-host K   MPI ranks per host (default 1)
  --rate R             per-link rate limit, both directions: e.g. 100mbit, 1gbit, 10gbit,
                       or none (default none: unlimited)
  --delay D            one-way host-to-host latency, e.g. 0.1ms, 50us, or none (default)
  --bin PATH           program to run (default build/bench/terse-bench in the repo)
  -h, --help           this help

Needs root and the `ip` and `tc` commands (iproute2). Extra mpirun options may be given
in the environment variable TERSE_CLUSTER_MPIRUN_ARGS.
EOF
}

die_usage() { echo "cluster.sh: $*" >&2; usage >&2; exit 2; }
die() { echo "cluster.sh: $*" >&2; exit 1; }

# ---------------------------------------------------------------- arguments

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
hosts=4
ranks=1
rate=none
delay=none
bin="$repo_root/build/bench/terse-bench"

need_value() { [[ $# -ge 2 && -n $2 ]] || die_usage "$1 needs a value"; }

while [[ $# -gt 0 ]]; do
    case $1 in
        --hosts) need_value "$@"; hosts=$2; shift 2 ;;
        --hosts=*) hosts=${1#*=}; shift ;;
        --ranks-per-host) need_value "$@"; ranks=$2; shift 2 ;;
        --ranks-per-host=*) ranks=${1#*=}; shift ;;
        --rate) need_value "$@"; rate=$2; shift 2 ;;
        --rate=*) rate=${1#*=}; shift ;;
        --delay) need_value "$@"; delay=$2; shift 2 ;;
        --delay=*) delay=${1#*=}; shift ;;
        --bin) need_value "$@"; bin=$2; shift 2 ;;
        --bin=*) bin=${1#*=}; shift ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        *) die_usage "unknown option: $1" ;;
    esac
done
prog_args=("$@")

if ! [[ $hosts =~ ^[0-9]+$ ]] || (( hosts < 1 || hosts > 200 )); then
    die_usage "--hosts must be an integer from 1 to 200 (got '$hosts')"
fi
if ! [[ $ranks =~ ^[0-9]+$ ]] || (( ranks < 1 )); then
    die_usage "--ranks-per-host must be a positive integer (got '$ranks')"
fi

# rate -> bits per second (tc's decimal units), or empty for none
rate_bps=
rate=${rate,,}
case $rate in
    none|0|'') rate=none ;;
    *)
        [[ $rate =~ ^([0-9]+(\.[0-9]+)?)(bit|kbit|mbit|gbit|tbit)$ ]] \
            || die_usage "--rate must look like 100mbit, 1gbit, 10gbit or none (got '$rate')"
        case ${BASH_REMATCH[3]} in
            bit) mult=1 ;; kbit) mult=1e3 ;; mbit) mult=1e6 ;; gbit) mult=1e9 ;; tbit) mult=1e12 ;;
        esac
        rate_bps=$(awk -v v="${BASH_REMATCH[1]}" -v m="$mult" 'BEGIN { printf "%.0f", v * m }')
        (( rate_bps >= 8000 )) || die_usage "--rate is too low (got '$rate')"
        ;;
esac

delay=${delay,,}
case $delay in
    none|0|'') delay=none ;;
    *)
        [[ $delay =~ ^[0-9]+(\.[0-9]+)?(us|usec|ms|msec|s|sec)$ ]] \
            || die_usage "--delay must look like 0.1ms, 50us or none (got '$delay')"
        ;;
esac

# ---------------------------------------------------------------- environment checks

(( EUID == 0 )) || die "must run as root (network namespaces, veth and tc need CAP_NET_ADMIN)"
for cmd in ip tc mpirun unshare; do
    command -v "$cmd" >/dev/null 2>&1 || case $cmd in
        ip|tc) die "'$cmd' not found: install iproute2 (apt-get install iproute2)" ;;
        mpirun) die "'mpirun' not found: install Open MPI (apt-get install openmpi-bin)" ;;
        unshare) die "'unshare' not found: install util-linux" ;;
    esac
done
case $bin in /*) ;; *) bin="$PWD/$bin" ;; esac
[[ -f $bin && -x $bin ]] || die "program not found or not executable: $bin (build it first, or pass --bin)"

# ---------------------------------------------------------------- teardown

tag=$$
br_ns="terse-br-$tag"
host_ns=()
for (( i = 0; i < hosts; i++ )); do host_ns+=("terse-h$i-$tag"); done
tmp=
made_ns=()          # namespaces actually created, so cleanup only deletes ours
mpirun_pid=

ns_exists() { ip netns list 2>/dev/null | awk -v n="$1" '$1 == n { f = 1 } END { exit !f }'; }

# live (non-zombie) processes in namespace $1; orted daemonizes, so its zombies belong
# to init and may linger a moment after they have exited
live_ns_pids() {
    local pid state
    for pid in $(ip netns pids "$1" 2>/dev/null); do
        state=$(awk '/^State:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        [[ -n $state && $state != Z ]] && echo "$pid"
    done
    return 0
}

# kill every process left in our namespaces, by pid (mpirun, orted, ranks)
kill_ns_procs() {
    local sig=$1 ns pid
    for ns in "${made_ns[@]}"; do
        ns_exists "$ns" || continue
        for pid in $(live_ns_pids "$ns"); do
            kill "-$sig" "$pid" 2>/dev/null || true
        done
    done
}

ns_procs_left() {
    local ns
    for ns in "${made_ns[@]}"; do
        ns_exists "$ns" || continue
        [[ -n $(live_ns_pids "$ns") ]] && return 0
    done
    return 1
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    if (( ${#made_ns[@]} )); then
        if ns_procs_left; then
            kill_ns_procs TERM
            for _ in 1 2 3 4 5 6 7 8 9 10; do ns_procs_left || break; sleep 0.2; done
            ns_procs_left && kill_ns_procs KILL && sleep 0.2
        fi
        local ns
        for ns in "${made_ns[@]}"; do
            ns_exists "$ns" && ip netns delete "$ns" 2>/dev/null
        done
    fi
    [[ -n $tmp && -d $tmp ]] && rm -rf -- "$tmp"
    exit "$rc"
}

on_signal() {
    local sig=$1 code=$2
    echo "cluster.sh: caught SIG$sig, tearing down" >&2
    [[ -n $mpirun_pid ]] && kill "-$sig" "$mpirun_pid" 2>/dev/null
    exit "$code"
}

trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
trap 'on_signal HUP 129' HUP

# ---------------------------------------------------------------- build the cluster

tmp=$(mktemp -d "${TMPDIR:-/tmp}/terse-cluster.XXXXXX")

echo "# cluster: $hosts hosts x $ranks ranks, rate $rate, delay $delay"

# tbf burst: 1 ms worth of bytes at the rate, at least 128 KiB (veth passes 64 KiB GSO
# packets; a burst below that would throttle far under the rate)
tbf_args=()
if [[ -n $rate_bps ]]; then
    burst=$(( rate_bps / 8 / 1000 ))
    (( burst < 131072 )) && burst=131072
    tbf_args=(tbf rate "${rate_bps}bit" burst "$burst" latency 50ms)
fi

# shape DEV in NS: netem (if delay) as root with tbf (if rate) as its child
shape() {
    local ns=$1 dev=$2 with_delay=$3
    if [[ $with_delay == yes && $delay != none ]]; then
        ip -n "$ns" link set "$dev" txqueuelen 10000
        ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: netem delay "$delay" limit 100000
        if (( ${#tbf_args[@]} )); then
            ip netns exec "$ns" tc qdisc add dev "$dev" parent 1:1 handle 10: "${tbf_args[@]}"
        fi
    elif (( ${#tbf_args[@]} )); then
        ip netns exec "$ns" tc qdisc add dev "$dev" root handle 1: "${tbf_args[@]}"
    fi
}

quiet_sysctl() { ip netns exec "$1" sysctl -qw "$2" >/dev/null 2>&1 || true; }

ip netns add "$br_ns"
made_ns+=("$br_ns")
ip -n "$br_ns" link set lo up
ip -n "$br_ns" link add "$BRIDGE" type bridge
ip -n "$br_ns" link set "$BRIDGE" up

# probe the qdiscs we need (kernels may lack sch_netem or sch_tbf), on the bridge
# namespace's own loopback, before anything depends on them
probe_qdisc() {   # probe_qdisc OPTION QDISC [QDISC-ARGS...]
    local option=$1; shift
    if ! ip netns exec "$br_ns" tc qdisc add dev lo root "$@" >/dev/null 2>&1; then
        die "$option needs the '$1' qdisc, which this kernel lacks (CONFIG_NET_SCH_${1^^} not set?)"
    fi
    ip netns exec "$br_ns" tc qdisc del dev lo root >/dev/null 2>&1 || true
}
if (( ${#tbf_args[@]} )); then probe_qdisc --rate "${tbf_args[@]}"; fi
if [[ $delay != none ]]; then probe_qdisc --delay netem delay "$delay"; fi

for (( i = 0; i < hosts; i++ )); do
    ns=${host_ns[$i]}
    ip netns add "$ns"
    made_ns+=("$ns")
    quiet_sysctl "$ns" net.ipv6.conf.all.disable_ipv6=1
    quiet_sysctl "$ns" net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
    # veth pair created directly in the bridge namespace (port h$i) and the host (tnet0)
    ip -n "$br_ns" link add "h$i" type veth peer name "$IFACE" netns "$ns"
    ip -n "$br_ns" link set "h$i" master "$BRIDGE"
    ip -n "$br_ns" link set "h$i" up
    ip -n "$ns" addr add "$SUBNET.$(( i + 1 ))/24" dev "$IFACE"
    ip -n "$ns" link set "$IFACE" up
    shape "$ns" "$IFACE" yes          # host -> bridge: delay + rate
    shape "$br_ns" "h$i" no           # bridge -> host: rate
done

# ---------------------------------------------------------------- rsh agent + hostfile

hostfile="$tmp/hostfile"
agent="$tmp/rsh-agent"
{
    for (( i = 0; i < hosts; i++ )); do echo "$SUBNET.$(( i + 1 )) slots=$ranks"; done
} >"$hostfile"

for (( i = 0; i < hosts; i++ )); do mkdir -p "$tmp/h$i"; done

# The agent is called like ssh: `rsh-agent [options] HOST WORD...`; the words are one
# shell command line (Open MPI quotes parts of the orted command for a remote shell).
{
    cat <<'EOF_AGENT'
#!/bin/sh
# generated by tools/cluster.sh: run a command "on" a simulated host
while [ $# -gt 0 ]; do case $1 in -*) shift ;; *) break ;; esac; done
[ $# -ge 2 ] || { echo "rsh-agent: usage: rsh-agent HOST COMMAND..." >&2; exit 255; }
host=$1; shift
case $host in
EOF_AGENT
    for (( i = 0; i < hosts; i++ )); do
        echo "    $SUBNET.$(( i + 1 ))|terse-h$i) ns=${host_ns[$i]}; name=terse-h$i; dir=$tmp/h$i ;;"
    done
    cat <<'EOF_AGENT'
    *) echo "rsh-agent: unknown host $host" >&2; exit 255 ;;
esac
cmd="hostname $name && TMPDIR=$dir && export TMPDIR && $*"
exec ip netns exec "$ns" unshare --uts /bin/sh -c "$cmd"
EOF_AGENT
} >"$agent"
chmod 755 "$agent"

# ---------------------------------------------------------------- run

np=$(( hosts * ranks ))
extra=()
if [[ -n ${TERSE_CLUSTER_MPIRUN_ARGS:-} ]]; then
    read -r -a extra <<<"$TERSE_CLUSTER_MPIRUN_ARGS"
fi

mpirun_cmd=(
    mpirun --allow-run-as-root --oversubscribe
    -np "$np" --hostfile "$hostfile" --map-by "ppr:$ranks:node" --bind-to none
    --mca plm_rsh_agent "$agent"
    --mca plm_rsh_no_tree_spawn 1
    --mca btl "tcp,self,vader"
    --mca btl_tcp_if_include "$IFACE"
    --mca oob_tcp_if_include "$IFACE"
    "${extra[@]}"
    "$bin" "${prog_args[@]}"
)

# mpirun in host 0, with that host's hostname and TMPDIR; in the background so that a
# signal to this script is handled at once (the trap forwards it, then tears down).
# stdin is passed on explicitly (a background job would otherwise get /dev/null).
set +e
TMPDIR="$tmp/h0" ip netns exec "${host_ns[0]}" unshare --uts /bin/sh -c \
    'hostname terse-h0 && exec "$@"' sh "${mpirun_cmd[@]}" <&0 &
mpirun_pid=$!
wait "$mpirun_pid"
rc=$?
mpirun_pid=
# what crossed the simulated network: each host's link counters, whole run (start-up,
# warm-up and every size included)
total=0
for (( i = 0; i < hosts; i++ )); do
    tx=$(ip netns exec "${host_ns[$i]}" cat "/sys/class/net/$IFACE/statistics/tx_bytes" 2>/dev/null || echo 0)
    echo "# network: terse-h$i sent $tx bytes"
    total=$(( total + tx ))
done
echo "# network: all hosts sent $total bytes"
set -e
exit "$rc"
