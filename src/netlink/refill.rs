//! Refilling chains of our nftables table over netlink: the rules of the chains that hold the
//! mapping (`set_<i>`, `other`) replaced in one nf_tables transaction (a batch of
//! NFT_MSG_DELRULE per chain, which empties it, and NFT_MSG_NEWRULE per rule), as `nft -f` of
//! the refill script does.
//!
//! Why without `nft`: following a renumbering in place, the refill is on the path between the
//! prefix change and IPv4 coming back. `nft` (a dynamically linked program that reads the whole
//! ruleset first, the 64 bucket maps included) took 0.7 s of a 1.6 s renumbering in the test VM;
//! this batch is one `sendmsg`.
//!
//! Each rule is the expressions nft 1.0.x makes of the same text (`nft --debug=netlink`), so
//! `nft list table` shows the same rules either way (the real-kernel test compares them):
//!
//! ```text
//! meta l4proto tcp snat ip to 192.0.2.18:1232-1235
//!   [ meta load l4proto => reg 1 ]
//!   [ cmp eq reg 1 0x00000006 ]
//!   [ immediate reg 1 0x120200c0 ]
//!   [ immediate reg 2 0x0000d004 ]
//!   [ immediate reg 3 0x0000d304 ]
//!   [ nat snat ip addr_min reg 1 proto_min reg 2 proto_max reg 3 flags 0x2 ]
//! ```
//!
//! A second address (`A-B`) takes the next register (`addr_max`), a single port none for
//! `proto_max`. Registers, message types and flags come from libc; the expression attributes
//! (not in libc) are checked against the kernel's nf_tables.h by a unit test.
//!
//! The batch is one datagram (OCN's 63 chains: 252 requests, about 55 KB; 255 chains, about
//! 220 KB, past the default send buffer, which the sender then raises as nft does); only its last
//! request asks for an ACK, since the kernel answers a failed request in any case.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use nix::libc;
use nix::sys::socket::{recv, setsockopt, sockopt, MsgFlags, SockProtocol};
use nix::sys::time::TimeVal;

use super::{
    aligned, attr, c_str, Batch, NetlinkError, Order, DUMP_BUF, NLMSG_ERROR, NLMSG_HDRLEN,
    NLM_F_ACK, NLM_F_CREATE,
};

/// One SNAT rule of a fill chain: `[meta l4proto <p>] snat ip to <a>[-<b>][:<lo>[-<hi>]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snat {
    /// The IP protocol number matched first, if any.
    pub l4proto: Option<u8>,
    /// The first and last address (the same for one address).
    pub addrs: (Ipv4Addr, Ipv4Addr),
    /// The first and last port (or ICMP identifier), if the rule names ports.
    pub ports: Option<(u16, u16)>,
}

/// Replaces the rules of each chain of `chains` in table `ip <table>` with its list, in one
/// transaction: all or nothing. A missing table or chain fails it as a whole.
pub fn refill(table: &str, chains: &[(&str, Vec<Snat>)]) -> Result<(), NetlinkError> {
    if chains.is_empty() {
        return Ok(());
    }
    let (msg, last) = encode_refill(Order::NATIVE, table, chains);
    let fd = super::send(SockProtocol::NetlinkNetFilter, &msg)?;
    // The kernel answers a batch at once; a batch it never finished must not hang the task.
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(ANSWER_WAIT_S, 0),
    )?;
    let mut buf = vec![0u8; DUMP_BUF];
    loop {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
        match batch_answer(Order::NATIVE, &buf[..n], last) {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) => return Err(NetlinkError::Kernel(std::io::Error::from_raw_os_error(e))),
            None => {}
        }
    }
}

/// How long [`refill`] waits for the kernel's answer, in seconds.
const ANSWER_WAIT_S: libc::time_t = 5;

/// nf_tables' rule, list, expression and data attributes, and those of the meta, cmp,
/// immediate and nat expressions (enums of linux/netfilter/nf_tables.h, the same on every
/// architecture; libc does not have them), and NF_NAT_RANGE_PROTO_SPECIFIED
/// (linux/netfilter/nf_nat.h).
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_META_DREG: u16 = 1;
const NFTA_META_KEY: u16 = 2;
const NFTA_CMP_SREG: u16 = 1;
const NFTA_CMP_OP: u16 = 2;
const NFTA_CMP_DATA: u16 = 3;
const NFTA_IMMEDIATE_DREG: u16 = 1;
const NFTA_IMMEDIATE_DATA: u16 = 2;
const NFTA_NAT_TYPE: u16 = 1;
const NFTA_NAT_FAMILY: u16 = 2;
const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
const NFTA_NAT_REG_ADDR_MAX: u16 = 4;
const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
const NFTA_NAT_REG_PROTO_MAX: u16 = 6;
const NFTA_NAT_FLAGS: u16 = 7;
const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 1 << 1;

const NESTED: u16 = libc::NLA_F_NESTED as u16;
const NLM_F_APPEND: u16 = libc::NLM_F_APPEND as u16;

/// The batch (per chain a DELRULE and its NEWRULEs) and the sequence number of its last
/// request, whose ACK says the batch was applied. Only the last request asks for an ACK: the
/// kernel answers every failed request anyway (then the batch was not applied), so a refill of
/// a thousand rules gets one answer, not a thousand.
fn encode_refill(order: Order, table: &str, chains: &[(&str, Vec<Snat>)]) -> (Vec<u8>, u32) {
    let mut b = Batch::new(order);
    let mut left: usize = chains.iter().map(|(_, rules)| 1 + rules.len()).sum();
    let mut ack = || {
        left -= 1;
        if left == 0 {
            NLM_F_ACK
        } else {
            0
        }
    };
    for (chain, rules) in chains {
        let mut names = Vec::new();
        attr(order, &mut names, NFTA_RULE_TABLE, &c_str(table));
        attr(order, &mut names, NFTA_RULE_CHAIN, &c_str(chain));
        b.push(libc::NFT_MSG_DELRULE, ack(), &names);
        for r in rules {
            let mut attrs = names.clone();
            let list = expressions(order, r);
            attr(order, &mut attrs, NFTA_RULE_EXPRESSIONS | NESTED, &list);
            b.push(
                libc::NFT_MSG_NEWRULE,
                NLM_F_CREATE | NLM_F_APPEND | ack(),
                &attrs,
            );
        }
    }
    b.end()
}

/// Attributes of u32 values, which nf_tables takes big-endian (whatever the host's order).
fn u32_attrs(order: Order, out: &mut Vec<u8>, attrs: &[(u16, u32)]) {
    for (kind, v) in attrs {
        attr(order, out, *kind, &v.to_be_bytes());
    }
}

/// The expression list of one rule (the value of NFTA_RULE_EXPRESSIONS).
fn expressions(order: Order, r: &Snat) -> Vec<u8> {
    let reg1 = libc::NFT_REG_1 as u32;
    let mut list = Vec::new();
    let mut elem = |name: &str, data: Vec<u8>| {
        let mut e = Vec::new();
        attr(order, &mut e, NFTA_EXPR_NAME, &c_str(name));
        attr(order, &mut e, NFTA_EXPR_DATA | NESTED, &data);
        attr(order, &mut list, NFTA_LIST_ELEM | NESTED, &e);
    };
    // [registers…], then NFTA_DATA_VALUE nested under `kind`
    let with_value = |regs: &[(u16, u32)], kind: u16, bytes: &[u8]| {
        let mut v = Vec::new();
        attr(order, &mut v, NFTA_DATA_VALUE, bytes);
        let mut e = Vec::new();
        u32_attrs(order, &mut e, regs);
        attr(order, &mut e, kind | NESTED, &v);
        e
    };
    if let Some(p) = r.l4proto {
        let mut meta = Vec::new();
        let key = libc::NFT_META_L4PROTO as u32;
        u32_attrs(
            order,
            &mut meta,
            &[(NFTA_META_KEY, key), (NFTA_META_DREG, reg1)],
        );
        elem("meta", meta);
        let cmp = [
            (NFTA_CMP_SREG, reg1),
            (NFTA_CMP_OP, libc::NFT_CMP_EQ as u32),
        ];
        elem("cmp", with_value(&cmp, NFTA_CMP_DATA, &[p]));
    }
    // The values in registers 1, 2, … in order: addresses, then ports.
    let (a, b) = r.addrs;
    let mut regs: Vec<(u16, Vec<u8>)> = vec![(NFTA_NAT_REG_ADDR_MIN, a.octets().to_vec())];
    if b != a {
        regs.push((NFTA_NAT_REG_ADDR_MAX, b.octets().to_vec()));
    }
    if let Some((lo, hi)) = r.ports {
        regs.push((NFTA_NAT_REG_PROTO_MIN, lo.to_be_bytes().to_vec()));
        if hi != lo {
            regs.push((NFTA_NAT_REG_PROTO_MAX, hi.to_be_bytes().to_vec()));
        }
    }
    let mut nat = Vec::new();
    let (snat, ip) = (libc::NFT_NAT_SNAT as u32, libc::NFPROTO_IPV4 as u32);
    u32_attrs(
        order,
        &mut nat,
        &[(NFTA_NAT_TYPE, snat), (NFTA_NAT_FAMILY, ip)],
    );
    for (reg, (which, bytes)) in (reg1..).zip(&regs) {
        let imm = [(NFTA_IMMEDIATE_DREG, reg)];
        elem("immediate", with_value(&imm, NFTA_IMMEDIATE_DATA, bytes));
        u32_attrs(order, &mut nat, &[(*which, reg)]);
    }
    if r.ports.is_some() {
        let flags = NF_NAT_RANGE_PROTO_SPECIFIED;
        u32_attrs(order, &mut nat, &[(NFTA_NAT_FLAGS, flags)]);
    }
    elem("nat", nat);
    list
}

/// What one datagram of the answer to a batch says: `Some(Err(errno))` at the first error (the
/// batch was not applied), `Some(Ok(()))` at the ACK of request `last`, `None` if neither came
/// yet (or the datagram is garbled: the caller reads on, up to its timeout).
fn batch_answer(order: Order, mut b: &[u8], last: u32) -> Option<Result<(), i32>> {
    while b.len() >= NLMSG_HDRLEN {
        let len = order.get_u32(b, 0)? as usize;
        if len < NLMSG_HDRLEN || len > b.len() {
            return None;
        }
        if order.get_u16(b, 4)? == NLMSG_ERROR {
            // nlmsgerr { error, … } after the header; no panic on a nonsense i32::MIN
            let e = (order.get_u32(b, NLMSG_HDRLEN)? as i32).wrapping_neg();
            if e != 0 {
                return Some(Err(e));
            }
            if order.get_u32(b, 8)? == last {
                return Some(Ok(()));
            }
        }
        b = b.get(aligned(len)..).unwrap_or_default();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::{enum_positions, BOTH};
    use super::super::{NFGENMSG_LEN, NLA_HDRLEN};
    use super::*;

    /// A generic reader (not the code under test): the attributes of `b` as (type, data).
    fn attrs(order: Order, mut b: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = usize::from(order.get_u16(b, 0).unwrap());
            out.push((order.get_u16(b, 2).unwrap(), &b[NLA_HDRLEN..len]));
            b = &b[aligned(len)..];
        }
        out
    }

    fn u32be(b: &[u8]) -> u32 {
        u32::from_be_bytes(b.try_into().unwrap())
    }

    /// One rule's expressions as `nft --debug=netlink` prints them (the value of an immediate
    /// or cmp as the bytes in a little-endian u32, as nft shows them on x86).
    fn debug(order: Order, list: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        for (t, e) in attrs(order, list) {
            assert_eq!(t, NFTA_LIST_ELEM | NESTED);
            let e = attrs(order, e);
            assert_eq!((e[0].0, e[1].0), (NFTA_EXPR_NAME, NFTA_EXPR_DATA | NESTED));
            let d = attrs(order, e[1].1);
            let get = |k: u16| d.iter().find(|(t, _)| t & !NESTED == k).map(|(_, v)| *v);
            let reg = |k: u16| get(k).map(u32be);
            let value = |k: u16| {
                let v = attrs(order, get(k).unwrap());
                assert_eq!(v.len(), 1);
                assert_eq!(v[0].0, NFTA_DATA_VALUE);
                let mut b = [0u8; 4];
                b[..v[0].1.len()].copy_from_slice(v[0].1);
                format!("0x{:08x}", u32::from_le_bytes(b))
            };
            out.push(match e[0].1 {
                b"meta\0" => {
                    assert_eq!(reg(NFTA_META_KEY), Some(16), "NFT_META_L4PROTO");
                    format!("meta load l4proto => reg {}", reg(NFTA_META_DREG).unwrap())
                }
                b"cmp\0" => {
                    assert_eq!(reg(NFTA_CMP_OP), Some(0), "NFT_CMP_EQ");
                    let r = reg(NFTA_CMP_SREG).unwrap();
                    format!("cmp eq reg {r} {}", value(NFTA_CMP_DATA))
                }
                b"immediate\0" => format!(
                    "immediate reg {} {}",
                    reg(NFTA_IMMEDIATE_DREG).unwrap(),
                    value(NFTA_IMMEDIATE_DATA)
                ),
                b"nat\0" => {
                    assert_eq!(reg(NFTA_NAT_TYPE), Some(0), "NFT_NAT_SNAT");
                    assert_eq!(reg(NFTA_NAT_FAMILY), Some(2), "NFPROTO_IPV4");
                    let mut s = "nat snat ip".to_string();
                    for (k, name) in [
                        (NFTA_NAT_REG_ADDR_MIN, "addr_min"),
                        (NFTA_NAT_REG_ADDR_MAX, "addr_max"),
                        (NFTA_NAT_REG_PROTO_MIN, "proto_min"),
                        (NFTA_NAT_REG_PROTO_MAX, "proto_max"),
                    ] {
                        if let Some(r) = reg(k) {
                            s += &format!(" {name} reg {r}");
                        }
                    }
                    if let Some(f) = reg(NFTA_NAT_FLAGS) {
                        s += &format!(" flags 0x{f:x}");
                    }
                    s
                }
                other => panic!("expression {other:?}"),
            });
        }
        out
    }

    /// (type, flags, seq, table, chain, expressions) of each message of a batch.
    type Msg = (u16, u16, u32, String, String, Vec<String>);

    fn messages(order: Order, mut b: &[u8]) -> Vec<Msg> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let len = order.get_u32(b, 0).unwrap() as usize;
            let (kind, flags) = (order.get_u16(b, 4).unwrap(), order.get_u16(b, 6).unwrap());
            let seq = order.get_u32(b, 8).unwrap();
            let a = attrs(order, &b[NLMSG_HDRLEN + NFGENMSG_LEN..len]);
            let text = |k: u16| {
                a.iter()
                    .find(|(t, _)| *t == k)
                    .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
                    .unwrap_or_default()
            };
            let exprs = a
                .iter()
                .find(|(t, _)| *t == NFTA_RULE_EXPRESSIONS | NESTED)
                .map(|(_, v)| debug(order, v))
                .unwrap_or_default();
            out.push((
                kind,
                flags,
                seq,
                text(NFTA_RULE_TABLE),
                text(NFTA_RULE_CHAIN),
                exprs,
            ));
            b = &b[aligned(len)..];
        }
        out
    }

    fn a(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    /// The expressions are those `nft --debug=netlink` (nftables 1.0.6) prints for the same
    /// rules, in both byte orders; the batch deletes each chain's rules before adding them.
    #[test]
    fn a_refill_is_the_expressions_nft_makes_in_one_batch() {
        let tcp = Snat {
            l4proto: Some(6),
            addrs: (a("192.0.2.18"), a("192.0.2.18")),
            ports: Some((1232, 1235)),
        };
        let one_port = Snat {
            l4proto: Some(1),
            ports: Some((1232, 1232)),
            ..tcp.clone()
        };
        let plain = Snat {
            l4proto: None,
            addrs: (a("192.0.2.16"), a("192.0.2.31")),
            ports: None,
        };
        let chains = [("set_0", vec![tcp, one_port]), ("other", vec![plain])];
        for order in BOTH {
            let (batch, last) = encode_refill(order, "mape_wanmap", &chains);
            let m = messages(order, &batch);
            let kinds: Vec<(u16, u16, u32)> = m.iter().map(|x| (x.0, x.1, x.2)).collect();
            let (del, new) = ((10 << 8) | 8, (10 << 8) | 6);
            assert_eq!(
                kinds,
                [
                    (0x10, 0x1, 1),
                    (del, 0x1, 2),
                    (new, 0x1 | 0x400 | 0x800, 3),
                    (new, 0x1 | 0x400 | 0x800, 4),
                    (del, 0x1, 5),
                    // only the last request asks for an ACK
                    (new, 0x1 | 0x4 | 0x400 | 0x800, 6),
                    (0x11, 0x1, 7),
                ],
                "{order:?}"
            );
            assert_eq!(last, 6);
            for x in &m[1..6] {
                assert_eq!(x.3, "mape_wanmap\0");
            }
            assert_eq!((m[1].4.as_str(), m[4].4.as_str()), ("set_0\0", "other\0"));
            assert!(
                m[1].5.is_empty() && m[4].5.is_empty(),
                "a delete has no rule"
            );
            assert_eq!(
                m[2].5,
                [
                    "meta load l4proto => reg 1",
                    "cmp eq reg 1 0x00000006",
                    "immediate reg 1 0x120200c0",
                    "immediate reg 2 0x0000d004",
                    "immediate reg 3 0x0000d304",
                    "nat snat ip addr_min reg 1 proto_min reg 2 proto_max reg 3 flags 0x2",
                ]
            );
            assert_eq!(
                m[3].5,
                [
                    "meta load l4proto => reg 1",
                    "cmp eq reg 1 0x00000001",
                    "immediate reg 1 0x120200c0",
                    "immediate reg 2 0x0000d004",
                    "nat snat ip addr_min reg 1 proto_min reg 2 flags 0x2",
                ]
            );
            assert_eq!(
                m[5].5,
                [
                    "immediate reg 1 0x100200c0",
                    "immediate reg 2 0x1f0200c0",
                    "nat snat ip addr_min reg 1 addr_max reg 2",
                ]
            );
        }
    }

    fn ack(order: Order, seq: u32, errno: i32) -> Vec<u8> {
        let mut r = Vec::new();
        r.extend_from_slice(&order.u32((NLMSG_HDRLEN * 2 + 4) as u32));
        r.extend_from_slice(&order.u16(NLMSG_ERROR));
        r.extend_from_slice(&order.u16(0));
        r.extend_from_slice(&order.u32(seq));
        r.extend_from_slice(&order.u32(0));
        r.extend_from_slice(&order.u32(errno.wrapping_neg() as u32));
        r.extend_from_slice(&[0; NLMSG_HDRLEN]);
        r
    }

    #[test]
    fn the_answer_is_the_last_ack_or_the_first_error() {
        for order in BOTH {
            let mut acks = ack(order, 2, 0);
            acks.extend(ack(order, 3, 0));
            assert_eq!(batch_answer(order, &acks, 4), None, "not yet");
            assert_eq!(batch_answer(order, &acks, 3), Some(Ok(())));
            let mut failed = ack(order, 2, 0);
            failed.extend(ack(order, 3, libc::ENOENT));
            failed.extend(ack(order, 4, 0));
            assert_eq!(
                batch_answer(order, &failed, 4),
                Some(Err(libc::ENOENT)),
                "{order:?}"
            );
            for cut in 0..failed.len() {
                // never a panic; a cut datagram never says "applied"
                assert_ne!(batch_answer(order, &failed[..cut], 4), Some(Ok(())));
            }
        }
        let mut bad = ack(Order::Little, 2, 0);
        bad[..4].copy_from_slice(&Order::Little.u32(400));
        assert_eq!(batch_answer(Order::Little, &bad, 2), None);
    }

    #[test]
    fn rule_and_expression_attributes_are_the_kernels() {
        let Ok(h) = std::fs::read_to_string("/usr/include/linux/netfilter/nf_tables.h") else {
            return;
        };
        let h = h.as_str();
        for (e, want) in [
            (
                "nft_rule_attributes",
                &[
                    ("NFTA_RULE_TABLE", NFTA_RULE_TABLE),
                    ("NFTA_RULE_CHAIN", NFTA_RULE_CHAIN),
                    ("NFTA_RULE_EXPRESSIONS", NFTA_RULE_EXPRESSIONS),
                ][..],
            ),
            ("nft_list_attributes", &[("NFTA_LIST_ELEM", NFTA_LIST_ELEM)]),
            (
                "nft_expr_attributes",
                &[
                    ("NFTA_EXPR_NAME", NFTA_EXPR_NAME),
                    ("NFTA_EXPR_DATA", NFTA_EXPR_DATA),
                ],
            ),
            (
                "nft_data_attributes",
                &[("NFTA_DATA_VALUE", NFTA_DATA_VALUE)],
            ),
            (
                "nft_meta_attributes",
                &[
                    ("NFTA_META_DREG", NFTA_META_DREG),
                    ("NFTA_META_KEY", NFTA_META_KEY),
                ],
            ),
            (
                "nft_cmp_attributes",
                &[
                    ("NFTA_CMP_SREG", NFTA_CMP_SREG),
                    ("NFTA_CMP_OP", NFTA_CMP_OP),
                    ("NFTA_CMP_DATA", NFTA_CMP_DATA),
                ],
            ),
            (
                "nft_immediate_attributes",
                &[
                    ("NFTA_IMMEDIATE_DREG", NFTA_IMMEDIATE_DREG),
                    ("NFTA_IMMEDIATE_DATA", NFTA_IMMEDIATE_DATA),
                ],
            ),
            (
                "nft_nat_attributes",
                &[
                    ("NFTA_NAT_TYPE", NFTA_NAT_TYPE),
                    ("NFTA_NAT_FAMILY", NFTA_NAT_FAMILY),
                    ("NFTA_NAT_REG_ADDR_MIN", NFTA_NAT_REG_ADDR_MIN),
                    ("NFTA_NAT_REG_ADDR_MAX", NFTA_NAT_REG_ADDR_MAX),
                    ("NFTA_NAT_REG_PROTO_MIN", NFTA_NAT_REG_PROTO_MIN),
                    ("NFTA_NAT_REG_PROTO_MAX", NFTA_NAT_REG_PROTO_MAX),
                    ("NFTA_NAT_FLAGS", NFTA_NAT_FLAGS),
                ],
            ),
        ] {
            enum_positions(h, e, want);
        }
        if let Ok(nat) = std::fs::read_to_string("/usr/include/linux/netfilter/nf_nat.h") {
            let line = nat
                .lines()
                .find(|l| l.contains("#define NF_NAT_RANGE_PROTO_SPECIFIED"))
                .expect("NF_NAT_RANGE_PROTO_SPECIFIED in nf_nat.h");
            assert!(
                line.trim_end().ends_with(&format!(
                    "(1 << {})",
                    NF_NAT_RANGE_PROTO_SPECIFIED.trailing_zeros()
                )),
                "{line}"
            );
        }
    }
}
