"""Connection-rate client, run inside the LAN namespace.

    rate.py <in flight> <first addr> <addresses> <port> [<port>...]

Reads commands on stdin, one per line: "go <seconds>" runs one burst, "quit" ends. A burst opens
short TCP connections (connect, then close at once) as fast as it can for that time, keeping
<in flight> connects pending, then waits up to 1 s for the pending ones to finish (so nothing
spills into the next burst, which may run under another rule set) and prints one JSON line:
{"ok": connects completed in the burst time, "failed": failed connects, "seconds": burst time,
 "rate": ok / seconds}.

Destinations cycle over <addresses> consecutive server addresses from <first addr> times the
given ports, so no destination gets more than a few connections per burst: with 240 ports,
TIME_WAIT entries in conntrack would otherwise exhaust one destination's ports and the test
would measure exhaustion, not speed. The process stays up between bursts, so Python's start-up
is not part of the measurement.
"""
import ipaddress
import json
import resource
import select
import socket
import struct
import sys
import time

LINGER0 = struct.pack("ii", 1, 0)


def main():
    inflight = int(sys.argv[1])
    first, naddr = ipaddress.IPv4Address(sys.argv[2]), int(sys.argv[3])
    ports = [int(p) for p in sys.argv[4:]]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    dests = [(str(first + a), p) for p in ports for a in range(naddr)]
    ep = select.epoll()
    pending = {}
    i = 0

    def start():
        nonlocal i
        s = socket.socket()
        s.setblocking(False)
        try:
            s.connect(dests[i % len(dests)])
        except BlockingIOError:
            pass
        i += 1
        pending[s.fileno()] = s
        ep.register(s.fileno(), select.EPOLLOUT)

    def finish(fd):
        s = pending.pop(fd)
        ep.unregister(fd)
        good = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        s.close()
        return good

    print("ready", flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] == "quit":
            break
        secs = float(cmd[1])
        ok = failed = 0
        t0 = time.monotonic()
        end = t0 + secs
        for _ in range(inflight):
            start()
        while True:
            now = time.monotonic()
            if now >= end:
                break
            for fd, _ in ep.poll(end - now):
                if finish(fd):
                    ok += 1
                else:
                    failed += 1
                start()
        took = time.monotonic() - t0
        drain_end = time.monotonic() + 1.0
        while pending and time.monotonic() < drain_end:
            for fd, _ in ep.poll(max(0.0, drain_end - time.monotonic())):
                if not finish(fd):
                    failed += 1
        for fd in list(pending):
            s = pending.pop(fd)
            ep.unregister(fd)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
            s.close()
            failed += 1
        print(json.dumps({"ok": ok, "failed": failed, "seconds": round(took, 3),
                          "rate": round(ok / took, 1)}), flush=True)


if __name__ == "__main__":
    main()
