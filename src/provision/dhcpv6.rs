//! RFC 7598 Softwire46 DHCPv6 options for MAP-E: the OPTION_S46_CONT_MAPE (94) container with
//! its OPTION_S46_RULE (89), OPTION_S46_BR (90) and OPTION_S46_PORTPARAMS (93).
//!
//! One type per option, `parse` and `emit` symmetric (in the style of smoltcp's `wire`).
//! Validation follows RFC 7598: a container that breaks any rule (a missing RULE or BR, an
//! option not permitted in MAP-E, a bad length or value) is rejected whole.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::engine::{psid_from_left_aligned, IidFormat, Rule, RuleError};

pub const OPTION_S46_RULE: u16 = 89;
pub const OPTION_S46_BR: u16 = 90;
pub const OPTION_S46_DMR: u16 = 91;
pub const OPTION_S46_V4V6BIND: u16 = 92;
pub const OPTION_S46_PORTPARAMS: u16 = 93;
pub const OPTION_S46_CONT_MAPE: u16 = 94;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dhcpv6Error {
    #[error("dhcpv6: {0:?} is not hex")]
    Hex(String),
    #[error(
        "dhcpv6: option {code} at byte {at}: length {len} runs past the end ({left} bytes left)"
    )]
    Truncated {
        code: u16,
        at: usize,
        len: usize,
        left: usize,
    },
    #[error("dhcpv6: {0} stray bytes after the last option")]
    Trailing(usize),
    #[error("dhcpv6: no OPTION_S46_CONT_MAPE (94) found")]
    NoContainer,
    #[error("dhcpv6: option {0} is not permitted in a MAP-E container")]
    NotPermitted(u16),
    #[error("dhcpv6: container has no {0}")]
    MissingOption(&'static str),
    #[error("dhcpv6: option {code}: length {len} is invalid")]
    BadLength { code: u16, len: usize },
    #[error("dhcpv6: S46_RULE {field} {value} is out of range")]
    BadField { field: &'static str, value: u32 },
    #[error(
        "dhcpv6: S46_PORTPARAMS psid-len {given} contradicts the rule's ea-len (gives {derived})"
    )]
    PsidLenConflict { given: u8, derived: u8 },
    #[error("dhcpv6: S46_RULE: {0}")]
    Rule(#[from] RuleError),
}

/// OPTION_S46_PORTPARAMS: PSID offset, PSID length and the PSID, left-aligned on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct S46PortParams {
    pub offset: u8,
    pub psid_len: u8,
    /// Right-aligned PSID (the wire field holds it left-aligned in 16 bits).
    pub psid: u16,
}

impl S46PortParams {
    fn parse(body: &[u8]) -> Result<Self, Dhcpv6Error> {
        if body.len() != 4 {
            return Err(Dhcpv6Error::BadLength {
                code: OPTION_S46_PORTPARAMS,
                len: body.len(),
            });
        }
        let (offset, psid_len) = (body[0], body[1]);
        if offset > 15 {
            return Err(Dhcpv6Error::BadField {
                field: "offset",
                value: offset.into(),
            });
        }
        if psid_len > 16 || u16::from(offset) + u16::from(psid_len) > 16 {
            return Err(Dhcpv6Error::BadField {
                field: "psid-len",
                value: psid_len.into(),
            });
        }
        let wire = u16::from_be_bytes([body[2], body[3]]);
        let psid = if psid_len == 0 {
            0 // "PSID-len 0: ignore the PSID field"
        } else {
            psid_from_left_aligned(wire, psid_len).ok_or(Dhcpv6Error::BadField {
                field: "psid",
                value: wire.into(),
            })?
        };
        Ok(S46PortParams {
            offset,
            psid_len,
            psid,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let wire = if self.psid_len == 0 {
            0
        } else {
            (u32::from(self.psid) << (16 - u32::from(self.psid_len))) as u16
        };
        put_option(
            out,
            OPTION_S46_PORTPARAMS,
            &[self.offset, self.psid_len, (wire >> 8) as u8, wire as u8],
        );
    }
}

/// OPTION_S46_RULE: one BMR/FMR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S46Rule {
    pub fmr: bool,
    pub ea_len: u8,
    pub ipv4_prefix: Ipv4Net,
    pub ipv6_prefix: Ipv6Net,
    pub port_params: Option<S46PortParams>,
}

impl S46Rule {
    fn parse(body: &[u8]) -> Result<Self, Dhcpv6Error> {
        let bad_len = || Dhcpv6Error::BadLength {
            code: OPTION_S46_RULE,
            len: body.len(),
        };
        if body.len() < 8 {
            return Err(bad_len());
        }
        let flags = body[0];
        let ea_len = body[1];
        let p4 = body[2];
        if ea_len > 48 {
            return Err(Dhcpv6Error::BadField {
                field: "ea-len",
                value: ea_len.into(),
            });
        }
        if p4 > 32 {
            return Err(Dhcpv6Error::BadField {
                field: "prefix4-len",
                value: p4.into(),
            });
        }
        let v4 = Ipv4Addr::new(body[3], body[4], body[5], body[6]);
        let p6 = body[7];
        if p6 > 128 {
            return Err(Dhcpv6Error::BadField {
                field: "prefix6-len",
                value: p6.into(),
            });
        }
        let n = usize::from(p6).div_ceil(8);
        let bytes = body.get(8..8 + n).ok_or_else(bad_len)?;
        let mut v6 = [0u8; 16];
        v6[..n].copy_from_slice(bytes);
        // "Bits past the prefix length: the sender zeroes them, the receiver ignores them."
        let ipv4_prefix = Ipv4Net::new(v4, p4).map_err(|_| bad_len())?.trunc();
        let ipv6_prefix = Ipv6Net::new(Ipv6Addr::from(v6), p6)
            .map_err(|_| bad_len())?
            .trunc();
        let mut port_params = None;
        for (code, sub) in Options::new(&body[8 + n..]) {
            let sub = sub?;
            match code {
                OPTION_S46_PORTPARAMS if port_params.is_none() => {
                    port_params = Some(S46PortParams::parse(sub)?)
                }
                other => return Err(Dhcpv6Error::NotPermitted(other)),
            }
        }
        Ok(S46Rule {
            fmr: flags & 1 == 1,
            ea_len,
            ipv4_prefix,
            ipv6_prefix,
            port_params,
        })
    }

    fn emit(&self, out: &mut Vec<u8>) {
        let mut body = vec![
            u8::from(self.fmr),
            self.ea_len,
            self.ipv4_prefix.prefix_len(),
        ];
        body.extend_from_slice(&self.ipv4_prefix.addr().octets());
        let p6 = self.ipv6_prefix.prefix_len();
        body.push(p6);
        body.extend_from_slice(&self.ipv6_prefix.addr().octets()[..usize::from(p6).div_ceil(8)]);
        if let Some(pp) = &self.port_params {
            pp.emit(&mut body);
        }
        put_option(out, OPTION_S46_RULE, &body);
    }

    /// The engine's rule (RFC 7597 interface identifier: standards-based ISPs).
    pub fn to_rule(&self, br: Option<Ipv6Addr>) -> Result<Rule, Dhcpv6Error> {
        let mut rule = Rule::new(
            self.ipv6_prefix,
            self.ipv4_prefix,
            self.ea_len,
            IidFormat::Rfc7597,
        );
        rule.fmr = self.fmr;
        rule.br = br;
        if let Some(pp) = self.port_params {
            rule.psid_offset = pp.offset;
            if pp.psid_len > 0 {
                if self.ea_len > 0 {
                    // With EA bits the PSID length follows from the rule; PORTPARAMS may repeat
                    // it (with PSID 0 meaning "from the EA bits") but not contradict it.
                    let derived = self
                        .ea_len
                        .saturating_sub(32 - self.ipv4_prefix.prefix_len());
                    if pp.psid_len != derived {
                        return Err(Dhcpv6Error::PsidLenConflict {
                            given: pp.psid_len,
                            derived,
                        });
                    }
                    if pp.psid != 0 {
                        rule.psid = Some(pp.psid);
                    }
                } else {
                    rule.psid = Some(pp.psid);
                }
                rule.psid_len = Some(pp.psid_len);
            }
        }
        rule.validate()?;
        Ok(rule)
    }
}

/// OPTION_S46_CONT_MAPE: the rules and BRs of one MAP-E domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S46ContMape {
    pub rules: Vec<S46Rule>,
    pub brs: Vec<Ipv6Addr>,
}

impl S46ContMape {
    /// Parses the container's contents (the bytes after its 4-byte header).
    pub fn parse_body(body: &[u8]) -> Result<Self, Dhcpv6Error> {
        let mut rules = Vec::new();
        let mut brs = Vec::new();
        for (code, opt) in Options::new(body) {
            let opt = opt?;
            match code {
                OPTION_S46_RULE => rules.push(S46Rule::parse(opt)?),
                OPTION_S46_BR => {
                    let octets: [u8; 16] = opt.try_into().map_err(|_| Dhcpv6Error::BadLength {
                        code,
                        len: opt.len(),
                    })?;
                    brs.push(Ipv6Addr::from(octets));
                }
                other => return Err(Dhcpv6Error::NotPermitted(other)),
            }
        }
        if rules.is_empty() {
            return Err(Dhcpv6Error::MissingOption("OPTION_S46_RULE (89)"));
        }
        if brs.is_empty() {
            return Err(Dhcpv6Error::MissingOption("OPTION_S46_BR (90)"));
        }
        Ok(S46ContMape { rules, brs })
    }

    /// Parses a sequence of DHCPv6 options and returns the first MAP-E container, as odhcp6c
    /// does. Other options at this level (including S46 options outside a container, which
    /// RFC 7598 says to ignore) are skipped; their lengths must still be consistent.
    pub fn parse(bytes: &[u8]) -> Result<Self, Dhcpv6Error> {
        for (code, body) in Options::new(bytes) {
            let body = body?;
            if code == OPTION_S46_CONT_MAPE {
                return Self::parse_body(body);
            }
        }
        Err(Dhcpv6Error::NoContainer)
    }

    /// Parses hex text (white space and `:` separators allowed).
    pub fn parse_hex(hex: &str) -> Result<Self, Dhcpv6Error> {
        Self::parse(&decode_hex(hex)?)
    }

    /// The whole option 94, header included.
    pub fn emit(&self) -> Vec<u8> {
        let mut body = Vec::new();
        for r in &self.rules {
            r.emit(&mut body);
        }
        for br in &self.brs {
            put_option(&mut body, OPTION_S46_BR, &br.octets());
        }
        let mut out = Vec::new();
        put_option(&mut out, OPTION_S46_CONT_MAPE, &body);
        out
    }

    /// The engine's rules, each with the first BR (anycast BRs are the usual redundancy).
    pub fn to_rules(&self) -> Result<Vec<Rule>, Dhcpv6Error> {
        self.rules
            .iter()
            .map(|r| r.to_rule(self.brs.first().copied()))
            .collect()
    }
}

/// Iterator over `code, body` of consecutive DHCPv6 options; yields an error and stops at a
/// truncated option or stray trailing bytes.
struct Options<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

impl<'a> Options<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Options {
            bytes,
            at: 0,
            done: false,
        }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = (u16, Result<&'a [u8], Dhcpv6Error>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.at == self.bytes.len() {
            return None;
        }
        let rest = &self.bytes[self.at..];
        if rest.len() < 4 {
            self.done = true;
            return Some((0, Err(Dhcpv6Error::Trailing(rest.len()))));
        }
        let code = u16::from_be_bytes([rest[0], rest[1]]);
        let len = usize::from(u16::from_be_bytes([rest[2], rest[3]]));
        if rest.len() - 4 < len {
            self.done = true;
            return Some((
                code,
                Err(Dhcpv6Error::Truncated {
                    code,
                    at: self.at,
                    len,
                    left: rest.len() - 4,
                }),
            ));
        }
        self.at += 4 + len;
        Some((code, Ok(&rest[4..4 + len])))
    }
}

fn put_option(out: &mut Vec<u8>, code: u16, body: &[u8]) {
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(body);
}

/// Hex text to bytes; white space, `:` and `-` between bytes are allowed.
pub fn decode_hex(hex: &str) -> Result<Vec<u8>, Dhcpv6Error> {
    let digits: Vec<u8> = hex.bytes().filter(|b| !b" \t\r\n:-".contains(b)).collect();
    let err = || Dhcpv6Error::Hex(shorten(hex));
    // Checked here because u8::from_str_radix accepts a leading '+': "+f" would decode as 0x0f
    // and a mistyped option would be read as some other bytes instead of being refused.
    if digits.len() % 2 != 0 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(err());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).map_err(|_| err())?;
            u8::from_str_radix(s, 16).map_err(|_| err())
        })
        .collect()
}

fn shorten(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// mapping-math.md §4.7: RFC 7597 Example 1 encoded as option 94.
    const EXAMPLE_1: &str = "005e002d 00590015 011018c0000200282001 0db800 005d0004 06000000 005a0010 20010db8ffff0000 0000000000000001";

    #[test]
    fn parses_example_1() {
        let c = S46ContMape::parse_hex(EXAMPLE_1).unwrap();
        assert_eq!(c.rules.len(), 1);
        let r = &c.rules[0];
        assert!(r.fmr);
        assert_eq!(r.ea_len, 16);
        assert_eq!(r.ipv4_prefix.to_string(), "192.0.2.0/24");
        assert_eq!(r.ipv6_prefix.to_string(), "2001:db8::/40");
        assert_eq!(
            r.port_params,
            Some(S46PortParams {
                offset: 6,
                psid_len: 0,
                psid: 0
            })
        );
        assert_eq!(c.brs, vec!["2001:db8:ffff::1".parse::<Ipv6Addr>().unwrap()]);
        assert_eq!(c.emit(), decode_hex(EXAMPLE_1).unwrap());
        let rule = &c.to_rules().unwrap()[0];
        assert_eq!(rule.validate(), Ok(8));
    }

    #[test]
    fn invalid_containers_are_rejected_whole() {
        let no_br = "005e0019 00590015 011018c0000200282001 0db800 005d0004 06000000";
        assert_eq!(
            S46ContMape::parse_hex(no_br),
            Err(Dhcpv6Error::MissingOption("OPTION_S46_BR (90)"))
        );
        let with_dmr = "005e0034 00590015 011018c0000200282001 0db800 005d0004 06000000 005a0010 20010db8ffff0000 0000000000000001 005b0003 10 2001";
        assert_eq!(
            S46ContMape::parse_hex(with_dmr),
            Err(Dhcpv6Error::NotPermitted(OPTION_S46_DMR))
        );
        let truncated = "005e0030 0059";
        assert!(matches!(
            S46ContMape::parse_hex(truncated),
            Err(Dhcpv6Error::Truncated { .. })
        ));
        assert!(matches!(
            S46ContMape::parse_hex("zz"),
            Err(Dhcpv6Error::Hex(_))
        ));
        assert_eq!(S46ContMape::parse_hex(""), Err(Dhcpv6Error::NoContainer));
    }
}
