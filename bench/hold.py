"""Port utilisation client, run inside the LAN namespace.

    hold.py <server addr> <port> <allowed ports> <time cap s> <CE netns> [<seed> [<shape>]]

Shapes (default: "mixed" with a seed, "alone" without):
  alone   only the held connections;
  mixed   other traffic between them (below);
  sites   three busy destinations at once (10.99.2.1-3, port 443), connected to in turn, with
          the mixed traffic plus DNS-like UDP to one resolver (10.99.3.53:53) and QUIC-like UDP
          flows to four servers (10.99.4.1-4:443); the run ends when a connect to any of them
          fails, "count" is the smallest of the three;
  udp     UDP flows to ONE destination (<server addr>:<port>, an echo server: a QUIC or game
          server), each a new socket whose first datagram must be answered within 1 s; a flow
          gets 3 tries (each try is a new NAT decision), the run ends when one gets none. Other
          traffic as in "sites". "synretrans" counts the lost first datagrams.

Opens TCP connections to ONE server address and port, one after the other, and keeps every one
open, until a connect fails after the kernel's normal SYN retries (net.ipv4.tcp_syn_retries,
left at its default) or the time cap is reached.

With <seed>, other traffic goes through the CE between the held connections, as when a browser
loads one site's many resources while talking to other hosts: before each connection to the
server, 0-3 short TCP connections (connect, close) and 0-2 UDP datagrams (DNS-like) to other
destinations (10.99.1.1-250, TCP ports 9000-9007, UDP port 53), the counts drawn from a random
generator seeded with <seed>, so every rule set sees the same sequence. Those short connections
give up after 0.5 s, before any SYN retransmission, so they never count as SYN drops.

Prints one JSON object:

  count            connections established before the first failure
  failed           "ETIMEDOUT ..." (the first failed connect) or "time cap" or "limit"
  synretrans_90    SYN retransmissions of this namespace (TcpExt TCPSynRetrans) when the
                   count reached 90% of the allowed ports (null if it never did)
  insert_failed_90 conntrack insert_failed (NAT clashes) in the CE namespace at that moment
  seconds_90, seconds  time to 90%, total time
"""
import errno
import json
import random
import resource
import socket
import subprocess
import sys
import time


def netstat(field):
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for head, vals in zip(lines[::2], lines[1::2]):
        h, v = head.split(), vals.split()
        if h[0] == "TcpExt:" and field in h:
            return int(v[h.index(field)])
    return 0


def ct_stat(ns, fields=("insert_failed",)):
    out = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/stat/nf_conntrack"],
                         capture_output=True, text=True).stdout.splitlines()
    head = out[0].split()
    total = 0
    for row in out[1:]:
        v = row.split()
        for fld in fields:
            total += int(v[head.index(fld)], 16)
    return total


def main():
    srv, port, allowed, cap, ce = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(
        sys.argv[4]), sys.argv[5]
    rng = random.Random(int(sys.argv[6])) if len(sys.argv) > 6 else None
    shape = sys.argv[7] if len(sys.argv) > 7 else ("mixed" if rng else "alone")
    other = {"tcp": 0, "tcp_failed": 0, "udp": 0, "dns": 0, "quic": 0}
    k = 0
    spare = []  # background UDP sockets, closed at the end (their flows stay in conntrack)

    def background():
        other_traffic()
        if shape in ("sites", "udp"):
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(b"\0" * 40, ("10.99.3.53", 53))  # a DNS query: one new flow each
            spare.append(u)
            other["dns"] += 1
            if rng.random() < 0.5:  # a QUIC connection to one of four servers
                q = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                q.sendto(b"\0" * 1200, (f"10.99.4.{rng.randint(1, 4)}", 443))
                spare.append(q)
                other["quic"] += 1

    def other_traffic():
        nonlocal k
        for _ in range(rng.randint(0, 3)):
            k += 1
            dst = (f"10.99.1.{1 + k % 250}", 9000 + (k // 250) % 8)
            o = socket.socket()
            o.settimeout(0.5)
            try:
                o.connect(dst)
                other["tcp"] += 1
            except OSError:
                other["tcp_failed"] += 1
            o.close()
        for _ in range(rng.randint(0, 2)):
            k += 1
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            u.sendto(b"\0" * 32, (f"10.99.1.{1 + k % 250}", 53))
            u.close()
            other["udp"] += 1
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    ninety = -(-allowed * 9 // 10)  # ceil(0.9 * allowed)
    limit = 2 * allowed + 64  # a ruleset leaking ports outside the sets would run on forever
    dests = ([(f"10.99.2.{i}", 443) for i in (1, 2, 3)] if shape == "sites"
             else [(srv, port)])
    held = {d: [] for d in dests}
    res = {"count": 0, "failed": "limit", "synretrans_90": None, "insert_failed_90": None,
           "seconds_90": None, "shape": shape}
    lost = 0  # udp: first datagrams without an answer
    syn0 = netstat("TCPSynRetrans")
    ct0 = ct_stat(ce)
    t0 = time.monotonic()

    def drops():
        return lost if shape == "udp" else netstat("TCPSynRetrans") - syn0

    def udp_flow(left):
        nonlocal lost
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.connect((srv, port))
        for _ in range(3):
            u.settimeout(min(1.0, max(0.05, left)))
            try:
                u.send(b"q" * 32)
                if u.recv(64):
                    return u
            except OSError:
                pass
            lost += 1
        u.close()
        return None

    turn = 0
    while min(len(h) for h in held.values()) < limit:
        left = cap - (time.monotonic() - t0)
        if left <= 0:
            res["failed"] = "time cap"
            break
        if rng:
            background()
        d = dests[turn % len(dests)]
        turn += 1
        if shape == "udp":
            u = udp_flow(left)
            if u is None:
                res["failed"] = f"no answer to 3 tries after {len(held[d])} flows"
                break
            held[d].append(u)
        else:
            s = socket.socket()
            s.settimeout(left)
            try:
                s.connect(d)
            except OSError as e:
                s.close()
                if e.errno is None:  # Python's own timeout: our cap, not the kernel's
                    res["failed"] = "time cap"
                else:
                    res["failed"] = f"{errno.errorcode.get(e.errno, e.errno)} after " \
                        f"{len(held[d])} connections" + (f" to {d[0]}" if shape == "sites" else "")
                break
            held[d].append(s)
        if res["seconds_90"] is None and min(len(h) for h in held.values()) >= ninety:
            res["synretrans_90"] = drops()
            res["insert_failed_90"] = ct_stat(ce) - ct0
            res["seconds_90"] = round(time.monotonic() - t0, 2)
    res["count"] = min(len(h) for h in held.values())
    if shape == "sites":
        res["per_site"] = [len(h) for h in held.values()]
    res["seconds"] = round(time.monotonic() - t0, 2)
    res["synretrans"] = drops()
    res["insert_failed"] = ct_stat(ce) - ct0
    if rng:
        res["other"] = other
    print(json.dumps(res), flush=True)
    for h in held.values():
        for s in h:
            s.close()
    for u in spare:
        u.close()


if __name__ == "__main__":
    main()
