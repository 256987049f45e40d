#!/bin/bash
# `mape up` / `mape down` on a real kernel with ip6tnl (issue 7), run as root INSIDE the test VM
# (tests/e2e/linux-run.sh boots it with tests/vm/vmrun.sh). Four namespaces:
#
#   lan (192.168.1.2) --- ce (mape up --wan wan0) === wan0/isp0 IPv6 === br (BR + ip6tnl) --- srv (203.0.113.10)
#
# ce gets a delegated prefix the way a PD client leaves it (an unreachable route for the /56),
# so `mape up` also exercises prefix detection on real `ip -j` output. Checks: the tunnel, CE
# address, nft table and default route; `up` twice = once; IPv4 TCP/UDP/ping from lan reach srv
# from the mapped address, ports inside the port sets and new flows over all sets (ICMP echo id
# too); the iptables-restore file doing the same instead of nft; a failing step rolled back;
# the generated networkd files applied by the real systemd-networkd (same tunnel, same traffic);
# a prefix change; `down` leaves nothing behind. Prints ok/FAIL lines and "N passed, M failed".
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH
HERE=$(cd "$(dirname "$0")" && pwd)
MAPE=${MAPE_BIN:-$HERE/../../target/debug/mape}
W=/tmp/mape-linux-e2e
rm -rf "$W" && mkdir -p "$W/state" "$W/fakebin"
export MAPE_STATE_DIR=$W/state

PASS=0 FAIL=0
ok() { echo "ok - $1"; PASS=$((PASS + 1)); }
fail() { echo "FAIL - $1${2:+: $2}"; FAIL=$((FAIL + 1)); }
check() { # check NAME COMMAND...: ok when the command succeeds
	local name=$1; shift
	local out
	if out=$("$@" 2>&1); then ok "$name"; else fail "$name" "$(echo "$out" | tail -3 | tr '\n' ' ')"; fi
}
finish() { echo "$PASS passed, $FAIL failed"; [ "$FAIL" = 0 ]; exit $?; }
inns() { local n=$1; shift; ip netns exec "$n" "$@"; }

PREFIX=240b:10:3f6c:d400::/56 # v6plus: IPv4 106.72.63.108, PSID 212, 15 sets of 16 ports
BR=2404:9200:225:100::64
[ -x "$MAPE" ] || { fail "mape binary" "$MAPE not found (cargo build first)"; finish; }
CALC=$("$MAPE" calc --json "$PREFIX") || { fail "mape calc"; finish; }
CE=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ce"])' "$CALC")
V4=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ipv4"])' "$CALC")
echo "$CALC" >"$W/calc.json"

# --- the bed -----------------------------------------------------------------------------
modprobe -a veth ip6_tunnel tunnel6 nf_tables nft_nat nft_chain_nat nft_numgen nft_ct \
	nft_counter nft_exthdr nft_rt nft_hash nf_conntrack xt_HMARK xt_statistic xt_mark 2>/dev/null
bed() {
	set -e
	for n in lan ce br srv; do ip netns add $n; ip -n $n link set lo up; done
	ip link add lan0 netns ce type veth peer name lan1 netns lan
	ip link add wan0 netns ce type veth peer name isp0 netns br
	ip link add srv0 netns br type veth peer name eth0 netns srv
	for x in "ce lan0" "lan lan1" "ce wan0" "br isp0" "br srv0" "srv eth0"; do
		set -- $x; ip -n $1 link set $2 up
	done
	inns ce sysctl -qw net.ipv4.ip_forward=1
	inns br sysctl -qw net.ipv4.ip_forward=1
	# lan: a client behind the CE
	ip -n ce addr add 192.168.1.1/24 dev lan0
	ip -n lan addr add 192.168.1.2/24 dev lan1
	ip -n lan route add default via 192.168.1.1
	# WAN link; the ISP routes the delegated /56 to the CE, which keeps it unreachable locally
	ip -n ce -6 addr add 2001:db8:ffff:1::2/64 dev wan0 nodad
	ip -n br -6 addr add 2001:db8:ffff:1::1/64 dev isp0 nodad
	ip -n ce -6 route add default via 2001:db8:ffff:1::1
	ip -n ce -6 route add unreachable "$PREFIX"
	ip -n br -6 route add "$PREFIX" via 2001:db8:ffff:1::2
	# BR: decapsulates from and encapsulates to this CE, routes IPv4 to srv
	ip -n br -6 addr add "$BR/128" dev lo
	ip -n br -6 tunnel add ce1 mode ipip6 local "$BR" remote "$CE" dev isp0 encaplimit none
	ip -n br link set ce1 mtu 1460 up
	ip -n br route add "$V4/32" dev ce1
	ip -n br addr add 203.0.113.1/24 dev srv0
	ip -n srv addr add 203.0.113.10/24 dev eth0
	ip -n srv route add default via 203.0.113.1
}
if out=$( (bed) 2>&1); then ok "bed: four namespaces, BR tunnel"; else fail "bed" "$out"; finish; fi

# srv: tell every TCP/UDP client which address and port it came from
cat >"$W/echo_peer.py" <<'EOF'
import socket, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080)); s.listen(64)
    while True:
        c, a = s.accept(); c.sendall(("%s:%d\n" % a).encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8081))
    while True:
        d, a = s.recvfrom(100); s.sendto(("%s:%d\n" % a).encode(), a)
threading.Thread(target=udp, daemon=True).start(); tcp()
EOF
# lan: N TCP connections and N UDP exchanges, one source address:port per line. The source
# ports are BASE+i (TCP) and BASE+500+i (UDP), a range of their own per rule set: a flow whose
# tuple is still in conntrack from the rule set before would keep that NAT binding and take no
# round-robin slot (seen once: "udp used 14 sets").
cat >"$W/clients.py" <<'EOF'
import socket, sys
n, base = int(sys.argv[1]), int(sys.argv[2])
for i in range(n):
    c = socket.create_connection(("203.0.113.10", 8080), timeout=5, source_address=("", base + i))
    print("tcp", c.makefile().readline().strip()); c.close()
for i in range(n):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
    u.bind(("", base + 500 + i))
    u.sendto(b"x", ("203.0.113.10", 8081)); print("udp", u.recvfrom(100)[0].decode().strip()); u.close()
EOF
# checks the clients' lines: mapped address, ports in the port sets, how many distinct sets
cat >"$W/judge.py" <<'EOF'
import json, sys
calc = json.load(open(sys.argv[1])); want_sets = int(sys.argv[2])
sets = calc["port_sets"]; bad = []; used = {"tcp": set(), "udp": set()}; n = 0
for line in sys.stdin:
    proto, peer = line.split(); ip, port = peer.rsplit(":", 1); port = int(port); n += 1
    idx = [i for i, (lo, hi) in enumerate(sets) if lo <= port <= hi]
    if ip != calc["ipv4"] or not idx: bad.append(line.strip())
    else: used[proto].add(idx[0])
if n == 0: sys.exit("no replies")
if bad: sys.exit("outside the mapping: " + ", ".join(bad[:5]))
for p, u in used.items():
    if len(u) < want_sets: sys.exit("%s used %d sets, want %d" % (p, len(u), want_sets))
print("%d flows, sets used: tcp %d, udp %d" % (n, len(used["tcp"]), len(used["udp"])))
EOF
inns srv python3 "$W/echo_peer.py" >/dev/null 2>&1 &
SRV_PID=$!

# traffic NAME BASE: 15 TCP + 15 UDP flows (one per port set, from source ports BASE...) and a
# ping whose echo id is checked
traffic() {
	local name=$1 base=$2 out
	if out=$(inns lan python3 "$W/clients.py" 15 "$base" 2>&1) &&
		out=$(echo "$out" | python3 "$W/judge.py" "$W/calc.json" 15 2>&1); then
		ok "$name: TCP and UDP from $V4, every flow in the port sets, all 15 sets used ($out)"
	else
		fail "$name: TCP/UDP through the tunnel" "$out"
	fi
	inns srv timeout 10 tcpdump -n -l -c 1 --immediate-mode -i eth0 'icmp[icmptype] = icmp-echo' \
		>"$W/icmp.txt" 2>/dev/null &
	local td=$!
	sleep 1
	if inns lan ping -c 2 -W 2 203.0.113.10 >/dev/null 2>&1; then
		wait $td
		local id
		id=$(sed -n 's/.*ICMP echo request, id \([0-9]*\),.*/\1/p' "$W/icmp.txt" | head -1)
		if [ -n "$id" ] && python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); i=int(sys.argv[2]); sys.exit(0 if any(a<=i<=b for a,b in c["port_sets"]) else 1)' "$W/calc.json" "$id"; then
			ok "$name: ping through the tunnel, echo id $id inside the port sets"
		else
			fail "$name: ping echo id" "id '${id}' not in the port sets: $(cat "$W/icmp.txt")"
		fi
	else
		kill $td 2>/dev/null; wait $td 2>/dev/null
		fail "$name: ping 203.0.113.10 from lan"
	fi
}

# the CE's MAP-E state, for "up twice = once" (ifindex included: the tunnel must not be re-made)
snapshot() {
	{
		ip -n ce -d link show map-wan0 2>&1
		ip -n ce addr show 2>&1 | grep -v valid_lft
		ip -n ce route show 2>&1
		ip -n ce -6 route show 2>&1
		inns ce nft list table ip mape_wan0 2>&1
	}
}

# nothing of MAP-E left in ce
nothing_left() {
	local left=""
	ip -n ce link show map-wan0 >/dev/null 2>&1 && left="$left tunnel"
	ip -n ce -6 addr show dev wan0 | grep -q "$CE" && left="$left CE-address"
	[ -n "$(ip -n ce -4 route show default)" ] && left="$left default-route"
	inns ce nft list tables | grep -q mape_wan0 && left="$left nft-table"
	[ -e "$MAPE_STATE_DIR/wan0.json" ] && left="$left state-file"
	[ -z "$left" ] || { echo "left behind:$left"; return 1; }
}

# --- up --------------------------------------------------------------------------------------
if out=$(inns ce "$MAPE" up --wan wan0 2>&1); then
	ok "mape up --wan wan0 (prefix detected: $(echo "$out" | grep -o 'prefix [^ ]* ([^)]*)' | head -1))"
else
	fail "mape up --wan wan0" "$out"
fi
check "tunnel map-wan0: ip6tnl ipip6 CE -> BR over wan0, encaplimit none, mtu 1460" \
	sh -c "ip -n ce -d link show map-wan0 | grep -q 'mtu 1460' &&
	       ip -n ce -d link show map-wan0 | grep -q 'ip6tnl ipip6 remote $BR local $CE dev wan0 .*encaplimit none'"
check "CE address $CE/128 on wan0, nodad" \
	sh -c "ip -n ce -6 addr show dev wan0 | grep -q 'inet6 $CE/128 scope global nodad'"
check "IPv4 $V4/32 on the tunnel, default route into it" \
	sh -c "ip -n ce -4 addr show dev map-wan0 | grep -q 'inet $V4/32' &&
	       ip -n ce -4 route show default | grep -q 'default dev map-wan0'"
check "nft table ip mape_wan0 loaded" sh -c "ip netns exec ce nft list table ip mape_wan0 | grep -q 'numgen inc mod 15'"
check "state file written" test -s "$MAPE_STATE_DIR/wan0.json"

before=$(snapshot)
if out=$(inns ce "$MAPE" up --wan wan0 2>&1) && [ "$(snapshot)" = "$before" ]; then
	ok "mape up twice = once (same tunnel ifindex, addresses, routes, rules)"
else
	fail "mape up twice = once" "$(diff <(echo "$before") <(snapshot) | head -5 | tr '\n' ' ') $out"
fi
if out=$(inns ce "$MAPE" up --wan wan0 --if-changed 2>&1) && echo "$out" | grep -q unchanged; then
	ok "mape up --if-changed: nothing to do"
else
	fail "mape up --if-changed" "$out"
fi

traffic "nft" 41000

# --- the iptables-restore file instead of nft --------------------------------------------------
if command -v iptables-restore >/dev/null; then
	if out=$("$MAPE" generate --wan wan0 --prefix "$PREFIX" --format iptables >"$W/ipt" 2>&1) &&
		out=$(inns ce nft delete table ip mape_wan0 2>&1) &&
		out=$(inns ce iptables-restore "$W/ipt" 2>&1); then
		ok "iptables-restore of the generated file (nft table removed)"
		# (No conntrack flush: a stray packet of an old flow would then start a new entry and
		# take a turn of the cascade, and 15 flows would no longer meet 15 sets.)
		traffic "iptables" 42000
	else
		fail "iptables-restore of the generated file" "$out"
	fi
	inns ce iptables -t nat -F; inns ce iptables -t nat -X; inns ce iptables -t mangle -F
	inns ce "$MAPE" up --wan wan0 >/dev/null 2>&1 # back to nft
else
	fail "iptables-restore" "not installed (tests/e2e/linux-run.sh installs the iptables package)"
fi

# --- down ------------------------------------------------------------------------------------
check "mape down --wan wan0" inns ce "$MAPE" down --wan wan0
check "down leaves nothing behind (tunnel, CE address, route, nft table, state)" nothing_left
if out=$(inns ce "$MAPE" down --wan wan0 2>&1) && echo "$out" | grep -q "nothing to remove"; then
	ok "mape down twice: nothing to remove"
else
	fail "mape down twice" "$out"
fi

# --- a failing step is rolled back -----------------------------------------------------------
cat >"$W/fakebin/nft" <<'EOF'
#!/bin/sh
# nft that refuses to load rulesets (reading still works)
[ "$1" = -f ] && { cat >/dev/null; echo "Error: injected by the test" >&2; exit 1; }
exec /usr/sbin/nft "$@"
EOF
chmod +x "$W/fakebin/nft"
out=$(inns ce env PATH="$W/fakebin:$PATH" "$MAPE" up --wan wan0 2>&1)
rc=$?
if [ $rc = 1 ] && echo "$out" | grep -q "rolled back" && nothing_left >/dev/null; then
	ok "nft failing: up exits 1 (a runtime failure), everything before it rolled back"
else
	fail "rollback when nft fails" "rc=$rc $out; $(nothing_left)"
fi

# --- the generated networkd files, applied by the real systemd-networkd ----------------------
# networkd runs inside ce with /sys read-only, which tells it there is no udev to wait for (as
# in a container); its config directory /run/systemd/network is the guest's tmpfs.
ND=/run/systemd/network
NETWORKD=$(ls /lib/systemd/systemd-networkd /usr/lib/systemd/systemd-networkd 2>/dev/null | head -1)
if [ -z "$NETWORKD" ]; then
	fail "systemd-networkd" "not installed on the host (package systemd)"
else
	mkdir -p "$ND"
	printf '[Match]\nName=wan0\n\n[Network]\nAddress=2001:db8:ffff:1::2/64\nGateway=2001:db8:ffff:1::1\n' >"$ND/10-wan.network"
	if out=$(MAPE_NETWORKD_DIR=$ND "$MAPE" generate --wan wan0 --prefix "$PREFIX" --out "$W/gen" 2>&1) &&
		[ -s "$W/gen/10-wan.network.d/mape.conf" ]; then
		ok "generate --out: the drop-in is named after the .network file that matches wan0"
	else
		fail "generate for networkd" "$out $(ls -R "$W/gen" 2>&1 | tr '\n' ' ')"
	fi
	cp -r "$W/gen/10-wan.network.d" "$W/gen/map-wan0.netdev" "$W/gen/map-wan0.network" "$ND/"
	# Not through inns: $! must be networkd itself (ip, unshare and sh all exec) to stop it later.
	ip netns exec ce unshare -m sh -c "mount -o remount,ro /sys && exec $NETWORKD" >"$W/networkd.log" 2>&1 &
	ND_PID=$!
	for _ in $(seq 1 120); do
		ip -n ce -4 route show default | grep -q map-wan0 &&
			ip -n ce -6 addr show dev wan0 | grep -q "$CE/128" && break
		sleep 0.5
	done
	check "networkd: tunnel map-wan0 as mape up makes it (ipip6 CE -> BR over wan0, encaplimit none, mtu 1460)" \
		sh -c "ip -n ce -d link show map-wan0 | grep -q 'mtu 1460' &&
		       ip -n ce -d link show map-wan0 | grep -q 'ip6tnl ipip6 remote $BR local $CE dev wan0 .*encaplimit none'"
	check "networkd: CE address on wan0 without DAD or prefix route" \
		sh -c "ip -n ce -6 addr show dev wan0 | grep -q 'inet6 $CE/128 scope global nodad noprefixroute'"
	check "networkd: IPv4 $V4/32 on the tunnel, default route into it, no IPv6 link-local on it" \
		sh -c "ip -n ce -4 addr show dev map-wan0 | grep -q 'inet $V4/32' &&
		       ip -n ce -4 route show default | grep -q 'default dev map-wan0' &&
		       ! ip -n ce -6 addr show dev map-wan0 | grep -q fe80"
	if out=$(inns ce nft -f "$W/gen/mape_wan0.nft" 2>&1); then
		ok "networkd: nft -f the generated ruleset"
		traffic "networkd" 43000
	else
		fail "networkd: nft -f the generated ruleset" "$out"
	fi
	kill "$ND_PID" 2>/dev/null; wait "$ND_PID" 2>/dev/null
	ip -n ce link del map-wan0 2>/dev/null
	ip -n ce -6 addr del "$CE/128" dev wan0 2>/dev/null
	inns ce nft delete table ip mape_wan0 2>/dev/null
	rm -rf "$ND"
	# networkd may have dropped the "foreign" unreachable route: put the PD back
	ip -n ce -6 route replace unreachable "$PREFIX"
	[ "$FAIL" = 0 ] || grep -iE 'warn|fail|error' "$W/networkd.log" | head -5
fi

# --- a prefix change -------------------------------------------------------------------------
NEWPREFIX=240b:10:1234:5600::/56
out=$(inns ce "$MAPE" up --wan wan0 2>&1)
echo "$out" | grep -q "prefix $PREFIX" || fail "up before the prefix change" "$out"
NEWCE=$("$MAPE" calc --json "$NEWPREFIX" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ce"])')
ip -n ce -6 route del unreachable "$PREFIX"
ip -n ce -6 route add unreachable "$NEWPREFIX"
if out=$(inns ce "$MAPE" up --wan wan0 --if-changed 2>&1) &&
	ip -n ce -d link show map-wan0 | grep -q "local $NEWCE" &&
	ip -n ce -6 addr show dev wan0 | grep -q "$NEWCE/128" &&
	! ip -n ce -6 addr show dev wan0 | grep -q "$CE/128"; then
	ok "prefix change: up --if-changed moves tunnel and CE address to $NEWPREFIX, old CE removed"
else
	fail "prefix change" "$out"
fi
CE=$NEWCE
check "mape down after the prefix change" inns ce "$MAPE" down --wan wan0
check "nothing left after the prefix change" nothing_left

kill $SRV_PID 2>/dev/null
for n in lan ce br srv; do ip netns del $n 2>/dev/null; done
finish
