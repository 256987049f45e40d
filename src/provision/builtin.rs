//! Built-in Basic Mapping Rules of the Japanese MAP-E services (v6plus, OCN Virtual Connect,
//! BIGLOBE IPv6 Option, NURO), compiled from `data/mape-rules-jp.json` by `build.rs`.
//!
//! These services send no DHCPv6 MAP options; the rule follows from the customer prefix alone.
//! All of them use the draft-03 interface identifier and port-set index 0 excluded.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::engine::{CustomerPrefix, IidFormat, Rule};

/// One ISP (VNE) of the table.
#[derive(Debug, PartialEq, Eq)]
pub struct IspInfo {
    pub id: &'static str,
    pub name: &'static str,
    pub br: Ipv6Addr,
    pub psid_offset: u8,
}

/// One rule in compact form (see `build.rs`).
#[derive(Debug)]
pub struct BuiltinRule {
    pub isp: u8,
    pub ipv6: u128,
    pub ipv6_len: u8,
    pub ipv4: u32,
    pub ipv4_len: u8,
    pub ea_len: u8,
    pub br: u128,
    /// False for rules kept apart as unverified (NURO's extrapolated ones): never auto-detected.
    pub verified: bool,
}

include!(concat!(env!("OUT_DIR"), "/builtin_rules.rs"));

impl BuiltinRule {
    pub fn isp(&self) -> &'static IspInfo {
        &ISPS[usize::from(self.isp)]
    }

    pub fn ipv6_prefix(&self) -> Ipv6Net {
        Ipv6Net::new(Ipv6Addr::from_bits(self.ipv6), self.ipv6_len).expect("table prefix length")
    }

    pub fn ipv4_prefix(&self) -> Ipv4Net {
        Ipv4Net::new(Ipv4Addr::from(self.ipv4), self.ipv4_len).expect("table prefix length")
    }

    /// The rule as the engine takes it: draft-03 IID, the ISP's PSID offset, the rule's BR.
    pub fn to_rule(&self) -> Rule {
        let mut rule = Rule::new(
            self.ipv6_prefix(),
            self.ipv4_prefix(),
            self.ea_len,
            IidFormat::Draft03,
        );
        rule.psid_offset = self.isp().psid_offset;
        rule.br = Some(Ipv6Addr::from_bits(self.br));
        rule
    }

    fn contains(&self, prefix: &CustomerPrefix) -> bool {
        let len = u32::from(self.ipv6_len);
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        prefix.len() >= self.ipv6_len && prefix.bits() & mask == self.ipv6
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
            IspChoice::Auto => r.verified,
            IspChoice::Only(isp) => std::ptr::eq(r.isp(), isp),
        })
        .filter(|r| r.contains(prefix))
        .max_by_key(|r| r.ipv6_len)
        .map(|r| Found {
            isp: r.isp(),
            rule: r.to_rule(),
            verified: r.verified,
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
        assert_eq!(rules(isp_by_id("nuro")).filter(|r| r.verified).count(), 4);
        for r in RULES.iter() {
            let rule = r.to_rule();
            assert!(rule.validate().is_ok(), "{rule:?}");
            assert_eq!(r.ipv6_len + r.ea_len, 56);
        }
    }

    #[test]
    fn rules_do_not_overlap() {
        let verified: Vec<_> = RULES.iter().filter(|r| r.verified).collect();
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
