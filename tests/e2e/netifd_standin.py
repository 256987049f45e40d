"""A small netifd stand-in: applies the handler's dry-run output to a network namespace.

`mape netifd setup|teardown <iface> '<config>' --dry-run` prints
  {"interface": ..., "ifname": ..., "calls": [{"object","method","args"}...], "nft": "<script>"}
This module performs those ubus calls the way netifd would, with iproute2 in the
given namespace, then feeds "nft" to `nft -f -`. It keeps what it applied in a
state file (netifd's memory) so that a later teardown can undo what netifd owns:
  * network add_dynamic {name, ifname:"@<iface>"|<dev>, proto:"static", ip6addr, ipaddr}
      -> addresses on the device of that interface; a second add_dynamic with the
         same name replaces the first (old addresses removed, as on a config change)
  * network.interface notify_proto {action:0, interface, ifname, link-up, tunnel{},
      ipaddr[], ip6addr[], routes[], routes6[], data{}}
      -> tunnel device `ifname` re-created (ip6tnl, mode ipip6, local, remote, dev of
         tunnel.link, encaplimit none when data.encaplimit is "ignore", ttl, mtu),
         then addresses and routes on it
    action 3 (error), 7 (setup failed) -> the stand-in fails with the error;
    4 (block restart), 5 (available), 6 (host dependency) -> recorded
  * network.interface.<name> down|remove, network.interface down|remove {interface},
    network del_dynamic {name} -> that interface's addresses/routes/device removed
  * kernel addr_add|addr_del {dev, address, flags}: what the handler does itself on a
    router (rtnetlink); a dry run lists it as a call, the stand-in performs it
  * notify_proto action 1/2 (proto task): recorded, not run
Teardown (`--teardown`): the calls and the nft script, then what netifd itself
removes when the protocol interface goes down: the tunnel device it created.
Anything else is an error ("unsupported call"), so a change in the handler's
output is noticed instead of silently ignored.

CLI: netifd_standin.py --netns NS --state FILE --iface wan6=wan [--teardown] PAYLOAD.json
"""
import argparse
import ipaddress
import json
import os
import re
import subprocess
import sys


class StandinError(Exception):
    pass


def _mask(v, default):
    if v is None or v == "":
        return default
    s = str(v)
    if "." in s:  # dotted netmask
        return ipaddress.IPv4Network(f"0.0.0.0/{s}").prefixlen
    return int(s)


class Netifd:
    def __init__(self, netns, state_file, ifaces, log=None, nsrun=None):
        self.netns = netns
        self.state_file = state_file
        self.ifaces = dict(ifaces)       # netifd interface name -> L3 device
        self.log = log or (lambda m: None)
        # nsrun(cmd, input) -> CompletedProcess, running cmd inside the namespace
        self.nsrun = nsrun or (lambda cmd, input=None: subprocess.run(
            ["ip", "netns", "exec", netns] + cmd, input=input, capture_output=True, text=True))
        if state_file and os.path.exists(state_file):
            with open(state_file) as f:
                self.state = json.load(f)
        else:
            self.state = {"dynamic": {}, "proto": {}, "notes": []}
        p = subprocess.run(["ip", "-n", netns, "-j", "link", "show"], capture_output=True, text=True)
        if p.returncode:
            raise StandinError(f"netns {netns}: {p.stderr.strip()}")
        self.devs = {l["ifname"] for l in json.loads(p.stdout or "[]")}
        self.ops = []                    # pending iproute2 batch: (line, must_succeed)

    # ------------------------------------------------------------ helpers
    def ip(self, *args, check=True):
        """Queue one iproute2 command (no family flags: the addresses imply them)."""
        args = [str(a) for a in args]
        self.ops.append((" ".join(args), check))
        if args[:2] == ["link", "add"]:
            self.devs.add(args[3] if args[2] == "name" else args[2])
        elif args[:2] == ["link", "del"]:
            self.devs.discard(args[2])

    def flush(self):
        if not self.ops:
            return
        ops, self.ops = self.ops, []
        script = "\n".join(line for line, _ in ops) + "\n"
        for line, _ in ops:
            self.log(f"  $ ip -n {self.netns} {line}")
        p = subprocess.run(["ip", "-n", self.netns, "-force", "-batch", "-"], input=script,
                           capture_output=True, text=True)
        errors = []
        msgs = []
        for ln in p.stderr.splitlines():
            m = re.match(r"Command failed -:(\d+)", ln)
            if m:
                line, must = ops[int(m.group(1)) - 1]
                if must:
                    errors.append(f"ip {line}: {' '.join(msgs) or 'failed'}")
                else:
                    self.log(f"  (ignored) ip {line}: {' '.join(msgs)}")
                msgs = []
            elif ln.strip():
                msgs.append(ln.strip())
        if errors:
            raise StandinError("; ".join(errors))

    def dev_exists(self, dev):
        return dev in self.devs

    def resolve(self, name, what):
        """'@wan6' or 'wan6' (a netifd interface) -> its L3 device; a plain device stays."""
        n = name[1:] if name.startswith("@") else name
        if n in self.ifaces:
            return self.ifaces[n]
        if name.startswith("@"):
            raise StandinError(f"{what}: unknown netifd interface {name!r} (known: {sorted(self.ifaces)})")
        if self.dev_exists(n):
            return n
        raise StandinError(f"{what}: {name!r} is neither a known netifd interface nor a device")

    def save(self):
        if self.state_file:
            tmp = self.state_file + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.state, f, indent=1)
            os.replace(tmp, self.state_file)

    # ------------------------------------------------------------ addresses/routes
    def add_addrs(self, dev, v4, v6):
        applied = []
        for a in v4:
            if isinstance(a, str):
                a = {"ipaddr": a.split("/")[0], "mask": a.split("/")[1] if "/" in a else None}
            cidr = f"{a['ipaddr']}/{_mask(a.get('mask'), 32)}"
            extra = []
            if a.get("broadcast"):
                extra += ["broadcast", a["broadcast"]]
            if a.get("ptp"):
                extra += ["peer", a["ptp"]]
            self.ip("addr", "replace", cidr, *extra, "dev", dev)
            applied.append(["-4", cidr, dev])
        for a in v6:
            if isinstance(a, str):
                a = {"ipaddr": a.split("/")[0], "mask": a.split("/")[1] if "/" in a else None}
            cidr = f"{a['ipaddr']}/{_mask(a.get('mask'), 128)}"
            self.ip("addr", "replace", cidr, "dev", dev, "nodad")
            applied.append(["-6", cidr, dev])
        return applied

    def add_routes(self, dev, routes, fam):
        applied = []
        for r in routes:
            target = r.get("target")
            if target is None:
                raise StandinError(f"route without target: {r}")
            plen = _mask(r.get("netmask"), 32 if fam == "-4" else 128)
            args = ["route", "replace", f"{target}/{plen}"]
            if r.get("gateway") and r["gateway"] not in ("0.0.0.0", "::"):
                args += ["via", r["gateway"]]
            args += ["dev", dev]
            if r.get("metric") is not None:
                args += ["metric", r["metric"]]
            if r.get("table"):
                args += ["table", r["table"]]
            if r.get("source"):
                args += ["src", str(r["source"]).split("/")[0]]
            self.ip(*args)
            applied.append(args)
        return applied

    def remove_applied(self, rec):
        for fam, cidr, dev in rec.get("addrs", []):
            if self.dev_exists(dev):
                self.ip("addr", "del", cidr, "dev", dev, check=False)
        for args in rec.get("routes", []):   # ["route", "replace", dst, ...]
            self.ip("route", "del", *args[2:], check=False)

    # ------------------------------------------------------------ ubus methods
    def add_dynamic(self, args):
        name = args.get("name")
        if not name:
            raise StandinError(f"add_dynamic without name: {args}")
        proto = args.get("proto")
        if proto != "static":
            raise StandinError(f"add_dynamic {name}: proto {proto!r} not supported by the stand-in")
        dev = self.resolve(args.get("ifname") or args.get("device") or "", f"add_dynamic {name}")
        old = self.state["dynamic"].pop(name, None)
        known = {"name", "ifname", "device", "proto", "ip6addr", "ipaddr", "zone", "auto", "defaultroute",
                 "peerdns", "ip6assign", "delegate", "sourcefilter", "ip4table", "ip6table"}
        unknown = set(args) - known
        if unknown:
            self.state["notes"].append(f"add_dynamic {name}: ignored fields {sorted(unknown)}")
        new = self.add_addrs(dev, args.get("ipaddr", []) or [], args.get("ip6addr", []) or [])
        if old:  # config change: what is no longer configured goes away
            keep = {tuple(a) for a in new}
            for fam, cidr, odev in old.get("addrs", []):
                if (fam, cidr, odev) not in keep and self.dev_exists(odev):
                    self.ip("addr", "del", cidr, "dev", odev, check=False)
        self.state["dynamic"][name] = {"dev": dev, "addrs": new, "args": args}

    def iface_down(self, name, remove):
        if name in self.state["dynamic"]:
            rec = self.state["dynamic"][name]
            self.remove_applied(rec)
            if remove:
                del self.state["dynamic"][name]
            else:
                rec["addrs"] = []
            return
        if name in self.state["proto"]:
            self.proto_down(name)
            return
        raise StandinError(f"{'remove' if remove else 'down'} of interface {name!r} that netifd does not know "
                           f"(known: {sorted(self.state['dynamic']) + sorted(self.state['proto'])})")

    def proto_down(self, name):
        rec = self.state["proto"].pop(name, None)
        if not rec:
            return
        self.remove_applied(rec)
        if rec.get("tunnel") and self.dev_exists(rec["ifname"]):
            self.ip("link", "del", rec["ifname"])

    def create_tunnel(self, ifname, t):
        mode = t.get("mode")
        if mode != "ipip6":
            raise StandinError(f"tunnel mode {mode!r}: the stand-in only knows ipip6")
        for k in ("local", "remote"):
            if not t.get(k):
                raise StandinError(f"tunnel without {k}: {t}")
        if len(ifname) > 15:
            raise StandinError(f"tunnel name {ifname!r} longer than IFNAMSIZ-1 (15)")
        data = t.get("data")
        args = ["link", "add", "name", ifname, "type", "ip6tnl", "mode", "ipip6",
                "local", t["local"], "remote", t["remote"]]
        if t.get("link"):
            args += ["dev", self.resolve(t["link"], "tunnel.link")]
        args += ["ttl", int(t.get("ttl", 64))]
        if t.get("tos") is not None:
            args += ["tclass", t["tos"]]
        # netifd sets IP6_TNL_F_IGN_ENCAP_LIMIT only when a data object is present
        # (and encaplimit is absent or "ignore"); otherwise the kernel default (4).
        if data is not None:
            el = data.get("encaplimit", "ignore")
            if el == "ignore":
                args += ["encaplimit", "none"]
            else:
                args += ["encaplimit", int(el)]
            if data.get("fmrs"):
                raise StandinError("FMRs need OpenWrt's kernel patch; not supported by the stand-in")
        if self.dev_exists(ifname):      # netifd deletes and re-creates the device
            self.ip("link", "del", ifname)
        self.ip(*args)
        if t.get("mtu"):
            self.ip("link", "set", "dev", ifname, "mtu", int(t["mtu"]))

    def notify_proto(self, a):
        action = a.get("action")
        iface = a.get("interface")
        if action == 0:
            rec = self.state["proto"].get(iface, {})
            ifname = a.get("ifname") or rec.get("ifname")
            if not ifname:
                raise StandinError(f"notify_proto update for {iface} without ifname")
            if a.get("tunnel"):
                self.create_tunnel(ifname, a["tunnel"])
            elif not self.dev_exists(ifname):
                raise StandinError(f"notify_proto: device {ifname} does not exist and no tunnel was given")
            if not a.get("keep"):   # a new address/route set replaces the old one
                self.remove_applied(rec)
            if a.get("link-up") is False:
                self.ip("link", "set", "dev", ifname, "down")
                self.state["proto"][iface] = dict(rec, ifname=ifname, up=False)
                return
            self.ip("link", "set", "dev", ifname, "up")
            addrs = self.add_addrs(ifname, a.get("ipaddr", []) or [], a.get("ip6addr", []) or [])
            routes = self.add_routes(ifname, a.get("routes", []) or [], "-4")
            routes += self.add_routes(ifname, a.get("routes6", []) or [], "-6")
            self.state["proto"][iface] = {
                "ifname": ifname, "tunnel": bool(a.get("tunnel")) or rec.get("tunnel", False),
                "addrs": addrs, "routes": routes, "data": a.get("data"), "up": True}
        elif action in (3, 7):
            raise StandinError(f"handler reported {'an error' if action == 3 else 'setup failed'} for "
                               f"{iface}: {a.get('error')}")
        elif action == 1:     # start the proto task: recorded (netifd would supervise it)
            self.state.setdefault("tasks", {})[iface] = a.get("command")
        elif action == 2:
            self.state.setdefault("tasks", {}).pop(iface, None)
        elif action in (4, 5, 6):
            self.state["notes"].append(f"notify_proto action {action}: {json.dumps(a)[:300]}")
        else:
            raise StandinError(f"notify_proto action {action!r} not supported by the stand-in")

    def kernel(self, method, args):
        """What the handler itself does to the kernel (a dry run lists it as object "kernel")."""
        dev = args.get("dev")
        addr = args.get("address")
        if not dev or not addr:
            raise StandinError(f"kernel {method} without dev/address: {args}")
        if method == "addr_add":
            flags = [f for f in args.get("flags", []) if f in ("nodad", "noprefixroute", "home", "mngtmpaddr")]
            unknown = set(args.get("flags", [])) - set(flags)
            if unknown:
                raise StandinError(f"kernel addr_add: unknown flags {sorted(unknown)}")
            self.ip("addr", "replace", addr, "dev", dev, *flags)
            self.state.setdefault("kernel", []).append(["addr_add", addr, dev])
        elif method == "addr_del":
            self.ip("addr", "del", addr, "dev", dev)
            self.state.setdefault("kernel", []).append(["addr_del", addr, dev])
        else:
            raise StandinError(f"unsupported call: kernel {method} {json.dumps(args)}")

    def call(self, c):
        obj, method, args = c.get("object"), c.get("method"), c.get("args") or {}
        if obj == "kernel":
            return self.kernel(method, args)
        if obj == "network" and method == "add_dynamic":
            return self.add_dynamic(args)
        if obj == "network" and method == "del_dynamic":
            return self.iface_down(args.get("name"), True)
        if obj == "network.interface" and method == "notify_proto":
            return self.notify_proto(args)
        if obj == "network.interface" and method in ("down", "remove"):
            return self.iface_down(args.get("interface"), method == "remove")
        if obj and obj.startswith("network.interface.") and method in ("down", "remove"):
            return self.iface_down(obj[len("network.interface."):], method == "remove")
        raise StandinError(f"unsupported call: {obj} {method} {json.dumps(args)}")

    # ------------------------------------------------------------ entry points
    def nft(self, script):
        if not script:
            return
        self.flush()
        self.log(f"  $ nft -f - <<({len(script)} bytes) in {self.netns}")
        p = self.nsrun(["nft", "-f", "-"], input=script)
        if p.returncode:
            raise StandinError(f"nft -f rejected the handler's script: {p.stderr.strip()[:2000]}")

    def apply(self, payload, teardown=False):
        if not isinstance(payload, dict) or "calls" not in payload:
            raise StandinError(f"payload has no 'calls': {str(payload)[:300]}")
        try:
            for c in payload["calls"]:
                self.call(c)
            self.nft(payload.get("nft"))
            if teardown:
                self.proto_down(payload.get("interface"))
                self.state.get("tasks", {}).pop(payload.get("interface"), None)
            self.flush()
        finally:
            self.save()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--iface", action="append", default=[], help="netifd interface=device, e.g. wan6=wan")
    ap.add_argument("--teardown", action="store_true")
    ap.add_argument("-v", action="store_true")
    ap.add_argument("payload")
    a = ap.parse_args()
    with open(a.payload) as f:
        payload = json.load(f)
    n = Netifd(a.netns, a.state, [kv.split("=", 1) for kv in a.iface],
               log=(lambda m: print(m, file=sys.stderr)) if a.v else None)
    try:
        n.apply(payload, a.teardown)
    except StandinError as e:
        print(f"netifd stand-in: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
