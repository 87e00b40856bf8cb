#!/usr/bin/env bash
# tether handoff lab: the one source of truth for the topology.
#
#   lab.sh setup [wifi|cell|none]   build the namespaces; bring the given uplink up (default wifi)
#   lab.sh handoff to-cell|to-wifi [--outage-ms N | --overlap-ms N]
#                                   move the phone to the other uplink, as a phone does:
#                                   at once (break before make), or the new uplink comes
#                                   up N ms after the old one went (outage), or N ms
#                                   before it goes (overlap: make before break)
#   lab.sh delay on|off             route everything the router forwards through
#                                   the TUN device $DELAY_DEV (which a delay line,
#                                   tether-lab's DelayRouter, must have created)
#   lab.sh nat cone|symmetric       the phone's two uplink gateways and the home
#                                   gateway masquerade (nftables); the private
#                                   subnets behind them become unroutable
#   lab.sh counters                 UDP packets the home gateway forwarded, as
#                                   KEY=VALUE lines (after `nat`)
#   lab.sh teardown                 remove everything (idempotent)
#   lab.sh env                      print the names and addresses as KEY=VALUE lines
#
# setup.sh, handoff.sh and teardown.sh are thin entry points to this file, and
# the Rust crate tether-lab embeds this file and runs it with `bash -c`, so the
# topology is written down exactly once. See README.md for the diagram.
#
# LAB_ID (env, optional, [A-Za-z0-9_.-], at most 32 characters) suffixes every
# namespace name so that parallel labs do not collide. Everything else lives
# inside the namespaces, so interface names and addresses may repeat.
set -euo pipefail

LAB_ID="${LAB_ID:-}"

die() {
    echo "lab: error: $*" >&2
    exit 1
}

if [[ ! "$LAB_ID" =~ ^[A-Za-z0-9_.-]{0,32}$ ]]; then
    die "LAB_ID must match [A-Za-z0-9_.-]{0,32}, got '$LAB_ID'"
fi

SUFFIX="${LAB_ID:+-$LAB_ID}"
PHONE_NS="tether-phone$SUFFIX"
WIFI_GW_NS="tether-wifigw$SUFFIX"
CELL_GW_NS="tether-cellgw$SUFFIX"
ROUTER_NS="tether-router$SUFFIX"
CLOUD_NS="tether-cloud$SUFFIX"
HOME_GW_NS="tether-homegw$SUFFIX"
HOME_NS="tether-home$SUFFIX"
ALL_NS=("$PHONE_NS" "$WIFI_GW_NS" "$CELL_GW_NS" "$ROUTER_NS" "$CLOUD_NS" "$HOME_GW_NS" "$HOME_NS")

# Phone side: two uplinks, each a veth pair to its own gateway (the home
# Wi-Fi box, the carrier's NAT), whose WAN side is a veth pair to the router.
# ROUTER_*_ADDR are the phone's default gateways (in the gateway namespaces).
WIFI_DEV=wifi0
CELL_DEV=cell0
# In the gateways: LAN towards the phone (or home), WAN towards the router
# (or the cloud).
GW_LAN_DEV=lan0
GW_WAN_DEV=wan0
PHONE_WIFI_ADDR=10.77.1.2
ROUTER_WIFI_ADDR=10.77.1.1
PHONE_CELL_ADDR=10.77.2.2
ROUTER_CELL_ADDR=10.77.2.1
UPLINK_PREFIX_LEN=24
ROUTER_WIFI_DEV=r-wifi
ROUTER_CELL_DEV=r-cell
# The gateways' WAN addresses (the phone's public addresses under NAT) and
# the router's on those links.
WIFI_PUBLIC_ADDR=10.77.11.2
ROUTER_WIFI_WAN_ADDR=10.77.11.1
CELL_PUBLIC_ADDR=10.77.12.2
ROUTER_CELL_WAN_ADDR=10.77.12.1
# Cloud side: one veth pair router <-> cloud.
ROUTER_CLOUD_DEV=r-cloud
CLOUD_DEV=eth0
ROUTER_CLOUD_ADDR=10.77.9.1
CLOUD_ADDR=10.77.9.2
CLOUD_PREFIX_LEN=24
# Home: the far peer behind its own gateway, which hangs off the cloud (so
# the far peer reaches the servers without crossing the delaying router, as
# when it sat in the cloud namespace).
CLOUD_HOME_DEV=c-home
CLOUD_HOME_ADDR=10.77.15.1
HOME_PUBLIC_ADDR=10.77.15.2
HOME_GW_ADDR=10.77.5.1
HOME_DEV=eth0
HOME_ADDR=10.77.5.2
# NAT: one nftables table in each gateway.
NAT_TABLE=tether_nat
# Added delay: a TUN device in the router and a routing table into it.
DELAY_DEV=r-delay
DELAY_TABLE=77
DELAY_RULE_PREF=1000

require_root() {
    if [[ "$(id -u)" -ne 0 ]]; then
        die "the lab must run as root (network namespaces and veth need CAP_NET_ADMIN and CAP_SYS_ADMIN); re-run with sudo"
    fi
    command -v ip >/dev/null 2>&1 || die "'ip' (iproute2) is not installed"
}

ns_exists() {
    [[ -e "/run/netns/$1" ]]
}

phone() {
    ip -n "$PHONE_NS" "$@"
}

# The phone-side steps are printed as `ip -batch` lines and applied by one
# `ip` process, so a handoff's kernel changes land within a millisecond or
# two of each other, as on a phone, instead of one process start apart.

# A phone joins a network in two steps: the link comes up (Wi-Fi associates,
# the modem attaches), and only once frames flow both ways does DHCP (or the
# carrier) hand it an address and a default route. The lab keeps that order:
# link_up, then wait_link until the router's end of the veth is operationally
# up (the kernel activates each end's transmit queue asynchronously, after
# carrier; a phone that sent at once could lose what the router sent back,
# and its SYN waited a second for the kernel to try again), then
# uplink_address. A phone never holds an address on a link that cannot
# answer.

# link_up DEV: the link comes up.
link_up() {
    echo "link set $1 up"
}

# uplink_address DEV ADDR GATEWAY: address and default route (what DHCP
# gives). `replace` keeps it idempotent.
uplink_address() {
    local dev=$1 addr=$2 gateway=$3
    echo "addr replace $addr/$UPLINK_PREFIX_LEN dev $dev"
    echo "route replace default via $gateway dev $dev"
}

# router_end DEV: the router's end of the phone's uplink DEV.
router_end() {
    case "$1" in
        "$WIFI_DEV") echo "$ROUTER_WIFI_DEV" ;;
        "$CELL_DEV") echo "$ROUTER_CELL_DEV" ;;
        *) die "no router end for $1" ;;
    esac
}

# wait_link DEV: waits (at most 2 s) until both ends of the phone's uplink
# DEV are operationally up.
wait_link() {
    local dev=$1 peer tries=0
    peer=$(router_end "$dev")
    until ip -n "$PHONE_NS" -o link show dev "$dev" | grep -q "state UP" &&
        ip -n "$ROUTER_NS" -o link show dev "$peer" | grep -q "state UP"; do
        ((++tries > 1000)) && die "link $dev did not come up within 2 s"
        sleep 0.002
    done
}

# uplink_up DEV ADDR GATEWAY: the whole join, in order.
uplink_up() {
    link_up "$1" | phone_batch
    wait_link "$1"
    uplink_address "$@" | phone_batch
}

# uplink_down DEV: the address disappears, and with it the IPv4 routes that
# used it (the default route included: the kernel flushes it with the
# gateway's subnet), then the link goes down (carrier lost), which flushes
# whatever route was left on it. Harmless on an uplink that is already down.
uplink_down() {
    local dev=$1
    echo "addr flush dev $dev"
    echo "link set $dev down"
}

phone_batch() {
    ip -n "$PHONE_NS" -batch -
}

undo_failed_setup() {
    local rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "lab: setup failed, tearing down" >&2
        cmd_teardown >/dev/null 2>&1 || true
    fi
}

cmd_setup() {
    local initial=${1:-wifi}
    case "$initial" in
        wifi | cell | none) ;;
        *) die "setup: unknown initial uplink '$initial' (expected wifi, cell or none)" ;;
    esac
    require_root
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            die "namespace $ns already exists; run teardown.sh (with the same LAB_ID) first"
        fi
    done
    # A half-built lab is worse than none.
    trap undo_failed_setup EXIT

    for ns in "${ALL_NS[@]}"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done

    # phone -- Wi-Fi gateway -- router; phone -- cellular gateway -- router
    phone link add "$WIFI_DEV" type veth peer name "$GW_LAN_DEV" netns "$WIFI_GW_NS"
    phone link add "$CELL_DEV" type veth peer name "$GW_LAN_DEV" netns "$CELL_GW_NS"
    ip -n "$WIFI_GW_NS" link add "$GW_WAN_DEV" type veth peer name "$ROUTER_WIFI_DEV" netns "$ROUTER_NS"
    ip -n "$CELL_GW_NS" link add "$GW_WAN_DEV" type veth peer name "$ROUTER_CELL_DEV" netns "$ROUTER_NS"
    gateway "$WIFI_GW_NS" "$ROUTER_WIFI_ADDR/$UPLINK_PREFIX_LEN" "$WIFI_PUBLIC_ADDR/$UPLINK_PREFIX_LEN" "$ROUTER_WIFI_WAN_ADDR"
    gateway "$CELL_GW_NS" "$ROUTER_CELL_ADDR/$UPLINK_PREFIX_LEN" "$CELL_PUBLIC_ADDR/$UPLINK_PREFIX_LEN" "$ROUTER_CELL_WAN_ADDR"

    # router -- cloud
    ip -n "$ROUTER_NS" link add "$ROUTER_CLOUD_DEV" type veth peer name "$CLOUD_DEV" netns "$CLOUD_NS"
    ip -n "$ROUTER_NS" addr add "$ROUTER_WIFI_WAN_ADDR/$UPLINK_PREFIX_LEN" dev "$ROUTER_WIFI_DEV"
    ip -n "$ROUTER_NS" addr add "$ROUTER_CELL_WAN_ADDR/$UPLINK_PREFIX_LEN" dev "$ROUTER_CELL_DEV"
    ip -n "$ROUTER_NS" addr add "$ROUTER_CLOUD_ADDR/$CLOUD_PREFIX_LEN" dev "$ROUTER_CLOUD_DEV"
    for dev in "$ROUTER_WIFI_DEV" "$ROUTER_CELL_DEV" "$ROUTER_CLOUD_DEV"; do
        ip -n "$ROUTER_NS" link set "$dev" up
    done
    forwarding "$ROUTER_NS"

    ip -n "$CLOUD_NS" addr add "$CLOUD_ADDR/$CLOUD_PREFIX_LEN" dev "$CLOUD_DEV"
    ip -n "$CLOUD_NS" link set "$CLOUD_DEV" up
    ip -n "$CLOUD_NS" route add default via "$ROUTER_CLOUD_ADDR" dev "$CLOUD_DEV"

    # cloud -- home gateway -- home
    ip -n "$CLOUD_NS" link add "$CLOUD_HOME_DEV" type veth peer name "$GW_WAN_DEV" netns "$HOME_GW_NS"
    ip -n "$CLOUD_NS" addr add "$CLOUD_HOME_ADDR/$UPLINK_PREFIX_LEN" dev "$CLOUD_HOME_DEV"
    ip -n "$CLOUD_NS" link set "$CLOUD_HOME_DEV" up
    forwarding "$CLOUD_NS"
    ip -n "$HOME_GW_NS" link add "$GW_LAN_DEV" type veth peer name "$HOME_DEV" netns "$HOME_NS"
    gateway "$HOME_GW_NS" "$HOME_GW_ADDR/$UPLINK_PREFIX_LEN" "$HOME_PUBLIC_ADDR/$UPLINK_PREFIX_LEN" "$CLOUD_HOME_ADDR"
    ip -n "$HOME_NS" addr add "$HOME_ADDR/$UPLINK_PREFIX_LEN" dev "$HOME_DEV"
    ip -n "$HOME_NS" link set "$HOME_DEV" up
    ip -n "$HOME_NS" route add default via "$HOME_GW_ADDR" dev "$HOME_DEV"
    # The home gateway's public subnet is the cloud's; the router reaches it
    # through the cloud.
    ip -n "$ROUTER_NS" route add "${HOME_PUBLIC_ADDR%.*}.0/$UPLINK_PREFIX_LEN" via "$CLOUD_ADDR" dev "$ROUTER_CLOUD_DEV"

    # Without NAT every subnet is routable from everywhere: the router and
    # the cloud know where the private subnets behind the gateways are.
    private_routes add

    case "$initial" in
        wifi) uplink_up "$WIFI_DEV" "$PHONE_WIFI_ADDR" "$ROUTER_WIFI_ADDR" ;;
        cell) uplink_up "$CELL_DEV" "$PHONE_CELL_ADDR" "$ROUTER_CELL_ADDR" ;;
        none) ;;
    esac
    trap - EXIT
    echo "lab: up (phone=$PHONE_NS router=$ROUTER_NS cloud=$CLOUD_NS home=$HOME_NS uplink=$initial)" >&2
}

# forwarding NS: IPv4 forwarding on (through /proc rather than sysctl(8):
# one tool fewer to require).
forwarding() {
    ip netns exec "$1" bash -c "echo 1 > /proc/sys/net/ipv4/ip_forward"
}

# gateway NS LAN_ADDR/LEN WAN_ADDR/LEN UPSTREAM: addresses on a gateway's
# lan0 and wan0 (created already), both up, forwarding on, default route to
# UPSTREAM.
gateway() {
    local ns=$1 lan=$2 wan=$3 upstream=$4
    ip -n "$ns" addr add "$lan" dev "$GW_LAN_DEV"
    ip -n "$ns" addr add "$wan" dev "$GW_WAN_DEV"
    ip -n "$ns" link set "$GW_LAN_DEV" up
    ip -n "$ns" link set "$GW_WAN_DEV" up
    ip -n "$ns" route add default via "$upstream" dev "$GW_WAN_DEV"
    forwarding "$ns"
}

# private_routes add|del: (del: whichever are still there) the router's and
# the cloud's routes to the private subnets behind the gateways (the phone's
# uplinks, home).
private_routes() {
    local op=$1
    {
        echo "route $op ${PHONE_WIFI_ADDR%.*}.0/$UPLINK_PREFIX_LEN via $WIFI_PUBLIC_ADDR dev $ROUTER_WIFI_DEV"
        echo "route $op ${PHONE_CELL_ADDR%.*}.0/$UPLINK_PREFIX_LEN via $CELL_PUBLIC_ADDR dev $ROUTER_CELL_DEV"
        echo "route $op ${HOME_ADDR%.*}.0/$UPLINK_PREFIX_LEN via $CLOUD_ADDR dev $ROUTER_CLOUD_DEV"
    } | ip -n "$ROUTER_NS" -force -batch - || [[ "$op" == del ]]
    echo "route $op ${HOME_ADDR%.*}.0/$UPLINK_PREFIX_LEN via $HOME_PUBLIC_ADDR dev $CLOUD_HOME_DEV" |
        ip -n "$CLOUD_NS" -force -batch - || [[ "$op" == del ]]
}

# sleep_ms N: waits N milliseconds (sleep(1) takes fractional seconds).
sleep_ms() {
    local ms=$1
    sleep "$((ms / 1000)).$(printf '%03d' $((ms % 1000)))"
}

cmd_handoff() {
    local direction=${1:-} mode=immediate gap_ms=0
    shift || true
    while (($#)); do
        case "$1" in
            --outage-ms | --overlap-ms)
                [[ -z "${2:-}" ]] && die "handoff: $1 needs a number of milliseconds"
                [[ "$2" =~ ^[0-9]{1,7}$ ]] || die "handoff: $1 expects milliseconds (0-9999999), got '$2'"
                [[ "$mode" == immediate ]] || die "handoff: --outage-ms and --overlap-ms exclude each other"
                mode=${1#--}
                mode=${mode%-ms}
                gap_ms=$((10#$2))
                shift 2
                ;;
            *) die "handoff: unknown option '$1' (expected --outage-ms N or --overlap-ms N)" ;;
        esac
    done
    local old_dev new_dev new_addr new_gateway
    case "$direction" in
        to-cell)
            old_dev=$WIFI_DEV new_dev=$CELL_DEV new_addr=$PHONE_CELL_ADDR new_gateway=$ROUTER_CELL_ADDR
            ;;
        to-wifi)
            old_dev=$CELL_DEV new_dev=$WIFI_DEV new_addr=$PHONE_WIFI_ADDR new_gateway=$ROUTER_WIFI_ADDR
            ;;
        *) die "handoff: expected to-cell or to-wifi, got '$direction'" ;;
    esac
    require_root
    ns_exists "$PHONE_NS" || die "namespace $PHONE_NS does not exist; run setup.sh (with the same LAB_ID) first"
    case "$mode" in
        immediate)
            # The old uplink goes as the new link comes up; the new address
            # follows once the link carries frames.
            {
                uplink_down "$old_dev"
                link_up "$new_dev"
            } | phone_batch
            wait_link "$new_dev"
            uplink_address "$new_dev" "$new_addr" "$new_gateway" | phone_batch
            ;;
        outage)
            # No uplink at all for gap_ms.
            uplink_down "$old_dev" | phone_batch
            sleep_ms "$gap_ms"
            uplink_up "$new_dev" "$new_addr" "$new_gateway"
            ;;
        overlap)
            # The new uplink takes the default route (`route replace`) while
            # the old one keeps its address and link for gap_ms.
            uplink_up "$new_dev" "$new_addr" "$new_gateway"
            sleep_ms "$gap_ms"
            uplink_down "$old_dev" | phone_batch
            ;;
    esac
}

# With delay on, packets arriving on the router's three veths are routed by
# table $DELAY_TABLE into the TUN device; the delay line writes them back,
# they arrive with iif $DELAY_DEV, match no rule of ours, and the main table
# forwards them on. Reverse-path filtering would drop them (they arrive on
# an interface their source is not routed through), so it is off in the
# router.
cmd_delay() {
    local state=${1:-}
    require_root
    ns_exists "$ROUTER_NS" || die "namespace $ROUTER_NS does not exist; run setup.sh (with the same LAB_ID) first"
    case "$state" in
        on)
            ip -n "$ROUTER_NS" link show "$DELAY_DEV" >/dev/null 2>&1 ||
                die "delay on: no device $DELAY_DEV in $ROUTER_NS; start the delay line (tether-lab DelayRouter) first"
            # shellcheck disable=SC2016 # expanded by the inner bash, in the namespace
            ip netns exec "$ROUTER_NS" bash -c \
                'for f in /proc/sys/net/ipv4/conf/*/rp_filter; do echo 0 > "$f"; done'
            {
                echo "route replace default dev $DELAY_DEV table $DELAY_TABLE"
                for dev in "$ROUTER_WIFI_DEV" "$ROUTER_CELL_DEV" "$ROUTER_CLOUD_DEV"; do
                    echo "rule add iif $dev lookup $DELAY_TABLE pref $DELAY_RULE_PREF"
                done
            } | ip -n "$ROUTER_NS" -batch -
            ;;
        off)
            while ip -n "$ROUTER_NS" rule del pref "$DELAY_RULE_PREF" 2>/dev/null; do :; done
            ip -n "$ROUTER_NS" route flush table "$DELAY_TABLE" 2>/dev/null || true
            ;;
        *) die "delay: expected on or off, got '$state'" ;;
    esac
}

# NAT in the three gateways, each in a namespace of its own (never in the
# router, whose delay line re-injects what it forwards: conntrack there
# would see every packet twice). Each gateway gets one nftables table:
#   - postrouting: masquerade what leaves on wan0. cone: plain masquerade,
#     which keeps the source port when it is free, so one socket keeps one
#     public address and port whatever it talks to (endpoint-independent
#     mapping); symmetric: `random,fully-random`, a new random port for
#     every new destination (endpoint-dependent mapping).
#   - forward: from the LAN anything; from the WAN only what belongs to a
#     connection the LAN side opened (conntrack), so inbound packets get in
#     only to a mapping the inside created, and only from the address and
#     port it sent to (Linux conntrack filters by both).
#   - input: a new flow from the WAN to the gateway itself (a peer's ICE
#     check that arrives before the inside has sent towards that peer) is
#     dropped. Dropped before conntrack confirms it, it leaves no entry;
#     accepted (and answered with ICMP port unreachable), its entry would
#     hold the reply tuple the inside's own packet to that peer needs a
#     moment later, and masquerade would then move that packet to another
#     port: hole punching would fail even through a cone NAT.
#   - counters (home only, ahead of the filter): UDP to or from the cloud's
#     address (signaling is TCP, so this is STUN, TURN and relayed data),
#     and DTLS application data (first payload byte 23) to or from anywhere
#     else, i.e. data on a direct path.
# The routes to the private subnets go, so only the gateways' public
# addresses are reachable from outside.
cmd_nat() {
    local kind=${1:-} flags
    case "$kind" in
        cone) flags="" ;;
        symmetric) flags=" random,fully-random" ;;
        *) die "nat: expected cone or symmetric, got '$kind'" ;;
    esac
    require_root
    command -v nft >/dev/null 2>&1 || die "nat: 'nft' (nftables) is not installed"
    local gw
    for gw in "$WIFI_GW_NS" "$CELL_GW_NS" "$HOME_GW_NS"; do
        ns_exists "$gw" || die "namespace $gw does not exist; run setup.sh (with the same LAB_ID) first"
        # Replaces an earlier table (`nat` twice: the second one wins).
        ip netns exec "$gw" nft delete table ip "$NAT_TABLE" 2>/dev/null || true
        nat_ruleset "$flags" "$([[ "$gw" == "$HOME_GW_NS" ]] && echo counters)" |
            ip netns exec "$gw" nft -f -
    done
    private_routes del 2>/dev/null
}

# nat_ruleset FLAGS [counters]: one gateway's nftables table.
nat_ruleset() {
    local flags=$1 counters=${2:-}
    echo "table ip $NAT_TABLE {"
    if [[ -n "$counters" ]]; then
        echo "    counter udp_cloud {}"
        echo "    counter dtls_direct {}"
    fi
    echo "    chain postrouting {"
    echo "        type nat hook postrouting priority srcnat; policy accept;"
    echo "        oifname \"$GW_WAN_DEV\" masquerade$flags"
    echo "    }"
    echo "    chain input {"
    echo "        type filter hook input priority filter; policy accept;"
    echo "        iifname \"$GW_WAN_DEV\" ct state new drop"
    echo "    }"
    echo "    chain forward {"
    echo "        type filter hook forward priority filter; policy drop;"
    if [[ -n "$counters" ]]; then
        echo "        meta l4proto udp ip saddr $CLOUD_ADDR counter name udp_cloud"
        echo "        meta l4proto udp ip daddr $CLOUD_ADDR counter name udp_cloud"
        echo "        ip saddr != $CLOUD_ADDR ip daddr != $CLOUD_ADDR udp length > 8 @th,64,8 23 counter name dtls_direct"
    fi
    echo "        iifname \"$GW_LAN_DEV\" accept"
    echo "        ct state established,related accept"
    echo "    }"
    echo "}"
}

# Prints the home gateway's counters (packets) as KEY=VALUE lines.
cmd_counters() {
    require_root
    ns_exists "$HOME_GW_NS" || die "namespace $HOME_GW_NS does not exist; run setup.sh (with the same LAB_ID) first"
    local name packets
    for name in udp_cloud dtls_direct; do
        packets=$(ip netns exec "$HOME_GW_NS" nft list counter ip "$NAT_TABLE" "$name" 2>/dev/null |
            sed -n 's/.*packets \([0-9]*\).*/\1/p' || true)
        [[ -n "$packets" ]] || die "counters: no NAT counters in $HOME_GW_NS (run 'lab.sh nat' first)"
        echo "HOME_${name^^}_PACKETS=$packets"
    done
}

# Ends the processes still running inside NS (TERM, then KILL after 2 s), so
# that deleting the name also frees the namespace. Never this script or its
# caller.
stop_processes() {
    local ns=$1 pid deadline
    local -a pids=()
    for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
        if [[ "$pid" != "$$" && "$pid" != "$PPID" ]]; then
            pids+=("$pid")
        fi
    done
    ((${#pids[@]})) || return 0
    echo "lab: stopping ${#pids[@]} process(es) in $ns: ${pids[*]}" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + 2))
    while ((SECONDS < deadline)); do
        local alive=0
        for pid in "${pids[@]}"; do
            if kill -0 "$pid" 2>/dev/null; then alive=1; fi
        done
        ((alive)) || return 0
        sleep 0.05
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
}

cmd_teardown() {
    require_root
    local ns removed=0
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            stop_processes "$ns"
            # Deleting a namespace destroys its veth ends, and so their peers.
            ip netns del "$ns" 2>/dev/null || true
            removed=$((removed + 1))
        fi
    done
    echo "lab: torn down (${removed} namespace(s) removed, LAB_ID='${LAB_ID}')" >&2
}

cmd_env() {
    cat <<EOF
LAB_ID=$LAB_ID
PHONE_NS=$PHONE_NS
WIFI_GW_NS=$WIFI_GW_NS
CELL_GW_NS=$CELL_GW_NS
ROUTER_NS=$ROUTER_NS
CLOUD_NS=$CLOUD_NS
HOME_GW_NS=$HOME_GW_NS
HOME_NS=$HOME_NS
WIFI_DEV=$WIFI_DEV
CELL_DEV=$CELL_DEV
PHONE_WIFI_ADDR=$PHONE_WIFI_ADDR
ROUTER_WIFI_ADDR=$ROUTER_WIFI_ADDR
PHONE_CELL_ADDR=$PHONE_CELL_ADDR
ROUTER_CELL_ADDR=$ROUTER_CELL_ADDR
UPLINK_PREFIX_LEN=$UPLINK_PREFIX_LEN
WIFI_PUBLIC_ADDR=$WIFI_PUBLIC_ADDR
CELL_PUBLIC_ADDR=$CELL_PUBLIC_ADDR
ROUTER_CLOUD_DEV=$ROUTER_CLOUD_DEV
CLOUD_DEV=$CLOUD_DEV
ROUTER_CLOUD_ADDR=$ROUTER_CLOUD_ADDR
CLOUD_ADDR=$CLOUD_ADDR
CLOUD_PREFIX_LEN=$CLOUD_PREFIX_LEN
HOME_ADDR=$HOME_ADDR
HOME_PUBLIC_ADDR=$HOME_PUBLIC_ADDR
DELAY_DEV=$DELAY_DEV
EOF
}

main() {
    local command=${1:-}
    shift || true
    case "$command" in
        setup) cmd_setup "$@" ;;
        handoff) cmd_handoff "$@" ;;
        delay) cmd_delay "$@" ;;
        nat) cmd_nat "$@" ;;
        counters) cmd_counters "$@" ;;
        teardown) cmd_teardown "$@" ;;
        env) cmd_env "$@" ;;
        *) die "usage: lab.sh setup [wifi|cell|none] | handoff to-cell|to-wifi [--outage-ms N | --overlap-ms N] | delay on|off | nat cone|symmetric | counters | teardown | env" ;;
    esac
}

main "$@"
