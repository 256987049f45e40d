//! Built-in Basic Mapping Rules of the Japanese MAP-E services (v6plus, OCN Virtual Connect,
//! BIGLOBE IPv6 Option, NURO), compiled from `data/mape-rules-jp.json` by `build.rs`.
//!
//! These services send no DHCPv6 MAP options; the rule follows from the customer prefix alone.
//! Each ISP's interface-identifier format and PSID offset come from the data file too (all four
//! use the draft-03 identifier and exclude port-set index 0).

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::engine::{CustomerPrefix, IidFormat, Rule};

/// One ISP (VNE) of the table.
#[derive(Debug, PartialEq, Eq)]
pub struct IspInfo {
    /// What `isp`/`--isp` take: `v6plus`, `ocn`, ...
    pub id: &'static str,
    /// The service's name as the ISP writes it (`v6プラス`), for LuCI and help texts.
    pub label: &'static str,
    /// A longer description with the operator and resellers.
    pub name: &'static str,
    /// The CE interface identifier its BRs expect.
    pub iid: IidFormat,
    pub br: Ipv6Addr,
    pub psid_offset: u8,
}

/// One rule in compact form (16 bytes; see `build.rs`).
#[derive(Debug)]
pub struct BuiltinRule {
    /// Bits 0..32 and 32..48 of the rule's IPv6 prefix (the rest is zero).
    v6_hi: u32,
    v4: u32,
    v6_mid: u16,
    v6_len: u8,
    v4_len: u8,
    ea_len: u8,
    /// Index into `BRS`.
    br: u8,
    /// Index into [`ISPS`]; the high bit marks a rule kept apart as unverified (NURO's
    /// extrapolated ones), never auto-detected.
    isp: u8,
}

const UNVERIFIED: u8 = 0x80;

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

impl BuiltinRule {
    pub fn isp(&self) -> &'static IspInfo {
        &ISPS[usize::from(self.isp & !UNVERIFIED)]
    }

    /// False for rules kept apart as unverified: never auto-detected.
    pub fn verified(&self) -> bool {
        self.isp & UNVERIFIED == 0
    }

    fn ipv6_bits(&self) -> u128 {
        (u128::from(self.v6_hi) << 96) | (u128::from(self.v6_mid) << 80)
    }

    pub fn ipv6_prefix(&self) -> Ipv6Net {
        Ipv6Net::new(Ipv6Addr::from_bits(self.ipv6_bits()), self.v6_len)
            .expect("table prefix length")
    }

    pub fn ipv4_prefix(&self) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(self.v4), self.v4_len).expect("table prefix length")
    }

    pub fn br(&self) -> Ipv6Addr {
        BRS[usize::from(self.br)]
    }

    /// The rule as the engine takes it: the ISP's IID format and PSID offset, the rule's BR.
    pub fn to_rule(&self) -> Rule {
        let isp = self.isp();
        let mut rule = Rule::new(self.ipv6_prefix(), self.ipv4_prefix(), self.ea_len, isp.iid);
        rule.psid_offset = isp.psid_offset;
        rule.br = Some(self.br());
        rule
    }

    fn contains(&self, prefix: &CustomerPrefix) -> bool {
        let len = u32::from(self.v6_len);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        prefix.len() >= self.v6_len && prefix.bits() & mask == self.ipv6_bits()
    }
}

/// Which ISPs to consider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IspChoice {
    /// Every ISP, verified rules only.
    Auto,
    /// One ISP by id; its unverified rules are considered too (the user chose it explicitly).
    Only(&'static IspInfo),
}

impl IspChoice {
    /// Parses `auto` or an ISP id; the error names the value and the choices.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "auto" {
            return Ok(IspChoice::Auto);
        }
        ISPS.iter()
            .find(|i| i.id == s)
            .map(IspChoice::Only)
            .ok_or_else(|| {
                format!(
                    "isp {s:?}: unknown, expected auto or one of {}",
                    isp_ids().join(", ")
                )
            })
    }
}

pub fn isp_ids() -> Vec<&'static str> {
    ISPS.iter().map(|i| i.id).collect()
}

pub fn isp_by_id(id: &str) -> Option<&'static IspInfo> {
    ISPS.iter().find(|i| i.id == id)
}

/// A rule found for a prefix.
#[derive(Debug)]
pub struct Found {
    pub isp: &'static IspInfo,
    pub rule: Rule,
    pub verified: bool,
}

/// The longest-prefix match of `prefix` over the table.
pub fn lookup(prefix: &CustomerPrefix, choice: IspChoice) -> Option<Found> {
    RULES
        .iter()
        .filter(|r| match choice {
            IspChoice::Auto => r.verified(),
            IspChoice::Only(isp) => std::ptr::eq(r.isp(), isp),
        })
        .filter(|r| r.contains(prefix))
        .max_by_key(|r| r.v6_len)
        .map(|r| Found {
            isp: r.isp(),
            rule: r.to_rule(),
            verified: r.verified(),
        })
}

/// All rules of the table, optionally of one ISP.
pub fn rules(isp: Option<&'static IspInfo>) -> impl Iterator<Item = &'static BuiltinRule> {
    RULES
        .iter()
        .filter(move |r| isp.map_or(true, |i| std::ptr::eq(r.isp(), i)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_valid() {
        assert_eq!(ISPS.len(), 4);
        assert_eq!(rules(isp_by_id("ocn")).count(), 472);
        assert_eq!(rules(isp_by_id("biglobe")).count(), 258);
        assert_eq!(rules(isp_by_id("v6plus")).count(), 4);
        assert_eq!(rules(isp_by_id("nuro")).filter(|r| r.verified()).count(), 4);
        for r in RULES.iter() {
            let rule = r.to_rule();
            assert!(rule.validate().is_ok(), "{rule:?}");
            assert_eq!(r.v6_len + r.ea_len, 56);
            assert_eq!(rule.iid, IidFormat::Draft03);
        }
        assert_eq!(std::mem::size_of::<BuiltinRule>(), 16);
        assert_eq!(BRS.len(), 5);
    }

    #[test]
    fn rules_do_not_overlap() {
        let verified: Vec<_> = RULES.iter().filter(|r| r.verified()).collect();
        for (i, a) in verified.iter().enumerate() {
            for b in &verified[i + 1..] {
                let (pa, pb) = (a.ipv6_prefix(), b.ipv6_prefix());
                assert!(!pa.contains(&pb) && !pb.contains(&pa), "{pa} overlaps {pb}");
            }
        }
    }

    #[test]
    fn unverified_rules_need_an_explicit_isp() {
        let p: CustomerPrefix = "240d:f:4000::/56".parse().unwrap();
        assert!(lookup(&p, IspChoice::Auto).is_none());
        let found = lookup(&p, IspChoice::parse("nuro").unwrap()).unwrap();
        assert!(!found.verified);
    }
}
