#!/usr/bin/env python3
"""MAP-E end-to-end test bed. Runs as root on a kernel with ip6tnl + nftables NAT
(inside the test VM: tests/e2e/run.sh boots it and runs this through guest.sh).

Topology (one network namespace each; see README.md):

  lan1 --- ce1 --wan--.
                       >-- br --- srv      the CEs are configured only from
  lan2 --- ce2 --wan--'                    `mape netifd setup --dry-run` (netifd_standin.py)
  192.168.1.0/24   2001:db8:ff0N::/64   203.0.113.0/24

Rule: RFC 7597 Example 1 (2001:db8::/40 -> 192.0.2.0/24, 16 EA bits, offset 6).
ce1 is delegated 2001:db8:12:3400::/56 and ce2 2001:db8:12:3500::/56: both map to
192.0.2.18, with PSIDs 0x34 and 0x35. The BR (scaffolding) decapsulates with
ip6tnl and returns each packet to the right CE by its destination port / echo id
(nft marks + policy routes), computing the port sets itself (refmap.py).

Checks print "ok <name>" or "FAIL <name>: <reason>" and are stored in
$MAPE_VM_OUT/results.txt; artifacts (captures, logs, payloads) in $MAPE_VM_OUT/artifacts.
Options: --break-psid (configure ce1 with a rule carrying a wrong PSID throughout).
"""
import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import netifd_standin  # noqa: E402
import netns  # noqa: E402
import pcap  # noqa: E402
import refmap  # noqa: E402
import traffic  # noqa: E402

WORK = "/tmp/mape-e2e"
OUT = os.environ.get("MAPE_VM_OUT") or os.path.join(WORK, "out")
ART = os.path.join(OUT, "artifacts")
MAPE = os.environ.get("MAPE_BIN", "mape")

RULE = {"ipv6prefix": "2001:db8::", "prefix6len": 40, "ipv4prefix": "192.0.2.0", "prefix4len": 24,
        "ealen": 16, "offset": 6, "br": "2001:db8:ffff::1"}
RULE_STR = "type=map-e," + ",".join(f"{k}={v}" for k, v in RULE.items())
BR = RULE["br"]
MTU = 1460
BULK = 4 << 20          # bytes each way in the large-transfer check
PARALLEL = 100          # TCP and UDP flows per LAN host in the parallel check
# seconds a flow may take (generous: the VM is emulated and the host may be busy); shorter
# with --break-psid, where ce1's flows are expected to time out
TIMEOUTS = {"flow": 15, "parallel": 30, "bulk": 90}
MSS_MAX = MTU - 40
SERVER = "203.0.113.10"
IFACE = "wanmap"            # the netifd interface; the tunnel is map-wanmap
NEW_PREFIX = "2001:db8:13:3600::/56"   # prefix change for ce1: 192.0.2.19, PSID 0x36
WRONG_PSID = 0x35           # --break-psid / negative control: ce1 (really 0x34) told PSID 0x35

CES = {
    "ce1": {"lan": "lan1", "wan": "2001:db8:ff01::2", "brside": "2001:db8:ff01::1", "mark": 0x101,
            "prefix": "2001:db8:12:3400::/56", "pattern": "11",
            "config": {"proto": "mape", "tunlink": "wan6", "isp": "none", "rule": RULE_STR, "mtu": MTU}},
    "ce2": {"lan": "lan2", "wan": "2001:db8:ff02::2", "brside": "2001:db8:ff02::1", "mark": 0x102,
            "prefix": "2001:db8:12:3500::/56", "pattern": "22",
            "config": {"proto": "mape", "tunlink": "wan6", "isp": "none", "peeraddr": BR,
                       "ipaddr": RULE["ipv4prefix"], "ip4prefixlen": RULE["prefix4len"],
                       "ip6prefix": RULE["ipv6prefix"], "ip6prefixlen": RULE["prefix6len"],
                       "ealen": RULE["ealen"], "psidlen": 8, "offset": RULE["offset"], "mtu": MTU}},
}
BROKEN_CONFIG = dict(CES["ce1"]["config"], rule=RULE_STR + f",psidlen=8,psid={WRONG_PSID << 8}")

MODULES = ["veth", "ip6_tunnel", "tunnel6", "nf_tables", "nf_conntrack", "nf_nat", "nft_chain_nat",
           "nft_nat", "nft_numgen", "nft_ct", "nf_defrag_ipv4", "nf_defrag_ipv6", "nf_reject_ipv4",
           "nft_reject", "nft_reject_inet", "nft_limit", "nft_masq", "nft_fib", "nft_fib_ipv4",
           "nft_fib_inet", "nft_hash", "nft_redir", "nft_log", "nft_compat"]


# ====================================================================== output
class Results:
    def __init__(self, path):
        self.path = path
        self.passed = self.failed = 0
        open(path, "w").close()

    def emit(self, line):
        print(line, flush=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def ok(self, name, detail=""):
        self.passed += 1
        self.emit(f"ok   {name}" + (f" ({detail})" if detail else ""))

    def fail(self, name, reason):
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


def log(msg):
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


# ====================================================================== topology
NSES = ["lan1", "lan2", "ce1", "ce2", "br", "srv"]


def build_topology():
    ipb(None, [f"netns del {ns}" for ns in NSES], ["-force"], check=False)
    ipb(None, [f"netns add {ns}" for ns in NSES])
    # DAD would keep new IPv6 addresses tentative for a second or two (and an
    # ip6tnl drops packets while its local address is tentative).
    for ns in NSES:
        opts = {"net.ipv6.conf.all.accept_dad": 0, "net.ipv6.conf.default.accept_dad": 0,
                "net.ipv4.conf.all.rp_filter": 0, "net.ipv4.conf.default.rp_filter": 0}
        if ns.startswith("ce"):
            opts["net.ipv4.ip_forward"] = 1
        if ns == "br":
            opts.update({"net.ipv4.ip_forward": 1, "net.ipv6.conf.all.forwarding": 1})
        netns.sysctl(ns, opts)
    ipb(None, [
        "link add eth0 netns lan1 type veth peer name lan netns ce1",
        "link add eth0 netns lan2 type veth peer name lan netns ce2",
        "link add wan netns ce1 type veth peer name to-ce1 netns br",
        "link add wan netns ce2 type veth peer name to-ce2 netns br",
        "link add eth0 netns srv type veth peer name to-srv netns br",
    ])
    for lan in ("lan1", "lan2"):
        ipb(lan, ["link set lo up", "link set eth0 up gso_max_segs 1", "addr add 192.168.1.2/24 dev eth0",
                  "route add default via 192.168.1.1"])
    for ce, c in CES.items():
        ipb(ce, ["link set lo up", "link set lan up", "link set wan up",
                 "addr add 192.168.1.1/24 dev lan",
                 f"addr add {c['wan']}/64 dev wan nodad",
                 f"route add ::/0 via {c['brside']} dev wan"])
    ipb("srv", ["link set lo up", "link set eth0 up gso_max_segs 1", f"addr add {SERVER}/24 dev eth0",
                "route add default via 203.0.113.1"])
    ipb("br", ["link set lo up", f"addr add {BR}/128 dev lo",
               "link set to-ce1 up", "link set to-ce2 up", "link set to-srv up",
               "addr add 2001:db8:ff01::1/64 dev to-ce1 nodad",
               "addr add 2001:db8:ff02::1/64 dev to-ce2 nodad",
               "addr add 203.0.113.1/24 dev to-srv",
               # decapsulates from any CE (also from a CE address the BR did not expect)
               f"link add br-any type ip6tnl mode ipip6 local {BR} remote any encaplimit none",
               "link set br-any up"])


class BrScaffold:
    """The BR side: per CE an ip6tnl towards the CE address the BR computes itself,
    a route for the CE's delegated prefix, and nft marks that pick the CE by
    destination port / echo id, followed by a policy route into its tunnel."""

    def __init__(self):
        self.ces = {}   # ce -> (prefix, Mapping)

    def set_ce(self, ce, prefix):
        c = CES[ce]
        m = refmap.compute(RULE, prefix)
        old = self.ces.get(ce)
        lines = []
        if old and old[0] != prefix:
            lines.append(f"route del {old[0]}")
        tun = f"br-{ce}"
        if old:
            lines.append(f"link del {tun}")
        lines += [f"route replace {prefix} via {c['wan']} dev to-{ce}",
                  f"link add {tun} type ip6tnl mode ipip6 local {BR} remote {m.ce} encaplimit none",
                  f"link set {tun} mtu {MTU} up",
                  f"route replace default dev {tun} table {c['mark']}"]
        if not old:
            lines.append(f"rule add fwmark {c['mark']} lookup {c['mark']} pref {c['mark']}")
        ipb("br", lines)
        self.ces[ce] = (prefix, m)
        self.nft()
        return m

    def nft(self):
        rules = []
        for ce, (prefix, m) in sorted(self.ces.items()):
            mark = CES[ce]["mark"]
            sets = m.nft_intervals()
            rules.append(f'iifname "to-srv" ip daddr {m.ipv4} meta l4proto {{ tcp, udp }} '
                         f'th dport {{ {sets} }} meta mark set {mark:#x} counter')
            rules.append(f'iifname "to-srv" ip daddr {m.ipv4} icmp type echo-reply '
                         f'icmp id {{ {sets} }} meta mark set {mark:#x} counter')
        script = ("table ip br_scaffold\ndelete table ip br_scaffold\n"
                  "table ip br_scaffold {\n"
                  "  counter stray {}\n"
                  "  set stray_ports { type inet_service; flags dynamic; size 4096; }\n"
                  "  chain pre {\n    type filter hook prerouting priority mangle; policy accept;\n    "
                  + "\n    ".join(rules) + "\n"
                  f'    iifname "to-srv" ip daddr {RULE["ipv4prefix"]}/{RULE["prefix4len"]} meta mark 0 '
                  'meta l4proto { tcp, udp } add @stray_ports { th dport }\n'
                  f'    iifname "to-srv" ip daddr {RULE["ipv4prefix"]}/{RULE["prefix4len"]} meta mark 0 '
                  'counter name "stray" drop\n'
                  "  }\n}\n")
        nsx("br", "nft", "-f", "-", input=script)

    def strays(self):
        out = nsx("br", "nft", "-j", "list", "counter", "ip", "br_scaffold", "stray").stdout
        pk = 0
        for o in json.loads(out)["nftables"]:
            if "counter" in o:
                pk = o["counter"]["packets"]
        s = json.loads(nsx("br", "nft", "-j", "list", "set", "ip", "br_scaffold", "stray_ports").stdout)
        ports = []
        for o in s["nftables"]:
            if "set" in o:
                ports = sorted(e if isinstance(e, int) else e.get("elem", {}).get("val", e)
                               for e in o["set"].get("elem", []))
        return pk, ports


# ====================================================================== handler + stand-in
def status_for(ce, prefix):
    net = ipaddress.IPv6Network(prefix)
    return {"up": True, "pending": False, "available": True, "proto": "static", "l3_device": "wan",
            "device": "wan",
            "ipv6-address": [{"address": CES[ce]["wan"], "mask": 64}],
            "ipv6-prefix": [{"address": str(net.network_address), "mask": net.prefixlen,
                             "preferred": 3600, "valid": 7200, "class": "wan6", "assigned": {}}],
            "ipv6-prefix-assignment": [], "route": [], "dns-server": [], "data": {}}


RUNS = {"n": 0}
STATE_OPT = {"flag": None}   # --state FILE / --state-dir DIR of the dry run, if offered (NOTES-for-lead.md)


def handler(action, ce, config, prefix=None):
    """Run `mape netifd <action> ... --dry-run`; returns the parsed payload or raises."""
    RUNS["n"] += 1
    tag = f"{RUNS['n']:02d}-{ce}-{action}"
    cmd = [MAPE, "netifd", action, IFACE, json.dumps(config), "--dry-run"]
    # the handler's own state between setup and teardown, per CE (what /var/run/mape is on a router)
    sdir = os.path.join(WORK, f"handler-state-{ce}")
    os.makedirs(sdir, exist_ok=True)
    if STATE_OPT["flag"] == "--state":
        cmd += ["--state", os.path.join(sdir, f"{IFACE}.json")]
    elif STATE_OPT["flag"] == "--state-dir":
        cmd += ["--state-dir", sdir]
    if prefix:
        st = os.path.join(ART, f"{tag}-wan6-status.json")
        with open(st, "w") as f:
            json.dump(status_for(ce, prefix), f)
        cmd += ["--tunlink-status", st]
    p = sh(cmd, check=False, env=dict(os.environ, MAPE_STATE_DIR=sdir))
    with open(os.path.join(ART, f"{tag}-payload.json"), "w") as f:
        f.write(p.stdout)
    if p.returncode:
        raise CmdError(f"mape netifd {action} exited {p.returncode}: {p.stderr.strip()[:800]}")
    try:
        payload = json.loads(p.stdout)
    except ValueError as e:
        raise CmdError(f"mape netifd {action} did not print one JSON object ({e}): {p.stdout[:300]!r}")
    return payload


APPLY = {"mode": "real"}   # how a CE is configured: "real" handler + fake ubus, or "dry-run" payloads


def handler_real(action, ce, config, prefix=None):
    """Run the real `mape netifd <action>` (no --dry-run) inside the CE namespace, the way
    netifd would: nft and the CE address are done by the handler itself; its ubus calls
    go to tests/e2e/fake-ubus, which answers wan6's status and logs everything else.
    Returns a payload shaped like the dry run's (calls = the logged ubus calls)."""
    RUNS["n"] += 1
    tag = f"{RUNS['n']:02d}-{ce}-{action}-real"
    d = os.path.join(WORK, f"ubus-{ce}")
    os.makedirs(os.path.join(d, "status"), exist_ok=True)
    fakebin = os.path.join(WORK, "fakebin")
    if not os.path.exists(os.path.join(fakebin, "ubus")):
        os.makedirs(fakebin, exist_ok=True)
        os.symlink(os.path.join(HERE, "fake-ubus"), os.path.join(fakebin, "ubus"))
    if prefix:
        with open(os.path.join(d, "status", "wan6.json"), "w") as f:
            json.dump(status_for(ce, prefix), f)
        shutil.copy(os.path.join(d, "status", "wan6.json"), os.path.join(ART, f"{tag}-wan6-status.json"))
    calls_file = os.path.join(d, "calls.jsonl")
    open(calls_file, "w").close()
    sdir = os.path.join(WORK, f"handler-state-{ce}")
    env = dict(os.environ, PATH=f"{fakebin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin')}",
               FAKE_UBUS_DIR=d, MAPE_STATE_DIR=sdir)
    # `ip netns exec` (not netns.run): it also remounts /sys for the namespace, where the
    # handler reads the link MTU
    p = sh(["ip", "netns", "exec", ce, MAPE, "netifd", action, IFACE, json.dumps(config)], check=False, env=env)
    with open(calls_file) as f:
        calls = [json.loads(x) for x in f if x.strip()]
    ifname = next((c["args"].get("ifname") for c in calls if c.get("method") == "notify_proto"
                   and c.get("args", {}).get("action") == 0), f"map-{IFACE}")
    payload = {"interface": IFACE, "ifname": ifname, "calls": calls, "nft": "", "exit": p.returncode,
               "log": p.stderr.splitlines()}
    with open(os.path.join(ART, f"{tag}-calls.json"), "w") as f:
        json.dump(payload, f, indent=1)
    if p.returncode:
        raise CmdError(f"mape netifd {action} (real, in {ce}) exited {p.returncode}: {p.stderr.strip()[:800]}")
    return payload


def apply(ce, action, config, prefix=None):
    """Configure (or tear down) a CE from our handler: the real one with the fake ubus, or
    the dry-run payload applied by the stand-in (--apply dry-run)."""
    if APPLY["mode"] == "real":
        p = handler_real(action, ce, config, prefix)
    else:
        p = handler(action, ce, config, prefix)
    standin(ce, p, teardown=action == "teardown")
    return p


def standin(ce, payload, teardown=False):
    n = netifd_standin.Netifd(ce, os.path.join(WORK, f"netifd-{ce}.json"), {"wan6": "wan"}, log=log,
                              nsrun=lambda cmd, input=None: netns.run(ce, cmd, input=input))
    n.apply(payload, teardown=teardown)
    return n


def notify_args(payload):
    for c in payload.get("calls", []):
        if c.get("method") == "notify_proto" and (c.get("args") or {}).get("action") == 0:
            return c["args"]
    raise KeyError("no notify_proto update (action 0) in the handler's calls")


def check_payload(c, payload, ce, expect_prefix):
    """Shape of the setup payload (netifd-handler.md 1.4-1.5) and its mapping vs. refmap."""
    c.expect(payload.get("interface") == IFACE, f"interface {payload.get('interface')!r} != {IFACE!r}")
    c.expect(isinstance(payload.get("nft"), str) and payload["nft"].strip(), "no nft script")
    a = notify_args(payload)
    t = a.get("tunnel") or {}
    ifname = a.get("ifname")
    c.expect(ifname == payload.get("ifname") and ifname and len(ifname) <= 15,
             f"tunnel ifname {ifname!r} (payload ifname {payload.get('ifname')!r})")
    c.expect(a.get("link-up") is True, "link-up is not true")
    c.expect(t.get("mode") == "ipip6", f"tunnel mode {t.get('mode')!r}")
    c.expect(t.get("link") == "wan6", f"tunnel link {t.get('link')!r} (must be the netifd interface wan6)")
    c.expect(isinstance(t.get("data"), dict) and t["data"].get("encaplimit", "ignore") == "ignore",
             f"tunnel data {t.get('data')!r}: netifd sets 'ignore encap limit' only with data.encaplimit "
             "absent or \"ignore\"")
    c.expect(int(t.get("mtu", 0)) == MTU, f"tunnel mtu {t.get('mtu')!r} != configured {MTU}")
    c.expect(ifname and f'"{ifname}"' in payload.get("nft", ""), f'nft script does not match oifname "{ifname}"')
    # the CE /128 on the WAN device: the handler adds it itself ("kernel addr_add"), or
    # through a dynamic netifd interface (map.sh's "<iface>_" with add_dynamic)
    ce_addrs = []
    for x in payload["calls"]:
        args = x.get("args") or {}
        if x.get("object") == "kernel" and x.get("method") == "addr_add":
            ce_addrs.append((str(args.get("address", "")).split("/")[0], args.get("dev")))
        elif x.get("method") == "add_dynamic":
            ce_addrs += [(str(a).split("/")[0], args.get("ifname")) for a in args.get("ip6addr", [])]
    m = refmap.compute(RULE, expect_prefix)
    v4 = [x.get("ipaddr") if isinstance(x, dict) else str(x).split("/")[0] for x in a.get("ipaddr", [])]
    c.expect(v4 == [str(m.ipv4)], f"IPv4 {v4} != expected [{m.ipv4}] (RFC 7597 for {expect_prefix})")
    c.expect(t.get("local") == str(m.ce), f"tunnel local {t.get('local')} != expected CE {m.ce}")
    c.expect(t.get("remote") == BR, f"tunnel remote {t.get('remote')} != BR {BR}")
    c.expect([a for a, _ in ce_addrs] == [str(m.ce)],
             f"CE address put on the WAN: {ce_addrs}, expected [{m.ce}] once")
    c.expect(all(d in ("wan", "@wan6") for _, d in ce_addrs), f"CE address not on wan6's device: {ce_addrs}")
    return m


# ====================================================================== state snapshots
def snapshot(ns):
    """What a teardown must restore: links, addresses, routes, rules, nft ruleset."""
    s = {}
    links, addrs4, routes4, rules4 = ipjb(ns, ["link show", "addr show", "route show table all root 0.0.0.0/0",
                                               "rule show"], ["-d"])
    routes6, rules6 = ipjb(ns, ["route show table all", "rule show"], ["-6"])
    s["links"] = []
    for l in links:
        d = {k: l.get(k) for k in ("ifname", "mtu", "link_type", "address", "link", "master")}
        d["flags"] = sorted(x for x in l.get("flags", []) if x != "LOWER_UP")
        li = l.get("linkinfo") or {}
        d["kind"] = li.get("info_kind")
        d["data"] = li.get("info_data")
        s["links"].append(d)
    s["addresses"] = []
    for l in addrs4:
        for a in l.get("addr_info", []):
            if a.get("local", "").startswith("fe80"):
                continue
            s["addresses"].append({"dev": l["ifname"], "family": a.get("family"), "local": a.get("local"),
                                   "prefixlen": a.get("prefixlen"), "peer": a.get("address")})
    s["routes"] = []
    for r in routes4 + routes6:
        dst = r.get("dst", "")
        if dst.startswith("fe80") and dst != "fe80::/64":
            continue
        s["routes"].append({k: r.get(k) for k in ("dst", "dev", "gateway", "table", "type", "protocol",
                                                   "scope", "metric", "prefsrc")})
    s["rules"] = rules4 + rules6
    rs = nsx(ns, "nft", "list", "ruleset").stdout
    s["nft"] = [re.sub(r"counter packets \d+ bytes \d+", "counter", x) for x in rs.splitlines() if x.strip()]
    return s


def _fmt(kind, x):
    if kind == "links":
        data = f", {json.dumps(x['data'], sort_keys=True)}" if x.get("data") else ""
        return f"link {x['ifname']} ({x.get('kind') or x.get('link_type')}, mtu {x.get('mtu')}{data})"
    if kind == "addresses":
        return f"address {x['local']}/{x['prefixlen']} on {x['dev']}"
    if kind == "routes":
        r = f"route {x.get('dst')} dev {x.get('dev')}"
        for k, label in (("gateway", "via"), ("table", "table"), ("type", "type")):
            if x.get(k):
                r += f" {label} {x[k]}"
        return r
    return f"{kind[:-1]} " + json.dumps(x, sort_keys=True)


def teardown_problems(before, after):
    out = []
    for d in snapshot_diff(before, after):
        out.append(f"left behind: {d[1:]}" if d[0] == "+" else f"gone since before setup: {d[1:]}" if d[0] == "-"
                   else d)
    return out


def snapshot_diff(a, b):
    """Human-readable differences between two snapshots: '+' only in b, '-' only in a."""
    out = []
    for k in a:
        if k == "nft":
            if a[k] != b[k]:
                gone = [x.strip() for x in a[k] if x not in b[k]][:3]
                new = [x.strip() for x in b[k] if x not in a[k]][:3]
                out.append(f"nft ruleset differs ({len(a[k])} vs {len(b[k])} lines; "
                           f"only before: {gone}; only after: {new})")
            continue
        ja = [json.dumps(x, sort_keys=True) for x in a[k]]
        jb = [json.dumps(x, sort_keys=True) for x in b[k]]
        for sign, mine, other, objs in (("+", jb, ja, b[k]), ("-", ja, jb, a[k])):
            for i, x in enumerate(mine):
                line = sign + _fmt(k, objs[i])
                if mine.count(x) > other.count(x) and line not in out:
                    out.append(line)
    return out


# ====================================================================== traffic + analysis
class Server:
    """traffic.Server on a thread inside the srv namespace (echo on 7001-7005, bulk on 7010)."""

    def __init__(self):
        self.srv = traffic.Server(os.path.join(WORK, "server-flows.jsonl"))

    def start(self):
        self.srv.run_forever_in_thread(lambda fn: netns.start_thread("srv", fn),
                                       tcp=[7001, 7002, 7003, 7004, 7005], udp=[7001, 7002, 7003, 7004, 7005],
                                       bulk=[7010])

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
class Bed:
    def __init__(self, args):
        self.args = args
        self.R = Results(os.path.join(OUT, "results.txt"))
        self.br = BrScaffold()
        self.maps = {}       # ce -> Mapping the BR expects
        self.payloads = {}   # ce -> last setup payload
        self.baseline = {}
        self.server = None

    def ce_config(self, ce):
        if ce == "ce1" and self.args.break_psid:
            return BROKEN_CONFIG
        return CES[ce]["config"]

    # ------------------------------------------------------------------ phases
    def applied_ok(self, ce, c, applied, dry=None):
        """The applied setup did what the dry run said: same tunnel update, CE address on
        wan, our nft table present."""
        dry = dry or self.payloads[ce]
        want, got = notify_args(dry), notify_args(applied)
        if want != got:
            diff = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
            c.fail(f"the applied tunnel update differs from the dry run's in {diff}")
        addrs = [a["local"] for x in ipj(ce, "addr", "show", "dev", "wan") for a in x["addr_info"]]
        c.expect(want["tunnel"]["local"] in addrs, f"CE address {want['tunnel']['local']} not on wan ({addrs})")
        tables = [x.split(None, 1)[1] for x in nsx(ce, "nft", "list", "tables").stdout.splitlines()
                  if x.startswith("table ")]
        c.expect(tables, "no nft table after setup")
        c.detail = f"CE {want['tunnel']['local']} on wan, nft table {', '.join(tables)}"

    def capabilities(self):
        with self.R.check("capabilities: kernel ip6tnl + nftables NAT, veth, netns and the tools") as c:
            sh(["modprobe", "-a", "-q"] + MODULES, check=False)
            for mod in ("ip6_tunnel", "nf_tables", "nf_nat", "nft_chain_nat", "nft_numgen", "veth"):
                if not os.path.isdir(f"/sys/module/{mod}"):
                    c.fail(f"kernel module {mod} is not available (uname -r {os.uname().release})")
            for tool in ("ip", "nft", "tcpdump", "ping"):
                if not shutil.which(tool):
                    c.fail(f"tool {tool} missing in the guest")
            if not (os.path.isfile(MAPE) and os.access(MAPE, os.X_OK)):
                c.fail(f"mape binary {MAPE} missing")
            else:
                h = sh([MAPE, "netifd", "--help"], check=False)
                c.expect(h.returncode == 0, f"`mape netifd --help` failed: {(h.stderr or h.stdout).strip()[:300]}")
                for flag in ("--state-dir", "--state"):
                    if re.search(re.escape(flag) + r"[ =<]", h.stdout):
                        STATE_OPT["flag"] = flag
                        break
            c.detail = os.uname().release
        return not self.R.failed

    def topology(self):
        with self.R.check("topology: lan1/lan2 - ce1/ce2 - br - srv namespaces with BR scaffolding") as c:
            build_topology()
            for ce in CES:
                self.maps[ce] = self.br.set_ce(ce, CES[ce]["prefix"])
            self.baseline = {ce: snapshot(ce) for ce in CES}
            c.detail = (f"ce1 {self.maps['ce1'].describe()}, ce2 {self.maps['ce2'].describe()} "
                        f"(BR's own RFC 7597 calc)")
            self.server = Server()
            self.server.start()

    def setup_ces(self):
        for ce in CES:
            style = "rule string" if "rule" in CES[ce]["config"] else "UCI fields"
            name = f"{ce}: `mape netifd setup --dry-run` ({style}) gives an ipip6 tunnel, CE address and IPv4 " \
                   "as RFC 7597 computes them"
            with self.R.check(name) as c:
                p = handler("setup", ce, self.ce_config(ce), CES[ce]["prefix"])
                self.payloads[ce] = p
                m = check_payload(c, p, ce, CES[ce]["prefix"])
                c.detail = f"{m.ipv4} PSID {m.psid:#x} CE {m.ce}"
        with self.R.check("ce1 and ce2 share one IPv4 address with different CE addresses / PSIDs") as c:
            a1, a2 = (notify_args(self.payloads[ce]) for ce in ("ce1", "ce2"))
            c.expect(a1["ipaddr"] == a2["ipaddr"], f"IPv4 differs: {a1['ipaddr']} vs {a2['ipaddr']}")
            c.expect(a1["tunnel"]["local"] != a2["tunnel"]["local"], "same CE address")
            c.expect(self.maps["ce1"].psid != self.maps["ce2"].psid, "rule gives both the same PSID")
            c.detail = f"{self.maps['ce1'].ipv4}: PSID {self.maps['ce1'].psid:#x} / {self.maps['ce2'].psid:#x}"
        how = ("the real `mape netifd setup` in the CE namespace (fake ubus -> netifd stand-in)"
               if APPLY["mode"] == "real" else "the dry-run payload applied by the netifd stand-in")
        with self.R.check(f"ce1: set up by {how}: CE /128 on wan, nft table, tunnel update as in the dry run") as c:
            self.applied_ok("ce1", c, apply("ce1", "setup", self.ce_config("ce1"), CES["ce1"]["prefix"]))
        with self.R.check("ce2: setting up twice gives the same state as once (nft, addresses, routes, links)") as c:
            self.applied_ok("ce2", c, apply("ce2", "setup", self.ce_config("ce2"), CES["ce2"]["prefix"]))
            once = snapshot("ce2")
            apply("ce2", "setup", self.ce_config("ce2"), CES["ce2"]["prefix"])
            twice = snapshot("ce2")
            for d in snapshot_diff(once, twice):
                c.fail(("after the second setup: " if d[0] in "+-" else "") + d)
            c.detail = f"{len(twice['nft'])} nft lines, {len(twice['addresses'])} addresses, " \
                       f"{len(twice['routes'])} routes"
        for ce in CES:
            with self.R.check(f"{ce}: the tunnel is a real ip6tnl (mode ipip6, encaplimit none, local CE, "
                              f"remote BR, mtu {MTU}) with the IPv4 and default route") as c:
                a = notify_args(self.payloads[ce])
                ifn = a["ifname"]
                links = ipj(ce, "-d", "link", "show", "dev", ifn)
                c.expect(links, f"no device {ifn}")
                if links:
                    l = links[0]
                    info = (l.get("linkinfo") or {})
                    d = info.get("info_data") or {}
                    c.expect(info.get("info_kind") == "ip6tnl", f"kind {info.get('info_kind')!r}")
                    c.expect(d.get("proto") == "ipip6", f"tunnel proto {d.get('proto')!r}")
                    c.expect(d.get("local") == str(self.maps[ce].ce) or self.args.break_psid,
                             f"local {d.get('local')} != {self.maps[ce].ce}")
                    c.expect(d.get("remote") == BR, f"remote {d.get('remote')}")
                    # iproute2 shows "encaplimit none" as ip6_tnl_f_ign_encap_limit in JSON
                    c.expect(d.get("ip6_tnl_f_ign_encap_limit") is True,
                             f"encaplimit is not none (a destination-options header would be sent): {d}")
                    c.expect(l.get("mtu") == MTU, f"mtu {l.get('mtu')}")
                    c.expect("UP" in l.get("flags", []), "tunnel not up")
                    c.detail = (f"{ifn}: {info.get('info_kind')} {d.get('proto')} {d.get('local')} -> "
                                f"{d.get('remote')} dev {d.get('link')}, ttl {d.get('ttl')}, mtu {l.get('mtu')}, "
                                f"ign_encap_limit {d.get('ip6_tnl_f_ign_encap_limit')}")
                v4 = [a2["local"] for x in ipj(ce, "-4", "addr", "show", "dev", ifn) for a2 in x["addr_info"]]
                c.expect(v4 == [str(self.maps[ce].ipv4)], f"IPv4 on {ifn}: {v4}")
                dr = ipj(ce, "-4", "route", "show", "default")
                c.expect(any(r.get("dev") == ifn for r in dr), f"default route not via {ifn}: {dr}")

    def traffic(self):
        say(f"traffic: basic TCP/UDP/ICMP, then {PARALLEL}+{PARALLEL} parallel flows per LAN host, then a bulk transfer each way")
        caps = [Capture("ce1", "wan", "wire-ce1.pcap", "ip6 or ip"),
                Capture("ce2", "wan", "wire-ce2.pcap", "ip6 or ip"),
                Capture("srv", "eth0", "server.pcap", "icmp or tcp[tcpflags]&tcp-syn!=0")]
        for cap in caps:
            cap.wait_ready()
        # basic: 3 TCP + 3 UDP flows and 3 pings from each LAN host, both at once
        pings = {ce: ping(CES[ce]["lan"], CES[ce]["pattern"]) for ce in CES}
        res = run_clients([(CES[ce]["lan"], CES[ce]["lan"], 7001, 7001, 3) for ce in CES])
        ping_res = {ce: ping_result(p) for ce, p in pings.items()}
        flows = self.server.flows()
        for ce in CES:
            lan, m = CES[ce]["lan"], self.maps[ce]
            for proto in ("tcp", "udp"):
                with self.R.check(f"{lan} {proto}: reaches the server as {m.ipv4} from a port in PSID "
                                  f"{m.psid:#x}'s set, answer back to {lan}") as c:
                    probs, ports = flow_problems(flows, res[lan], lan, proto, 7001, m, 3)
                    c.problems += probs
                    c.detail = f"server saw ports {ports}"
        # pings are judged on the server's capture after it is stopped (below)
        # parallel: PARALLEL TCP (held open together) + PARALLEL UDP from each LAN host at once
        n = PARALLEL
        res = run_clients([(CES[ce]["lan"], CES[ce]["lan"], 7002, 7002, n) for ce in CES],
                          timeout=TIMEOUTS["parallel"])
        flows = self.server.flows()
        for ce in CES:
            lan, m = CES[ce]["lan"], self.maps[ce]
            with self.R.check(f"{lan} parallel: {n} TCP + {n} UDP flows at once with the other CE busy too: none "
                              f"lost, none outside PSID {m.psid:#x}'s set") as c:
                allports = []
                for proto in ("tcp", "udp"):
                    probs, ports = flow_problems(flows, res[lan], lan, proto, 7002, m, n)
                    c.problems += [f"{proto}: {x}" for x in probs]
                    allports.append(len(ports))
                retried = sum(1 for r in res[lan].get("udp", []) if r.get("tries", 1) > 1)
                c.detail = f"{allports[0]} TCP / {allports[1]} UDP distinct source ports" + \
                    (f", {retried} UDP flows needed a second datagram" if retried else "")
        # large transfers through the tunnel MTU, concurrently: lan1 uploads, lan2 downloads
        size = BULK
        big = in_threads({"lan1": ("lan1", lambda: traffic.bulk(SERVER, 7010, put=size, timeout=TIMEOUTS["bulk"])),
                          "lan2": ("lan2", lambda: traffic.bulk(SERVER, 7010, get=size, timeout=TIMEOUTS["bulk"]))})
        for lan, what in (("lan1", "upload lan1 -> server"), ("lan2", "download server -> lan2")):
            with self.R.check(f"large TCP transfer through the tunnel: {BULK >> 20} MiB {what}, checksum verified") as c:
                r = big[lan]
                log(f"bulk {lan}: {r}")
                if isinstance(r, Exception):
                    raise r
                c.expect(r["ok"], r.get("err", "failed"))
                c.detail = f"{r.get('bytes')} bytes in {r['secs']} s, {r['mbps']} Mbit/s"
        pk = {cap.name: cap.finish() for cap in caps}
        for ce in CES:
            lan, m = CES[ce]["lan"], self.maps[ce]
            with self.R.check(f"{lan} icmp: echo requests reach the server as {m.ipv4} with echo ids in PSID "
                              f"{m.psid:#x}'s set, replies back to {lan}") as c:
                (sent, rcvd), out = ping_res[ce]
                probs, ids = echo_problems(pk["server.pcap"], CES[ce]["pattern"], m, sent, rcvd)
                c.problems += probs
                c.detail = f"echo ids {ids}, {rcvd}/{sent} replies"
        for ce in CES:
            m = self.maps[ce]
            ce_addr = ipaddress.IPv6Address(notify_args(self.payloads[ce])["tunnel"]["local"])
            probs, st = wire_problems(pk[f"wire-{ce}.pcap"], ce_addr, m)
            with self.R.check(f"wire {ce}<->BR: IPv6 {ce_addr} -> BR, next header 4 (no destination options), "
                              f"inner {m.ipv4} from PSID {m.psid:#x}'s ports") as c:
                c.problems += probs
                c.expect(ce_addr == m.ce, f"the handler's CE address {ce_addr} is not the RFC 7597 one {m.ce}")
                c.detail = f"{st['up']} packets CE->BR, {st['down']} BR->CE"
            with self.R.check(f"wire {ce}<->BR: TCP SYN MSS <= {MSS_MAX} and no inner packet over the "
                              f"{MTU}-byte tunnel MTU") as c:
                mss = st["syn_mss"]
                c.expect(mss, "no TCP SYN seen on the wire")
                big = [x for x in mss if x is None or x > MSS_MAX]
                c.expect(not big, f"SYN MSS {sorted(set(big), key=str)[:5]} > {MSS_MAX} (LAN MTU 1500 sends 1460: "
                                  "no MSS clamping to the tunnel MTU?)")
                c.expect(st["max_inner"] <= MTU, f"inner IPv4 packet of {st['max_inner']} bytes > MTU {MTU}")
                c.expect(st["max_inner"] >= MTU - 60, f"largest inner packet only {st['max_inner']} bytes: the "
                                                      "bulk transfer did not fill the MTU")
                c.detail = f"{len(mss)} SYNs, MSS {sorted(set(mss), key=str)}, largest inner packet " \
                           f"{st['max_inner']} bytes"
        with self.R.check("BR: no packet for 192.0.2.0/24 arrived on a port or echo id outside every CE's set") as c:
            pkts, ports = self.br.strays()
            c.expect(pkts == 0, f"{pkts} packets dropped by the BR, stray ports {ports[:10]}")

    def teardown_check(self, ce, label):
        with self.R.check(f"{ce}: teardown {label}leaves no nft table, address, route or device behind") as c:
            p = apply(ce, "teardown", self.ce_config(ce))
            self.judge_teardown(c, ce, p)

    def judge_teardown(self, c, ce, payload):
        c.problems += teardown_problems(self.baseline[ce], snapshot(ce))
        if not c.problems:
            return
        if APPLY["mode"] != "real" and not any(x.get("method") == "addr_del" for x in payload.get("calls", [])):
            c.fail("the teardown payload removes no CE address (a dry run without the handler's state "
                   "from setup cannot know it: tests/e2e/NOTES-for-lead.md)")
        self.restore(ce)

    def restore(self, ce):
        """After a failed teardown check: put the namespace back as it was before setup, so
        the next checks judge only their own phase."""
        now = snapshot(ce)
        base = self.baseline[ce]
        keep = {json.dumps(x, sort_keys=True) for x in base["addresses"]}
        lines = [f"addr del {a['local']}/{a['prefixlen']} dev {a['dev']}" for a in now["addresses"]
                 if json.dumps(a, sort_keys=True) not in keep]
        names = {l["ifname"] for l in base["links"]}
        lines += [f"link del {l['ifname']}" for l in now["links"] if l["ifname"] not in names]
        if lines:
            ipb(ce, lines, ["-force"], check=False)
        if now["nft"] != base["nft"] and not base["nft"]:
            nsx(ce, "nft", "flush", "ruleset", check=False)
        log(f"restored {ce} to its state before setup: {lines}")

    def prefix_change(self):
        ce, lan = "ce1", "lan1"
        p0 = None
        with self.R.check(f"{ce}: set up again after teardown") as c:
            p0 = apply(ce, "setup", self.ce_config(ce), CES[ce]["prefix"])
        m = self.br.set_ce(ce, NEW_PREFIX)
        self.maps[ce] = m
        with self.R.check(f"prefix change on {ce}: new /56 {NEW_PREFIX} re-derives IPv4, PSID and CE address "
                          f"({m.ipv4}, PSID {m.psid:#x})") as c:
            old = notify_args(p0)
            # what netifd does when the watch task reports another prefix: teardown, setup
            apply(ce, "teardown", self.ce_config(ce))
            p = handler("setup", ce, self.ce_config(ce), NEW_PREFIX)
            self.payloads[ce] = p
            check_payload(c, p, ce, NEW_PREFIX)
            self.applied_ok(ce, c, apply(ce, "setup", self.ce_config(ce), NEW_PREFIX))
            new = notify_args(p)
            addrs = [a["local"] for x in ipj(ce, "addr", "show") for a in x["addr_info"]]
            c.expect(new["tunnel"]["local"] in addrs, f"new CE address {new['tunnel']['local']} not configured")
            c.expect(old["tunnel"]["local"] not in addrs, f"old CE address {old['tunnel']['local']} still there")
            c.expect(str(m.ipv4) in addrs, f"new IPv4 {m.ipv4} not on the tunnel")
            c.expect(old["ipaddr"][0]["ipaddr"] not in addrs, f"old IPv4 {old['ipaddr'][0]['ipaddr']} still there")
            tl = ipj(ce, "-d", "link", "show", "dev", new["ifname"])
            c.expect(tl and (tl[0].get("linkinfo") or {}).get("info_data", {}).get("local") == new["tunnel"]["local"],
                     "tunnel local not the new CE address")
            c.detail = f"{old['tunnel']['local']} -> {new['tunnel']['local']}"
        srv_cap = Capture("srv", "eth0", "server-prefix-change.pcap", "icmp")
        srv_cap.wait_ready()
        pg = ping(lan, "33")
        res = run_clients([(lan, lan, 7003, 7003, 5)])
        (sent, rcvd), _ = ping_result(pg)
        pk = srv_cap.finish()
        flows = self.server.flows()
        with self.R.check(f"prefix change on {ce}: TCP, UDP and ping from {lan} flow again as {m.ipv4} within "
                          f"PSID {m.psid:#x}'s set") as c:
            ports = {}
            for proto in ("tcp", "udp"):
                probs, ports[proto] = flow_problems(flows, res[lan], lan, proto, 7003, m, 5)
                c.problems += [f"{proto}: {x}" for x in probs]
            probs, ids = echo_problems(pk, "33", m, sent, rcvd)
            c.problems += [f"icmp: {x}" for x in probs]
            c.detail = f"tcp ports {ports['tcp']}, udp ports {ports['udp']}, echo ids {ids}"

    def negative_control(self):
        """The port-set check must be able to fail: ce1 told PSID 0x35 (its real one is 0x34)."""
        ce, lan = "ce1", "lan1"
        m = self.br.set_ce(ce, CES[ce]["prefix"])   # the BR expects the real PSID 0x34
        self.maps[ce] = m
        name = (f"negative control: ce1 given a rule with PSID {WRONG_PSID:#x} (its prefix means {m.psid:#x}) "
                "-> the port-set check fails naming the stray port")
        with self.R.check(name) as c:
            p = apply(ce, "setup", BROKEN_CONFIG, CES[ce]["prefix"])
            res = run_clients([(lan, lan, 7004, 7004, 4)], timeout=2, tries=1)
            probs, ports = flow_problems(self.server.flows(), res[lan], lan, "tcp", 7004, m, 4)
            probs2, ports2 = flow_problems(self.server.flows(), res[lan], lan, "udp", 7004, m, 4)
            msgs = probs + probs2
            named = []
            for msg in msgs:
                mm = re.search(r"stray source port (\d+)", msg)
                if mm and not m.contains(int(mm.group(1))):
                    named.append(msg)
            c.expect(named, f"the port-set check did not report a stray port (problems: {msgs}; server saw "
                            f"ports {ports + ports2})")
            if named:
                c.detail = f'port-set check said: "{named[0]}"'
        with self.R.check("negative control: teardown of the broken ce1 leaves nothing behind") as c:
            p = apply(ce, "teardown", BROKEN_CONFIG)
            self.judge_teardown(c, ce, p)

    def run(self):
        t0 = time.time()
        if not self.capabilities():
            return
        self.topology()
        if self.R.failed:
            return
        self.setup_ces()
        self.traffic()
        self.teardown_check("ce1", "")
        self.prefix_change()
        self.teardown_check("ce1", "after the prefix change ")
        if not self.args.break_psid:
            self.negative_control()
        self.teardown_check("ce2", "(set up twice) ")
        say(f"bed finished in {time.time() - t0:.0f} s")

    def cleanup(self):
        if self.server:
            self.server.stop()
        for ns in NSES:
            sh(["ip", "netns", "del", ns], check=False)


def main():
    global LOGF
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--break-psid", action="store_true",
                    help=f"configure ce1 with a rule carrying PSID {WRONG_PSID:#x} instead of 0x34 (checks must fail)")
    ap.add_argument("--apply", choices=["real", "dry-run"], default="real",
                    help="configure the CEs by running the real handler in their namespace with a fake ubus "
                         "(default), or by applying its --dry-run payloads")
    args = ap.parse_args()
    APPLY["mode"] = args.apply
    if os.geteuid() != 0:
        sys.exit("bed.py must run as root")
    os.makedirs(WORK, exist_ok=True)
    os.makedirs(ART, exist_ok=True)
    LOGF = open(os.path.join(ART, "bed.log"), "w")
    if args.break_psid:
        TIMEOUTS.update(flow=5, parallel=10, bulk=20)
        say(f"--break-psid: ce1 gets rule {BROKEN_CONFIG['rule']!r}; port-set checks are expected to FAIL")
    bed = Bed(args)
    try:
        bed.run()
    except Exception as e:  # noqa: BLE001
        import traceback
        log(traceback.format_exc())
        bed.R.fail("test bed", f"aborted: {type(e).__name__}: {e}")
    finally:
        try:
            for f in os.listdir(WORK):
                if f.endswith((".json", ".jsonl", ".log")):
                    shutil.copy(os.path.join(WORK, f), ART)
        except OSError:
            pass
        bed.cleanup()
    say(f"bed: {bed.R.passed} passed, {bed.R.failed} failed")
    sys.exit(1 if bed.R.failed or not bed.R.passed else 0)


if __name__ == "__main__":
    main()
