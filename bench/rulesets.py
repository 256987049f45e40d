"""The SNAT rule sets compared with ours, written as their sources describe them.

Every function returns a complete script for `nft -f`, loaded into the CE namespace after
`flush ruleset`. `sets` is the mapping's port sets as [(lo, hi), ...] in ascending order, from
`mape calc --json` (the same sets our ruleset uses), `v4` the shared IPv4 address, `dev` the
tunnel device (`map-wanmap`).

Every script ends with FW4_MASQ, the wan-zone masquerade that fw4 always has on a router (the
tunnel is in zone wan); connections a MAP-E rule has already bound never reach it. "masq" is
that alone: the throughput and connection-rate baseline.
"""


def fw4_masq(dev):
    # fw4: chain srcnat (priority srcnat = 100) jumps to srcnat_wan, which masquerades.
    return f"""table inet fw4 {{
	chain srcnat {{
		type nat hook postrouting priority srcnat; policy accept;
		oifname "{dev}" jump srcnat_wan
	}}
	chain srcnat_wan {{
		meta nfproto ipv4 masquerade comment "!fw4: Masquerade IPv4 wan traffic"
	}}
}}
"""


def masq(dev, v4, sets):
    return "flush ruleset\n" + fw4_masq(dev)


def ours(script):
    """Our ruleset exactly as `mape netifd setup ... --dry-run` printed it."""
    def build(dev, v4, sets):
        return "flush ruleset\n" + script + fw4_masq(dev)
    return build


def fw4_stock(dev, v4, sets):
    """Stock OpenWrt 22.03+ (map.sh + fw4): map.sh publishes one SNAT rule per port set and
    protocol (icmp, tcp, udp) with connlimit_ports; fw4 ignores connlimit_ports, drops the icmp
    rules (ports without tcp/udp) and emits the rest in order in chain srcnat, before the zone
    jump, so the first set's rule matches every connection (openwrt/openwrt#11972, #25191)."""
    rules = []
    n = 0
    for lo, hi in sets:
        for proto in ("tcp", "udp"):
            rules.append(
                f'\t\tmeta nfproto ipv4 meta l4proto {proto} oifname "{dev}" counter '
                f'snat ip to {v4}:{lo}-{hi} comment "!fw4: ubus:wanmap[map] nat {n}"')
            n += 1
    body = "\n".join(rules)
    return f"""flush ruleset
table inet fw4 {{
	chain srcnat {{
		type nat hook postrouting priority srcnat; policy accept;
{body}
		oifname "{dev}" jump srcnat_wan
	}}
	chain srcnat_wan {{
		meta nfproto ipv4 masquerade comment "!fw4: Masquerade IPv4 wan traffic"
	}}
}}
"""


def perport(dev, v4, sets):
    """Community map.sh.new (cmspam -> fakemanhk/openwrt-jp-ipoe -> site-u2023/map-e): one
    `numgen inc mod <ports>` map over every single allowed port, per protocol, in its own
    `table inet mape` at priority 0."""
    ports = [p for lo, hi in sets for p in range(lo, hi + 1)]
    items = ", ".join(f"{i} : {p}" for i, p in enumerate(ports))
    rules = "\n".join(
        f'\t\tip protocol {proto} oifname "{dev}" counter snat ip to {v4} : '
        f'numgen inc mod {len(ports)} map {{ {items} }}' for proto in ("icmp", "tcp", "udp"))
    return f"""flush ruleset
table inet mape {{
	chain srcnat {{
		type nat hook postrouting priority 0; policy accept;
{rules}
	}}
}}
""" + fw4_masq(dev)


def marks(dev, v4, sets):
    """Per-set rules selected by a numgen mark (zenn.dev/wistnki; site-u2023/all-ports-set
    no_mape_setup_rule.sh): `mark set numgen inc mod <sets> offset 0x11`, then one
    `mark <m> snat to <v4>:<lo>-<hi> persistent` rule per set, in `table ip mape_nat` at
    priority 100, the same as fw4's srcnat. Of two nat chains at one priority the one registered
    LAST runs first (checked on this kernel), so it wins only when loaded after fw4, as on a router
    where the script runs after the firewall started; we load it that way. (A later fw4 reload
    re-registers fw4's chain, which then masquerades instead: a fragility of this variant.)"""
    rules = [f'\t\toifname "{dev}" meta l4proto {{ tcp, udp, icmp }} mark set numgen inc mod '
             f'{len(sets)} offset 0x11 counter']
    for r, (lo, hi) in enumerate(sets, start=1):
        rules.append(f'\t\toifname "{dev}" meta l4proto {{ tcp, udp, icmp }} counter mark '
                     f'{r + 0x10:#x} snat to {v4}:{lo}-{hi} persistent')
    body = "\n".join(rules)
    return "flush ruleset\n" + fw4_masq(dev) + f"""table ip mape_nat {{
	chain POSTROUTING {{
		type nat hook postrouting priority 100; policy accept;
{body}
	}}
}}
"""


LABELS = {
    "ours": "mape-rs (ours: a round robin per destination, its position in dynamic sets)",
    "fw4": "stock OpenWrt 22.03+ (map.sh + fw4)",
    "perport": "community per-port `numgen` map",
    "marks": "community per-set rules + `numgen` marks",
    "masq": "plain masquerade",
}


def perdest(k):
    """A PROPOSAL, not what mape-rs generates: our ruleset with one round-robin counter per
    destination bucket instead of one per protocol. `jhash ip daddr mod <k>` sends every
    connection to one destination to the same chain, whose own `numgen inc` then walks the port
    sets in order for that destination, undisturbed by traffic to other hosts (which only shares
    the counter when it hashes to the same bucket, 1/k of it). Anonymous maps, as nft 1.0.6 cannot
    store port ranges in a named map."""
    def build(dev, v4, sets):
        items = ", ".join(f"{i} : {v4} . {lo}-{hi}" for i, (lo, hi) in enumerate(sets))
        chains = []
        for b in range(k):
            rules = "\n".join(f"\t\tmeta l4proto {p} snat ip to numgen inc mod {len(sets)} map "
                              f"{{ {items} }}" for p in ("tcp", "udp", "icmp"))
            chains.append(f"\tchain rr{b} {{\n{rules}\n\t}}")
        vmap = ", ".join(f"{b} : jump rr{b}" for b in range(k))
        body = "\n".join(chains)
        return f"""flush ruleset
table ip mape_wanmap {{
{body}
	chain srcnat {{
		type nat hook postrouting priority srcnat - 1; policy accept;
		oifname "{dev}" meta l4proto {{ tcp, udp, icmp }} jhash ip daddr mod {k} seed 0x6d617065 vmap {{ {vmap} }}
		oifname "{dev}" snat ip to {v4}
	}}
}}
""" + fw4_masq(dev)
    return build


LABELS["perdest"] = ("earlier proposal: previous mape-rs + a counter per destination bucket "
                     "(`jhash ip daddr mod 16`)")


def previous(dev, v4, sets):
    """mape-rs before the destination buckets: one `numgen inc` counter per protocol walks the
    port sets (one anonymous map per protocol), as the project shipped it until this change."""
    items = ", ".join(f"{i} : {v4} . {lo}-{hi}" for i, (lo, hi) in enumerate(sets))
    rules = "\n".join(
        f'\t\toifname "{dev}" meta l4proto {p} counter snat ip to numgen inc mod {len(sets)} '
        f"map {{ {items} }}" for p in ("tcp", "udp", "icmp"))
    return f"""flush ruleset
table ip mape_wanmap {{
	chain srcnat {{
		type nat hook postrouting priority srcnat - 1; policy accept;
{rules}
		oifname "{dev}" snat ip to {v4}
	}}
}}
""" + fw4_masq(dev)


def bucket_table(k, dev, v4, sets):
    """The table mape-rs wrote before its per-destination walk, with k buckets (whole port sets,
    no exclusions): one chain per set, k round-robin chains per protocol, jhash of the
    destination address and port; k = 64 is what it shipped (the git history of
    src/render/nft.rs has it)."""
    n = len(sets)
    out = ["table ip mape_wanmap {"]
    for c in ("snat_tcp", "snat_udp", "snat_icmp", "snat_other", "mss_clamp"):
        out.append(f"\tcounter {c} {{ }}")
    out.append("\tset ports_exclude {\n\t\ttype inet_service\n\t\tflags interval\n\t}")
    for i, (lo, hi) in enumerate(sets):
        out.append(f"\tchain set_{i} {{")
        for p in ("tcp", "udp", "icmp"):
            out.append(f"\t\tmeta l4proto {p} snat ip to {v4}:{lo}-{hi}")
        out.append("\t}")
    to_sets = "{ " + ", ".join(f"{i} : goto set_{i}" for i in range(n)) + " }"
    for p in ("tcp", "udp"):
        for b in range(k):
            out.append(f"\tchain {p}_{b} {{\n\t\tnumgen inc mod {n} vmap {to_sets}\n\t}}")
    out.append(f"\tchain other {{\n\t\tsnat ip to {v4}\n\t}}")
    out.append("\tchain srcnat {")
    out.append("\t\ttype nat hook postrouting priority srcnat - 1; policy accept;")
    for p, c, seed in (("tcp", "snat_tcp", 0x6d617065), ("udp", "snat_udp", 0x75647030)):
        vm = "{ " + ", ".join(f"{b} : goto {p}_{b}" for b in range(k)) + " }"
        out.append(f'\t\toifname "{dev}" meta l4proto {p} counter name "{c}" jhash ip daddr . '
                   f"{p} dport mod {k} seed {seed:#010x} vmap {vm}")
    out.append(f'\t\toifname "{dev}" meta l4proto icmp counter name "snat_icmp" numgen inc mod '
               f"{n} vmap {to_sets}")
    out.append(f'\t\toifname "{dev}" counter name "snat_other" goto other')
    out.append("\t}")
    out.append("\tchain mssclamp {")
    out.append("\t\ttype filter hook forward priority mangle; policy accept;")
    for d in ("oifname", "iifname"):
        out.append(f'\t\t{d} "{dev}" tcp flags & (syn | rst) == syn counter name "mss_clamp" '
                   "tcp option maxseg size set rt mtu")
    out.append("\t}")
    out.append("}")
    return "\n".join(out) + "\n"


def buckets(k):
    def build(dev, v4, sets):
        return "flush ruleset\n" + bucket_table(k, dev, v4, sets) + fw4_masq(dev)
    return build


def iptables(text):
    """Our iptables-restore file (`mape generate --format iptables`), loaded with
    iptables-restore (nf_tables backend) instead of nft: the plain-Linux iptables renderer."""
    def build(dev, v4, sets):
        return ("iptables", text)
    return build


LABELS["ipt"] = "mape-rs iptables renderer (`mape generate --format iptables`)"
LABELS["prev"] = "previous mape-rs (one round-robin counter per protocol)"
for _k in (8, 16, 32):
    LABELS[f"k{_k}"] = f"mape-rs structure with {_k} buckets"
LABELS["k64"] = "mape-rs until the per-destination walk: a counter per destination bucket, 64 buckets"


def previous_ipt(dev, v4, sets):
    """The previous iptables file: one `statistic` cascade per protocol over the port sets."""
    n = len(sets)
    lines = ["*nat", ":PREROUTING ACCEPT [0:0]", ":INPUT ACCEPT [0:0]", ":OUTPUT ACCEPT [0:0]",
             ":POSTROUTING ACCEPT [0:0]", ":MAPE_wanmap - [0:0]",
             f"-A POSTROUTING -o {dev} -j MAPE_wanmap"]
    for p in ("tcp", "udp", "icmp"):
        for i, (lo, hi) in enumerate(sets):
            nth = f"-m statistic --mode nth --every {n - i} --packet 0 " if i + 1 < n else ""
            lines.append(f"-A MAPE_wanmap -p {p} {nth}-j SNAT --to-source {v4}:{lo}-{hi}")
    lines += [f"-A MAPE_wanmap -j SNAT --to-source {v4}", "COMMIT"]
    return ("iptables", "\n".join(lines) + "\n")
