"""A small DHCPv6 server (RFC 8415) and router advertiser for the test bed, standard library only.

It plays the ISP side of a FLET'S-like line towards one link: router advertisements (M flag, a
/64 for SLAAC, default route) and DHCPv6 prefix delegation (IA_PD), which is what OpenWrt's real
odhcp6c + dhcpv6.sh/dhcpv6.script turn into wan6's addresses, routes and `ipv6-prefix`.

  srv = Dhcpv6Server("to-ce1", pd="2001:db8:12:3400::/56", preferred=3600, valid=7200)
  srv.start(thread_starter)        # threads inside the namespace that owns the link
  srv.set_pd("2001:db8:13:3600::/56")   # the next Renew/Rebind/Request gets the new prefix; the
                                   # prefix the client holds is returned with lifetimes 0
  srv.log                          # [(time, message type, client IA_PD prefixes)]

Messages: Solicit -> Advertise (Preference 255, so the client need not wait for others; a
Solicit with Rapid Commit gets a Reply), Request/Renew/Rebind -> Reply with the IA_PD,
Release/Decline/Confirm/Information-request -> Reply. IA_NA is answered with NoAddrsAvail.
`extra_options(msg_type, request_options) -> [(code, bytes)]` appends options to every Advertise
and Reply: the hook for the S46 MAP-E container (option 94, RFC 7598) of the option-94 bed
(`s46_cont_mape` builds its body, `requested` tells whether the client's ORO asks for it).
"""
import fcntl
import ipaddress
import socket
import struct
import threading
import time

SOLICIT, ADVERTISE, REQUEST, CONFIRM, RENEW, REBIND, REPLY, RELEASE, DECLINE = 1, 2, 3, 4, 5, 6, 7, 8, 9
INFORMATION_REQUEST = 11
OPT_CLIENTID, OPT_SERVERID, OPT_IA_NA, OPT_ORO, OPT_PREFERENCE = 1, 2, 3, 6, 7
OPT_STATUS, OPT_RAPID_COMMIT, OPT_IA_PD, OPT_IAPREFIX = 13, 14, 25, 26
OPT_S46_RULE, OPT_S46_BR, OPT_S46_PORTPARAMS, OPT_S46_CONT_MAPE = 89, 90, 93, 94
ST_SUCCESS, ST_NOADDRS = 0, 2
NAMES = {1: "Solicit", 3: "Request", 4: "Confirm", 5: "Renew", 6: "Rebind", 8: "Release", 9: "Decline",
         11: "Information-request"}
SIOCGIFHWADDR = 0x8927
SO_BINDTODEVICE = 25


def options(data):
    """[(code, bytes)] of an option area."""
    out, i = [], 0
    while i + 4 <= len(data):
        code, n = struct.unpack_from("!HH", data, i)
        out.append((code, data[i + 4:i + 4 + n]))
        i += 4 + n
    return out


def opt(code, body):
    return struct.pack("!HH", code, len(body)) + body


def iaprefix(prefix, preferred, valid):
    net = ipaddress.IPv6Network(prefix)
    return opt(OPT_IAPREFIX, struct.pack("!IIB", preferred, valid, net.prefixlen) + net.network_address.packed)


def status(code, text=""):
    return opt(OPT_STATUS, struct.pack("!H", code) + text.encode())


def s46_rule(ipv6prefix, prefix6len, ipv4prefix, prefix4len, ealen, fmr=False, portparams=None):
    """OPTION_S46_RULE (RFC 7598 4.1): flags (F = forwarding mapping rule), EA-bits length,
    IPv4 prefix length and prefix, IPv6 prefix length and the prefix's significant octets, then
    an optional OPTION_S46_PORTPARAMS (4.5): offset, PSID length, PSID left-aligned in 16 bits."""
    body = struct.pack("!BBB", 1 if fmr else 0, ealen, prefix4len) + ipaddress.IPv4Address(ipv4prefix).packed
    body += bytes([prefix6len]) + ipaddress.IPv6Address(ipv6prefix).packed[:(prefix6len + 7) // 8]
    if portparams is not None:
        offset, psid_len, psid = portparams
        wire = (psid << (16 - psid_len)) & 0xFFFF if psid_len else 0
        body += opt(OPT_S46_PORTPARAMS, struct.pack("!BBH", offset, psid_len, wire))
    return opt(OPT_S46_RULE, body)


def s46_cont_mape(rules, br):
    """The body of OPTION_S46_CONT_MAPE (94): the rules (s46_rule) and OPTION_S46_BR."""
    return b"".join(rules) + opt(OPT_S46_BR, ipaddress.IPv6Address(br).packed)


def requested(req, code):
    """Whether the client's Option Request Option (6) lists code."""
    for c, b in req:
        if c == OPT_ORO:
            return code in struct.unpack(f"!{len(b) // 2}H", b[:len(b) // 2 * 2])
    return False


def hwaddr(sock, dev):
    r = fcntl.ioctl(sock.fileno(), SIOCGIFHWADDR, struct.pack("256s", dev.encode()[:15]))
    return r[18:24]


class Dhcpv6Server:
    def __init__(self, dev, pd, preferred=3600, valid=7200, t1=1800, t2=2880, ra_prefix=None, ra_interval=4.0):
        self.dev = dev
        self.pd = pd
        self.lifetimes = (preferred, valid)
        self.t1, self.t2 = t1, t2
        self.ra_prefix = ra_prefix
        self.ra_interval = ra_interval
        self.extra_options = lambda msg_type, req: []
        self.log = []
        self.lock = threading.Lock()
        self.stopping = False
        self.socks = []
        self.duid = None

    def set_pd(self, pd, preferred=None, valid=None):
        with self.lock:
            self.pd = pd
            if preferred is not None:
                self.lifetimes = (preferred, valid if valid is not None else self.lifetimes[1])

    def start(self, starter):
        """starter(fn) runs fn on a thread inside the link's namespace (netns.start_thread)."""
        self._serve(starter, "DHCPv6", self._dhcp_socket, self._dhcp_loop)
        if self.ra_prefix:
            self._serve(starter, "RA", self._ra_socket, self._ra_loop)

    def _serve(self, starter, what, open_socket, loop):
        """Opens the socket on a namespace thread, returns once it is open, then serves there."""
        ready = threading.Event()
        errors = []

        def body():
            try:
                s = open_socket()
            except OSError as e:
                errors.append(f"{what} socket on {self.dev}: {e}")
                ready.set()
                return
            self.socks.append(s)
            ready.set()
            loop(s)
        starter(body)
        ready.wait(10)
        if errors:
            raise OSError(errors[0])

    def _dhcp_socket(self):
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.dev.encode())
        s.bind(("::", 547))
        idx = socket.if_nametoindex(self.dev)
        mreq = socket.inet_pton(socket.AF_INET6, "ff02::1:2") + struct.pack("@I", idx)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
        s.settimeout(0.5)
        self.duid = struct.pack("!HH", 3, 1) + hwaddr(s, self.dev)   # DUID-LL
        return s

    def _dhcp_loop(self, s):
        while not self.stopping:
            try:
                data, addr = s.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            try:
                reply = self.answer(data)
            except (struct.error, ValueError):
                reply = None
            if reply:
                s.sendto(reply, addr)

    def stop(self):
        self.stopping = True

    # ------------------------------------------------------------ DHCPv6
    def answer(self, data):
        mtype, xid = data[0], data[1:4]
        req = options(data[4:])
        get = {c: b for c, b in req}
        client = get.get(OPT_CLIENTID)
        if mtype not in NAMES or (client is None and mtype != INFORMATION_REQUEST):
            return None
        server = get.get(OPT_SERVERID)
        if server is not None and server != self.duid:
            return None   # meant for another server
        held = []
        for c, b in req:
            if c == OPT_IA_PD:
                for c2, b2 in options(b[12:]):
                    # a prefix the client holds (::/len is only a hint for the length it wants)
                    if c2 == OPT_IAPREFIX and len(b2) >= 25 and any(b2[9:25]):
                        held.append(str(ipaddress.IPv6Network((ipaddress.IPv6Address(b2[9:25]), b2[8]))))
        with self.lock:
            pd, (pref, valid) = self.pd, self.lifetimes
            self.log.append((time.time(), NAMES[mtype], held))
        out = []
        if client is not None:
            out.append(opt(OPT_CLIENTID, client))
        out.append(opt(OPT_SERVERID, self.duid))
        reply_type = REPLY
        if mtype == SOLICIT:
            if OPT_RAPID_COMMIT in get:
                out.append(opt(OPT_RAPID_COMMIT, b""))
            else:
                reply_type = ADVERTISE
            out.append(opt(OPT_PREFERENCE, b"\xff"))
        if mtype in (SOLICIT, REQUEST, RENEW, REBIND):
            for c, b in req:
                if c == OPT_IA_PD:
                    iaid = b[:4]
                    body = iaprefix(pd, pref, valid)
                    # RFC 8415 18.3.4: a prefix the client holds that it may no longer use is
                    # returned with lifetimes 0
                    for old in held:
                        if ipaddress.IPv6Network(old) != ipaddress.IPv6Network(pd):
                            body += iaprefix(old, 0, 0)
                    out.append(opt(OPT_IA_PD, iaid + struct.pack("!II", self.t1, self.t2) + body))
                elif c == OPT_IA_NA:
                    out.append(opt(OPT_IA_NA, b[:4] + struct.pack("!II", 0, 0) + status(ST_NOADDRS, "no addresses")))
        elif mtype in (RELEASE, DECLINE, CONFIRM):
            out.append(status(ST_SUCCESS))
        if reply_type in (ADVERTISE, REPLY):
            out += [opt(c, b) for c, b in self.extra_options(mtype, req)]
        return bytes([reply_type]) + xid + b"".join(out)

    # ------------------------------------------------------------ router advertisements
    def _ra(self, mac):
        net = ipaddress.IPv6Network(self.ra_prefix)
        # type 134, code 0, checksum (the kernel fills it in), hop limit 64, flags M, lifetime
        hdr = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0x80, 1800, 0, 0)
        sll = struct.pack("!BB", 1, 1) + mac
        pio = struct.pack("!BBBBIII", 3, 4, net.prefixlen, 0xC0, 86400, 14400, 0) + net.network_address.packed
        return hdr + sll + pio

    def _ra_socket(self):
        s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
        s.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, self.dev.encode())
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, socket.if_nametoindex(self.dev))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, 255)
        s.settimeout(0.5)
        return s

    def _ra_loop(self, s):
        ra = self._ra(hwaddr(s, self.dev))
        idx = socket.if_nametoindex(self.dev)
        last = 0.0
        while not self.stopping:
            due = time.time() - last >= self.ra_interval
            if not due:
                try:
                    data, _ = s.recvfrom(2048)
                    due = bool(data) and data[0] == 133       # a router solicitation
                except socket.timeout:
                    continue
                except OSError:
                    break
            if due:
                try:
                    s.sendto(ra, ("ff02::1", 0, 0, idx))
                except OSError:
                    pass
                last = time.time()
