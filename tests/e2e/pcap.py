"""Minimal pcap reader for the captures tcpdump writes in the test bed.

Handles classic pcap (micro- or nanosecond), link types Ethernet (1) and raw
IP (101/12). Yields decoded Packet objects: outer IPv6 (with next header and
the chain of extension headers), the IPv4 packet inside (plain or carried in
IPv6 next header 4), and TCP/UDP/ICMP fields.
"""
import ipaddress
import struct

TCP, UDP, ICMP, IPIP, ICMP6 = 6, 17, 1, 4, 58
IPV6_EXT = {0, 43, 44, 60, 51, 135, 139, 140}  # hop-by-hop, routing, fragment, dstopts, ...


class L4:
    def __init__(self):
        self.proto = None
        self.sport = self.dport = None
        self.flags = None        # TCP flags byte
        self.mss = None          # TCP MSS option, if present
        self.icmp_type = self.icmp_id = None
        self.payload = b""


class IPv4:
    def __init__(self, src, dst, proto, total_len, l4):
        self.src, self.dst, self.proto, self.total_len, self.l4 = src, dst, proto, total_len, l4


class Packet:
    def __init__(self, ts, caplen, wirelen):
        self.ts, self.caplen, self.wirelen = ts, caplen, wirelen
        self.v6 = None           # dict(src, dst, nh, chain, payload_len) for the outer IPv6 header
        self.v4 = None           # IPv4 (outer, or inner when v6.nh chain ends in 4)


def _l4(proto, b, full_len):
    l = L4()
    l.proto = proto
    if proto in (TCP, UDP) and len(b) >= 4:
        l.sport, l.dport = struct.unpack("!HH", b[:4])
        if proto == TCP and len(b) >= 14:
            l.flags = b[13]
            doff = (b[12] >> 4) * 4
            opts = b[20:doff]
            i = 0
            while i < len(opts):
                kind = opts[i]
                if kind == 0:
                    break
                if kind == 1:
                    i += 1
                    continue
                if i + 1 >= len(opts):
                    break
                ln = opts[i + 1]
                if kind == 2 and ln == 4 and i + 4 <= len(opts):
                    l.mss = struct.unpack("!H", opts[i + 2:i + 4])[0]
                if ln < 2:
                    break
                i += ln
            l.payload = b[doff:]
        elif proto == UDP:
            l.payload = b[8:]
    elif proto == ICMP and len(b) >= 8:
        l.icmp_type = b[0]
        if b[0] in (0, 8):
            l.icmp_id = struct.unpack("!H", b[4:6])[0]
        l.payload = b[8:]
    return l


def _ipv4(b):
    if len(b) < 20 or b[0] >> 4 != 4:
        return None
    ihl = (b[0] & 15) * 4
    total = struct.unpack("!H", b[2:4])[0]
    proto = b[9]
    src = ipaddress.IPv4Address(b[12:16])
    dst = ipaddress.IPv4Address(b[16:20])
    frag = struct.unpack("!H", b[6:8])[0] & 0x1FFF
    l4 = _l4(proto, b[ihl:], total - ihl) if frag == 0 else L4()
    return IPv4(src, dst, proto, total, l4)


def _ipv6(pkt, b):
    if len(b) < 40 or b[0] >> 4 != 6:
        return
    plen = struct.unpack("!H", b[4:6])[0]
    nh = b[6]
    src = ipaddress.IPv6Address(b[8:24])
    dst = ipaddress.IPv6Address(b[24:40])
    chain = [nh]
    off = 40
    while nh in IPV6_EXT and off + 2 <= len(b):
        nxt = b[off]
        ln = 8 if nh == 44 else (b[off + 1] + 1) * 8
        off += ln
        nh = nxt
        chain.append(nh)
    pkt.v6 = {"src": src, "dst": dst, "nh": b[6], "chain": chain, "payload_len": plen}
    if nh == IPIP:
        pkt.v4 = _ipv4(b[off:])
    elif nh == ICMP6 and off < len(b):
        pkt.v6["icmp6_type"] = b[off]


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        raise ValueError(f"{path}: not a pcap file")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(e + "I", data[20:24])[0]
    out = []
    off = 24
    while off + 16 <= len(data):
        sec, frac, caplen, wirelen = struct.unpack(e + "IIII", data[off:off + 16])
        off += 16
        frame = data[off:off + caplen]
        off += caplen
        p = Packet(sec + frac / (1e9 if nano else 1e6), caplen, wirelen)
        if linktype == 1:
            if len(frame) < 14:
                continue
            et = struct.unpack("!H", frame[12:14])[0]
            body = frame[14:]
            if et == 0x8100 and len(frame) >= 18:
                et = struct.unpack("!H", frame[16:18])[0]
                body = frame[18:]
        elif linktype in (101, 12):
            body = frame
            et = 0x86DD if frame and frame[0] >> 4 == 6 else 0x0800
        else:
            raise ValueError(f"{path}: unsupported link type {linktype}")
        if et == 0x86DD:
            _ipv6(p, body)
        elif et == 0x0800:
            p.v4 = _ipv4(body)
        out.append(p)
    return out
