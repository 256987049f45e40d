//! The mapping of one customer prefix under one rule (RFC 7597 §5 and §6).

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::Ipv6Net;

use super::ports::{PortParams, PortSet};
use super::prefix::{mask128, CustomerPrefix};
use super::rule::{IidFormat, Rule, RuleError};

/// The CE's IPv6 address: the tunnel's local end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CeAddress(Ipv6Addr);

impl CeAddress {
    /// `prefix_bits` = the first (rule6 + EA) bits of the customer prefix; bits up to 63 (the
    /// subnet ID) are zero, so a /64 with a non-zero subnet byte maps to the same CE address as
    /// its /56; then the interface identifier in the chosen layout.
    pub fn compose(prefix_bits: u128, ipv4: Ipv4Addr, psid: u16, iid: IidFormat) -> Self {
        let v4 = u128::from(u32::from(ipv4));
        let psid = u128::from(psid);
        let iid = match iid {
            IidFormat::Rfc7597 => (v4 << 16) | psid,
            IidFormat::Draft03 => (v4 << 24) | (psid << 8),
        };
        CeAddress(Ipv6Addr::from_bits((prefix_bits & mask128(64)) | iid))
    }

    pub fn addr(&self) -> Ipv6Addr {
        self.0
    }
}

impl fmt::Display for CeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    #[error(transparent)]
    Rule(#[from] RuleError),
    #[error("prefix {prefix}: not inside the rule's IPv6 prefix {rule}")]
    OutsideRule {
        prefix: CustomerPrefix,
        rule: Ipv6Net,
    },
    #[error(
        "prefix {prefix}: too short, the rule needs at least /{needed} (rule prefix + EA bits)"
    )]
    TooShort { prefix: CustomerPrefix, needed: u8 },
}

/// Everything a CE derives from its prefix and the Basic Mapping Rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    pub rule: Rule,
    pub prefix: CustomerPrefix,
    /// The CE's IPv4 address, or the network address of its IPv4 prefix.
    pub ipv4: Ipv4Addr,
    /// 32 for a shared or full address, shorter when the rule delegates an IPv4 prefix.
    pub ipv4_prefix_len: u8,
    pub ports: PortParams,
    pub ce: CeAddress,
    pub br: Option<Ipv6Addr>,
}

impl Mapping {
    /// Maps `prefix` under `rule`. Covers every case of RFC 7597 §5.2: shared address
    /// (EA > IPv4 suffix), full address (EA = suffix), IPv4 prefix (EA < suffix) and EA length 0
    /// with a provisioned address and PSID.
    pub fn compute(rule: &Rule, prefix: CustomerPrefix) -> Result<Self, MapError> {
        let psid_len = rule.validate()?;
        if !rule.matches(&prefix) {
            return Err(MapError::OutsideRule {
                prefix,
                rule: rule.ipv6_prefix,
            });
        }
        let r = u32::from(rule.ipv6_prefix.prefix_len());
        let ea = u32::from(rule.ea_len);
        let needed = (r + ea) as u8;
        if prefix.len() < needed {
            return Err(MapError::TooShort { prefix, needed });
        }
        // The EA bits are bits r … r+ea−1 of the prefix (ea ≤ 48, r + ea ≤ 64).
        let ea_bits: u64 = if ea == 0 {
            0
        } else {
            ((prefix.bits() << r) >> (128 - ea)) as u64
        };

        let base = u32::from(rule.ipv4_prefix.network());
        let suffix = u32::from(rule.ipv4_suffix_len());
        let (ipv4, ipv4_prefix_len, psid) = if ea >= suffix {
            let k = u32::from(psid_len);
            let host = (ea_bits >> k) as u32; // < 2^suffix
            let from_ea = (ea_bits & ((1u64 << k) - 1)) as u16;
            // An explicit PSID wins over the EA bits, as in mapcalc and RFC 7598 §4.5.
            (base | host, 32, rule.psid.unwrap_or(from_ea))
        } else {
            // Fewer EA bits than IPv4 suffix bits: the CE gets an IPv4 prefix, no sharing.
            let shift = suffix - ea;
            // Shift in 64 bits: with no EA bits and a /0 rule IPv4 prefix the shift is 32,
            // which overflows (panics in debug) on a u32. ea + shift = suffix ≤ 32, so the
            // result always fits in 32 bits.
            let host = (ea_bits << shift) as u32;
            (base | host, (32 - shift) as u8, 0)
        };
        let ipv4 = Ipv4Addr::from(ipv4);
        let ports = if psid_len == 0 {
            PortParams::unrestricted()
        } else {
            // validate() guarantees offset ≤ 15, offset + k ≤ 16 and psid < 2^k.
            PortParams::new(rule.psid_offset, psid_len, psid)
                .ok_or(MapError::Rule(RuleError::PsidTooLarge { psid, psid_len }))?
        };
        let ce = CeAddress::compose(
            prefix.bits() & mask128(needed),
            ipv4,
            ports.psid(),
            rule.iid,
        );
        Ok(Mapping {
            rule: rule.clone(),
            prefix,
            ipv4,
            ipv4_prefix_len,
            ports,
            ce,
            br: rule.br,
        })
    }

    pub fn port_sets(&self) -> impl Iterator<Item = PortSet> + '_ {
        self.ports.sets()
    }

    pub fn port_count(&self) -> u32 {
        self.ports.port_count()
    }

    /// Whether `port` is one of this CE's external ports.
    pub fn owns_port(&self, port: u16) -> bool {
        self.ports.owns_port(port)
    }

    /// The end-user IPv6 prefix the EA bits describe (rule prefix + EA bits, e.g. the /56 of a
    /// v6plus line): the CE address is in its subnet 0.
    pub fn end_user_prefix(&self) -> Ipv6Net {
        let len = self.rule.ipv6_prefix.prefix_len() + self.rule.ea_len;
        Ipv6Net::new(Ipv6Addr::from_bits(self.prefix.bits() & mask128(len)), len)
            .expect("rule prefix + EA bits <= 64")
    }

    /// True when the CE's IPv6 address lies outside the given prefix: a /60 or /64 of the
    /// end-user prefix other than its subnet 0, as an NTT home gateway delegates (it keeps
    /// subnet 0 for its own LAN, where the CE address is reached by neighbour discovery), or an
    /// RA /64 with a non-zero subnet ID (vector T6). Not an error: the handler adds the CE
    /// address to the WAN itself (docs/hgw.md).
    pub fn ce_outside_prefix(&self) -> bool {
        let len = self.prefix.len().min(64);
        (self.ce.addr().to_bits() ^ self.prefix.bits()) & mask128(len) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v6: &str, v4: &str, ea: u8, iid: IidFormat) -> Rule {
        Rule::new(v6.parse().unwrap(), v4.parse().unwrap(), ea, iid)
    }

    #[test]
    fn rfc7597_example_1() {
        let mut r = rule("2001:db8::/40", "192.0.2.0/24", 16, IidFormat::Rfc7597);
        r.br = Some("2001:db8:ffff::1".parse().unwrap());
        let m = Mapping::compute(&r, "2001:db8:0012:3400::/56".parse().unwrap()).unwrap();
        assert_eq!(m.ipv4, Ipv4Addr::new(192, 0, 2, 18));
        assert_eq!(m.ports.psid(), 0x34);
        assert_eq!(m.ports.psid_len(), 8);
        assert_eq!(m.ce.to_string(), "2001:db8:12:3400:0:c000:212:34");
        let sets: Vec<_> = m.port_sets().collect();
        assert_eq!(sets.len(), 63);
        assert_eq!(sets[0].to_string(), "1232-1235");
        assert_eq!(sets[62].to_string(), "64720-64723");
    }

    #[test]
    fn ipv4_prefix_case() {
        // EA 4 bits < 8 suffix bits: a /28 is delegated.
        let r = rule("2001:db8::/52", "192.0.2.0/24", 4, IidFormat::Rfc7597);
        let m = Mapping::compute(&r, "2001:db8:0:0a00::/56".parse().unwrap()).unwrap();
        assert_eq!(m.ipv4, Ipv4Addr::new(192, 0, 2, 0xa0));
        assert_eq!(m.ipv4_prefix_len, 28);
        assert!(!m.ports.is_shared());
        assert_eq!(m.ce.to_string(), "2001:db8:0:a00:0:c000:2a0:0");
    }

    #[test]
    fn prefix_errors() {
        let r = rule("240b:10::/31", "106.72.0.0/15", 25, IidFormat::Draft03);
        assert!(matches!(
            Mapping::compute(&r, "2400:4050::/56".parse().unwrap()),
            Err(MapError::OutsideRule { .. })
        ));
        assert!(matches!(
            Mapping::compute(&r, "240b:10::/48".parse().unwrap()),
            Err(MapError::TooShort { needed: 56, .. })
        ));
    }
}
