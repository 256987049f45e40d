"""Independent RFC 7597 arithmetic for the test bed (BR scaffolding and expectations).

Deliberately shares no code with mape-rs: the BR and the checks compute what a
CE *should* use from the rule and the delegated prefix, so a CE that SNATs into
the wrong port set (wrong PSID, wrong offset, ...) is caught.
"""
import ipaddress


class Mapping:
    def __init__(self, ipv4, psid, psid_len, offset, ce, br, rule_prefix6, rule_prefix4):
        self.ipv4 = ipv4            # ipaddress.IPv4Address
        self.psid = psid            # int
        self.psid_len = psid_len    # k
        self.offset = offset        # a
        self.ce = ce                # ipaddress.IPv6Address (RFC 7597 interface identifier)
        self.br = br                # ipaddress.IPv6Address
        self.rule_prefix6 = rule_prefix6
        self.rule_prefix4 = rule_prefix4
        m = 16 - offset - psid_len
        self.set_size = 1 << m
        self.port_sets = []         # [(first, last)], ascending
        if psid_len == 0:
            self.port_sets = [(0, 65535)]
        else:
            for a in range(1 if offset > 0 else 0, 1 << offset):
                first = (a << (16 - offset)) | (psid << m)
                self.port_sets.append((first, first + self.set_size - 1))
        self._ports = None

    @property
    def ports(self):
        if self._ports is None:
            self._ports = frozenset(p for lo, hi in self.port_sets for p in range(lo, hi + 1))
        return self._ports

    def contains(self, port):
        return port in self.ports

    def psid_of(self, port):
        """PSID whose port set holds `port` under this rule's offset/length (None if in A=0)."""
        m = 16 - self.offset - self.psid_len
        if self.offset and port >> (16 - self.offset) == 0:
            return None
        return (port >> m) & ((1 << self.psid_len) - 1)

    def nft_intervals(self):
        return ", ".join(f"{lo}-{hi}" for lo, hi in self.port_sets)

    def describe(self):
        return f"{self.ipv4} PSID {self.psid:#x}"


def compute(rule, delegated):
    """rule: dict with ipv6prefix/prefix6len/ipv4prefix/prefix4len/ealen/offset/br.
    delegated: 'addr/len' of the customer's prefix."""
    p6 = ipaddress.IPv6Network(f"{rule['ipv6prefix']}/{rule['prefix6len']}")
    p4 = ipaddress.IPv4Network(f"{rule['ipv4prefix']}/{rule['prefix4len']}")
    ea_len = int(rule["ealen"])
    offset = int(rule["offset"])
    deleg = ipaddress.IPv6Network(delegated, strict=False)
    if deleg.prefixlen < p6.prefixlen + ea_len:
        raise ValueError(f"{delegated} is shorter than rule prefix + EA bits")
    if int(deleg.network_address) >> (128 - p6.prefixlen) != int(p6.network_address) >> (128 - p6.prefixlen):
        raise ValueError(f"{delegated} is not inside {p6}")
    v6 = int(deleg.network_address)
    ea = (v6 >> (128 - p6.prefixlen - ea_len)) & ((1 << ea_len) - 1)
    suffix_len = 32 - p4.prefixlen
    psid_len = ea_len - suffix_len
    ipv4 = ipaddress.IPv4Address(int(p4.network_address) | (ea >> psid_len))
    psid = ea & ((1 << psid_len) - 1)
    # End-user IPv6 prefix = first (p6len + ea_len) bits; subnet ID 0; RFC 7597
    # interface identifier: 16 zero bits, IPv4 address, PSID right-aligned.
    eu_len = p6.prefixlen + ea_len
    prefix = (v6 >> (128 - eu_len)) << (128 - eu_len)
    iid = (int(ipv4) << 16) | psid
    ce = ipaddress.IPv6Address(prefix | iid)
    return Mapping(ipv4, psid, psid_len, offset, ce, ipaddress.IPv6Address(rule["br"]), p6, p4)


if __name__ == "__main__":
    import sys
    r = dict(kv.split("=", 1) for kv in sys.argv[1].split(","))
    m = compute(r, sys.argv[2])
    print(m.ipv4, hex(m.psid), m.ce, m.port_sets[:3], len(m.ports))
