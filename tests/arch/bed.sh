#!/bin/sh
# The MAP-E bed inside a foreign-architecture guest (tests/arch; busybox sh, no python).
#
# Two network namespaces on the guest's own kernel: `ce` (the router: our handler, its CE
# address and nft table, the ip6tnl) and `br` (a BR decapsulating with ip6tnl, and the IPv4
# server 203.0.113.10). The handler is our static binary of this architecture
# (/usr/sbin/mape), run for real in `ce`: the CE address goes in over its own rtnetlink code,
# the nft table through Debian's nft of this architecture; its ubus client talks over a Unix
# socket to fake_ubusd (examples/fake_ubusd.rs, built for this architecture: ubusd's protocol,
# wan6's status from a file, every other call recorded), and a stand-in for netifd
# (standin.sh) creates the tunnel from the recorded notify payload.
#
# The expected values come from RFC 7597's example, not from mape: rule 2001:db8::/40 ->
# 192.0.2.0/24, 16 EA bits, PSID offset 6; the prefix 2001:db8:12:3400::/56 gives IPv4
# 192.0.2.18, PSID 0x34 (8 bits, ports A<<10 | 0x34<<2 | j), CE 2001:db8:12:3400:0:c000:212:34.
# The BR marks which source ports and echo ids reach the server (nft sets on its input).
#
# Settings (/arch/env): BREAK_PSID=1 configures the CE with a wrong PSID from the start (every
# port-set check must then fail); NEGATIVE=0 skips the negative-control phase.
# Prints `ok NAME` / `FAIL NAME: why` per check, then `N passed, M failed`; exit 1 on failure.
set -u
[ -f /arch/env ] && . /arch/env
BREAK_PSID=${BREAK_PSID:-0}
NEGATIVE=${NEGATIVE:-1}
# Debian's busybox runs its own applets before PATH (FEATURE_PREFER_APPLETS): iproute2 by path.
ip() { /sbin/ip "$@"; }
MAPE=/usr/sbin/mape
W=/tmp/bed
UBUS_SOCK=$W/ubus.sock
mkdir -p "$W/ubus/status" "$W/state"

RULE='type=map-e,ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=192.0.2.0,prefix4len=24,ealen=16,offset=6,br=2001:db8:ffff::1'
BR=2001:db8:ffff::1
PREFIX=2001:db8:12:3400::/56
IPV4=192.0.2.18
PSID=52 # 0x34
CE=2001:db8:12:3400:0:c000:212:34
WRONG_PSID=53 # 0x35: the negative control (the CE then also computes another CE address)
SERVER=203.0.113.10
IFACE=wanmap
TUN=map-$IFACE
CFG_GOOD="{\"proto\":\"mape\",\"tunlink\":\"wan6\",\"isp\":\"none\",\"rule\":\"$RULE\",\"mtu\":1460}"
CFG_WRONG="{\"proto\":\"mape\",\"tunlink\":\"wan6\",\"isp\":\"none\",\"rule\":\"$RULE,psidlen=8,psid=$((WRONG_PSID << 8))\",\"mtu\":1460}"
CFG=$CFG_GOOD
[ "$BREAK_PSID" = 1 ] && CFG=$CFG_WRONG

pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
say() { echo "# $*"; }
T0=$(cut -d' ' -f1 /proc/uptime)
elapsed() { awk -v a="$T0" -v b="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", b - a }'; }

ce() { ip netns exec ce "$@"; }
brx() { ip netns exec br "$@"; }

# ---- the domain -------------------------------------------------------------------------------
topology() {
	ip netns add ce && ip netns add br &&
		ip link add wan netns ce type veth peer name to-ce netns br &&
		ip -n ce link set lo up && ip -n ce link set wan up &&
		ip -n ce addr add 2001:db8:ff01::2/64 dev wan nodad &&
		ip -n ce -6 route add default via 2001:db8:ff01::1 dev wan &&
		ip -n br link set lo up && ip -n br link set to-ce up &&
		ip -n br addr add 2001:db8:ff01::1/64 dev to-ce nodad &&
		ip -n br addr add $BR/128 dev lo &&
		ip -n br addr add $SERVER/32 dev lo &&
		ip -n br -6 route add $PREFIX via 2001:db8:ff01::2 dev to-ce &&
		ip -n br link add br-any type ip6tnl mode ipip6 local $BR remote any encaplimit none &&
		ip -n br link set br-any up &&
		ip -n br link add br-ce type ip6tnl mode ipip6 local $BR remote $CE encaplimit none &&
		ip -n br link set br-ce mtu 1460 up &&
		ip -n br route add $IPV4/32 dev br-ce &&
		brx sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
			net.ipv4.conf.br-any.rp_filter=0 net.ipv4.conf.br-ce.rp_filter=0 &&
		brx nft -f - <<EOF
table ip srv {
	set tcp_sports { typeof tcp sport; flags dynamic; size 4096; }
	set udp_sports { typeof udp sport . udp dport; flags dynamic; size 4096; }
	set icmp_ids { typeof icmp id; flags dynamic; size 4096; }
	chain input {
		type filter hook input priority filter; policy accept;
		ip daddr $SERVER ip saddr 192.0.2.0/24 tcp flags syn add @tcp_sports { tcp sport }
		ip daddr $SERVER ip saddr 192.0.2.0/24 udp dport 7001-7010 add @udp_sports { udp sport . udp dport }
		ip daddr $SERVER ip saddr 192.0.2.0/24 icmp type echo-request add @icmp_ids { icmp id }
	}
}
EOF
}

servers() { # TCP echo (busybox nc); UDP echo on 7001-7005 (Debian's netcat-openbsd through a
	# fifo; one instance answers one peer, so each UDP flow has a port of its own)
	local p
	brx nc -ll -p 7000 -e /bin/cat </dev/null >/dev/null 2>&1 &
	for p in 7001 7002 7003 7004 7005; do
		rm -f "$W/udp$p"
		mkfifo "$W/udp$p"
		brx nc.openbsd -u -l $p <"$W/udp$p" 2>/dev/null | cat >"$W/udp$p" &
	done
	sleep 1
}

reset_server_sets() {
	brx nft flush set ip srv tcp_sports && brx nft flush set ip srv udp_sports && brx nft flush set ip srv icmp_ids
}

# What the server saw: the elements of one of its sets, one per line.
seen() {
	brx nft -n list set ip srv "$1" | tr '\n' ' ' | sed -n 's/.*elements = {\([^}]*\)}.*/\1/p' | tr ',' '\n' | tr -d ' \t' | grep .
}

in_set() { # port psid: RFC 7597 with a = 6, k = 8, m = 2 (ports with A = 0 are excluded)
	[ $((($1 >> 2) & 255)) -eq "$2" ] && [ $(($1 >> 10)) -ge 1 ]
}

# port_check SET MIN PSID: every element's port (the first field of `sport . dport`) in PSID's
# set, at least MIN elements. Prints the verdict. The UDP flows go to five destination ports and
# the CE's table spreads each destination's flows over the sets on its own (a round-robin counter
# per destination bucket), so two of them may leave by the same source port: their set is keyed
# by source and destination port, one element per flow.
port_check() {
	local n=0 stray= e p
	for e in $(seen "$1"); do
		p=${e%%.*}
		n=$((n + 1))
		in_set "$p" "$3" || stray="$stray $p"
	done
	if [ -n "$stray" ]; then
		set -- $stray
		echo "stray:$stray (PSID of $1: $(printf '%#x' $((($1 >> 2) & 255))); $n seen)"
		return 1
	fi
	[ "$n" -ge "$2" ] || { echo "only $n of $2 flows reached the server"; return 1; }
	echo "$n seen: $(seen "$1" | sed 's/\./->/' | tr '\n' ' ')"
}

# ---- the handler, run for real against fake_ubusd ---------------------------------------------
ubusd_start() { # fake_ubusd on $UBUS_SOCK serving $W/ubus; waits for its socket (5 s)
	local n=0
	/usr/sbin/fake_ubusd "$UBUS_SOCK" "$W/ubus" 2>"$W/fake_ubusd.log" &
	UBUSD_PID=$!
	while [ ! -S "$UBUS_SOCK" ] && [ $n -lt 50 ]; do
		kill -0 $UBUSD_PID 2>/dev/null || return 1
		sleep 0.1
		n=$((n + 1))
	done
	[ -S "$UBUS_SOCK" ]
}

wan6_status() {
	cat >"$W/ubus/status/wan6.json" <<EOF
{"up":true,"pending":false,"available":true,"proto":"static","l3_device":"wan","device":"wan",
 "ipv6-address":[{"address":"2001:db8:ff01::2","mask":64}],
 "ipv6-prefix":[{"address":"${PREFIX%/*}","mask":${PREFIX#*/},"preferred":3600,"valid":7200,"class":"wan6","assigned":{}}],
 "route":[],"dns-server":[],"data":{}}
EOF
}

handler() { # setup|teardown CONFIG: runs it in ce; $W/h.out, $W/h.err, $W/ubus/calls.jsonl, $hrc
	: >"$W/ubus/calls.jsonl"
	MAPE_UBUS_SOCKET="$UBUS_SOCK" MAPE_STATE_DIR="$W/state" \
		ip netns exec ce $MAPE netifd mape "$1" $IFACE "$2" >"$W/h.out" 2>"$W/h.err"
	hrc=$?
	# netifd remembers the last update of the interface; so does the stand-in's input
	[ "$1" = setup ] && cp "$W/ubus/calls.jsonl" "$W/last-setup.jsonl"
}

# Lines of the handler's stderr other than its "up:" log line.
errors() { grep -v "^mape: $IFACE: up: " "$W/h.err"; }

standin() { # setup|teardown: what netifd does with the recorded calls
	sh /arch/standin.sh "$1" ce "$W/last-setup.jsonl" wan6=wan >"$W/standin.log" 2>&1
}

snapshot() { # the ce namespace's state, to compare before and after
	{
		ip -n ce -o link show | sed 's/^[0-9]*: \([^:@]*\).*/\1/'
		ip -n ce -o addr show | sed 's/^[0-9]*: //; s/\\.*//'
		ip -n ce route show table all
		ip -n ce -6 route show table all
		ip -n ce rule show
		ip netns exec ce nft list ruleset
	} 2>&1
}

# ---- traffic ----------------------------------------------------------------------------------
traffic() { # NTCP NUDP NPING WAIT [UDP_BASE]: flows from ce to the server; sets tcp_ok udp_ok ping_ok
	# (answered flows). UDP flow i goes to port UDP_BASE+i (default 7000: the echo servers).
	local i
	tcp_ok=0 udp_ok=0 ping_ok=0
	i=0
	while [ $i -lt "$1" ]; do
		i=$((i + 1))
		[ "$(echo "tcp-$i" | ce nc -w "$4" $SERVER 7000 2>/dev/null)" = "tcp-$i" ] && tcp_ok=$((tcp_ok + 1))
	done
	i=0
	while [ $i -lt "$2" ]; do
		i=$((i + 1))
		[ "$(echo "udp-$i" | ce nc.openbsd -u -W 1 -w "$4" $SERVER $((${5:-7000} + i)) 2>/dev/null)" = "udp-$i" ] &&
			udp_ok=$((udp_ok + 1))
	done
	i=0
	while [ $i -lt "$3" ]; do
		i=$((i + 1))
		ce ping -c 1 -W "$4" $SERVER >/dev/null 2>&1 && ping_ok=$((ping_ok + 1))
	done
}

# ==============================================================================================
say "guest $(uname -m), kernel $(uname -r); nft $(nft --version 2>&1 | cut -d' ' -f2); $(ip -V 2>&1)"

# 1. kernel features and our binary
missing=
for m in ip6_tunnel tunnel6 nf_tables nft_nat nft_chain_nat nft_numgen nft_hash nf_nat nf_conntrack veth; do
	[ -d /sys/module/$m ] || missing="$missing $m"
done
if [ -z "$missing" ]; then ok "kernel $(uname -r): ip6_tunnel, nf_tables NAT (nft_nat, nft_chain_nat, nft_numgen, nft_hash), veth loaded"
else bad "kernel modules missing:$missing"; fi
# ELF header fields, read with od in the guest's (= the file's, little-endian) byte order.
elf_u() { od -An -tu"$2" -j"$3" -N"$2" "$1" | tr -d ' '; } # FILE SIZE OFFSET
elf_machine() { elf_u "$1" 2 18; }
has_interp() { # a PT_INTERP program header: the file needs a dynamic loader
	local f=$1 phoff phent phnum i=0
	if [ "$(elf_u "$f" 1 4)" = 2 ]; then # ELFCLASS64
		phoff=$(elf_u "$f" 4 32) phent=$(elf_u "$f" 2 54) phnum=$(elf_u "$f" 2 56)
	else
		phoff=$(elf_u "$f" 4 28) phent=$(elf_u "$f" 2 42) phnum=$(elf_u "$f" 2 44)
	fi
	while [ $i -lt "$phnum" ]; do
		[ "$(elf_u "$f" 4 $((phoff + i * phent)))" = 3 ] && return 0
		i=$((i + 1))
	done
	return 1
}
mm=$(elf_machine $MAPE) bm=$(elf_machine /bin/busybox)
ver=$($MAPE --version 2>&1)
if [ -n "$mm" ] && [ "$mm" = "$bm" ] && [ "$(od -An -tx1 -j4 -N2 $MAPE | tr -d ' ')" = "$(od -An -tx1 -j4 -N2 /bin/busybox | tr -d ' ')" ] &&
	! has_interp $MAPE && has_interp /usr/sbin/nft && [ -n "$ver" ]; then
	ok "our binary is this architecture's (ELF machine $mm, class/data as Debian's busybox), static (no PT_INTERP, unlike Debian's nft), runs: $ver"
else
	bad "our binary: ELF machine ${mm:-?} vs busybox ${bm:-?}, --version: ${ver:-nothing}"
fi

if ! topology >"$W/topology.log" 2>&1; then
	bad "topology (namespaces, veth, BR ip6tnl, server nft): $(tail -3 "$W/topology.log" | tr '\n' ' ')"
	echo "$pass passed, $fail failed"
	exit 1
fi
servers
wan6_status
if ! ubusd_start; then
	bad "fake_ubusd (ubusd + netifd stand-in) did not listen on $UBUS_SOCK: $(tr '\n' ' ' <"$W/fake_ubusd.log" | cut -c1-300)"
	echo "$pass passed, $fail failed"
	exit 1
fi
before=$(snapshot)

# 2. setup: the real handler (netlink, nft), then the stand-in (tunnel from the payload)
handler setup "$CFG"
ncalls=$(grep -c . "$W/ubus/calls.jsonl")
if [ $hrc = 0 ] && [ -z "$(errors)" ]; then ok "handler setup (real rtnetlink + nft $(nft --version | cut -d' ' -f2), ubus over fake_ubusd's socket: $ncalls call(s) recorded): exit 0, no error output"
else bad "handler setup: exit $hrc: $(tr '\n' ' ' <"$W/h.err" | cut -c1-400)"; fi

addr=$(ip -n ce -6 addr show dev wan | grep " $CE/128 ")
if echo "$addr" | grep -q nodad && echo "$addr" | grep -q noprefixroute; then
	ok "ip -6 addr: $CE/128 on wan with nodad and noprefixroute"
else
	bad "ip -6 addr: CE $CE/128 with nodad+noprefixroute not on wan: $(ip -n ce -6 addr show dev wan | grep inet6 | tr '\n' ' ')"
fi
if ip -n ce -6 route show table all | grep -v "^local " | grep -q "^$CE "; then
	bad "ip -6 route: a prefix route for the CE /128 (NOPREFIXROUTE ignored): $(ip -n ce -6 route show table all | grep "$CE" | tr '\n' ' ')"
else
	ok "ip -6 route: no prefix route for the CE /128 (NOPREFIXROUTE honoured)"
fi
tbl=$(ce nft list table ip mape_$IFACE 2>&1)
# The SNAT targets as the kernel holds them: every range inside PSID 0x34's set, 63 of them (one
# per A = 1..63), and a postrouting NAT chain that uses them.
ranges=$(echo "$tbl" | grep -oE "snat (ip )?to $IPV4:[0-9]+-[0-9]+" | sed 's/.*://' | sort -nu)
nr=0 badr=
for r in $ranges; do
	nr=$((nr + 1))
	in_set "${r%-*}" $PSID && in_set "${r#*-}" $PSID && [ $((${r#*-} - ${r%-*})) = 3 ] || badr="$badr $r"
done
if echo "$tbl" | grep -q "type nat hook postrouting" && [ $nr = 63 ] && [ -z "$badr" ]; then
	ok "nft: table ip mape_$IFACE loaded by Debian's nft: postrouting SNAT to $IPV4 over 63 port ranges, all in PSID 0x34's set ($(echo $ranges | cut -d' ' -f1) ... $(echo $ranges | tr ' ' '\n' | tail -1))"
else
	bad "nft: table ip mape_$IFACE: $nr SNAT ranges to $IPV4, outside PSID 0x34's set:${badr:- none}; $(echo "$tbl" | head -c 300 | tr '\n' ' ')"
fi
if standin setup; then
	tl=$(ip -n ce -d link show $TUN 2>&1)
	if echo "$tl" | grep -q "ip6tnl ipip6 remote $BR local $CE .*encaplimit none"; then
		ok "stand-in: $TUN is an ip6tnl ipip6 $CE -> $BR (encaplimit none) from the notify payload"
	else
		bad "stand-in: $TUN: $(echo "$tl" | tr '\n' ' ' | cut -c1-300)"
	fi
else
	bad "stand-in setup: $(tr '\n' ' ' <"$W/standin.log" | cut -c1-300)"
fi

# 3. setup again: the same result
s1=$(ip -n ce -6 addr show dev wan; ce nft list ruleset)
handler setup "$CFG"
s2=$(ip -n ce -6 addr show dev wan; ce nft list ruleset)
if [ $hrc = 0 ] && [ -z "$(errors)" ] && [ "$s1" = "$s2" ]; then
	ok "setup again (idempotent): exit 0, same addresses and nft ruleset"
else
	bad "setup again: exit $hrc, $(errors | tr '\n' ' ' | cut -c1-200) state $([ "$s1" = "$s2" ] && echo same || echo differs)"
fi

# 4. traffic through the tunnel, and what the server saw
NT=5 NU=5 NP=3
reset_server_sets
traffic $NT $NU $NP 5
say "traffic: TCP $tcp_ok/$NT, UDP $udp_ok/$NU, ping $ping_ok/$NP answered ($(elapsed) s)"
[ $tcp_ok = $NT ] && ok "TCP through the tunnel: $tcp_ok/$NT connections echoed" || bad "TCP through the tunnel: $tcp_ok/$NT echoed"
[ $udp_ok = $NU ] && ok "UDP through the tunnel: $udp_ok/$NU datagrams echoed" || bad "UDP through the tunnel: $udp_ok/$NU echoed"
[ $ping_ok = $NP ] && ok "ping through the tunnel: $ping_ok/$NP answered" || bad "ping through the tunnel: $ping_ok/$NP answered"
for s in "tcp_sports TCP source ports $NT" "udp_sports UDP source ports $NU" "icmp_ids ICMP echo ids $NP"; do
	set -- $s
	if v=$(port_check "$1" "$5" $PSID); then ok "server side: $2 $3 $4 inside PSID 0x34's set: $v"
	else bad "server side: $2 $3 $4: $v"; fi
done

# 5. teardown leaves nothing
# teardown_check CONFIG WHAT: the handler's teardown, then the stand-in's; ok when the handler
# exits 0 without a line on stderr and the ce namespace is as it was before the first setup.
teardown_check() {
	local terr after
	handler teardown "$1"
	terr=$(cat "$W/h.err")
	standin teardown
	after=$(snapshot)
	if [ $hrc = 0 ] && [ -z "$terr" ] && [ "$before" = "$after" ]; then
		ok "$2: exit 0, no error line, the namespace as before setup"
	else
		echo "$before" >"$W/before"
		echo "$after" >"$W/after"
		bad "$2: exit $hrc, stderr '$(echo "$terr" | tr '\n' ' ' | sed 's/ $//' | cut -c1-300)'," \
			"left: $(diff "$W/before" "$W/after" | grep '^[-+][^-+]' | tr '\n' ' ' | cut -c1-300)"
	fi
}
teardown_check "$CFG" "teardown (handler + stand-in)"

# 6. teardown when the CE address is already gone (EADDRNOTAVAIL from the kernel)
handler setup "$CFG"
standin setup
# The check means something only if the handler added the address and recorded it.
if ip -n ce -6 addr show dev wan | grep -q " $CE/128 " && grep -q "\"ce\":\"$CE\"" "$W/state/$IFACE.json" 2>/dev/null &&
	ip -n ce -6 addr del $CE/128 dev wan; then
	teardown_check "$CFG" "teardown after the CE address was already removed (the kernel answers EADDRNOTAVAIL)"
else
	bad "teardown after the CE address was removed: setup did not add $CE/128 (or record it), nothing to test"
	handler teardown "$CFG"
	standin teardown
fi

# 7. negative control: a wrong PSID must make the port-set check fail
if [ "$NEGATIVE" = 1 ] && [ "$BREAK_PSID" != 1 ]; then
	handler setup "$CFG_WRONG"
	standin setup
	reset_server_sets
	traffic 1 2 1 1 7005
	# It must fail for the right reason: ports outside the set reached the server.
	if v=$(port_check udp_sports 1 $PSID); then
		bad "negative control: CE given PSID 0x35, but the port-set check passed ($v)"
	elif [ "${v#stray:}" = "$v" ]; then
		bad "negative control: CE given PSID 0x35: the port-set check failed, but not on a stray port: $v"
	else
		ok "negative control: CE given PSID 0x35 (its prefix means 0x34): the port-set check fails: $v"
	fi
	teardown_check "$CFG_WRONG" "negative control: teardown"
fi

# fake_ubusd writes to its log only when something went wrong (a message it could not read, a
# reply it could not send, a status file it could not parse).
kill $UBUSD_PID 2>/dev/null
[ ! -s "$W/fake_ubusd.log" ] || bad "fake_ubusd reported: $(tr '\n' ' ' <"$W/fake_ubusd.log" | cut -c1-300)"
# (device-name lookups, "netdev-<name>", are what `ip link` asks for a missing device: not modules)
req=$(grep -v -e "-- $TUN\$" -e "-- netdev-" /tmp/modprobe-requests 2>/dev/null | sort -u | tr '\n' ' ')
[ -z "$req" ] || say "modules the kernel asked for (not in the initramfs): $req"
say "bed: $(elapsed) s"
echo "$pass passed, $fail failed"
[ $fail = 0 ]
