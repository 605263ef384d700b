#!/usr/bin/env bash
# netcluster.sh - a cluster of hosts on this machine made of network
# namespaces and veth pairs, for psd on shaped links (docs/testnet.md).
#
#   netcluster.sh up PROFILE DIR            build the namespaces and links; DIR holds
#                                           the state (cluster.env, logs, placement)
#   netcluster.sh placement DIR MODE [JOB]  write DIR/placement.conf from
#                                           tests/net/placement.tmpl.conf
#   netcluster.sh run DIR                   start the 2 shards and 3 workers of
#                                           DIR/placement.conf, wait for the
#                                           workers, save psctl status, stop
#   netcluster.sh exec NODE CMD...          run CMD in NODE's namespace (ps0, w1, sw...)
#   netcluster.sh verify PROFILE|DIR        measure RTT, loss and TCP rate between
#                                           two hosts; fails outside the profile's
#                                           tolerance (PROFILE: on a temporary cluster)
#   netcluster.sh session PROFILE DIR CMD...  up, run CMD (with NC_DIR=DIR), down
#   netcluster.sh check PROFILE             exit 0 if the tools and kernel features
#                                           PROFILE needs are here, else 3 saying what
#   netcluster.sh down [DIR]                kill every process in the namespaces,
#                                           delete them (and so every link)
#
# Topology: namespace $NC_PREFIX-sw (the switch) holds the switch end "sw-H"
# of one veth pair per host H; the other end is "eth0" in namespace
# $NC_PREFIX-H, H in ps0 ps1 (192.0.2.10, .11: the shards) and w0 w1 w2
# (192.0.2.20, .21, .22: the workers), all in 192.0.2.0/24 (TEST-NET-1).
# Nothing is routed out of the namespaces: they have no default route and no
# link to the machine's own namespace.
#
# Profiles:
#   none   a kernel bridge in the switch namespace: no delay, rate or loss
#   edge   100 Mbit/s each way per host link (tbf on both ends of each veth),
#          10 ms one-way in the netdelay switch (20 ms RTT between hosts),
#          0.1% random loss of IPv4 packets arriving at each host (nftables)
#   poor   as edge with 1% loss
# NC_RATE (tc rate, e.g. 100mbit), NC_DELAY_MS (one way) and NC_LOSS_PERMILLE
# (per host ingress, in 1/1000) override the profile's values.
#
# Environment: NC_PREFIX (default psn: namespaces psn-sw, psn-ps0, ...),
# NC_BIN (psd, workerd, psctl; default bin/ of the repository), NC_TOOLS
# (netdelay; default build/tests/net), NC_RUN_TIMEOUT (s, default 600),
# NC_PSD_ARGS / NC_WORKER_ARGS (extra arguments of every psd / workerd that
# run starts) and NC_PSD_ARGS_ps0, NC_WORKER_ARGS_w2, ... (of one node),
# NC_VERIFY_STREAMS (parallel streams measured by verify, default 4),
# NC_TCP_CC (the hosts' TCP congestion control, e.g. cubic; default the
# machine's, which a new namespace inherits: bbr on the CI machine).
#
# Every command except up/session/verify leaves the cluster as it is; up
# removes the leftovers of an earlier cluster with the same prefix first and
# tears down what it built if it fails; session and verify PROFILE tear down
# on any exit (EXIT, INT, TERM).  Exit status: 0 ok, 1 failure, 2 usage,
# 3 a needed tool or kernel feature is missing (the message says which).
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
P=${NC_PREFIX:-psn}
BIN=${NC_BIN:-$ROOT/bin}
TOOLS=${NC_TOOLS:-$ROOT/build/tests/net}
PY=/usr/bin/python3
[ -x $PY ] || PY=python3
HOSTS=(ps0 ps1 w0 w1 w2)
declare -A ADDR=([ps0]=192.0.2.10 [ps1]=192.0.2.11 [w0]=192.0.2.20 [w1]=192.0.2.21 [w2]=192.0.2.22)
PORT0=7701
PORT1=7702

say() { echo "netcluster: $*"; }
die() { echo "netcluster: $*" >&2; exit 1; }
missing() { echo "netcluster: missing: $*" >&2; exit 3; }

# ------------------------------------------------------------ profiles
# profile NAME -> RATE DELAY_MS LOSS_PERMILLE BRIDGE(0/1)
profile() {
    case $1 in
        none) RATE=; DELAY=0; LOSS=0 ;;
        edge) RATE=100mbit; DELAY=10; LOSS=1 ;;
        poor) RATE=100mbit; DELAY=10; LOSS=10 ;;
        *) echo "netcluster: unknown profile '$1' (none, edge, poor)" >&2; exit 2 ;;
    esac
    if [ "$1" != none ]; then
        RATE=${NC_RATE:-$RATE}; DELAY=${NC_DELAY_MS:-$DELAY}; LOSS=${NC_LOSS_PERMILLE:-$LOSS}
    fi
}

ns() { echo "$P-$1"; }
in_ns() { local n=$1; shift; ip netns exec "$(ns "$n")" "$@"; }

# ------------------------------------------------------------ checks
# Tools and kernel features for PROFILE; exits 3 naming the first missing one.
require() {
    [ "$(id -u)" = 0 ] || missing "root (network namespaces, veth, tc, nftables and AF_PACKET need it; running as uid $(id -u))"
    command -v ip >/dev/null || missing "the ip command (Debian package iproute2)"
    command -v ping >/dev/null || missing "the ping command (Debian package iputils-ping)"
    [ -x "$PY" ] || command -v "$PY" >/dev/null || missing "python3 (Debian package python3), for the measurements"
    local t="$P-probe$$"
    ip netns add "$t" 2>/dev/null || missing "network namespaces: 'ip netns add' fails"
    local ok=1 why=""
    if ! ip -n "$t" link add name pa type veth peer name pb 2>/dev/null; then ok=0; why="veth: 'ip link add type veth' fails"; fi
    if [ $ok = 1 ] && [ "$1" != none ]; then
        command -v tc >/dev/null || { ok=0; why="the tc command (Debian package iproute2)"; }
        if [ $ok = 1 ] && ! ip netns exec "$t" tc qdisc add dev pa root tbf rate 100mbit burst 16k latency 20ms 2>/dev/null; then
            ok=0; why="the tbf qdisc (tc qdisc add ... tbf fails: kernel without sch_tbf?)"
        fi
        if [ $ok = 1 ] && ! command -v nft >/dev/null; then ok=0; why="the nft command (Debian package nftables)"; fi
        if [ $ok = 1 ] && ! ip netns exec "$t" nft -f - 2>/dev/null <<'EOF'
table ip probe {
    chain c {
        type filter hook prerouting priority -300; policy accept;
        numgen random mod 1000 < 1 drop
    }
}
EOF
        then ok=0; why="nftables with numgen in the kernel (nft rule 'numgen random mod 1000 < 1 drop' refused)"; fi
        if [ $ok = 1 ] && ! command -v ethtool >/dev/null; then ok=0; why="the ethtool command (Debian package ethtool), to turn the veths' offloads off"; fi
        if [ $ok = 1 ] && [ ! -x "$TOOLS/netdelay" ]; then ok=0; why="$TOOLS/netdelay (make net-tools builds it)"; fi
        if [ $ok = 1 ]; then
            ip -n "$t" link set pa up; ip -n "$t" link set pb up
            local out
            out=$(timeout 5 ip netns exec "$t" "$TOOLS/netdelay" --check --delay-ms 1 pa pb 2>&1 </dev/null | head -n1)
            case $out in "netdelay: ready"*) ;; *) ok=0; why="AF_PACKET: netdelay cannot open its sockets: ${out:-no output}" ;; esac
        fi
    fi
    ip netns del "$t" 2>/dev/null
    [ $ok = 1 ] || missing "$why"
}

# ------------------------------------------------------------ down
# Kill every process in our namespaces (TERM, then KILL after 3 s), delete
# the namespaces: their veths go with them.  Harmless when nothing is up.
down() {
    local n all=() pids
    for n in sw "${HOSTS[@]}"; do
        ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$(ns $n)" && all+=("$(ns $n)")
    done
    [ ${#all[@]} = 0 ] && return 0
    for n in "${all[@]}"; do
        pids=$(ip netns pids "$n" 2>/dev/null)
        [ -n "$pids" ] && kill -TERM $pids 2>/dev/null
    done
    local i alive
    for i in $(seq 30); do
        alive=0
        for n in "${all[@]}"; do [ -n "$(ip netns pids "$n" 2>/dev/null)" ] && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for n in "${all[@]}"; do
        pids=$(ip netns pids "$n" 2>/dev/null)
        [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
    done
    for n in "${all[@]}"; do
        ip netns del "$n" 2>/dev/null || { sleep 0.2; ip netns del "$n" 2>/dev/null; } ||
            echo "netcluster: could not delete namespace $n" >&2
    done
    return 0
}

# ------------------------------------------------------------ up
up() {
    local prof=$1 dir=$2 h
    profile "$prof"
    require "$prof"
    down   # leftovers of an earlier run with this prefix
    mkdir -p "$dir/logs" || die "cannot create $dir"
    dir=$(cd "$dir" && pwd)
    cat >"$dir/cluster.env" <<EOF
NC_PREFIX=$P
NC_PROFILE=$prof
NC_RATE=$RATE
NC_DELAY_MS=$DELAY
NC_LOSS_PERMILLE=$LOSS
NC_BIN=$BIN
NC_TOOLS=$TOOLS
EOF
    UP_OK=0
    trap '[ "$UP_OK" = 1 ] || { echo "netcluster: up failed or interrupted: tearing down" >&2; down; }' EXIT
    trap 'exit 130' INT TERM

    ip netns add "$(ns sw)" || die "ip netns add $(ns sw) failed"
    ip netns exec "$(ns sw)" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    for h in "${HOSTS[@]}"; do
        ip netns add "$(ns $h)" || die "ip netns add $(ns $h) failed"
        in_ns $h sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
        if [ -n "${NC_TCP_CC:-}" ]; then
            in_ns $h sysctl -qw net.ipv4.tcp_congestion_control="$NC_TCP_CC" ||
                die "NC_TCP_CC=$NC_TCP_CC: not available ($(sysctl -n net.ipv4.tcp_available_congestion_control))"
        fi
        ip -n "$(ns sw)" link add "sw-$h" type veth peer name eth0 netns "$(ns $h)" ||
            die "veth pair for $h failed"
        ip -n "$(ns $h)" addr add "${ADDR[$h]}/24" dev eth0 || die "address for $h failed"
        ip -n "$(ns $h)" link set lo up
    done
    if [ "$prof" = none ]; then
        ip -n "$(ns sw)" link add br0 type bridge || die "bridge failed"
        ip -n "$(ns sw)" link set br0 up
        for h in "${HOSTS[@]}"; do ip -n "$(ns sw)" link set "sw-$h" master br0 || die "bridge port sw-$h failed"; done
    fi
    for h in "${HOSTS[@]}"; do
        if [ "$prof" != none ]; then
            # MTU-sized frames with real checksums through the AF_PACKET relay
            ip netns exec "$(ns sw)" ethtool -K "sw-$h" tx off rx off tso off gso off gro off >/dev/null 2>&1 ||
                die "ethtool -K sw-$h failed"
            in_ns $h ethtool -K eth0 tx off rx off tso off gso off gro off >/dev/null 2>&1 ||
                die "ethtool -K eth0 in $h failed"
            if [ -n "$RATE" ]; then
                # each way: the host's egress (eth0) and the switch's egress toward it (sw-H)
                ip netns exec "$(ns sw)" tc qdisc add dev "sw-$h" root tbf rate "$RATE" burst 16k latency 20ms ||
                    die "tbf on sw-$h failed"
                in_ns $h tc qdisc add dev eth0 root tbf rate "$RATE" burst 16k latency 20ms ||
                    die "tbf on eth0 in $h failed"
            fi
            if [ "$LOSS" -gt 0 ]; then
                # on arrival at the host, so the sender's stack does not see a
                # local drop (an egress drop is reported to TCP, not lost)
                in_ns $h nft -f - <<EOF || die "nftables loss rule in $h failed"
table ip psnet {
    chain loss {
        type filter hook prerouting priority -300; policy accept;
        numgen random mod 1000 < $LOSS counter drop
    }
}
EOF
            fi
        fi
        ip -n "$(ns sw)" link set "sw-$h" up
        ip -n "$(ns $h)" link set eth0 up
    done
    if [ "$prof" != none ]; then
        local ports=()
        for h in "${HOSTS[@]}"; do ports+=("sw-$h"); done
        ip netns exec "$(ns sw)" "$TOOLS/netdelay" --delay-ms "$DELAY" "${ports[@]}" \
            >"$dir/logs/netdelay.log" 2>&1 </dev/null &
        echo $! >"$dir/netdelay.pid"
        local i
        for i in $(seq 50); do
            grep -q "^netdelay: ready" "$dir/logs/netdelay.log" 2>/dev/null && break
            kill -0 "$(cat "$dir/netdelay.pid")" 2>/dev/null ||
                die "netdelay exited at start: $(cat "$dir/logs/netdelay.log")"
            sleep 0.1
        done
        grep -q "^netdelay: ready" "$dir/logs/netdelay.log" || die "netdelay not ready after 5 s"
    fi
    # every host reaches every other one (a few tries: loss, ARP)
    for h in ps1 w0 w1 w2; do
        local ok=0 k
        for k in 1 2 3 4 5; do
            in_ns ps0 ping -c 1 -W 1 -q "${ADDR[$h]}" >/dev/null 2>&1 && { ok=1; break; }
        done
        [ $ok = 1 ] || die "ps0 cannot ping $h (${ADDR[$h]})"
    done
    echo "NC_TCP_CC=$(in_ns w0 sysctl -n net.ipv4.tcp_congestion_control)" >>"$dir/cluster.env"
    UP_OK=1
    say "up: profile $prof (rate ${RATE:-unlimited}, one-way delay ${DELAY} ms, loss ${LOSS}/1000 per host ingress, tcp $(in_ns w0 sysctl -n net.ipv4.tcp_congestion_control)), prefix $P, state in $dir"
}

load_env() {
    local dir=$1
    [ -f "$dir/cluster.env" ] || die "$dir/cluster.env missing: run netcluster.sh up PROFILE $dir first"
    # shellcheck disable=SC1091
    . "$dir/cluster.env"
    P=$NC_PREFIX; BIN=$NC_BIN; TOOLS=$NC_TOOLS
}

# ------------------------------------------------------------ placement
# placement DIR MODE [JOB_EXTRA]: JOB_EXTRA is further job keys as JSON
# members ("epochs": 2, "staleness": 1).  NC_MODEL (ray), NC_BATCH (32),
# NC_SEED (7), NC_OPTIMIZER (a JSON object; default lr NC_LR 0.05, momentum
# NC_MOMENTUM 0.9, constant), NC_THREADS (1 per worker), NC_TRAIN_IMAGES,
# NC_TRAIN_LABELS, NC_TEST_IMAGES, NC_TEST_LABELS (default DIR/data/*).
placement() {
    local dir=$1 mode=$2 extra=${3:-}
    load_env "$dir"
    extra=$(echo "$extra" | sed -E 's/^[[:space:],]+//; s/[[:space:],]+$//')
    [ -n "$extra" ] && extra="$extra,"
    local opt=${NC_OPTIMIZER:-"{\"lr\": ${NC_LR:-0.05}, \"momentum\": ${NC_MOMENTUM:-0.9}, \"schedule\": \"constant\"}"}
    local d=$dir/data
    esc() { printf '%s' "$1" | sed 's/[\\|&]/\\&/g'; }   # for a sed replacement
    local shown=$extra
    extra=$(esc "$extra"); opt=$(esc "$opt")
    local -a sub=(
        -e "s|@MODEL@|${NC_MODEL:-ray}|" -e "s|@MODE@|$mode|" -e "s|@BATCH@|${NC_BATCH:-32}|"
        -e "s|@SEED@|${NC_SEED:-7}|" -e "s|@JOB_EXTRA@|$extra|" -e "s|@OPTIMIZER@|$opt|"
        -e "s|@TRAIN_IMAGES@|$(esc "${NC_TRAIN_IMAGES:-$d/train-images-idx3-ubyte.gz}")|"
        -e "s|@TRAIN_LABELS@|$(esc "${NC_TRAIN_LABELS:-$d/train-labels-idx1-ubyte.gz}")|"
        -e "s|@TEST_IMAGES@|$(esc "${NC_TEST_IMAGES:-$d/test-images-idx3-ubyte.gz}")|"
        -e "s|@TEST_LABELS@|$(esc "${NC_TEST_LABELS:-$d/test-labels-idx1-ubyte.gz}")|"
        -e "s|@PORT0@|$PORT0|" -e "s|@PORT1@|$PORT1|" -e "s|@THREADS@|${NC_THREADS:-1}|g")
    local h
    for h in "${HOSTS[@]}"; do sub+=(-e "s|@ADDR_$h@|${ADDR[$h]}|"); done
    { echo "// written by tests/net/netcluster.sh placement from tests/net/placement.tmpl.conf"
      sed -e '/^\/\//d' "${sub[@]}" "$HERE/placement.tmpl.conf"; } >"$dir/placement.conf.tmp" &&
        mv "$dir/placement.conf.tmp" "$dir/placement.conf" || die "cannot write $dir/placement.conf"
    grep -q '@[A-Z_a-z0-9]*@' "$dir/placement.conf" && die "placement: a placeholder is left in $dir/placement.conf"
    say "placement: $dir/placement.conf (mode $mode${shown:+, ${shown%,}})"
}

# ------------------------------------------------------------ run
run() {
    local dir=$1 h i
    load_env "$dir"
    dir=$(cd "$dir" && pwd)
    local conf=$dir/placement.conf
    [ -f "$conf" ] || die "$conf missing: netcluster.sh placement $dir MODE first"
    for i in psd workerd psctl; do [ -x "$BIN/$i" ] || die "$BIN/$i missing (make)"; done
    local tag=${NC_RUN_TAG:-run}
    local logs=$dir/logs/$tag
    rm -rf "$logs" "$dir/state-ps0" "$dir/state-ps1"
    mkdir -p "$logs"
    # processes left in the hosts' namespaces by an earlier run are ours: stop them
    local left=""
    for h in "${HOSTS[@]}"; do left="$left $(ip netns pids "$(ns $h)" 2>/dev/null)"; done
    if [ -n "${left// /}" ]; then
        say "run: stopping processes left from an earlier run:$left"
        kill -TERM $left 2>/dev/null; sleep 1; kill -KILL $left 2>/dev/null
    fi
    RUN_PIDS=()
    trap 'kill -TERM "${RUN_PIDS[@]}" 2>/dev/null; exit 130' INT TERM
    local t0 t1
    t0=$(date +%s.%N)
    for i in 0 1; do
        local pa=${NC_PSD_ARGS:-} pn=NC_PSD_ARGS_ps$i
        pa="$pa ${!pn:-}"
        # shellcheck disable=SC2086  # extra arguments, split on spaces
        ip netns exec "$(ns ps$i)" "$BIN/psd" --placement "$conf" --node ps$i --state-dir "$dir/state-ps$i" --fresh $pa \
            >"$logs/ps$i.out" 2>"$logs/ps$i.log" </dev/null &
        RUN_PIDS+=($!)
        eval "PSPID$i=$!"
    done
    local ready=0
    for i in $(seq 100); do
        kill -0 "$PSPID0" 2>/dev/null || { cat "$logs/ps0.log" >&2; die "psd ps0 exited at start"; }
        kill -0 "$PSPID1" 2>/dev/null || { cat "$logs/ps1.log" >&2; die "psd ps1 exited at start"; }
        if in_ns w0 "$BIN/psctl" --placement "$conf" --timeout 1000 status >/dev/null 2>&1 &&
           kill -0 "$PSPID0" 2>/dev/null && kill -0 "$PSPID1" 2>/dev/null; then ready=1; break; fi
        sleep 0.2
    done
    [ $ready = 1 ] || die "the shards did not answer psctl status within 20 s (logs in $logs)"
    local wp=()
    for h in w0 w1 w2; do
        local wa=${NC_WORKER_ARGS:-} wn=NC_WORKER_ARGS_$h
        wa="$wa ${!wn:-}"
        [ -n "${wa// /}" ] && say "run: $h: workerd extra arguments:$wa"
        # shellcheck disable=SC2086  # extra arguments, split on spaces
        ip netns exec "$(ns $h)" "$BIN/workerd" --placement "$conf" --node $h --connect-timeout 30 $wa \
            >"$logs/$h.out" 2>"$logs/$h.log" </dev/null &
        wp+=($!); RUN_PIDS+=($!)
    done
    # wait for the workers, at most NC_RUN_TIMEOUT seconds
    local limit=${NC_RUN_TIMEOUT:-600} start=$SECONDS timed_out=0
    while :; do
        local alive=0
        for i in "${wp[@]}"; do kill -0 "$i" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        if [ $((SECONDS - start)) -ge "$limit" ]; then timed_out=1; kill -TERM "${wp[@]}" 2>/dev/null; sleep 1; kill -KILL "${wp[@]}" 2>/dev/null; break; fi
        sleep 0.2
    done
    t1=$(date +%s.%N)
    local rcs=() bad=0 rc
    i=0
    for h in w0 w1 w2; do
        wait "${wp[$i]}"; rc=$?
        rcs+=("$h=$rc"); [ "$rc" = 0 ] || bad=1
        i=$((i + 1))
    done
    # psctl from w0's namespace, over the lossy link: a few tries
    for i in 1 2 3; do in_ns w0 "$BIN/psctl" --placement "$conf" status >"$dir/status.txt" 2>&1 && break; done
    for i in 1 2 3; do in_ns w0 "$BIN/psctl" --placement "$conf" status --json >"$dir/status.json" 2>/dev/null && break; done
    for i in 1 2 3; do in_ns w0 "$BIN/psctl" --placement "$conf" accuracy >"$dir/accuracy.txt" 2>&1 && break; done
    cp "$dir/status.txt" "$dir/status.json" "$dir/accuracy.txt" "$logs/" 2>/dev/null
    kill -TERM "$PSPID0" "$PSPID1" 2>/dev/null
    for i in $(seq 50); do
        kill -0 "$PSPID0" 2>/dev/null || kill -0 "$PSPID1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$PSPID0" "$PSPID1" 2>/dev/null
    wait "$PSPID0" "$PSPID1" 2>/dev/null
    trap - INT TERM
    local acc
    acc=$(grep -o 'test_acc=[0-9.]*' "$logs/w0.out" "$logs/w0.log" 2>/dev/null | tail -n1 | cut -d= -f2)
    local job
    job=$(grep -m1 '^job:' "$dir/status.txt")
    echo "netcluster: run: workers ${rcs[*]}$([ $timed_out = 1 ] && echo " (timed out after ${limit}s)") wall_s=$(echo "$t1 $t0" | awk '{printf "%.2f", $1 - $2}') test_acc=${acc:-none} ${job:-job: ?} logs=$logs"
    [ $bad = 0 ] && [ $timed_out = 0 ]
}

# ------------------------------------------------------------ verify
# Between w0 (client) and ps0 (server): ping RTT, one-way UDP loss, TCP rate
# with the loss rule off (the link's rate), and with it on (what TCP gets):
# 1 stream and NC_VERIFY_STREAMS streams.
loss_rule() {   # loss_rule HOST PERMILLE
    local h=$1 pm=$2
    in_ns $h nft flush chain ip psnet loss 2>/dev/null || return 0
    [ "$pm" -gt 0 ] && in_ns $h nft add rule ip psnet loss numgen random mod 1000 '<' "$pm" counter drop
    return 0
}

tcp_rate() {    # tcp_rate STREAMS SECONDS [CC] -> "tcp streams=... mbit=..."
    local n=$1 s=$2 cc=${3:-} port=$((5201 + RANDOM % 1000)) out
    out=$(mktemp)
    in_ns ps0 $PY "$HERE/netmeasure.py" tcp-server $port "$n" $((s + 30)) >"$out" 2>&1 &
    local sp=$!
    local i
    for i in $(seq 50); do grep -q listening "$out" && break; sleep 0.1; done
    in_ns w0 $PY "$HERE/netmeasure.py" tcp-client "${ADDR[ps0]}" $port "$s" "$n" $cc >&2
    wait $sp
    grep '^tcp ' "$out"
    rm -f "$out"
}

verify() {
    local arg=$1 dir
    if [ -f "$arg/cluster.env" ]; then
        dir=$arg
    else
        dir=$(mktemp -d "${TMPDIR:-/tmp}/psd-netverify.XXXXXX") || die "mktemp failed"
        profile "$arg"
        ( up "$arg" "$dir" ) || { local rc=$?; rm -rf "$dir"; exit $rc; }
        trap 'down; rm -rf "'"$dir"'"' EXIT
        trap 'exit 130' INT TERM
    fi
    load_env "$dir"
    local prof=$NC_PROFILE streams=${NC_VERIFY_STREAMS:-4}
    profile "$prof"
    RATE=$NC_RATE; DELAY=$NC_DELAY_MS; LOSS=$NC_LOSS_PERMILLE
    local fail=0 out
    say "verify: profile $prof between w0 (${ADDR[w0]}) and ps0 (${ADDR[ps0]})"

    # RTT: 20 pings, 0.1 s apart
    out=$(in_ns w0 ping -q -c 20 -i 0.1 -W 2 "${ADDR[ps0]}" 2>&1)
    local rtt
    rtt=$(echo "$out" | sed -nE 's|.*= [0-9.]+/([0-9.]+)/.*|\1|p')
    local want_rtt=$((2 * DELAY))
    if [ -z "$rtt" ]; then
        say "verify: rtt: no answer: $out"; fail=1
    else
        local ok
        if [ "$want_rtt" = 0 ]; then ok=$(awk -v r="$rtt" 'BEGIN{print (r < 2) ? 1 : 0}'); range="< 2 ms"
        else ok=$(awk -v r="$rtt" -v w="$want_rtt" 'BEGIN{print (r >= 0.7*w && r <= 1.3*w) ? 1 : 0}')
            range="$want_rtt ms +-30%"; fi
        say "verify: rtt_ms=$rtt (ping avg of 20; expected $range) $([ "$ok" = 1 ] && echo ok || echo FAILED)"
        [ "$ok" = 1 ] || fail=1
    fi

    # loss: 20000 numbered UDP datagrams w0 -> ps0 at 10000/s
    local port=$((6201 + RANDOM % 1000)) tmp
    tmp=$(mktemp)
    in_ns ps0 $PY "$HERE/netmeasure.py" udp-server $port 20000 30 >"$tmp" 2>&1 &
    local sp=$! i
    for i in $(seq 50); do grep -q listening "$tmp" && break; sleep 0.1; done
    in_ns w0 $PY "$HERE/netmeasure.py" udp-client "${ADDR[ps0]}" $port 20000 10000
    wait $sp
    out=$(grep '^udp ' "$tmp"); rm -f "$tmp"
    local lpct
    lpct=$(echo "$out" | sed -nE 's/.*loss_pct=([0-9.]+).*/\1/p')
    if [ -z "$lpct" ]; then
        say "verify: loss: no result"; fail=1
    else
        local ok range
        if [ "$LOSS" = 0 ]; then ok=$(awk -v l="$lpct" 'BEGIN{print (l <= 0.05) ? 1 : 0}'); range="0 (<= 0.05%)"
        else ok=$(awk -v l="$lpct" -v p="$LOSS" 'BEGIN{w = p / 10; print (l >= w / 3 && l <= 2.5 * w) ? 1 : 0}')
            range="$(awk -v p="$LOSS" 'BEGIN{printf "%.1f%%, accepted %.3f..%.3f%%", p/10, p/30, p/4}')"; fi
        say "verify: loss_pct=$lpct one way ($out; expected $range) $([ "$ok" = 1 ] && echo ok || echo FAILED)"
        [ "$ok" = 1 ] || fail=1
    fi

    # the link's rate: loss off on both ends, NC_VERIFY_STREAMS streams for 3 s
    loss_rule ps0 0; loss_rule w0 0
    out=$(tcp_rate "$streams" 3)
    local mbit
    mbit=$(echo "$out" | sed -nE 's/.* mbit=([0-9.]+).*/\1/p')
    loss_rule ps0 "$LOSS"; loss_rule w0 "$LOSS"
    if [ -n "$RATE" ]; then
        local want=${RATE%mbit} ok
        ok=$(awk -v m="${mbit:-0}" -v w="$want" 'BEGIN{print (m >= 0.75*w && m <= 1.1*w) ? 1 : 0}')
        say "verify: link_rate_mbit=${mbit:-none} ($streams streams, loss off; expected $want -25%/+10%) $([ "$ok" = 1 ] && echo ok || echo FAILED)"
        [ "$ok" = 1 ] || fail=1
    else
        say "verify: link_rate_mbit=${mbit:-none} ($streams streams; unshaped: not checked)"
        [ -n "$mbit" ] || fail=1
    fi

    # what TCP gets with the profile's loss: 1 stream, then N streams, with
    # the namespaces' congestion control (what psd uses) and with cubic
    local mathis="" summary="" cc ccs
    if [ "$LOSS" -gt 0 ] && [ "$DELAY" -gt 0 ]; then
        mathis=$(awk -v p="$LOSS" -v d="$DELAY" 'BEGIN{printf "%.1f", 1448*8/(2*d/1000)*1.22/sqrt(p/1000)/1e6}')
        mathis="; Mathis MSS/RTT*1.22/sqrt(p) = $mathis Mbit/s"
    fi
    local defcc
    defcc=$(in_ns w0 sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null)
    ccs=("${defcc:-default}")
    [ "$defcc" != cubic ] && in_ns w0 sysctl -n net.ipv4.tcp_available_congestion_control 2>/dev/null | grep -qw cubic && ccs+=(cubic)
    for cc in "${ccs[@]}"; do
        local m1 mn per arg=$cc
        [ "$cc" = default ] && arg=
        out=$(tcp_rate 1 3 $arg); m1=$(echo "$out" | sed -nE 's/.* mbit=([0-9.]+).*/\1/p')
        [ -n "$m1" ] || fail=1
        out=$(tcp_rate "$streams" 3 $arg); mn=$(echo "$out" | sed -nE 's/.* mbit=([0-9.]+).*/\1/p')
        [ -n "$mn" ] || fail=1
        per=$(echo "$out" | sed -nE 's/.*per_stream_mbit=([0-9.,]+).*/\1/p')
        say "verify: $cc: tcp_1_stream_mbit=${m1:-none} tcp_${streams}_streams_mbit=${mn:-none} (per stream $per; with the profile's loss$mathis)"
        summary="$summary ${cc}_1_stream_mbit=${m1:-none} ${cc}_${streams}_streams_mbit=${mn:-none}"
    done
    if [ -f "$dir/netdelay.pid" ]; then
        kill -USR1 "$(cat "$dir/netdelay.pid")" 2>/dev/null; sleep 0.2
        say "verify: netdelay counters:"; grep '^netdelay: port' "$dir/logs/netdelay.log" | tail -n ${#HOSTS[@]} | sed 's/^/    /'
    fi
    say "verify: profile $prof: rtt_ms=${rtt:-none} loss_pct=${lpct:-none} link_rate_mbit=${mbit:-none}$summary $([ $fail = 0 ] && echo PASSED || echo FAILED)"
    return $fail
}

# ------------------------------------------------------------ main
cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
    up)
        [ $# = 2 ] || { echo "usage: netcluster.sh up PROFILE DIR" >&2; exit 2; }
        up "$1" "$2" ;;
    placement)
        [ $# -ge 2 ] && [ $# -le 3 ] || { echo "usage: netcluster.sh placement DIR MODE [JOB_EXTRA]" >&2; exit 2; }
        placement "$@" ;;
    run)
        [ $# = 1 ] || { echo "usage: netcluster.sh run DIR" >&2; exit 2; }
        run "$1" ;;
    exec)
        [ $# -ge 2 ] || { echo "usage: netcluster.sh exec NODE CMD..." >&2; exit 2; }
        n=$1; shift
        [ -n "${NC_DIR:-}" ] && [ -f "$NC_DIR/cluster.env" ] && load_env "$NC_DIR"
        exec ip netns exec "$(ns "$n")" "$@" ;;
    verify)
        [ $# = 1 ] || { echo "usage: netcluster.sh verify PROFILE|DIR" >&2; exit 2; }
        verify "$1" ;;
    session)
        [ $# -ge 3 ] || { echo "usage: netcluster.sh session PROFILE DIR CMD..." >&2; exit 2; }
        prof=$1; dir=$2; shift 2
        ( up "$prof" "$dir" ) || exit $?
        trap 'down' EXIT
        CHILD=
        trap '[ -n "$CHILD" ] && kill -TERM $CHILD 2>/dev/null; exit 130' INT TERM
        NC_DIR=$(cd "$dir" && pwd) NC_PREFIX=$P "$@" &
        CHILD=$!
        wait $CHILD ;;
    check)
        [ $# = 1 ] || { echo "usage: netcluster.sh check PROFILE" >&2; exit 2; }
        profile "$1"; require "$1"; say "check: everything profile $1 needs is here" ;;
    down)
        [ $# -le 1 ] || { echo "usage: netcluster.sh down [DIR]" >&2; exit 2; }
        [ $# = 1 ] && [ -f "$1/cluster.env" ] && load_env "$1"
        down
        say "down: prefix $P: namespaces and their processes removed" ;;
    *)
        sed -n '2,/^set -u/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
        [ -z "$cmd" ] || [ "$cmd" = -h ] || [ "$cmd" = --help ] || exit 2 ;;
esac
