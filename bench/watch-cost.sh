#!/usr/bin/env bash
# What the netifd watch task costs on a busy router (issue 12): a network namespace gets 30,000
# conntrack entries that are not ours and 500 that are (conntrack -I), then examples/usage_cost
# measures, in CPU seconds per round: reading /proc/net/nf_conntrack once, the watch task's
# port-usage check, and the full per-line parse `mape status` does. The watch task checks every
# 60 s (handler::usage::USAGE_EVERY) and, before, counted everything every 10 s. Prints a
# Markdown table with CPU seconds per hour and ratios to one read of the table, all measured in
# this run. As root.
#
#   bench/watch-cost.sh [OTHER-ENTRIES] [OUR-ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/.."
OTHER=${1:-30000} OURS=${2:-500}
command -v conntrack >/dev/null || { apt-get install -y -q conntrack >/dev/null; }
cargo build --release --locked --example usage_cost >/dev/null 2>&1
BIN=target/release/examples/usage_cost
NS=mape-cost-$$
ip netns add "$NS"
trap 'ip netns del "$NS" 2>/dev/null' EXIT
ip netns exec "$NS" sysctl -qw net.netfilter.nf_conntrack_max=$((OTHER + OURS + 10000)) 2>/dev/null || true
# nf_conntrack must be loaded and active in the namespace: one nft rule with ct.
ip netns exec "$NS" nft -f - <<'NFT'
table ip t {
	chain c {
		type filter hook output priority 0;
		ct state new counter
	}
}
NFT
V4=106.72.63.108
python3 - "$NS" "$OTHER" "$OURS" "$V4" <<'PY'
import subprocess, sys
ns, other, ours, v4 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
# conntrack -I one at a time is slow; a restore file is not supported, so batch processes.
def add(src, dst, sport, dport, rsrc, rdst, rsport, rdport):
    return ["conntrack", "-I", "-p", "tcp", "-s", src, "-d", dst, "--sport", str(sport),
            "--dport", str(dport), "-r", rsrc, "-q", rdst, "--reply-port-src", str(rsport),
            "--reply-port-dst", str(rdport), "--state", "ESTABLISHED", "-t", "3600", "-u", "ASSURED"]
procs = []
def run(cmd):
    procs.append(subprocess.Popen(["ip", "netns", "exec", ns] + cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    if len(procs) >= 64:
        for p in procs: p.wait()
        procs.clear()
for i in range(other):
    a, b = divmod(i, 250)
    run(add(f"10.{a % 250}.{b}.2", "198.51.100.7", 20000 + i % 40000, 443,
            "198.51.100.7", f"10.{a % 250}.{b}.2", 443, 20000 + i % 40000))
sets = [(7488 + 4096 * k, 7503 + 4096 * k) for k in range(15)]
for i in range(ours):
    lo, hi = sets[i % 15]
    port = lo + (i // 15) % 16
    run(add("192.168.1.2", f"203.0.113.{1 + i // 240}", 30000 + i, 443,
            f"203.0.113.{1 + i // 240}", v4, 443, port))
for p in procs: p.wait()
PY
n=$(ip netns exec "$NS" conntrack -C)
SETS=$(python3 -c "print(','.join(f'{7488+4096*k}-{7503+4096*k}' for k in range(15)))")
out=$(ip netns exec "$NS" "$BIN" "$V4" "$SETS" 15)
val() { echo "$out" | awk -v k="$1" '$1 == k { print $2 }'; }
read_s=$(val read) check_s=$(val check) full_s=$(val status)
echo "$out" | grep '^ours' >&2
python3 - "$n" "$read_s" "$check_s" "$full_s" "$(uname -r)" "$(nproc)" <<'PY'
import sys
n, r, c, f, kernel, cpus = int(sys.argv[1]), *map(float, sys.argv[2:5]), sys.argv[5], sys.argv[6]
print(f"Conntrack table: {n} entries; kernel {kernel}, {cpus} CPUs; CPU seconds per round (median of 15).")
print()
print("| what | per round (s) | ÷ one read | rounds per hour | CPU s per hour |")
print("|---|---:|---:|---:|---:|")
print(f"| read /proc/net/nf_conntrack once | {r:.4f} | 1.00 | – | – |")
print(f"| watch task's check (every 60 s, now) | {c:.4f} | {c / r:.2f} | 60 | {60 * c:.1f} |")
print(f"| full per-line parse (every 10 s, before) | {f:.4f} | {f / r:.2f} | 360 | {360 * f:.1f} |")
print()
print(f"Now ÷ before, per hour: {60 * c / (360 * f):.3f}")
PY
