"""Traffic for the test bed: an IPv4 server that records what it sees, and clients.

Used in-process by bed.py (each side runs on a thread that joined the right
network namespace, see netns.py: starting Python processes costs seconds under
TCG), or from the command line:

  traffic.py server --log FILE --tcp P,.. --udp P,.. [--bulk P]
  traffic.py client --server IP --tag NAME [--tcp P] [--udp P] [-n N] [--timeout S] [--tries K]
  traffic.py bulk --server IP --port P (--put BYTES | --get BYTES)

Echo protocol: every TCP line / UDP datagram is a token; the server records
{"proto","lport","peer","pport","tok"} (the server-side observation the checks
use) and answers "<tok> <peer> <pport>\\n". A client opens N TCP connections and
N UDP sockets at once, all held open until every flow is answered or gave up,
and reports per flow whether the answer carrying its own token came back.
Bulk protocol: "PUT <n>\\n" + n bytes -> "OK <n> <sha256>\\n";
"GET <n>\\n" -> "DATA <n> <sha256>\\n" + n bytes.
"""
import argparse
import asyncio
import hashlib
import json
import os
import socket
import sys
import threading
import time


# ---------------------------------------------------------------- server
class Server:
    def __init__(self, log=None):
        self.flows = []
        self.lock = threading.Lock()
        self.logf = open(log, "a", buffering=1) if log else None
        self.loop = None

    def record(self, proto, lport, peer, tok):
        e = {"proto": proto, "lport": lport, "peer": peer[0], "pport": peer[1], "tok": tok,
             "t": round(time.time(), 3)}
        with self.lock:
            self.flows.append(e)
            if self.logf:
                self.logf.write(json.dumps(e) + "\n")

    def snapshot(self):
        with self.lock:
            return list(self.flows)

    async def echo_tcp(self, reader, writer):
        peer = writer.get_extra_info("peername")
        lport = writer.get_extra_info("sockname")[1]
        try:
            while True:
                line = await reader.readline()
                if not line:
                    break
                tok = line.decode(errors="replace").strip()
                self.record("tcp", lport, peer, tok)
                writer.write(f"{tok} {peer[0]} {peer[1]}\n".encode())
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def bulk(self, reader, writer):
        peer = writer.get_extra_info("peername")
        lport = writer.get_extra_info("sockname")[1]
        try:
            cmd = (await reader.readline()).decode().split()
            if len(cmd) == 2 and cmd[0] == "PUT":
                n, h, got = int(cmd[1]), hashlib.sha256(), 0
                while got < n:
                    chunk = await reader.read(min(1 << 16, n - got))
                    if not chunk:
                        break
                    h.update(chunk)
                    got += len(chunk)
                self.record("bulk-put", lport, peer, str(got))
                writer.write(f"OK {got} {h.hexdigest()}\n".encode())
            elif len(cmd) == 2 and cmd[0] == "GET":
                n = int(cmd[1])
                data = os.urandom(n)
                self.record("bulk-get", lport, peer, str(n))
                writer.write(f"DATA {n} {hashlib.sha256(data).hexdigest()}\n".encode())
                for i in range(0, n, 1 << 16):
                    writer.write(data[i:i + (1 << 16)])
                    await writer.drain()
            await writer.drain()
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            writer.close()

    async def start(self, tcp=(), udp=(), bulk=(), probe=()):
        self.loop = asyncio.get_running_loop()
        for p in probe:
            await self.loop.create_datagram_endpoint(_ProbeEcho, local_addr=("0.0.0.0", p), reuse_port=True)
        for p in tcp:
            await asyncio.start_server(self.echo_tcp, "0.0.0.0", p, backlog=1024, reuse_address=True)
        for p in bulk:
            await asyncio.start_server(self.bulk, "0.0.0.0", p, backlog=16, reuse_address=True)
        for p in udp:
            # a burst of hundreds of datagrams must not overflow the default ~200 KiB buffer
            # while the (slow, emulated) server catches up
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                s.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE (needs CAP_NET_ADMIN)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", p))
            await self.loop.create_datagram_endpoint(lambda p=p: _UdpEcho(self, p), sock=s)

    def run_forever_in_thread(self, starter, **ports):
        """starter(fn) runs fn on a (namespace) thread; returns once the sockets listen."""
        ready = threading.Event()
        err = {}

        def body():
            loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start(**ports))
            except Exception as e:  # noqa: BLE001
                err["e"] = e
                ready.set()
                return
            ready.set()
            loop.run_forever()

        starter(body)
        ready.wait(30)
        if "e" in err:
            raise err["e"]
        if not ready.is_set():
            raise RuntimeError("server did not start")

    def stop(self):
        if self.loop:
            self.loop.call_soon_threadsafe(self.loop.stop)


class _UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, srv, lport):
        self.srv, self.lport = srv, lport

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        tok = data.decode(errors="replace").strip()
        self.srv.record("udp", self.lport, addr, tok)
        self.transport.sendto(f"{tok} {addr[0]} {addr[1]}\n".encode(), addr)


class _ProbeEcho(asyncio.DatagramProtocol):
    """Answers every datagram with itself and the source address it came from, recording
    nothing (the outage probes: the address tells which mapping carried the probe)."""

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.transport.sendto(data + f" {addr[0]}".encode(), addr)


# ---------------------------------------------------------------- outage probes
class Prober:
    """Measures how long IPv4 is out: every `interval` s a new UDP flow (a fresh socket, so a
    fresh source port and conntrack entry, as a new connection of a user would be) sends one
    datagram to the probe echo port and waits for it to come back.

      p = Prober(server, port); p.start(starter)   # starter runs p's loop on a namespace thread
      t0 = time.time(); ...event...; p.wait_back(t0, timeout)
      p.outage(t0, t1) -> {"lost", "lost_at", "out_s", "back_s"}; p.stop()
      p.first_via(t, ipv4) -> (send time, answer time) of the first probe sent at or after t
                              that the server saw from ipv4 (None: none yet)
    """

    def __init__(self, server, port, interval=0.2, wait=1.5):
        self.server, self.port, self.interval, self.wait = server, port, interval, wait
        self.sent = []          # [[seq, t_sent, t_answered or None, source the server saw]]
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def start(self, starter):
        starter(self._run)

    def stop(self):
        self.stopping.set()

    def _run(self):
        import selectors
        sel = selectors.DefaultSelector()
        seq = 0
        nxt = time.time()
        while not self.stopping.is_set():
            now = time.time()
            if now >= nxt:
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                s.setblocking(False)
                try:
                    s.sendto(f"probe {seq}".encode(), (self.server, self.port))
                    sel.register(s, selectors.EVENT_READ, (seq, now))
                except OSError:
                    s.close()
                with self.lock:
                    self.sent.append([seq, now, None, None])
                seq += 1
                nxt += self.interval
            for key, _ in sel.select(timeout=max(0.0, min(nxt - time.time(), 0.05))):
                k, t = key.data
                try:
                    answer = key.fileobj.recv(256).split()
                    with self.lock:
                        self.sent[k][2] = time.time()
                        self.sent[k][3] = answer[-1].decode(errors="replace") if len(answer) > 2 else None
                except OSError:
                    pass
                sel.unregister(key.fileobj)
                key.fileobj.close()
            for key in list(sel.get_map().values()):     # give up on old ones
                if time.time() - key.data[1] > self.wait:
                    sel.unregister(key.fileobj)
                    key.fileobj.close()
        for key in list(sel.get_map().values()):
            key.fileobj.close()

    def answered_after(self, t):
        """Time the first probe sent at or after t was answered (None: none yet)."""
        with self.lock:
            for _, ts, ta, _ in self.sent:
                if ts >= t and ta is not None:
                    return ta
        return None

    def first_via(self, t, ipv4):
        with self.lock:
            for _, ts, ta, via in self.sent:
                if ts >= t and ta is not None and via == str(ipv4):
                    return ts, ta
        return None

    def wait_back(self, t, timeout):
        """Waits until a probe sent after t came back; its send time (None on timeout)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                ok = [ts for _, ts, ta, _ in self.sent if ts >= t and ta is not None]
            if ok:
                return ok[0]
            time.sleep(0.1)
        return None

    def outage(self, t0, t1):
        """Probes sent in [t0, t1] (those sent less than `wait` s before the last answer
        count only once judged). lost: unanswered (lost_at: their send times); out_s: from the
        first lost probe to the first answered one after the last lost probe; back_s: that
        answer's send time - t0."""
        with self.lock:
            rows = [(ts, ta) for _, ts, ta, _ in self.sent if t0 <= ts <= t1]
        lost = [ts for ts, ta in rows if ta is None]
        res = {"probes": len(rows), "lost": len(lost), "lost_at": lost, "out_s": 0.0, "back_s": 0.0}
        if not lost:
            return res
        after = [ts for ts, ta in rows if ta is not None and ts > lost[-1]]
        res["back_s"] = round((after[0] if after else float("nan")) - t0, 2)
        res["out_s"] = round((after[0] if after else float("nan")) - lost[0], 2)
        return res


# ---------------------------------------------------------------- clients
async def _tcp_flow(server, port, tok, timeout, hold):
    r = {"tok": tok, "ok": False}
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(server, port), timeout)
        r["local"] = writer.get_extra_info("sockname")[1]
        writer.write((tok + "\n").encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parts = line.decode().split()
        if len(parts) == 3 and parts[0] == tok:
            r.update(ok=True, seen=f"{parts[1]}:{parts[2]}")
        else:
            r["err"] = f"bad answer {line!r}"
    except (asyncio.TimeoutError, OSError) as e:
        r["err"] = type(e).__name__ + (f" {e}" if str(e) else "")
    await hold(r)
    if writer:
        writer.close()
    return r


async def _udp_flow(server, port, tok, timeout, tries, hold):
    r = {"tok": tok, "ok": False}
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.connect((server, port))
        r["local"] = s.getsockname()[1]
        for attempt in range(tries):
            await loop.sock_sendall(s, (tok + "\n").encode())
            try:
                data = await asyncio.wait_for(loop.sock_recv(s, 2048), timeout)
            except asyncio.TimeoutError:
                continue
            parts = data.decode().split()
            if len(parts) == 3 and parts[0] == tok:
                r.update(ok=True, seen=f"{parts[1]}:{parts[2]}", tries=attempt + 1)
                break
            r["err"] = f"bad answer {data!r}"
        else:
            r.setdefault("err", f"no answer after {tries} tries")
    except OSError as e:
        r["err"] = f"OSError {e}"
    await hold(r)
    s.close()
    return r


async def flows(server, tag, tcp=None, udp=None, n=1, timeout=15.0, tries=2):
    """N TCP + N UDP flows at once, all held open until each one has its answer."""
    release = asyncio.Event()
    answered = asyncio.Event()
    total = n * (bool(tcp) + bool(udp))
    finished = []

    async def hold(r):
        finished.append(r)
        if len(finished) == total:
            answered.set()
        await release.wait()

    tcps = [_tcp_flow(server, tcp, f"{tag}-tcp{tcp}-{i}", timeout, hold) for i in range(n)] if tcp else []
    udps = [_udp_flow(server, udp, f"{tag}-udp{udp}-{i}", timeout, tries, hold) for i in range(n)] if udp else []
    tasks = [asyncio.ensure_future(c) for c in tcps + udps]
    try:
        await asyncio.wait_for(answered.wait(), timeout * (tries + 2) + 5)
    except asyncio.TimeoutError:
        pass
    release.set()
    res = await asyncio.gather(*tasks)
    return {"tag": tag, "tcp": res[:len(tcps)], "udp": res[len(tcps):]}


def bulk(server, port, put=0, get=0, timeout=120.0):
    """Blocking bulk transfer; returns {"ok", "bytes", "secs", "mbps", "err"}."""
    r = {"ok": False, "dir": "put" if put else "get"}
    t0 = time.time()
    try:
        with socket.create_connection((server, port), timeout=timeout) as s:
            f = s.makefile("rb")
            if put:
                data = os.urandom(put)
                s.sendall(f"PUT {put}\n".encode())
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
                ans = f.readline().decode().split()
                want = hashlib.sha256(data).hexdigest()
                r["bytes"] = int(ans[1]) if len(ans) == 3 else 0
                r["ok"] = ans == ["OK", str(put), want]
                if not r["ok"]:
                    r["err"] = f"server answered {ans} (expected OK {put} <sha256 of what was sent>)"
            else:
                s.sendall(f"GET {get}\n".encode())
                hdr = f.readline().decode().split()
                h, got = hashlib.sha256(), 0
                while got < get:
                    chunk = f.read1(min(1 << 16, get - got))
                    if not chunk:
                        break
                    h.update(chunk)
                    got += len(chunk)
                r["bytes"] = got
                r["ok"] = len(hdr) == 3 and hdr[0] == "DATA" and int(hdr[1]) == got == get and \
                    hdr[2] == h.hexdigest()
                if not r["ok"]:
                    r["err"] = f"got {got} of {get} bytes, header {hdr}, sha256 match {hdr[2:] == [h.hexdigest()]}"
    except (OSError, ValueError, IndexError) as e:
        r["err"] = f"{type(e).__name__} {e}"
    r["secs"] = round(time.time() - t0, 2)
    r["mbps"] = round(r.get("bytes", 0) * 8 / max(r["secs"], 1e-3) / 1e6, 1)
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ports = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    s = sub.add_parser("server")
    s.add_argument("--log")
    s.add_argument("--tcp", type=ports, default=[])
    s.add_argument("--udp", type=ports, default=[])
    s.add_argument("--bulk", type=ports, default=[])
    c = sub.add_parser("client")
    c.add_argument("--server", required=True)
    c.add_argument("--tag", required=True)
    c.add_argument("--tcp", type=int)
    c.add_argument("--udp", type=int)
    c.add_argument("-n", type=int, default=1)
    c.add_argument("--timeout", type=float, default=15)
    c.add_argument("--tries", type=int, default=2)
    b = sub.add_parser("bulk")
    b.add_argument("--server", required=True)
    b.add_argument("--port", type=int, required=True)
    b.add_argument("--put", type=int, default=0)
    b.add_argument("--get", type=int, default=0)
    a = ap.parse_args()
    if a.cmd == "server":
        async def forever():
            await Server(a.log).start(a.tcp, a.udp, a.bulk)
            print("ready", flush=True)
            await asyncio.Event().wait()
        asyncio.run(forever())
    elif a.cmd == "client":
        json.dump(asyncio.run(flows(a.server, a.tag, a.tcp, a.udp, a.n, a.timeout, a.tries)), sys.stdout)
        print()
    else:
        json.dump(bulk(a.server, a.port, a.put, a.get), sys.stdout)
        print()


if __name__ == "__main__":
    main()
