"""What the MAP-E beds share: check results, logging, commands in namespaces, the server and
clients, captures, and the judges of flows, echo ids and the wire (used by bed.py).

Set WORK/ART/SERVER/BR/TIMEOUTS and call set_log() before use."""
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time

import netns
import pcap
import traffic

WORK = "/tmp/mape-e2e"
ART = os.path.join(WORK, "artifacts")
SERVER = "203.0.113.10"
BR = "2001:db8:ffff::1"
# seconds a flow may take (generous: the VM is emulated and the host may be busy)
TIMEOUTS = {"flow": 15, "parallel": 30, "bulk": 90}
PROBE_PORT = 7020


# ====================================================================== output
class Results:
    """Check lines; safe to use from several threads (the bed runs phases of two CEs at once)."""

    def __init__(self, path):
        self.path = path
        self.passed = self.failed = 0
        self.lock = threading.Lock()
        open(path, "w").close()

    def emit(self, line):
        log(line)
        with self.lock:
            print(line, flush=True)
            with open(self.path, "a") as f:
                f.write(line + "\n")

    def ok(self, name, detail=""):
        with self.lock:
            self.passed += 1
        self.emit(f"ok   {name}" + (f" ({detail})" if detail else ""))

    def fail(self, name, reason):
        with self.lock:
            self.failed += 1
        reason = " ".join(str(reason).split())
        if len(reason) > 1500:
            reason = reason[:1500] + " ..."
        self.emit(f"FAIL {name}: {reason}")

    @contextlib.contextmanager
    def check(self, name):
        """with R.check(name) as c: ... c.fail(reason) / c.detail = ...; exceptions -> FAIL."""
        c = _Check()
        try:
            yield c
        except Exception as e:  # noqa: BLE001 - every problem is a check failure
            c.problems.append(f"{type(e).__name__}: {e}")
        if c.problems:
            self.fail(name, "; ".join(c.problems))
        else:
            self.ok(name, c.detail)


class _Check:
    def __init__(self):
        self.problems = []
        self.detail = ""

    def fail(self, reason):
        self.problems.append(reason)

    def expect(self, cond, reason):
        if not cond:
            self.problems.append(reason)
        return cond


LOGF = None
T0 = time.time()


def set_log(path):
    global LOGF
    LOGF = open(path, "w")


_LOG_LOCK = threading.Lock()


def log(msg):
    with _LOG_LOCK:
        _log(msg)


def _log(msg):
    if LOGF:
        LOGF.write(f"[{time.time() - T0:6.1f}] {msg}\n")
        LOGF.flush()


def say(msg):
    print("# " + msg, flush=True)
    log("# " + msg)


# ====================================================================== shell helpers
class CmdError(Exception):
    pass


def sh(cmd, check=True, input=None, timeout=120, env=None):
    log("$ " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=timeout, env=env)
    if p.stdout.strip():
        log(p.stdout.rstrip()[:4000])
    if p.stderr.strip():
        log("stderr: " + p.stderr.rstrip()[:4000])
    if check and p.returncode:
        raise CmdError(f"{' '.join(cmd)[:300]} -> exit {p.returncode}: {p.stderr.strip()[:500]}")
    return p


def nsx(ns, *cmd, check=True, input=None, timeout=120):
    """Run a command inside namespace ns (see netns.py: no `ip netns exec`)."""
    cmd = [str(c) for c in cmd]
    log(f"$ [{ns}] " + " ".join(cmd))
    p = netns.run(ns, cmd, input=input, timeout=timeout)
    if p.stdout.strip():
        log(p.stdout.rstrip()[:4000])
    if p.stderr.strip():
        log("stderr: " + p.stderr.rstrip()[:4000])
    if check and p.returncode:
        raise CmdError(f"[{ns}] {' '.join(cmd)[:300]} -> exit {p.returncode}: {p.stderr.strip()[:500]}")
    return p


def ipb(ns, lines, opts=(), check=True):
    """iproute2 batch in namespace ns (None = the VM's own)."""
    cmd = ["ip"] + (["-n", ns] if ns else []) + list(opts) + ["-batch", "-"]
    return sh(cmd, input="\n".join(lines) + "\n", check=check)


def ipjb(ns, lines, opts=()):
    """iproute2 batch of `show` commands with -j: one parsed JSON array per line."""
    out = ipb(ns, lines, ["-j"] + list(opts)).stdout
    dec = json.JSONDecoder()
    res, i = [], 0
    while True:
        while i < len(out) and out[i].isspace():
            i += 1
        if i >= len(out):
            break
        v, i = dec.raw_decode(out, i)
        res.append(v)
    if len(res) != len(lines):
        raise CmdError(f"ip -j -batch gave {len(res)} results for {len(lines)} commands")
    return res


def ipj(ns, *args):
    out = sh(["ip", "-n", ns, "-j"] + list(args)).stdout
    return json.loads(out) if out.strip() else []


def bg(ns, cmd, stdout=None, stderr=None):
    log(f"& [{ns}] " + " ".join(str(c) for c in cmd))
    return netns.popen(ns, cmd, stdout=stdout or subprocess.DEVNULL, stderr=stderr or subprocess.STDOUT)


def stop(p, sig=signal.SIGTERM):
    if p and p.poll() is None:
        p.send_signal(sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


# ====================================================================== traffic + analysis
class Server:
    """traffic.Server on a thread inside the srv namespace (echo on 7001-7005, bulk on 7010,
    outage probes on 7020)."""

    def __init__(self):
        self.srv = traffic.Server(os.path.join(WORK, "server-flows.jsonl"))

    def start(self):
        self.srv.run_forever_in_thread(lambda fn: netns.start_thread("srv", fn),
                                       tcp=[7001, 7002, 7003, 7004, 7005, 7006], udp=[7001, 7002, 7003, 7004, 7005],
                                       bulk=[7010], probe=[PROBE_PORT])

    def flows(self):
        return self.srv.snapshot()

    def stop(self):
        self.srv.stop()


def in_threads(jobs):
    """jobs: {key: (ns, fn)} run concurrently, each on a thread inside its namespace."""
    out = {}

    def wrap(k, fn):
        def body():
            try:
                out[k] = fn()
            except Exception as e:  # noqa: BLE001
                out[k] = e
        return body
    threads = [netns.start_thread(ns, wrap(k, fn)) for k, (ns, fn) in jobs.items()]
    for t in threads:
        t.join()
    return out


class Capture:
    def __init__(self, ns, dev, name, filt):
        self.path = os.path.join(WORK, name)
        self.err = os.path.join(WORK, name + ".log")
        self.p = bg(ns, ["tcpdump", "-i", dev, "-n", "-s", "256", "--immediate-mode", "-U", "-Z", "root",
                         "-w", self.path] + filt.split(), stderr=open(self.err, "w"))
        self.name = name

    def wait_ready(self):
        deadline = time.time() + 15
        while time.time() < deadline:
            with open(self.err) as f:
                if "listening on" in f.read():
                    return
            if self.p.poll() is not None:
                break
            time.sleep(0.1)
        with open(self.err) as f:
            raise CmdError(f"tcpdump ({self.name}) did not start: {f.read().strip()[:300]}")

    def finish(self):
        time.sleep(0.3)
        stop(self.p, signal.SIGINT)
        shutil.copy(self.path, ART)
        return pcap.read(self.path)


def run_clients(specs, timeout=None, tries=2):
    """specs: [(lan, tag, tcp_port|None, udp_port|None, n)] all at once; returns {tag: result}."""
    timeout = timeout or TIMEOUTS["flow"]
    jobs = {tag: (lan, lambda tag=tag, tp=tp, up=up, n=n: asyncio.run(
        traffic.flows(SERVER, tag, tp, up, n, timeout, tries))) for lan, tag, tp, up, n in specs}
    res = in_threads(jobs)
    for tag, r in res.items():
        if isinstance(r, Exception):
            res[tag] = {"tcp": [], "udp": [], "error": f"client failed: {type(r).__name__}: {r}"}
        log(f"client {tag}: {json.dumps(res[tag])[:600]}")
        with open(os.path.join(ART, "clients.jsonl"), "a") as f:
            f.write(json.dumps(res[tag]) + "\n")
    return res


def ping(lan, pattern, count=3):
    p = bg(lan, ["ping", "-n", "-q", "-c", count, "-i", "0.2", "-W", "3", "-p", pattern, SERVER],
           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    return p


def ping_result(p):
    out, _ = p.communicate(timeout=60)
    log("ping: " + out)
    m = re.search(r"(\d+) packets transmitted, (\d+) (packets )?received", out)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0), out


def describe_port(port, m):
    other = m.psid_of(port)
    where = f"PSID {other:#x}'s set" if other is not None else "the excluded low range (A=0)"
    return f"stray {{what}} {port} from {{src}} ({{tok}}) is outside {m.ipv4} PSID {m.psid:#x}'s port set " \
           f"(it belongs to {where})"


def flow_problems(flows, client, tag, proto, lport, m, expect_n):
    """Server-side check of one client's flows: count, source address, source port in
    the PSID's port set, every flow answered to the right host. Problems as strings;
    a port outside the set is reported as 'stray source port N ...'."""
    probs = []
    prefix = f"{tag}-{proto}{lport}-"
    seen = {}
    mine = [f for f in flows if f["proto"] == proto and f["lport"] == lport and f["tok"].startswith(prefix)]
    for f in mine:
        seen.setdefault(f["tok"], f)        # UDP retries: first observation
    results = {r["tok"]: r for r in client.get(proto, [])}
    if client.get("error"):
        probs.append(client["error"])
    strays = []
    wrong_src = sorted({f["peer"] for f in mine if f["peer"] != str(m.ipv4)})
    if wrong_src:
        probs.append(f"server saw source address(es) {wrong_src}, not {m.ipv4}")
    for f in mine:                          # every observation, retries included
        if not m.contains(f["pport"]):
            strays.append(describe_port(f["pport"], m).format(what="source port", src=f["peer"], tok=f["tok"]))
    probs += strays[:5] + ([f"... {len(strays) - 5} more stray ports"] if len(strays) > 5 else [])
    lost = [t for t in (f"{prefix}{i}" for i in range(expect_n)) if t not in seen]
    if lost:
        errs = sorted({results.get(t, {}).get("err", "?") for t in lost})
        probs.append(f"{len(lost)} of {expect_n} {proto} flows never reached the server (e.g. {lost[0]}; "
                     f"client errors: {errs[:3]})")
    unanswered = [t for t, r in results.items() if not r.get("ok") and t in seen]
    if unanswered:
        errs = sorted({results[t].get("err", "?") for t in unanswered})
        probs.append(f"{len(unanswered)} {proto} flows reached the server but the answer never came back to "
                     f"{tag} (e.g. {unanswered[0]}: {errs[:3]})")
    if proto == "tcp":
        ports = [f["pport"] for f in seen.values()]
        if len(ports) != len(set(ports)):
            probs.append("two concurrent TCP flows used the same source port")
    return probs, sorted({f["pport"] for f in seen.values()})


def echo_problems(srv_pkts, pattern, m, sent, received):
    """Server-side view of one host's pings (told apart by the ping -p fill byte)."""
    probs = []
    byte = int(pattern, 16)
    reqs = [p.v4 for p in srv_pkts if p.v4 and p.v4.proto == pcap.ICMP and p.v4.l4.icmp_type == 8
            and len(p.v4.l4.payload) >= 24 and set(p.v4.l4.payload[-8:]) == {byte}]
    if not reqs:
        return [f"the server saw none of the echo requests (ping: {received}/{sent} answered)"], []
    ids = sorted({r.l4.icmp_id for r in reqs})
    for r in reqs:
        if r.src != m.ipv4:
            probs.append(f"server saw echo request from {r.src}, not {m.ipv4}")
            break
    strays = [i for i in ids if not m.contains(i)]
    for i in strays[:3]:
        probs.append(describe_port(i, m).format(what="echo id", src=m.ipv4, tok=f"ping -p {pattern}"))
    if received < sent or sent == 0:
        probs.append(f"only {received} of {sent} echo replies came back to the pinging host")
    return probs, ids


def wire_problems(pkts, ce_addr, m):
    """Everything between CE and BR (captured on the CE's WAN device)."""
    probs = []
    up = down = 0
    syn_mss = []
    max_inner = 0
    other = []
    bad_hdr = []
    strays = []
    for p in pkts:
        if p.v6 is None:
            if p.v4 is not None:
                other.append(f"unencapsulated IPv4 {p.v4.src} -> {p.v4.dst} on the WAN")
            continue
        if p.v6["chain"][-1] == pcap.ICMP6:
            continue                      # neighbour discovery etc.
        src, dst = p.v6["src"], p.v6["dst"]
        if src == ce_addr:
            up += 1
            if dst != ipaddress.IPv6Address(BR):
                bad_hdr.append(f"CE packet to {dst}, not the BR {BR}")
            if p.v6["nh"] != pcap.IPIP:
                bad_hdr.append(f"next header {p.v6['nh']} (chain {p.v6['chain']}), not 4"
                               + (" - a destination-options header: encaplimit is not 'none'"
                                  if p.v6["nh"] == 60 else ""))
            v4 = p.v4
            if v4 is None:
                continue
            max_inner = max(max_inner, v4.total_len)
            if v4.src != m.ipv4:
                bad_hdr.append(f"inner IPv4 source {v4.src}, not {m.ipv4}")
            l4 = v4.l4
            port = l4.sport if v4.proto in (pcap.TCP, pcap.UDP) else (
                l4.icmp_id if v4.proto == pcap.ICMP and l4.icmp_type == 8 else None)
            if port is not None and not m.contains(port):
                strays.append(port)
            if v4.proto == pcap.TCP and l4.flags is not None and l4.flags & 0x12 == 0x02:
                syn_mss.append(l4.mss)
        elif dst == ce_addr:
            down += 1
            if src != ipaddress.IPv6Address(BR) or p.v6["nh"] != pcap.IPIP:
                bad_hdr.append(f"BR->CE packet {src} nh {p.v6['nh']}")
            if p.v4:
                max_inner = max(max_inner, p.v4.total_len)
        else:
            other.append(f"IPv6 {src} -> {dst} nh {p.v6['nh']}")
    if up == 0:
        probs.append(f"no packet from the CE address {ce_addr} on the wire")
    probs += sorted(set(bad_hdr))[:4] + sorted(set(other))[:3]
    if strays:
        s = sorted(set(strays))
        probs.append(describe_port(s[0], m).format(what="source port/echo id", src=m.ipv4, tok="on the wire")
                     + f" ({len(s)} stray ports/ids: {s[:8]})")
    return probs, {"up": up, "down": down, "syn_mss": syn_mss, "max_inner": max_inner}


# ====================================================================== the bed
