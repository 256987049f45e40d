#!/usr/bin/env python3
"""mape-rs benchmarks: run by bench/run.sh (as root), which builds the release binary first.

    python3 bench/bench.py --bin target/release/mape --out BENCHMARKS.md [--only util,...]

Builds the namespace MAP-E domain of tests/netns.rs on this machine's kernel:

    LAN ns (192.168.1.2) -- lan0/lan1 -- CE ns -- map-wanmap/srv0 -- server ns (10.99.0.2)

The CE's egress device is a veth named like the tunnel (map-wanmap), so the ruleset our binary
generates loads unchanged. Every figure is a ratio against a baseline measured in the same run.
"""
import argparse
import atexit
import ctypes
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # no bench/__pycache__ in the checkout
import rulesets  # noqa: E402

RUN = os.environ.get("MBENCH_RUN", str(os.getpid()))
PREFIX = f"mb{RUN}-"
SHAPES = {
    # name: (tunlink status prefix, label)
    "v6plus": ("240b:10:3f6c:d400::", 56, "v6plus"),
    "ocn": ("2400:4050:1234:5600::", 56, "OCN"),
}
SRV = "10.99.0.2"
DEV = "map-wanmap"
_beds = []
_procs = []


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True):
    """Run a command and return its stdout; the process is tracked so that an interrupt can
    kill it (a port-utilisation client may otherwise wait minutes for its last connect)."""
    p = subprocess.Popen(cmd, shell=isinstance(cmd, str), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    _procs.append(p)
    try:
        out, err = p.communicate()
    finally:
        if p in _procs:
            _procs.remove(p)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd}: exit {p.returncode}: {err.strip()}")
    return out


_libc = ctypes.CDLL(None, use_errno=True)


def ns_run(ns, argv, input=None):
    """Run argv inside network namespace ns, from a thread that joined it with setns(2): no
    `ip netns exec` (which costs a process and a /sys remount), so rule swaps between
    half-second bursts stay cheap. The child inherits the thread's namespace."""
    box = {}

    def body():
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if _libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box["r"] = subprocess.run(argv, capture_output=True, text=True, input=input)
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["e"] = e

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["r"]


def cleanup():
    """Kill every process this run started (by PID: `ip netns exec` execs its command, so the
    PID is the benchmark process itself) and delete every namespace named mb<run>-*."""
    for p in list(_procs):
        if p.poll() is None:
            p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    for b in list(_beds):
        b.close()
    # Anything of this run left behind (e.g. a bed half built when an error struck).
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in names.splitlines():
        name = line.split()[0] if line.split() else ""
        if name.startswith(PREFIX):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


def on_signal(signum, _frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches us and run.sh forwards TERM
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    log(f"signal {signum}: cleaning up")
    cleanup()
    os._exit(128 + signum)  # now: worker threads blocked on dead children need no joining


class Bed:
    """Three namespaces: lan -> ce -> srv, the CE routing IPv4 out of a veth named map-wanmap."""

    def __init__(self, tag, v4):
        self.ns = {k: f"{PREFIX}{tag}-{k}" for k in ("lan", "ce", "srv")}
        _beds.append(self)
        for n in self.ns.values():
            sh(["ip", "netns", "del", n], check=False)
            sh(["ip", "netns", "add", n])
            self.x(n, "ip link set lo up")
        lan, ce, srv = self.ns["lan"], self.ns["ce"], self.ns["srv"]
        sh(["ip", "link", "add", "lan0", "netns", lan, "type", "veth", "peer", "name", "lan1",
            "netns", ce])
        sh(["ip", "link", "add", DEV, "netns", ce, "type", "veth", "peer", "name", "srv0",
            "netns", srv])
        self.x(lan, "ip addr add 192.168.1.2/24 dev lan0 && ip link set lan0 up "
                    "&& ip route add default via 192.168.1.1 "
                    "&& sysctl -qw net.ipv4.ip_local_port_range='10000 65000'")
        self.x(ce, f"ip addr add 192.168.1.1/24 dev lan1 && ip link set lan1 up "
                   f"&& ip addr add 10.99.0.1/30 dev {DEV} && ip link set {DEV} up "
                   f"&& ip route add default via {SRV} && sysctl -qw net.ipv4.ip_forward=1")
        # The server answers on 10.99.0.2 and, for the connection-rate test, on every address of
        # 10.99.1.0/24 (a local route: any address in it is ours).
        # 10.99.2.0/24: the busy sites; 10.99.3.0/24: a DNS resolver; 10.99.4.0/24: QUIC servers.
        self.x(srv, f"ip addr add {SRV}/30 dev srv0 && ip link set srv0 up "
                    f"&& ip route add {v4}/32 via 10.99.0.1 "
                    + "".join(f"&& ip route add local 10.99.{n}.0/24 dev lo " for n in (1, 2, 3, 4)))
        # UDP flows of the udp shape stay in conntrack for the whole run (a QUIC client keeps
        # its flows alive); 30 s of silence would otherwise free their ports.
        self.x(ce, "sysctl -qw net.netfilter.nf_conntrack_udp_timeout=600 "
                   "net.netfilter.nf_conntrack_udp_timeout_stream=600", check=False)

    def x(self, ns, script, check=True):
        return sh(["ip", "netns", "exec", ns, "sh", "-c", script], check=check)

    def run(self, ns, argv):
        return sh(["ip", "netns", "exec", ns] + list(argv))

    def popen(self, ns, argv, **kw):
        p = subprocess.Popen(["ip", "netns", "exec", ns] + list(argv), text=True, **kw)
        _procs.append(p)
        return p

    def load(self, script):
        if isinstance(script, tuple):  # ("iptables", file): the plain-Linux iptables renderer
            ns_run(self.ns["ce"], ["nft", "flush", "ruleset"])
            r = ns_run(self.ns["ce"], ["iptables-restore"], input=script[1])
            if r.returncode != 0:
                raise RuntimeError(f"iptables-restore in {self.ns['ce']}: {r.stderr.strip()}")
            return
        r = ns_run(self.ns["ce"], ["nft", "-f", "-"], input=script)
        if r.returncode != 0:
            raise RuntimeError(f"nft -f in {self.ns['ce']}: {r.stderr.strip()}")

    def flush_conntrack(self):
        ns_run(self.ns["ce"], ["conntrack", "-F"])

    def close(self):
        for n in self.ns.values():
            sh(["ip", "netns", "del", n], check=False)
        if self in _beds:
            _beds.remove(self)


# --- the mapping and our ruleset, from the binary ------------------------------------------

def mapping(binary, shape):
    addr, plen, _ = SHAPES[shape]
    calc = json.loads(sh([binary, "calc", f"{addr}/{plen}", "--json"]))
    status = json.dumps({"up": True, "l3_device": "wan",
                         "ipv6-prefix": [{"address": addr, "mask": plen}]})
    setup_args = [binary, "netifd", "setup", "wanmap", '{"tunlink":"wan6"}', "--dry-run",
                  "--tunlink-status", status]
    report = json.loads(sh(setup_args))
    ipt = sh([binary, "generate", "--wan", "eth9", "--name", "wanmap", "--prefix",
              f"{addr}/{plen}", "--format", "iptables"])
    sets = [tuple(s) for s in calc["port_sets"]]
    return {
        "v4": calc["ipv4"],
        "sets": sets,
        "ports": calc["port_count"],
        "nft": report["nft"],
        "ipt": ipt,
        "setup_args": setup_args,
    }


def builders(m):
    return {
        "ours": rulesets.ours(m["nft"]),
        "ipt": rulesets.iptables(m["ipt"]),
        "prev": rulesets.previous,
        "k8": rulesets.buckets(8),
        "k16": rulesets.buckets(16),
        "k32": rulesets.buckets(32),
        "fw4": rulesets.fw4_stock,
        "perport": rulesets.perport,
        "marks": rulesets.marks,
        "masq": rulesets.masq,
        "perdest": rulesets.perdest(16),
        "k64": rulesets.buckets(64),
    }


def owned(m, port):
    return any(lo <= port <= hi for lo, hi in m["sets"])


# --- 1. port utilisation -------------------------------------------------------------------

UTIL_MODES = ("alone", "mixed", "sites", "udp")
MODE_LABEL = {"alone": "nothing else", "mixed": "other traffic",
              "sites": "three busy sites + other TCP, DNS and QUIC",
              "udp": "UDP flows to one server + other TCP, DNS and QUIC"}
# Which rule sets run which traffic (every pair costs a bed and up to the time cap).
MODE_VARIANTS = {"alone": ("ours", "ipt", "prev", "fw4", "perport", "marks", "perdest", "k64"),
                 "mixed": ("ours", "ipt", "prev", "fw4", "perport", "marks", "perdest", "k64"),
                 "sites": ("ours", "ipt", "prev", "perdest", "k8", "k16", "k32", "k64"),
                 "udp": ("ours", "ipt", "prev", "perdest", "k64")}
MIXED_SEED = 7


def utilisation_one(shape, variant, mode, m, cap):
    bed = Bed(f"u{shape[0]}{variant[:4]}{mode[0]}", m["v4"])
    try:
        bed.load(builders(m)[variant](DEV, m["v4"], m["sets"]))
        peers = f"/tmp/{PREFIX}{shape}-{variant}-{mode}.peers"
        addr, port, kind = {"sites": ("0.0.0.0", "443", "hold"),
                            "udp": (SRV, "4433", "udpecho")}.get(mode, (SRV, "8080", "hold"))
        srv = bed.popen(bed.ns["srv"], ["python3", f"{HERE}/server.py", kind, addr, port,
                                        peers], stdout=subprocess.PIPE)
        assert srv.stdout.readline().strip() == "ready"
        seed = ""
        if mode != "alone":
            other = bed.popen(bed.ns["srv"], ["python3", f"{HERE}/server.py", "churn"] +
                              RATE_PORTS, stdout=subprocess.PIPE)
            assert other.stdout.readline().strip() == "ready"
            seed = str(MIXED_SEED)
        out = bed.run(bed.ns["lan"], ["python3", f"{HERE}/hold.py", SRV, port,
                                      str(m["ports"]), str(cap), bed.ns["ce"]] +
                      ([seed, mode] if seed else []))
        res = json.loads(out)
        srv.send_signal(signal.SIGTERM)
        srv.wait(30)
        if seed:
            other.terminate()
            other.wait(10)
        seen = []
        with open(peers) as f:
            for line in f:
                a, p = line.split()
                seen.append((a, int(p)))
        os.unlink(peers)
        res["server_saw"] = len(seen)
        res["stray"] = sum(1 for a, p in seen if a != m["v4"] or not owned(m, p))
        res["sets_used"] = len({next((i for i, (lo, hi) in enumerate(m["sets"]) if lo <= p <= hi),
                                     -1) for a, p in seen if owned(m, p)})
        res["util"] = res["count"] / m["ports"]
        log(f"utilisation {shape} {variant} {mode}: {res}")
        return res
    finally:
        bed.close()


def utilisation(maps, variants, modes, cap, parallel):
    jobs = [(s, v, mo) for mo in modes for s in maps for v in variants
            if v in MODE_VARIANTS[mo]]
    with ThreadPoolExecutor(min(parallel, len(jobs))) as ex:
        futs = {j: ex.submit(utilisation_one, j[0], j[1], j[2], maps[j[0]], cap) for j in jobs}
        return {j: f.result() for j, f in futs.items()}


# --- 1b. ruleset size and load time ---------------------------------------------------------

LOAD_VARIANTS = ("prev", "k8", "k16", "k32", "k64", "ours", "prev_ipt", "ipt")


def load_times(maps, runs):
    """Each rule set loaded `runs` times into one CE namespace (the nft scripts start with
    `flush ruleset`; iptables files replace their tables), order rotating; median wall time of
    `nft -f` / `iptables-restore` and its peak memory (GNU time's maximum RSS)."""
    out = {}
    for shape, m in maps.items():
        bed = Bed(f"load{shape[0]}", m["v4"])
        try:
            b = builders(m)
            b["prev_ipt"] = rulesets.previous_ipt
            texts = {v: b[v](DEV, m["v4"], m["sets"]) for v in LOAD_VARIANTS}
            got = {v: [] for v in LOAD_VARIANTS}
            rss = {v: 0 for v in LOAD_VARIANTS}
            for i in range(runs):
                for v in LOAD_VARIANTS[i % len(LOAD_VARIANTS):] + LOAD_VARIANTS[:i % len(LOAD_VARIANTS)]:
                    t = texts[v]
                    ipt = isinstance(t, tuple)
                    if ipt:
                        ns_run(bed.ns["ce"], ["nft", "flush", "ruleset"])
                    argv = ["iptables-restore"] if ipt else ["nft", "-f", "-"]
                    t0 = time.perf_counter()
                    r = ns_run(bed.ns["ce"], ["/usr/bin/time", "-f", "%M"] + argv,
                               input=t[1] if ipt else t)
                    got[v].append(time.perf_counter() - t0)
                    if r.returncode != 0:
                        raise RuntimeError(f"loading {v}: {r.stderr.strip()[-300:]}")
                    rss[v] = max(rss[v], int(r.stderr.strip().splitlines()[-1]))
            out[shape] = {v: {"seconds": statistics.median(got[v]), "rss_kb": rss[v],
                              "bytes": len(texts[v][1] if isinstance(texts[v], tuple)
                                           else texts[v])} for v in LOAD_VARIANTS}
            log(f"load {shape}: " + ", ".join(f"{v} {x['seconds'] * 1e3:.0f} ms"
                                               for v, x in out[shape].items()))
        finally:
            bed.close()
    return out


# --- 2. throughput -------------------------------------------------------------------------

def throughput(m, runs, secs):
    bed = Bed("tput", m["v4"])
    try:
        srv = bed.popen(bed.ns["srv"], ["iperf3", "-s", "-B", SRV, "-p", "5201"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        b = builders(m)
        got = {"ours": [], "masq": []}
        for i in range(runs):
            order = ["ours", "masq"] if i % 2 == 0 else ["masq", "ours"]
            for v in order:
                bed.load(b[v](DEV, m["v4"], m["sets"]))
                bed.flush_conntrack()
                for attempt in range(3):
                    r = sh(["ip", "netns", "exec", bed.ns["lan"], "iperf3", "-c", SRV, "-p",
                            "5201", "-t", str(secs), "-O", "1", "-J"], check=False)
                    try:
                        bps = json.loads(r)["end"]["sum_received"]["bits_per_second"]
                        break
                    except (ValueError, KeyError):
                        time.sleep(0.5)  # the server is busy with the previous run's teardown
                else:
                    raise RuntimeError(f"iperf3 failed: {r[:300]}")
                got[v].append(bps)
                log(f"throughput run {i + 1} {v}: {bps / 1e9:.2f} Gbit/s")
        srv.terminate()
        srv.wait(10)
        return got
    finally:
        bed.close()


# --- 3. connection rate --------------------------------------------------------------------

RATE_PORTS = ["9000", "9001", "9002", "9003", "9004", "9005", "9006", "9007"]


def conn_rate(m, variants, runs, secs, inflight):
    """Rounds of one burst per rule set, the order rotating each round; every burst's rate is
    divided by the plain-masquerade burst of the same round (measured seconds apart), and the
    median of those per-round ratios is reported, so slow drifts in machine load cancel out."""
    bed = Bed("rate", m["v4"])
    try:
        srv = bed.popen(bed.ns["srv"], ["python3", f"{HERE}/server.py", "churn"] + RATE_PORTS,
                        stdout=subprocess.PIPE)
        assert srv.stdout.readline().strip() == "ready"
        cli = bed.popen(bed.ns["lan"], ["python3", f"{HERE}/rate.py", str(inflight), "10.99.1.1",
                                        "250"] + RATE_PORTS, stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE)
        assert cli.stdout.readline().strip() == "ready"
        b = builders(m)
        rounds = []
        for i in range(runs):
            k = i % len(variants)
            order = variants[k:] + variants[:k]
            got = {}
            for v in order:
                bed.load(b[v](DEV, m["v4"], m["sets"]))
                bed.flush_conntrack()
                cli.stdin.write(f"go {secs}\n")
                cli.stdin.flush()
                got[v] = json.loads(cli.stdout.readline())
            rounds.append(got)
            log(f"rate round {i + 1}: " + ", ".join(f"{v} {r['rate']:.0f}/s"
                                                    for v, r in got.items()))
        cli.stdin.write("quit\n")
        cli.stdin.flush()
        cli.wait(10)
        srv.terminate()
        srv.wait(10)
        return rounds
    finally:
        bed.close()


# --- 4. footprint --------------------------------------------------------------------------

def ipk_budget(root):
    """An .ipk size budget in scripts/dist.sh (BUDGET=${<VAR>:-N}), if it has one."""
    try:
        with open(os.path.join(root, "scripts", "dist.sh")) as f:
            m = re.search(r"BUDGET=\$\{[A-Z_]+:-(\d+)\}", f.read())
        return int(m.group(1)) if m else None
    except OSError:
        return None


def footprint(root, setup_args, n):
    """Sizes from dist/ (if scripts/dist.sh made it) and the handler's setup time: N runs of
    `mape netifd setup ... --dry-run` against N runs of `mape --version` and of /bin/true, in
    3 interleaved rounds (median of the round means), for the release binary and, when dist/
    has it, the shipped static x86_64 binary."""
    dist = os.path.join(root, "dist")
    rows = []
    built = None
    bindir = os.path.join(dist, "bin")
    if os.path.isdir(bindir):
        ipks = {}
        for f in sorted(os.listdir(dist)):
            mm = re.match(r"mape-rs_[^_]+_(.+)\.ipk$", f)
            if mm:
                ipks[mm.group(1)] = (f, os.path.getsize(os.path.join(dist, f)))
        for arch in sorted(os.listdir(bindir)):
            p = os.path.join(bindir, arch, "mape")
            if os.path.isfile(p):
                rows.append((arch, os.path.getsize(p)) + ipks.get(arch, (None, None)))
                built = max(built or 0, os.path.getmtime(p))

    def timed(argv):
        t0 = time.perf_counter()
        for _ in range(n):
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           check=True)
        return (time.perf_counter() - t0) / n

    bins = {"release": setup_args[0]}
    static = os.path.join(bindir, "x86_64", "mape")
    if os.path.isfile(static) and os.access(static, os.X_OK):
        bins["dist x86_64"] = static
    times = {}
    for name, b in bins.items():
        ts = {"setup": [], "version": [], "true": []}
        for _ in range(3):
            ts["setup"].append(timed([b] + setup_args[1:]))
            ts["version"].append(timed([b, "--version"]))
            ts["true"].append(timed(["/bin/true"]))
        times[name] = {k: statistics.median(v) for k, v in ts.items()}
    return {"rows": rows, "built": built, "budget": ipk_budget(root), "times": times,
            "bins": bins}


# --- the report ----------------------------------------------------------------------------

def machine_info():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) // 1024 // 1024} GiB"
    return {
        "kernel": f"Linux {platform.release()} ({platform.machine()})",
        "cpu": f"{cpu}, {os.cpu_count()} CPUs, {mem} RAM",
        "load": os.getloadavg()[0],
        "nft": sh("nft --version", check=False).strip(),
        "iperf3": sh("iperf3 --version", check=False).splitlines()[0].strip(),
        "python": platform.python_version(),
    }


def fmt_ratio(x):
    return f"{x:.2f}"


def iqr(xs):
    """The middle half of a list of ratios, as "a–b"."""
    if len(xs) < 4:
        return f"{min(xs):.2f}–{max(xs):.2f}"
    q = statistics.quantiles(xs, n=4)
    return f"{q[0]:.2f}–{q[2]:.2f}"


def util_cell(r):
    """held ÷ allowed, marked "≥" when the time cap, not a failed connect, ended the run."""
    ge = "≥ " if r["failed"] == "time cap" else ""
    return f"{ge}{r['util']:.3f}"


def syn_note(util):
    """How long a failing connect took here, from stock fw4's run (no drops before it)."""
    r = util.get(("v6plus", "fw4", "alone"))
    if not r or not r["failed"].startswith("ETIMEDOUT"):
        return ""
    return (f": a failing connect here took {r['synretrans']} SYN retransmissions over about "
            f"{r['seconds']:.0f} s")


def t90_cell(r):
    return "never" if r["seconds_90"] is None else f"{r['seconds_90']:.1f} s"


def drops_cell(r):
    return "never reached 90 %" if r["synretrans_90"] is None else str(r["synretrans_90"])


def report(info, maps, util, loads, tput, rounds, foot, args, took):
    cols = [v for v in ("ours", "ipt", "prev", "fw4", "perport", "marks", "perdest", "k8",
                        "k16", "k32", "k64") if any(k[1] == v for k in util)]
    modes = [mo for mo in UTIL_MODES if any(k[2] == mo for k in util)]
    rate_vs = list(rounds[0].keys())
    rate_ratios = {v: [r[v]["rate"] / r["masq"]["rate"] for r in rounds] for v in rate_vs}
    rate_ratio = {v: statistics.median(x) for v, x in rate_ratios.items()}
    rate_ratio_ours = {v: statistics.median(r[v]["rate"] / r["ours"]["rate"] for r in rounds)
                       for v in rate_vs}
    tput_ratios = [o / m for o, m in zip(tput["ours"], tput["masq"])]
    tput_ratio = statistics.median(tput_ratios)
    t = foot["times"]["release"]
    L = []
    a = L.append
    a("# mape-rs benchmarks")
    a("")
    a(f"Generated by `sudo bench/run.sh` on {time.strftime('%Y-%m-%d %H:%M %Z')}, mape "
      f"{info['version']}, {took:.0f} s for the measurements. Do not edit by hand: re-run the "
      "command, which rewrites this file.")
    a("")
    a("| machine | |")
    a("| --- | --- |")
    a(f"| kernel | {info['kernel']} |")
    a(f"| CPU | {info['cpu']} |")
    a(f"| load average (1 min), start / end | {info['load']:.2f} / {info['load_end']:.2f} "
      "(other jobs were running on the machine) |")
    a(f"| tools | {info['nft']}; {info['iperf3']}; Python {info['python']} |")
    a(f"| path | {info['path']} |")
    a("")
    a("Every figure is a ratio against a baseline measured in the same run; absolute values "
      "are only context.")
    a("")
    a("## Summary")
    a("")
    hdr = ["figure", "baseline (same run)"] + [SHORT[v] for v in cols]
    a("| " + " | ".join(hdr) + " |")
    a("|" + " --- |" * len(hdr))
    def cell(f, shape, v, mo):
        r = util.get((shape, v, mo))
        return "–" if r is None else f(r)
    for mo in modes:
        for shape in maps:
            n = maps[shape]["ports"]
            a(f"| held ÷ allowed, {SHAPES[shape][2]}, {MODE_LABEL[mo]} | {n} allowed ports"
              f"{' a site' if mo == 'sites' else ''} | " +
              " | ".join(cell(lambda r: f"**{util_cell(r)}**", shape, v, mo) for v in cols) +
              " |")
    for mo in modes:
        if mo == "alone":
            continue
        what = "first-datagram" if mo == "udp" else "SYN"
        a(f"| {what} drops before 90 % use, {MODE_LABEL[mo]}, v6plus / OCN | 0 (an ideal NAT) | " +
          " | ".join(" / ".join(cell(drops_cell, s_, v, mo) for s_ in maps) for v in cols) +
          " |")
        a(f"| time to 90 % use, {MODE_LABEL[mo]}, v6plus / OCN | – | " +
          " | ".join(" / ".join(cell(t90_cell, s_, v, mo) for s_ in maps) for v in cols) +
          " |")
    lo = loads["ocn"]
    a(f"| ruleset load time, OCN | previous mape-rs (nft / iptables) | **{fmt_ratio(lo['ours']['seconds'] / lo['prev']['seconds'])}** | "
      f"**{fmt_ratio(lo['ipt']['seconds'] / lo['prev_ipt']['seconds'])}** | " +
      " | ".join(f"**{fmt_ratio(lo[v]['seconds'] / lo['prev']['seconds'])}**" if v in lo else "–"
                 for v in cols[2:]) + " |")
    a(f"| TCP throughput (nft) | plain masquerade | **{fmt_ratio(tput_ratio)}** | " +
      " | ".join("–" for _ in cols[1:]) + " |")
    a("| new TCP connections per second | plain masquerade | " +
      " | ".join(f"**{fmt_ratio(rate_ratio[v])}**" if v in rate_ratio else "–" for v in cols) +
      " |")
    a(f"| handler setup time (config in → payload out) | `mape --version` | "
      f"**{fmt_ratio(t['setup'] / t['version'])}** | " + " | ".join("–" for _ in cols[1:]) + " |")
    a("")
    a("Columns: " + "; ".join(f"**{SHORT[v]}** = {rulesets.LABELS[v]}" for v in cols) +
      ". Exact rules: `bench/rulesets.py`; ours comes from `mape netifd setup … --dry-run` "
      "of the release binary.")
    a("")
    # 1
    a("## 1. Port utilisation")
    a("")
    a("A LAN host opens TCP connections one after the other to ONE server address and port "
      "(10.99.0.2:8080) and keeps every one open, until a connect fails after the kernel's "
      f"normal SYN retries (`net.ipv4.tcp_syn_retries` = {info['syn_retries']} and "
      f"`tcp_syn_linear_timeouts` = {info['syn_linear']}, not lowered{syn_note(util)}) "
      f"or {args.util_cap:.0f} s have passed (then the ratio is marked ≥). Ratio = connections "
      "held ÷ the line's ports. All runs go in parallel, each in namespaces of its own.")
    a("")
    a("- **one server, nothing else**: only those connections cross the CE (the issue's test).")
    a("- **one server + other traffic**: before each of them, 0–3 short TCP connections and 0–2 "
      "UDP datagrams (DNS-like) to other hosts (250 addresses), drawn from a seeded generator, "
      "so every rule set sees the same sequence: a page with many connections to one site while "
      "other things talk.")
    a("- **three busy sites + other TCP, DNS and QUIC**: three destinations (10.99.2.1–3:443) "
      "take a connection each in turn, each until its own ports run out, while the mixed "
      "traffic above runs plus, before each connection, one DNS-like UDP query to one "
      "resolver (a new flow each) and, half the time, a QUIC-like UDP flow to one of four "
      "servers. held = the smallest of the three sites; 90 % = all three at 90 %.")
    a("- **UDP flows to one server**: a QUIC or game client opens UDP flows to ONE server "
      "(10.99.0.2:4433, an echo server) one after the other and keeps them (the CE keeps idle "
      "UDP flows 600 s here); a flow whose first datagram gets no answer within 1 s tries "
      "again (a new NAT decision) up to 3 times; the run ends when a flow gets no answer at "
      "all. Other traffic as for the sites. Drops = lost first datagrams.")
    a("- **SYN drops before 90 %**: SYN retransmissions on the LAN host until 90 % of the ports "
      "were in use; each one is a SYN the CE dropped (a NAT clash: the chosen port or set was "
      "taken; conntrack `insert_failed` in the CE agrees) and costs the page a ≥ 1 s stall.")
    a("")
    a("| rule set | shape | traffic | held ÷ allowed | held | SYN drops before 90 % | "
      "time to 90 % | port sets used | stray ports | ended by |")
    a("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for mo in modes:
        for shape in maps:
            for v in cols:
                r = util.get((shape, v, mo))
                if r is None:
                    continue
                t90 = t90_cell(r)
                a(f"| {SHORT[v]} | {SHAPES[shape][2]} ({maps[shape]['ports']}) | {MODE_LABEL[mo]} | "
                  f"**{util_cell(r)}** | {r['count']} | {drops_cell(r)} | {t90} | "
                  f"{r['sets_used']} of {len(maps[shape]['sets'])} | {r['stray']} | "
                  f"{r['failed']} ({r['seconds']:.0f} s) |")
    a("")
    a("Stray ports = connections the server saw from a source address or port outside the "
      "line's port sets (a BR would drop them); the server checks every one.")
    a("")
    # 2
    a("## 1b. Ruleset size and load time")
    a("")
    a(f"Each rule set loaded {args.load_runs} times into one CE namespace, the order rotating "
      "(nft scripts begin with `flush ruleset`; an iptables file replaces the nat and mangle "
      "tables); median wall time of `nft -f` or `iptables-restore` (nf_tables backend), and "
      "its peak memory (maximum RSS). Baseline: the previous mape-rs ruleset of the same kind.")
    a("")
    a("| rule set | shape | text (bytes) | load time | ÷ previous | peak RSS (KiB) |")
    a("| --- | --- | --- | --- | --- | --- |")
    names = {"prev": "previous mape-rs (nft)", "k8": "8 buckets (nft)", "k16": "16 buckets (nft)",
             "k32": "32 buckets (nft)", "k64": "64 buckets (nft, before)",
             "ours": "mape-rs: a walk per destination (nft)",
             "prev_ipt": "previous mape-rs (iptables)",
             "ipt": "mape-rs: a walk per destination (iptables)"}
    for shape in maps:
        lo = loads[shape]
        for v in LOAD_VARIANTS:
            base = lo["prev_ipt" if v in ("prev_ipt", "ipt") else "prev"]["seconds"]
            a(f"| {names[v]} | {SHAPES[shape][2]} | {lo[v]['bytes']} | "
              f"{lo[v]['seconds'] * 1e3:.0f} ms | **{fmt_ratio(lo[v]['seconds'] / base)}** | "
              f"{lo[v]['rss_kb']} |")
    a("")
    a("## 2. Throughput (iperf3 TCP, LAN → server through the CE)")
    a("")
    a(f"{len(tput['ours'])} pairs of runs (`iperf3 -t {args.tput_secs} -O 1`: one second of "
      "slow start left out, then the measured time) in one namespace bed (v6plus shape), the "
      "rule set swapped between runs and the order alternating (ours first, then masquerade "
      "first); ratio = median of the per-pair ratios. Once a connection is set up, ours and "
      "masquerade differ per packet only by our MSS-clamp chain in forward (which matches SYNs "
      "only); both rewrite every packet through conntrack's NAT binding.")
    a("")
    a("| rule set | ÷ plain masquerade | middle half of the pair ratios | median | runs "
      "(Gbit/s) |")
    a("| --- | --- | --- | --- | --- |")
    for v in ("ours", "masq"):
        runs = ", ".join(f"{x / 1e9:.2f}" for x in tput[v])
        ratio, spread = (tput_ratio, iqr(tput_ratios)) if v == "ours" else (1.0, "–")
        a(f"| {rulesets.LABELS[v]} | **{fmt_ratio(ratio)}** | {spread} | "
          f"{statistics.median(tput[v]) / 1e9:.2f} Gbit/s | {runs} |")
    a("")
    # 3
    a("## 3. Connection rate (new TCP connections per second through the CE)")
    a("")
    a(f"Bursts of {args.rate_secs} s of short connections (connect, close) with "
      f"{args.rate_inflight} connects in flight, spread over 250 server addresses × "
      f"{len(RATE_PORTS)} ports so that no destination runs short of ports; conntrack flushed "
      f"before each burst. {len(rounds)} rounds of one burst per rule set, the order rotating; "
      "ratio = median of the per-round ratios against the masquerade burst of the same round. "
      "The load generator and server are Python epoll loops on the same CPUs, so a ratio near "
      "1 means the rules cost little next to everything else a connection costs here.")
    a("")
    a("| rule set | ÷ plain masquerade | middle half of the round ratios | ÷ ours | median "
      "conn/s | failed or unfinished connects |")
    a("| --- | --- | --- | --- | --- | --- |")
    for v in rate_vs:
        med = statistics.median(r[v]["rate"] for r in rounds)
        fails = sum(r[v]["failed"] for r in rounds)
        spread = "–" if v == "masq" else iqr(rate_ratios[v])
        a(f"| {rulesets.LABELS[v]} | **{fmt_ratio(rate_ratio[v])}** | {spread} | "
          f"{fmt_ratio(rate_ratio_ours[v])} | {med:.0f} | {fails} |")
    a("")
    # 4
    a("## 4. Footprint")
    a("")
    rows, budget = foot["rows"], foot["budget"]
    if rows:
        when = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(foot["built"]))
        x86 = next((b for arch, b, _n, _i in rows if arch == "x86_64"), None)
        a(f"Sizes read from `dist/` as `scripts/dist.sh` left it (built {when}; the benchmark "
          "does not run that build, so re-run it first if the sources changed). Baselines: the "
          "x86_64 binary of the same build, and each architecture's own binary (the .ipk's "
          "compression)" + (f"; budget: the .ipk budget in `scripts/dist.sh` ({budget} bytes)"
                            if budget else "") + ".")
        a("")
        hdr = "| architecture | static binary (bytes) | ÷ x86_64 binary | .ipk (bytes) | .ipk ÷ binary |"
        sep = "| --- | --- | --- | --- | --- |"
        if budget:
            hdr += " .ipk ÷ budget |"
            sep += " --- |"
        a(hdr)
        a(sep)
        for arch, b, _name, i in rows:
            cells = [arch, str(b), fmt_ratio(b / x86) if x86 else "–",
                     "–" if i is None else str(i), "–" if i is None else fmt_ratio(i / b)]
            if budget:
                cells.append("–" if i is None else fmt_ratio(i / budget))
            a("| " + " | ".join(cells) + " |")
    else:
        a("| architecture | static binary | .ipk |")
        a("| --- | --- | --- |")
        a("| all | run `scripts/dist.sh` first | run `scripts/dist.sh` first |")
    a("")
    a(f"The x86_64 release binary the benchmark built and ran (`target/release/mape`, "
      f"{info['binkind']}) is {info['binsize']} bytes.")
    a("")
    a("Handler setup time, config in → payload out: `mape netifd setup wanmap "
      "'{\"tunlink\":\"wan6\"}' --dry-run --tunlink-status '<v6plus status>'` (rule lookup, "
      "mapping, nft script, ubus payloads, printed as JSON) against trivial processes; "
      f"{args.setup_n} runs per round, 3 interleaved rounds, median of the round means.")
    a("")
    a("| binary | process | ÷ `mape --version` | ÷ `/bin/true` | per run |")
    a("| --- | --- | --- | --- | --- |")
    for name, t in foot["times"].items():
        label_b = ("`target/release/mape` (glibc)" if name == "release"
                   else "`dist/bin/x86_64/mape` (static musl, shipped)")
        for k, label in (("setup", "`mape netifd setup … --dry-run`"),
                         ("version", "`mape --version`"), ("true", "`/bin/true`")):
            a(f"| {label_b} | {label} | {fmt_ratio(t[k] / t['version'])} | "
              f"{fmt_ratio(t[k] / t['true'])} | {t[k] * 1e3:.2f} ms |")
    a("")
    a("## Notes")
    a("")
    for n in NOTES:
        a(f"- {n}")
    a("")
    return "\n".join(L)


SHORT = {"ours": "mape-rs", "ipt": "mape-rs iptables", "prev": "previous mape-rs",
         "fw4": "stock fw4", "perport": "per-port numgen", "marks": "per-set marks",
         "perdest": "earlier proposal", "k8": "8 buckets", "k16": "16 buckets",
         "k32": "32 buckets", "k64": "64 buckets (before)", "masq": "masquerade"}

NOTES = [
    "Path: this kernel has no ip6tnl, so there is no IPv4-in-IPv6 encapsulation; the tunnel is "
    "a veth named `map-wanmap` from the CE namespace to the server namespace. What is measured "
    "is the CE's IPv4 NAT path (SNAT in nat postrouting on the tunnel device, conntrack, the MSS "
    "clamp in forward), which is the same on a router; the encapsulation costs all rule sets the "
    "same and is tested for correctness in the VM bed (tests/e2e), not here.",
    "Every rule set is loaded together with fw4's wan-zone masquerade (`table inet fw4`, "
    "priority srcnat), as on a router; plain masquerade is that table alone.",
    "Stock fw4 uses the first port set only: 16 ports per destination; its 17th connection to "
    "one server fails. The per-set marks variant sits at the same priority as "
    "fw4 (100): of two nat chains at one priority the one registered last runs first, so it "
    "works only when loaded after fw4 (as here); after a firewall reload fw4's masquerade "
    "would take every connection.",
    "Blind round-robin (per-port numgen, and one level up every per-set scheme with shared "
    "counters, buckets included) is perfect while one destination is alone; other traffic moves the counter, so the "
    "connections to one server land on sets unevenly and the fullest sets start dropping SYNs "
    "before the line is full. Per port this starts early (one used port is enough for a clash); "
    "per set it starts late (the kernel looks for a free port among the set's 16).",
    "mape-rs now walks the port sets per destination: the position of each destination "
    "(address and port, per protocol) is kept in the kernel, one dynamic set per position, and "
    "advanced from the packet path (`add`/`delete`/`update`), so other traffic never moves it "
    "(docs/port-allocation.md). 64 buckets is what it shipped "
    "before: `jhash ip daddr . tcp dport mod 64` picked one of 64 `numgen inc` chains per "
    "protocol; the 8/16/32-bucket columns are that table with fewer buckets (bench/rulesets.py). "
    "The iptables renderer walks the same way with xt_recent lists (keyed by address). "
    "The earlier proposal is the older ruleset with 16 buckets by destination address only "
    "(three maps per bucket). Previous mape-rs is the ruleset shipped before the buckets: one "
    "counter per protocol.",
    "Nothing here passes or fails on absolute numbers; the machine is shared and its load moves "
    "absolute values by tens of percent between runs.",
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--util-cap", type=float, default=180.0,
                    help="time cap per port-utilisation run (s)")
    ap.add_argument("--tput-runs", type=int, default=10)
    ap.add_argument("--tput-secs", type=int, default=1)
    ap.add_argument("--rate-runs", type=int, default=12)
    ap.add_argument("--rate-secs", type=float, default=0.5)
    ap.add_argument("--rate-inflight", type=int, default=64)
    ap.add_argument("--setup-n", type=int, default=100)
    ap.add_argument("--only", default="util,load,tput,rate,foot",
                    help="comma-separated phases; anything less than all prints JSON only")
    ap.add_argument("--util-variants", default="ours,ipt,prev,fw4,perport,marks,perdest,k8,k16,k32,k64")
    ap.add_argument("--parallel", type=int, default=22,
                    help="port-utilisation runs at once (each a bed of three namespaces)")
    ap.add_argument("--load-runs", type=int, default=15)
    ap.add_argument("--util-modes", default=",".join(UTIL_MODES))
    ap.add_argument("--rate-variants", default="ours,ipt,prev,fw4,perport,marks,perdest,k64,masq")
    args = ap.parse_args()
    only = set(args.only.split(","))
    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespaces, nft): run sudo bench/run.sh")
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    t0 = time.monotonic()
    binary = os.path.abspath(args.bin)
    root = os.path.dirname(HERE)
    info = machine_info()
    info["version"] = sh([binary, "--version"]).strip().split()[-1]
    info["binsize"] = os.path.getsize(binary)
    kind = sh(["file", "-b", binary], check=False)
    info["binkind"] = ", ".join(k for k, cond in (
        ("glibc, dynamically linked", "dynamically linked" in kind),
        ("static", "statically linked" in kind or "static-pie" in kind),
        ("not stripped", "not stripped" in kind),
        ("stripped", "not stripped" not in kind and ", stripped" in kind)) if cond) or "ELF"
    with open("/proc/sys/net/ipv4/tcp_syn_retries") as f:
        info["syn_retries"] = f.read().strip()
    try:
        with open("/proc/sys/net/ipv4/tcp_syn_linear_timeouts") as f:
            info["syn_linear"] = f.read().strip()
    except OSError:
        info["syn_linear"] = "n/a"
    info["path"] = ("LAN ns → CE ns → server ns on this kernel; no ip6tnl here, so the tunnel "
                    "is a veth named `map-wanmap` (no encapsulation); the NAT path is the same "
                    "as on a router (see Notes)")
    maps = {s_: mapping(binary, s_) for s_ in SHAPES}
    log(f"kernel {info['kernel']}, load {info['load']:.2f}")
    util = tput = rounds = foot = loads = None
    if "util" in only:
        log("1. port utilisation: all runs in parallel, each in its own namespaces "
            f"(up to {args.util_cap:.0f} s)")
        util = utilisation(maps, args.util_variants.split(","), args.util_modes.split(","),
                           args.util_cap, args.parallel)
    loads = None
    if "load" in only:
        log("1b. ruleset size and load time")
        loads = load_times(maps, args.load_runs)
    if "tput" in only:
        log("2. throughput")
        tput = throughput(maps["v6plus"], args.tput_runs, args.tput_secs)
    if "rate" in only:
        log("3. connection rate")
        rounds = conn_rate(maps["v6plus"], args.rate_variants.split(","), args.rate_runs,
                           args.rate_secs, args.rate_inflight)
    if "foot" in only:
        log("4. footprint")
        foot = footprint(root, maps["v6plus"]["setup_args"], args.setup_n)
    info["load_end"] = os.getloadavg()[0]
    took = time.monotonic() - t0
    if None in (util, tput, rounds, foot, loads):
        print(json.dumps({"util": {"/".join(k): v for k, v in (util or {}).items()},
                          "load": loads, "tput": tput, "rate": rounds, "foot": foot}, indent=1,
                         default=str))
        return
    raw = os.path.join(root, "target", "bench")
    os.makedirs(raw, exist_ok=True)
    with open(os.path.join(raw, "last-run.json"), "w") as f:
        json.dump({"info": info, "util": {"/".join(k): v for k, v in util.items()},
                   "load": loads, "tput": tput, "rate": rounds, "foot": foot}, f, indent=1,
                  default=str)
    md = report(info, maps, util, loads, tput, rounds, foot, args, took)
    with open(args.out, "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
