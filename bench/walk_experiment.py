#!/usr/bin/env python3
"""An experiment, not a benchmark: the first version of the round robin per destination (issue
14), which kept a destination's position as bits, and why mape-rs keeps it in one set per
position instead.

That version: one dynamic set per bit of the position (`tcp_b<j>` holds the destination when bit
j of its position is 1). A binary tree of chains reads the position with one lookup per bit; the
chain of position k rewrites it to k + 1 from the packet path (`add` the bits that become 1,
`delete` those that become 0, `update` those that stay 1) and goes to the set chain of slot k.

What this script shows: that walk stalls. Sequential connections to ONE server through the table
take set 0, 1, 2, ... but now and then one position repeats for several connections: an `add` of
a destination that a packet-path `delete` removed shortly before is lost while the deleted
element is only marked dead (Linux 6.5 on and the stable kernels: netfilter commit
"nft_set_hash: mark set element as dead when deleting from packet path"). Binary counting
re-adds bit 0 every second step. mape's own table (WALK=ours) keeps one set per position, so a
destination comes back to a set only N flows after it left it.

  sudo python3 bench/walk_experiment.py v6plus|ocn [connections]            # the bit version
  sudo WALK=ours python3 bench/walk_experiment.py v6plus|ocn [connections]  # mape's table

prints the set index of each connection in accept order and the positions that repeated.
Needs root, nft, python3; builds mape with cargo first (as bench/run.sh does).
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import bench  # noqa: E402


def walk_table(dev, v4, sets, timeout="10m"):
    """The experimental table: set chains, the walk per protocol, ICMP on one counter."""
    n = len(sets)
    bits = max(1, (n - 1).bit_length())
    out = ["table ip mape_wanmap {"]
    for i, (lo, hi) in enumerate(sets):
        out.append(f"\tchain set_{i} {{")
        out += [f"\t\tmeta l4proto {p} snat ip to {v4}:{lo}-{hi}" for p in ("tcp", "udp", "icmp")]
        out.append("\t}")
    for p in ("tcp", "udp"):
        key = f"ip daddr . {p} dport"
        for j in range(bits):
            out.append(f"\tset {p}_b{j} {{\n\t\ttype ipv4_addr . inet_service\n\t\tsize 65535\n"
                       f"\t\tflags dynamic,timeout\n\t\ttimeout {timeout}\n\t}}")
        for k in range(n):
            nxt = (k + 1) % n
            out.append(f"\tchain {p}_at_{k} {{")
            for j in range(bits):
                op = {(0, 1): "add", (1, 0): "delete", (1, 1): "update"}.get(
                    ((k >> j) & 1, (nxt >> j) & 1))
                if op:
                    out.append(f"\t\t{op} @{p}_b{j} {{ {key} }}")
            out.append(f"\t\tgoto set_{k}\n\t}}")

        def node(prefix, depth):
            if depth == bits:
                return f"{p}_at_{prefix}"
            left = bits - depth - 1
            one, zero = (prefix << 1) | 1, prefix << 1
            if one << left >= n:  # no position below n has this bit
                return node(zero, depth + 1)
            a, b = node(one, depth + 1), node(zero, depth + 1)
            name = f"{p}_t{format(prefix, f'0{depth}b') if depth else ''}"
            out.append(f"\tchain {name} {{\n\t\t{key} @{p}_b{left} goto {a}\n\t\tgoto {b}\n\t}}")
            return name
        node(0, 0)
    to_sets = "{ " + ", ".join(f"{i} : goto set_{i}" for i in range(n)) + " }"
    out.append("\tchain srcnat {\n\t\ttype nat hook postrouting priority srcnat - 1; policy accept;")
    out += [f'\t\toifname "{dev}" meta l4proto {p} goto {p}_t' for p in ("tcp", "udp")]
    out.append(f'\t\toifname "{dev}" meta l4proto icmp numgen inc mod {n} vmap {to_sets}')
    out.append(f'\t\toifname "{dev}" snat ip to {v4}\n\t}}\n}}')
    return "\n".join(out) + "\n"


CLIENT = """
import socket, sys
held = []
for i in range(int(sys.argv[1])):
    s = socket.socket()
    s.settimeout(3)
    try:
        s.connect((sys.argv[2], 8080))
    except OSError as e:
        print(f"connection {i} failed: {e}")
        break
    held.append(s)
print(f"held {len(held)}")
"""


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in bench.SHAPES:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(bench.SHAPES)} [connections]")
    shape = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 240
    subprocess.run(["cargo", "build", "--release", "--locked", "--quiet", "--bin", "mape"],
                   check=True, cwd=os.path.dirname(HERE))
    binary = os.path.join(os.path.dirname(HERE), "target", "release", "mape")
    bench.PREFIX = f"wx{os.getpid()}-"
    m = bench.mapping(binary, shape)
    bed = bench.Bed("w", m["v4"])
    peers = f"/tmp/{bench.PREFIX}peers"
    try:
        ours = os.environ.get("WALK") == "ours"
        bed.load("flush ruleset\n" + (m["nft"] if ours else walk_table(bench.DEV, m["v4"], m["sets"])))
        srv = bed.popen(bed.ns["srv"], ["python3", f"{HERE}/server.py", "hold", bench.SRV,
                                        "8080", peers], stdout=subprocess.PIPE)
        assert srv.stdout.readline().strip() == "ready"
        print(bed.run(bed.ns["lan"], ["python3", "-c", CLIENT, str(count), bench.SRV]).strip())
        srv.terminate()
        srv.wait(10)
        with open(peers) as f:
            ports = [int(line.split()[1]) for line in f]
        idx = [next(i for i, (lo, hi) in enumerate(m["sets"]) if lo <= p <= hi) for p in ports]
        n = len(m["sets"])
        repeats = [k for k in range(1, len(idx)) if idx[k] == idx[k - 1]]
        print(f"{n} sets, {len(idx)} connections; set of each: {idx}")
        print(f"a position repeated at {len(repeats)} connections (a stalled walk): {repeats}")
    finally:
        bed.close()
        if os.path.exists(peers):
            os.unlink(peers)


if __name__ == "__main__":
    main()
