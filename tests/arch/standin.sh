#!/bin/sh
# A tiny netifd stand-in for the foreign-architecture guests (busybox sh, no JSON tool there).
#
#   standin.sh setup|teardown NETNS CALLS.jsonl IFACE=DEV...
#
# setup: takes the handler's `notify_proto` update (action 0) from the calls the fake ubus
# recorded and does with it what netifd does: the ip6tnl `ifname` from the `tunnel` object
# (mode, local, remote, the device of `link`, ttl, mtu; encaplimit none when data.encaplimit is
# "ignore"), then the IPv4 addresses and routes on it. teardown: deletes that tunnel (netifd
# removes the device of an interface that goes down; addresses and routes go with it).
# IFACE=DEV maps netifd interface names to devices (wan6=wan). Any field it cannot find is an
# error: a change in the payload is noticed, not ignored. This is the kernel-ABI bed's helper;
# the real netifd runs on x86 (tests/openwrt).
set -u
action=${1:?usage: standin.sh setup|teardown NETNS CALLS IFACE=DEV...}
ns=${2:?netns}
calls=${3:?calls file}
shift 3
# Debian's busybox runs its own applets before PATH (FEATURE_PREFER_APPLETS): iproute2 by path.
ip() { /sbin/ip "$@"; }
die() { echo "standin: $*" >&2; exit 1; }

# The update: the notify_proto call with "action":0 (serde_json writes no spaces).
upd=$(grep '"method":"notify_proto"' "$calls" | grep '"action":0[,}]' | tail -1)
[ -n "$upd" ] || die "no notify_proto update (action 0) in $calls"
str() { # KEY [TEXT]: the first "KEY":"value" in TEXT (default: the update)
	printf '%s' "${2:-$upd}" | grep -o "\"$1\":\"[^\"]*\"" | head -1 | cut -d'"' -f4
}
num() { printf '%s' "${2:-$upd}" | grep -o "\"$1\":[0-9]*" | head -1 | cut -d: -f2; }

args=$(printf '%s' "$upd" | sed 's/.*"args":{//')
ifname=$(str ifname "$args")
[ -n "$ifname" ] || die "update without ifname"

if [ "$action" = teardown ]; then
	ip -n "$ns" link del "$ifname" 2>/dev/null || true
	exit 0
fi
[ "$action" = setup ] || die "unknown action $action"

tun=$(printf '%s' "$args" | sed -n 's/.*"tunnel":{\(.*\)/\1/p')
[ -n "$tun" ] || die "update without a tunnel object"
mode=$(str mode "$tun") local=$(str local "$tun") remote=$(str remote "$tun") link=$(str link "$tun")
ttl=$(num ttl "$tun") mtu=$(num mtu "$tun") encap=$(str encaplimit "$tun")
for v in mode local remote link; do
	eval "[ -n \"\$$v\" ]" || die "tunnel object without $v: {$tun"
done
[ "$mode" = ipip6 ] || die "tunnel mode $mode (the stand-in knows ipip6)"
dev=
for m in "$@"; do [ "${m%%=*}" = "$link" ] && dev=${m#*=}; done
[ -n "$dev" ] || die "tunnel link $link is not a known interface ($*)"
opts="mode ipip6 local $local remote $remote dev $dev"
[ -n "$ttl" ] && opts="$opts ttl $ttl"
[ "$encap" = ignore ] && opts="$opts encaplimit none"

ip -n "$ns" link del "$ifname" 2>/dev/null
# shellcheck disable=SC2086
ip -n "$ns" link add "$ifname" type ip6tnl $opts || die "ip link add $ifname type ip6tnl $opts failed"
[ -n "$mtu" ] && { ip -n "$ns" link set "$ifname" mtu "$mtu" || die "mtu $mtu"; }
ip -n "$ns" link set "$ifname" up || die "link up"

# "ipaddr":[{"ipaddr":"192.0.2.18","mask":"32"}], "routes":[{"netmask":"0","target":"0.0.0.0"}]
list() { printf '%s' "$args" | sed -n "s/.*\"$1\":\[\([^]]*\)\].*/\1/p" | sed 's/},{/} {/g'; }
n=0
for o in $(list ipaddr); do
	a=$(str ipaddr "$o") m=$(str mask "$o")
	[ -n "$a" ] || die "ipaddr entry without an address: $o"
	ip -n "$ns" addr add "$a/${m:-32}" dev "$ifname" || die "addr $a/${m:-32}"
	n=$((n + 1))
done
[ $n -gt 0 ] || die "update without an IPv4 address"
for o in $(list routes); do
	t=$(str target "$o") m=$(str netmask "$o")
	[ -n "$t" ] || die "route without a target: $o"
	ip -n "$ns" route add "$t/${m:-32}" dev "$ifname" || die "route $t/${m:-32}"
done
exit 0
