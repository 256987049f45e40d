//! Just enough netlink to add and remove the CE address (rtnetlink: RTM_NEWADDR / RTM_DELADDR),
//! to delete our nftables table (nfnetlink: NFT_MSG_DELTABLE in a batch), and to read the `ip`
//! tables and a table's named counters for `mape status` (NFT_MSG_GETTABLE and NFT_MSG_GETOBJ
//! dumps).
//!
//! Why the counters without `nft`: `nft list table` fetches and prints the whole table (the
//! bucket maps: 160 KB of text for OCN's 63 port sets), which took 4.9 s of a 8.6 s `mape status`
//! in the test VM; LuCI asks for the status through rpcd, whose limit is 10 s.
//!
//! Why the table without `nft`: the teardown only deletes it, and starting nft (a dynamically
//! linked program that reads the whole ruleset first) is most of a teardown's time on a slow
//! router (about 0.3 s of 0.5 s in the test VM). A teardown still running when a restarted
//! netifd (`network restart`) starts can make it lose a protocol handler: see
//! docs/testing-openwrt.md.
//!
//! Why not `ip`: OpenWrt's default busybox `ip` cannot set `nodad`, and `ip-full` would be one
//! more dependency. Why NODAD: the CE address is computed from our own delegated prefix, so a
//! duplicate is impossible, and duplicate address detection would leave it "tentative" for a
//! second, during which the tunnel drops every packet.
//!
//! Every number here is the target's: message types, flags, attribute types and structure sizes
//! come from `libc` (through nix's re-export), errno values from [`Errno`]. Those differ
//! between Linux ABIs: EADDRNOTAVAIL, what the kernel answers when the address to delete is
//! not there, is 99 on x86 and ARM but 126 on MIPS. Netlink fields are in the host's byte order
//! (the routers are little-endian mipsel/ARM and big-endian mips), so the encoder and the
//! parser take the order as a parameter ([`Order`]), the native one at run time, and the unit
//! tests check both.

mod refill;

pub use refill::{refill, Snat};

use std::io;
use std::mem::size_of;
use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::libc;
use nix::net::if_::if_nametoindex;
use nix::sys::socket::{
    bind, recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr,
    SockFlag, SockProtocol, SockType,
};

// The kernel's constants are C ints or u16/u8 in libc; the wire fields are u16 (types, flags)
// and u8 (family, scope), and every value fits.
const NLMSG_ERROR: u16 = libc::NLMSG_ERROR as u16;
const NLMSG_DONE: u16 = libc::NLMSG_DONE as u16;
const NLM_F_DUMP: u16 = libc::NLM_F_DUMP as u16;
const NLA_TYPE_MASK: u16 = libc::NLA_TYPE_MASK as u16;
const NLM_F_REQUEST: u16 = libc::NLM_F_REQUEST as u16;
const NLM_F_ACK: u16 = libc::NLM_F_ACK as u16;
const NLM_F_REPLACE: u16 = libc::NLM_F_REPLACE as u16;
const NLM_F_CREATE: u16 = libc::NLM_F_CREATE as u16;
const AF_INET6: u8 = libc::AF_INET6 as u8;
/// struct nlmsghdr, struct ifaddrmsg, struct nlattr: 16, 8 and 4 bytes on every Linux ABI.
const NLMSG_HDRLEN: usize = size_of::<libc::nlmsghdr>();
const IFADDRMSG_LEN: usize = size_of::<libc::ifaddrmsg>();
const NLA_HDRLEN: usize = size_of::<libc::nlattr>();
/// Netlink messages and attributes are padded to 4 bytes (NLMSG_ALIGNTO = NLA_ALIGNTO).
const ALIGN: usize = libc::NLA_ALIGNTO as usize;
/// struct nlmsgerr starts with the (negative) errno as a C int.
const ERRNO_LEN: usize = size_of::<libc::c_int>();

/// What the kernel answers a delete with when there is nothing left to delete: the address is
/// not on the device (EADDRNOTAVAIL), or the device went away (ENODEV, ENOENT).
const ALREADY_ABSENT: [Errno; 3] = [Errno::EADDRNOTAVAIL, Errno::ENODEV, Errno::ENOENT];

/// The errors carry `io::Error`, not nix's `Errno`: its text comes from the C library's
/// `strerror`, which std links anyway, where `Errno`'s `Display` and `Debug` bring two tables
/// of their own (about 4 KB of a mipsel binary; docs/sizes.md).
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("device {0}: not found")]
    NoDevice(String),
    #[error("netlink: {0}")]
    Io(io::Error),
    #[error("netlink: kernel refused: {0}")]
    Kernel(io::Error),
    #[error("netlink: no answer from the kernel")]
    NoAck,
}

impl From<Errno> for NetlinkError {
    fn from(e: Errno) -> Self {
        NetlinkError::Io(io::Error::from_raw_os_error(e as i32))
    }
}

/// Adds (`add = true`, replacing an existing one) or deletes `addr/128` on `dev`.
/// Deleting an address that is not there is success.
pub fn address(dev: &str, addr: Ipv6Addr, add: bool) -> Result<(), NetlinkError> {
    let index = match if_nametoindex(dev) {
        Ok(i) => i,
        Err(_) if !add => return Ok(()), // the device is gone, and the address with it
        Err(_) => return Err(NetlinkError::NoDevice(dev.to_string())),
    };
    let msg = encode(Order::NATIVE, index, addr, add);
    verdict(request(SockProtocol::NetlinkRoute, &msg)?, add)
}

/// Sends one request on a fresh netlink socket of `protocol`; the errno of the kernel's ACK.
fn request(protocol: SockProtocol, msg: &[u8]) -> Result<Option<i32>, NetlinkError> {
    let fd = send(protocol, msg)?;
    let mut buf = [0u8; 4096];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    Ok(ack_errno(Order::NATIVE, &buf[..n]))
}

/// Sends `msg` on a fresh netlink socket of `protocol`, for the answer to be read from it.
fn send(protocol: SockProtocol, msg: &[u8]) -> Result<std::os::fd::OwnedFd, NetlinkError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    if msg.len() > SEND_BUF_DEFAULT {
        // A refill of a line with hundreds of port sets is one datagram larger than the
        // default send buffer (EMSGSIZE); root may raise it, as nft does. If that fails, the
        // send fails and the caller falls back to nft.
        let _ = setsockopt(&fd, sockopt::SndBufForce, &(msg.len() + SEND_BUF_SLACK));
    }
    sendto(
        fd.as_raw_fd(),
        msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    Ok(fd)
}

/// Below this, a request fits the socket's default send buffer (net.core.wmem_default is
/// 208 KiB on Linux; less is always allowed). The slack covers the kernel's own overhead.
const SEND_BUF_DEFAULT: usize = 64 * 1024;
const SEND_BUF_SLACK: usize = 4096;

/// Deletes the nftables table `ip <name>` as `nft delete table ip <name>` does; a table that is
/// not there is success.
pub fn delete_table(name: &str) -> Result<(), NetlinkError> {
    let msg = encode_delete_table(Order::NATIVE, name);
    verdict(request(SockProtocol::NetlinkNetFilter, &msg)?, false)
}

/// nf_tables' object and counter attributes and the counter object type (`enum
/// nft_object_attributes`, `enum nft_counter_attributes`, `NFT_OBJECT_COUNTER` in
/// linux/netfilter/nf_tables.h: the same on every architecture; libc does not have them).
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;
const NFT_OBJECT_COUNTER: u32 = 1;

/// The names of the `ip` tables, as `nft list tables ip` lists them.
pub fn ip_tables() -> Result<Vec<String>, NetlinkError> {
    let msg = encode_dump(Order::NATIVE, libc::NFT_MSG_GETTABLE as u16, &[]);
    let mut names = Vec::new();
    dump(&msg, |payload| {
        if let Some(n) = find(Order::NATIVE, payload, NFTA_TABLE_NAME) {
            names.push(c_string(n));
        }
    })?;
    Ok(names)
}

/// The named counters of table `ip <table>` as (name, packets, bytes); none if there is no such
/// table.
pub fn counters(table: &str) -> Result<Vec<(String, u64, u64)>, NetlinkError> {
    let msg = encode_counters_dump(Order::NATIVE, table);
    let mut out = Vec::new();
    dump(&msg, |payload| {
        if let Some(c) = parse_counter(Order::NATIVE, payload) {
            out.push(c);
        }
    })?;
    Ok(out)
}

/// A dump request for the `ip` family: nlmsghdr + nfgenmsg + attributes.
fn encode_dump(order: Order, msg: u16, attrs: &[u8]) -> Vec<u8> {
    nfnl_message(
        order,
        ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | msg,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        libc::NFPROTO_IPV4 as u8,
        0,
        attrs,
    )
}

/// NFT_MSG_GETOBJ for the counters of one table (the kernel filters the dump by table and type).
fn encode_counters_dump(order: Order, table: &str) -> Vec<u8> {
    let mut attrs = Vec::new();
    attr(order, &mut attrs, NFTA_OBJ_TABLE, &c_str(table));
    // the object type is big-endian on the wire, like nf_tables' other u32 values
    attr(
        order,
        &mut attrs,
        NFTA_OBJ_TYPE,
        &NFT_OBJECT_COUNTER.to_be_bytes(),
    );
    encode_dump(order, libc::NFT_MSG_GETOBJ as u16, &attrs)
}

/// (name, packets, bytes) of one NFT_MSG_NEWOBJ payload (after the nfgenmsg) of a counter.
fn parse_counter(order: Order, payload: &[u8]) -> Option<(String, u64, u64)> {
    let name = c_string(find(order, payload, NFTA_OBJ_NAME)?);
    let data = find(order, payload, NFTA_OBJ_DATA)?;
    let be64 = |kind| -> Option<u64> {
        Some(u64::from_be_bytes(
            find(order, data, kind)?.get(..8)?.try_into().ok()?,
        ))
    };
    Some((name, be64(NFTA_COUNTER_PACKETS)?, be64(NFTA_COUNTER_BYTES)?))
}

/// The data of the first attribute of type `kind` (the nested and byte-order flags masked off).
fn find(order: Order, mut b: &[u8], kind: u16) -> Option<&[u8]> {
    while b.len() >= NLA_HDRLEN {
        let len = usize::from(order.get_u16(b, 0)?);
        let t = order.get_u16(b, 2)? & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > b.len() {
            return None;
        }
        if t == kind {
            return b.get(NLA_HDRLEN..len);
        }
        b = b.get(aligned(len)..).unwrap_or_default();
    }
    None
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Sends a dump request and feeds the payload (after nlmsghdr and nfgenmsg) of every message of
/// the answer to `each`, until NLMSG_DONE.
fn dump(msg: &[u8], mut each: impl FnMut(&[u8])) -> Result<(), NetlinkError> {
    let fd = send(SockProtocol::NetlinkNetFilter, msg)?;
    // The kernel fills a dump's datagrams up to 32 KiB; a shorter buffer would cut them.
    let mut buf = vec![0u8; DUMP_BUF];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        match walk(Order::NATIVE, &buf[..n], &mut each) {
            Walk::More => {}
            Walk::Done => return Ok(()),
            Walk::Error(e) => return Err(NetlinkError::Kernel(io::Error::from_raw_os_error(e))),
            Walk::Garbled => return Err(NetlinkError::NoAck),
        }
    }
}

/// A dump's datagram buffer.
const DUMP_BUF: usize = 64 * 1024;

/// What one datagram of a dump said.
#[derive(Debug, PartialEq, Eq)]
enum Walk {
    More,
    Done,
    Error(i32),
    Garbled,
}

/// Walks the messages of one datagram, feeding each payload (after nlmsghdr and nfgenmsg) to
/// `each`, up to an NLMSG_DONE or NLMSG_ERROR (an error 0 is an ACK: done).
fn walk(order: Order, mut b: &[u8], each: &mut dyn FnMut(&[u8])) -> Walk {
    while b.len() >= NLMSG_HDRLEN {
        let (Some(len), Some(kind)) = (order.get_u32(b, 0), order.get_u16(b, 4)) else {
            return Walk::Garbled;
        };
        let len = len as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return Walk::Garbled;
        }
        if kind == NLMSG_DONE {
            return Walk::Done;
        }
        if kind == NLMSG_ERROR {
            if len < NLMSG_HDRLEN + ERRNO_LEN {
                return Walk::Garbled;
            }
            // no panic on a nonsense i32::MIN
            return match order.get_u32(b, NLMSG_HDRLEN) {
                Some(0) => Walk::Done,
                Some(e) => Walk::Error((e as i32).wrapping_neg()),
                None => Walk::Garbled,
            };
        }
        each(b.get(NLMSG_HDRLEN + NFGENMSG_LEN..len).unwrap_or_default());
        b = b.get(aligned(len)..).unwrap_or_default();
    }
    Walk::More
}

/// The outcome of a request from the errno of the kernel's ACK (0: done).
fn verdict(errno: Option<i32>, add: bool) -> Result<(), NetlinkError> {
    match errno {
        None => Err(NetlinkError::NoAck),
        Some(0) => Ok(()),
        Some(e) if !add && already_absent(e) => Ok(()),
        Some(e) => Err(NetlinkError::Kernel(io::Error::from_raw_os_error(e))),
    }
}

fn already_absent(errno: i32) -> bool {
    ALREADY_ABSENT.iter().any(|e| *e as i32 == errno)
}

/// Byte order of the integer fields of a netlink message: the host's, whatever it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Little,
    Big,
}

impl Order {
    const NATIVE: Order = if cfg!(target_endian = "big") {
        Order::Big
    } else {
        Order::Little
    };

    fn u16(self, v: u16) -> [u8; 2] {
        match self {
            Order::Little => v.to_le_bytes(),
            Order::Big => v.to_be_bytes(),
        }
    }

    fn u32(self, v: u32) -> [u8; 4] {
        match self {
            Order::Little => v.to_le_bytes(),
            Order::Big => v.to_be_bytes(),
        }
    }

    /// The u16 at `at`, if the buffer holds it.
    fn get_u16(self, b: &[u8], at: usize) -> Option<u16> {
        let b: [u8; 2] = b.get(at..at + 2)?.try_into().ok()?;
        Some(match self {
            Order::Little => u16::from_le_bytes(b),
            Order::Big => u16::from_be_bytes(b),
        })
    }

    /// The u32 at `at`, if the buffer holds it.
    fn get_u32(self, b: &[u8], at: usize) -> Option<u32> {
        let b: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(match self {
            Order::Little => u32::from_le_bytes(b),
            Order::Big => u32::from_be_bytes(b),
        })
    }
}

fn aligned(len: usize) -> usize {
    (len + ALIGN - 1) & !(ALIGN - 1)
}

/// nlmsghdr + ifaddrmsg + attributes, integers in `order` (the IPv6 address is bytes: network
/// order in any case).
fn encode(order: Order, index: u32, addr: Ipv6Addr, add: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    // struct ifaddrmsg { family, prefixlen, flags (the low 8 bits), scope, index }
    body.extend_from_slice(&[
        AF_INET6,
        128,
        libc::IFA_F_NODAD as u8,
        libc::RT_SCOPE_UNIVERSE,
    ]);
    body.extend_from_slice(&order.u32(index));
    debug_assert_eq!(body.len(), IFADDRMSG_LEN);
    attr(order, &mut body, libc::IFA_LOCAL, &addr.octets());
    attr(order, &mut body, libc::IFA_ADDRESS, &addr.octets());
    if add {
        // All the flags, in the 32-bit attribute (NOPREFIXROUTE does not fit in ifa_flags).
        let flags = libc::IFA_F_NODAD | libc::IFA_F_NOPREFIXROUTE;
        attr(order, &mut body, libc::IFA_FLAGS, &order.u32(flags));
    }
    let (kind, flags) = if add {
        (
            libc::RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
    } else {
        (libc::RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)
    };
    let len = NLMSG_HDRLEN + body.len();
    let mut msg = Vec::with_capacity(len);
    // struct nlmsghdr { len, type, flags, seq, pid }
    msg.extend_from_slice(&order.u32(len as u32));
    msg.extend_from_slice(&order.u16(kind));
    msg.extend_from_slice(&order.u16(flags));
    msg.extend_from_slice(&order.u32(1)); // sequence number
    msg.extend_from_slice(&order.u32(0)); // port id: the kernel fills it in
    debug_assert_eq!(msg.len(), NLMSG_HDRLEN);
    msg.extend_from_slice(&body);
    msg
}

/// nf_tables' table name attribute (`enum nft_table_attributes` in linux/netfilter/nf_tables.h,
/// the same on every architecture); libc does not have the nf_tables attributes.
const NFTA_TABLE_NAME: u16 = 1;
/// struct nfgenmsg { family, version, res_id (big-endian) }: 4 bytes.
const NFGENMSG_LEN: usize = 4;

/// One nfnetlink message: nlmsghdr + nfgenmsg + attributes.
fn nfnl_message(
    order: Order,
    kind: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[u8],
) -> Vec<u8> {
    let len = NLMSG_HDRLEN + NFGENMSG_LEN + attrs.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&order.u32(len as u32));
    msg.extend_from_slice(&order.u16(kind));
    msg.extend_from_slice(&order.u16(flags));
    msg.extend_from_slice(&order.u32(seq));
    msg.extend_from_slice(&order.u32(0));
    msg.push(family);
    msg.push(libc::NFNETLINK_V0 as u8);
    msg.extend_from_slice(&res_id.to_be_bytes());
    msg.extend_from_slice(attrs);
    msg
}

/// A batch of one NFT_MSG_DELTABLE for `ip <name>`, as nft sends it (begin, the message with an
/// ACK asked for, end); integers in `order`, the batch's subsystem id big-endian.
fn encode_delete_table(order: Order, name: &str) -> Vec<u8> {
    let mut name_attr = Vec::new();
    attr(order, &mut name_attr, NFTA_TABLE_NAME, &c_str(name));
    let mut b = Batch::new(order);
    b.push(libc::NFT_MSG_DELTABLE, NLM_F_ACK, &name_attr);
    b.end().0
}

/// A batch of nf_tables requests as nft sends one: NFNL_MSG_BATCH_BEGIN, the requests (sequence
/// numbers 2, 3, …; family `ip`), NFNL_MSG_BATCH_END. The kernel applies it as one
/// transaction.
struct Batch {
    order: Order,
    out: Vec<u8>,
    seq: u32,
}

impl Batch {
    const SUBSYS: u16 = libc::NFNL_SUBSYS_NFTABLES as u16;

    fn new(order: Order) -> Self {
        let begin = libc::NFNL_MSG_BATCH_BEGIN as u16;
        let out = Self::control(order, begin, 1);
        Batch { order, out, seq: 1 }
    }

    /// A begin or end message: family AF_UNSPEC, the subsystem in res_id.
    fn control(order: Order, kind: u16, seq: u32) -> Vec<u8> {
        let unspec = libc::AF_UNSPEC as u8;
        nfnl_message(order, kind, NLM_F_REQUEST, seq, unspec, Self::SUBSYS, &[])
    }

    /// Request `msg` (an `NFT_MSG_*`) with `flags` besides NLM_F_REQUEST.
    fn push(&mut self, msg: libc::c_int, flags: u16, attrs: &[u8]) {
        self.seq += 1;
        self.out.extend(nfnl_message(
            self.order,
            (Self::SUBSYS << 8) | msg as u16,
            NLM_F_REQUEST | flags,
            self.seq,
            libc::NFPROTO_IPV4 as u8,
            0,
            attrs,
        ));
    }

    /// The batch, and the sequence number of its last request.
    fn end(mut self) -> (Vec<u8>, u32) {
        let end = libc::NFNL_MSG_BATCH_END as u16;
        self.out
            .extend(Self::control(self.order, end, self.seq + 1));
        (self.out, self.seq)
    }
}

/// `s` with its terminating NUL, as nf_tables' string attributes are.
fn c_str(s: &str) -> Vec<u8> {
    let mut z = s.as_bytes().to_vec();
    z.push(0);
    z
}

/// struct nlattr { len, type } + data, padded.
fn attr(order: Order, out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = NLA_HDRLEN + data.len();
    out.extend_from_slice(&order.u16(len as u16));
    out.extend_from_slice(&order.u16(kind));
    out.extend_from_slice(data);
    out.resize(out.len() + aligned(len) - len, 0);
}

/// The errno of the first NLMSG_ERROR in a reply (0 is an ACK), if any.
fn ack_errno(order: Order, reply: &[u8]) -> Option<i32> {
    match walk(order, reply, &mut |_| {}) {
        Walk::Done => Some(0),
        Walk::Error(e) => Some(e),
        Walk::More | Walk::Garbled => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const BOTH: [Order; 2] = [Order::Little, Order::Big];

    fn ce() -> Ipv6Addr {
        "2001:db8:12:3400:0:c000:212:34".parse().unwrap()
    }

    /// What a generic reader sees in a message (header fields, ifindex, attributes).
    struct Decoded {
        len: u32,
        kind: u16,
        flags: u16,
        index: u32,
        attrs: Vec<(u16, Vec<u8>)>,
    }

    /// A generic reader (not the code under test): the header and the attributes of a message.
    fn decode(order: Order, m: &[u8]) -> Decoded {
        let g16 = |at: usize| order.get_u16(m, at).unwrap();
        let g32 = |at: usize| order.get_u32(m, at).unwrap();
        let mut attrs = Vec::new();
        let mut at = NLMSG_HDRLEN + IFADDRMSG_LEN;
        while at < m.len() {
            let len = g16(at) as usize;
            attrs.push((g16(at + 2), m[at + NLA_HDRLEN..at + len].to_vec()));
            at += aligned(len);
        }
        assert_eq!(at, m.len(), "attributes end at the end of the message");
        Decoded {
            len: g32(0),
            kind: g16(4),
            flags: g16(6),
            index: g32(NLMSG_HDRLEN + 4),
            attrs,
        }
    }

    fn error_reply(order: Order, errno: i32) -> Vec<u8> {
        // nlmsghdr (type NLMSG_ERROR) + nlmsgerr { error, the request's header }
        let len = NLMSG_HDRLEN + ERRNO_LEN + NLMSG_HDRLEN;
        let mut r = Vec::new();
        r.extend_from_slice(&order.u32(len as u32));
        r.extend_from_slice(&order.u16(NLMSG_ERROR));
        r.extend_from_slice(&[0; 10]);
        r.extend_from_slice(&order.u32(-errno as u32));
        r.extend_from_slice(&[0; NLMSG_HDRLEN]);
        r
    }

    #[test]
    fn structure_sizes_are_the_kernels() {
        assert_eq!(
            (NLMSG_HDRLEN, IFADDRMSG_LEN, NLA_HDRLEN, ALIGN),
            (16, 8, 4, 4)
        );
    }

    #[test]
    fn messages_in_both_byte_orders() {
        for order in BOTH {
            for add in [true, false] {
                let m = encode(order, 7, ce(), add);
                let Decoded {
                    len,
                    kind,
                    flags,
                    index,
                    attrs,
                } = decode(order, &m);
                assert_eq!(len as usize, m.len());
                assert_eq!(m.len() % ALIGN, 0);
                assert_eq!(index, 7);
                assert_eq!(
                    &m[16..20],
                    &[10, 128, 0x02, 0],
                    "ifaddrmsg bytes: no byte order"
                );
                let want_kind = if add { 20 } else { 21 }; // RTM_NEWADDR, RTM_DELADDR
                assert_eq!(kind, want_kind);
                let want_flags = if add {
                    0x1 | 0x4 | 0x400 | 0x100
                } else {
                    0x1 | 0x4
                };
                assert_eq!(flags, want_flags);
                let mut want = vec![(2, ce().octets().to_vec()), (1, ce().octets().to_vec())];
                if add {
                    want.push((8, order.u32(0x02 | 0x200).to_vec())); // IFA_FLAGS
                }
                assert_eq!(attrs, want, "{order:?} add={add}");
            }
        }
    }

    #[test]
    fn byte_orders_differ_where_they_must() {
        let le = encode(Order::Little, 7, ce(), true);
        let be = encode(Order::Big, 7, ce(), true);
        assert_eq!(le.len(), be.len());
        assert_eq!(&le[0..4], &[le.len() as u8, 0, 0, 0]);
        assert_eq!(&be[0..4], &[0, 0, 0, be.len() as u8]);
        assert_eq!((&le[4..6], &be[4..6]), (&[20, 0][..], &[0, 20][..]));
        assert_eq!(
            (&le[20..24], &be[20..24]),
            (&[7, 0, 0, 0][..], &[0, 0, 0, 7][..])
        );
        // The address is the same bytes in both: it is never swapped.
        let addr = ce().octets();
        assert_eq!(&le[28..44], &addr);
        assert_eq!(&be[28..44], &addr);
        // Read with the wrong order, the length makes no sense.
        assert_ne!(Order::Big.get_u32(&le, 0), Some(le.len() as u32));
    }

    #[test]
    fn native_order_is_the_hosts() {
        assert_eq!(Order::NATIVE.u32(0x0102_0304), 0x0102_0304u32.to_ne_bytes());
        assert_eq!(Order::NATIVE.u16(0x0102), 0x0102u16.to_ne_bytes());
    }

    #[test]
    fn acks_in_both_byte_orders() {
        for order in BOTH {
            assert_eq!(ack_errno(order, &error_reply(order, 0)), Some(0));
            assert_eq!(ack_errno(order, &error_reply(order, 17)), Some(17));
            // The error after another message (padded), as a multipart reply has it.
            let mut two = encode(order, 3, ce(), false);
            two.extend_from_slice(&error_reply(order, 126));
            assert_eq!(ack_errno(order, &two), Some(126));
            assert_eq!(ack_errno(order, &error_reply(order, 17)[..10]), None);
            assert_eq!(ack_errno(order, &[]), None);
        }
        // A length that runs past the buffer is no answer, not a panic.
        let mut bad = error_reply(Order::Little, 0);
        bad[0] = 200;
        assert_eq!(ack_errno(Order::Little, &bad), None);
    }

    /// The "already absent" answers are the target's errno values (from libc), not numbers
    /// copied from one ABI: EADDRNOTAVAIL is 126 on MIPS and 99 on x86 and ARM.
    #[test]
    fn already_absent_is_the_platforms_errnos() {
        let set: Vec<i32> = ALREADY_ABSENT.iter().map(|e| *e as i32).collect();
        assert_eq!(set, [libc::EADDRNOTAVAIL, libc::ENODEV, libc::ENOENT]);
        let mips = cfg!(any(target_arch = "mips", target_arch = "mips64"));
        assert_eq!(libc::EADDRNOTAVAIL, if mips { 126 } else { 99 });
        assert!(already_absent(libc::EADDRNOTAVAIL));
        // The other ABI's number is another error here (ENOKEY on x86, ENOPROTOOPT on MIPS).
        assert!(!already_absent(if mips { 99 } else { 126 }));
    }

    #[test]
    fn a_table_delete_is_one_batch_in_both_byte_orders() {
        for order in BOTH {
            let m = encode_delete_table(order, "mape_wanmap");
            let g16 = |at: usize| order.get_u16(&m, at).unwrap();
            let g32 = |at: usize| order.get_u32(&m, at).unwrap() as usize;
            // begin (16 + 4 bytes), the delete, end (16 + 4)
            assert_eq!(g32(0), 20);
            assert_eq!(g16(4), 0x10, "NFNL_MSG_BATCH_BEGIN");
            assert_eq!(
                &m[16..20],
                &[0, 0, 0, 10],
                "AF_UNSPEC, v0, subsystem 10 big-endian"
            );
            let d = &m[20..];
            let dl = g32(20);
            assert_eq!(g16(24), (10 << 8) | 2, "NFT_MSG_DELTABLE of nf_tables");
            assert_eq!(g16(26), 0x1 | 0x4, "request + ack");
            assert_eq!(&d[16..20], &[2, 0, 0, 0], "NFPROTO_IPV4");
            // one attribute: type 1, "mape_wanmap\0" (12 bytes + 4), no padding needed
            assert_eq!(order.get_u16(d, 20), Some(16));
            assert_eq!(order.get_u16(d, 22), Some(1));
            assert_eq!(&d[24..36], b"mape_wanmap\0");
            assert_eq!(dl, 36);
            let e = &m[20 + dl..];
            assert_eq!(order.get_u32(e, 0), Some(20));
            assert_eq!(order.get_u16(e, 4), Some(0x11), "NFNL_MSG_BATCH_END");
            assert_eq!(m.len(), 20 + dl + 20);
        }
        // A name whose attribute needs padding.
        let m = encode_delete_table(Order::Little, "mape_a");
        assert_eq!(Order::Little.get_u32(&m, 20), Some(16 + 4 + 4 + 8));
    }

    /// The attribute number, against the kernel header when the build host has it.
    /// The position of each name in a C enum of linux/netfilter/nf_tables.h (the kernel's
    /// headers, when installed: Debian's linux-libc-dev).
    pub(super) fn enum_positions(h: &str, enum_name: &str, want: &[(&str, u16)]) {
        let body = h
            .split(&format!("enum {enum_name} {{"))
            .nth(1)
            .and_then(|b| b.split('}').next())
            .unwrap_or_else(|| panic!("enum {enum_name} in nf_tables.h"));
        let names: Vec<&str> = body
            .split(',')
            .map(|x| x.split('=').next().unwrap_or_default().trim())
            .filter(|x| !x.is_empty() && !x.starts_with('#'))
            .collect();
        for (name, value) in want {
            assert_eq!(
                names.iter().position(|n| n == name),
                Some(usize::from(*value)),
                "{name} in enum {enum_name}"
            );
        }
    }

    #[test]
    fn nf_tables_attributes_are_the_kernels() {
        let Ok(h) = std::fs::read_to_string("/usr/include/linux/netfilter/nf_tables.h") else {
            return;
        };
        let h = h.as_str();
        enum_positions(
            h,
            "nft_table_attributes",
            &[
                ("NFTA_TABLE_UNSPEC", 0),
                ("NFTA_TABLE_NAME", NFTA_TABLE_NAME),
            ],
        );
        enum_positions(
            h,
            "nft_object_attributes",
            &[
                ("NFTA_OBJ_TABLE", NFTA_OBJ_TABLE),
                ("NFTA_OBJ_NAME", NFTA_OBJ_NAME),
                ("NFTA_OBJ_TYPE", NFTA_OBJ_TYPE),
                ("NFTA_OBJ_DATA", NFTA_OBJ_DATA),
            ],
        );
        enum_positions(
            h,
            "nft_counter_attributes",
            &[
                ("NFTA_COUNTER_BYTES", NFTA_COUNTER_BYTES),
                ("NFTA_COUNTER_PACKETS", NFTA_COUNTER_PACKETS),
            ],
        );
        assert!(
            h.contains(&format!("#define NFT_OBJECT_COUNTER\t{NFT_OBJECT_COUNTER}"))
                || h.contains(&format!("#define NFT_OBJECT_COUNTER {NFT_OBJECT_COUNTER}")),
            "NFT_OBJECT_COUNTER"
        );
    }

    /// A counter object as the kernel dumps it: name, then the nested data (with a pad
    /// attribute first, as the kernel aligns the 64-bit values), values big-endian.
    fn counter_msg(order: Order, name: &str, packets: u64, bytes: u64) -> Vec<u8> {
        let mut data = Vec::new();
        attr(order, &mut data, 3, &[]); // NFTA_COUNTER_PAD
        attr(order, &mut data, NFTA_COUNTER_BYTES, &bytes.to_be_bytes());
        attr(
            order,
            &mut data,
            NFTA_COUNTER_PACKETS,
            &packets.to_be_bytes(),
        );
        let mut attrs = Vec::new();
        attr(order, &mut attrs, NFTA_OBJ_TABLE, b"mape_wanmap\0");
        attr(
            order,
            &mut attrs,
            NFTA_OBJ_NAME,
            format!("{name}\0").as_bytes(),
        );
        attr(
            order,
            &mut attrs,
            NFTA_OBJ_TYPE,
            &NFT_OBJECT_COUNTER.to_be_bytes(),
        );
        attr(
            order,
            &mut attrs,
            NFTA_OBJ_DATA | libc::NLA_F_NESTED as u16,
            &data,
        );
        let kind = ((libc::NFNL_SUBSYS_NFTABLES as u16) << 8) | libc::NFT_MSG_NEWOBJ as u16;
        nfnl_message(
            order,
            kind,
            libc::NLM_F_MULTI as u16,
            1,
            libc::NFPROTO_IPV4 as u8,
            0,
            &attrs,
        )
    }

    fn done_msg(order: Order) -> Vec<u8> {
        let mut m = nfnl_message(order, NLMSG_DONE, libc::NLM_F_MULTI as u16, 1, 0, 0, &[]);
        m.truncate(NLMSG_HDRLEN);
        m.extend_from_slice(&order.u32(0));
        let len = m.len() as u32;
        m[..4].copy_from_slice(&order.u32(len));
        m
    }

    #[test]
    fn a_counters_dump_in_both_byte_orders() {
        for order in BOTH {
            let req = encode_counters_dump(order, "mape_wanmap");
            assert_eq!(order.get_u32(&req, 0), Some(req.len() as u32));
            assert_eq!(
                order.get_u16(&req, 4),
                Some((10 << 8) | 19),
                "{order:?}: nftables GETOBJ"
            );
            assert_eq!(order.get_u16(&req, 6), Some(NLM_F_REQUEST | NLM_F_DUMP));
            assert_eq!(req[NLMSG_HDRLEN], libc::NFPROTO_IPV4 as u8);
            let attrs = &req[NLMSG_HDRLEN + NFGENMSG_LEN..];
            assert_eq!(
                find(order, attrs, NFTA_OBJ_TABLE),
                Some(&b"mape_wanmap\0"[..])
            );
            assert_eq!(find(order, attrs, NFTA_OBJ_TYPE), Some(&[0, 0, 0, 1][..]));

            // two datagrams: two counters, then one more and the end
            let mut got = Vec::new();
            let mut each = |p: &[u8]| got.extend(parse_counter(order, p));
            let mut first = counter_msg(order, "snat_tcp", 40, 2400);
            first.extend(counter_msg(order, "snat_udp", 5, u64::MAX));
            assert_eq!(walk(order, &first, &mut each), Walk::More);
            let mut second = counter_msg(order, "mss_clamp", 0, 0);
            second.extend(done_msg(order));
            assert_eq!(walk(order, &second, &mut each), Walk::Done);
            assert_eq!(
                got,
                [
                    ("snat_tcp".to_string(), 40, 2400),
                    ("snat_udp".to_string(), 5, u64::MAX),
                    ("mss_clamp".to_string(), 0, 0)
                ]
            );
            // an error ends it; cut or nonsense lengths are garbled, never a panic
            let mut none = |_: &[u8]| {};
            assert_eq!(
                walk(order, &error_reply(order, libc::ENOENT), &mut none),
                Walk::Error(libc::ENOENT)
            );
            for cut in 1..first.len() {
                let w = walk(order, &first[..cut], &mut none);
                assert!(matches!(w, Walk::More | Walk::Garbled), "{cut}: {w:?}");
            }
            assert_eq!(parse_counter(order, &[0xff; 7]), None);
        }
    }

    #[test]
    fn verdicts() {
        assert!(verdict(Some(0), true).is_ok());
        assert!(verdict(Some(0), false).is_ok());
        for e in ALREADY_ABSENT {
            assert!(verdict(Some(e as i32), false).is_ok(), "delete, {e}");
            assert!(
                matches!(verdict(Some(e as i32), true), Err(NetlinkError::Kernel(x)) if x.raw_os_error() == Some(e as i32))
            );
        }
        assert!(matches!(
            verdict(Some(libc::EPERM), false),
            Err(NetlinkError::Kernel(x)) if x.raw_os_error() == Some(libc::EPERM)
        ));
        // The text is the C library's, naming the error.
        let e = verdict(Some(libc::EPERM), false).unwrap_err().to_string();
        assert!(e.starts_with("netlink: kernel refused: "), "{e}");
        assert!(e.len() > "netlink: kernel refused: ".len() + 5, "{e}");
        assert!(matches!(verdict(None, false), Err(NetlinkError::NoAck)));
    }
}
