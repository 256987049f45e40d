//! The user's rule inputs, as both front ends collect them: `mape calc` flags and the netifd
//! handler's UCI options (`isp`, `rule`, `ip6prefix`, `ealen`, ...). One place decides which
//! source wins and what conflicts, so the CLI and the router behave the same.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use super::builtin::IspChoice;
use super::dhcpv6::S46ContMape;
use super::rulestr::{self, RuleStringError};
use super::RuleSource;
use crate::engine::{psid_from_left_aligned, CustomerPrefix, IidFormat, Rule, RuleError};

/// An explicit PSID and how it was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsidInput {
    /// The plain number (CLI `--psid`).
    Right(u16),
    /// Left-aligned in 16 bits, as OpenWrt's `map` option `psid` and odhcp6c pass it.
    Left(u16),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleInput {
    /// `auto` (default), an ISP id, or `none`.
    pub isp: Option<String>,
    /// One or more mapcalc/odhcp6c rule strings.
    pub rule: Option<String>,
    /// OPTION_S46_CONT_MAPE as hex.
    pub dhcpv6_hex: Option<String>,
    pub ipv6_prefix: Option<Ipv6Addr>,
    pub ipv6_prefix_len: Option<u8>,
    pub ipv4_prefix: Option<Ipv4Addr>,
    pub ipv4_prefix_len: Option<u8>,
    pub ea_len: Option<u8>,
    pub psid_offset: Option<u8>,
    pub psid_len: Option<u8>,
    pub psid: Option<PsidInput>,
    pub br: Option<Ipv6Addr>,
    /// `None`: the source's default (draft-03 for built-in ISPs, RFC 7597 otherwise).
    pub iid: Option<IidFormat>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("{0}")]
    Isp(String),
    #[error("rule sources conflict: give only one of {0}")]
    Conflict(String),
    #[error("isp {0}: cannot be combined with an explicit rule (use isp auto or none)")]
    IspWithRule(String),
    #[error("isp none: needs an explicit rule (rule, dhcpv6, or ip6prefix/ipaddr/ealen)")]
    NoRule,
    #[error("{0}: missing (an explicit rule needs ip6prefix, ip6prefixlen and ipaddr)")]
    Missing(&'static str),
    #[error("{key} {value}: invalid prefix length")]
    PrefixLen { key: &'static str, value: u8 },
    #[error("ealen: missing and cannot be derived: prefix {prefix} is shorter than the rule's /{rule_len}")]
    EaUnderivable {
        prefix: CustomerPrefix,
        rule_len: u8,
    },
    #[error(
        "psid {psid}: not left-aligned for psidlen {psid_len} (OpenWrt's psid is the 16-bit left-aligned field; PSID {psid} is written {})",
        u32::from(*psid) << (16 - u32::from(*psid_len))
    )]
    PsidNotLeftAligned { psid: u16, psid_len: u8 },
    #[error("psid: needs psidlen when written left-aligned")]
    PsidNeedsLen,
    #[error(transparent)]
    RuleString(#[from] RuleStringError),
    #[error(transparent)]
    Dhcpv6(#[from] super::dhcpv6::Dhcpv6Error),
    #[error("{0}")]
    Rule(#[from] RuleError),
}

impl RuleInput {
    fn has_fields(&self) -> bool {
        self.ipv6_prefix.is_some()
            || self.ipv6_prefix_len.is_some()
            || self.ipv4_prefix.is_some()
            || self.ea_len.is_some()
            || self.psid_len.is_some()
            || self.psid.is_some()
    }

    /// Decides the rule source. `prefix`, when known, lets an explicit rule without `ealen`
    /// take it from the prefix length (mapcalc's behaviour).
    pub fn to_source(&self, prefix: Option<&CustomerPrefix>) -> Result<RuleSource, InputError> {
        let mut given = Vec::new();
        if self.rule.is_some() {
            given.push("rule");
        }
        if self.dhcpv6_hex.is_some() {
            given.push("dhcpv6");
        }
        if self.has_fields() {
            given.push("explicit rule fields");
        }
        if given.len() > 1 {
            return Err(InputError::Conflict(given.join(", ")));
        }
        let isp = self.isp.as_deref().unwrap_or("auto");
        if given.is_empty() {
            if isp == "none" {
                return Err(InputError::NoRule);
            }
            let choice = IspChoice::parse(isp).map_err(InputError::Isp)?;
            if let Some(want) = self.iid {
                // Each built-in ISP's BRs expect one interface-ID format (from the data); another
                // one is a contradiction worth refusing rather than silently building a CE
                // address those BRs ignore.
                let mut isps = super::builtin::ISPS.iter();
                let other = match choice {
                    IspChoice::Only(i) => (i.iid != want).then_some(i),
                    IspChoice::Auto => isps.find(|i| i.iid != want),
                };
                if let Some(i) = other {
                    return Err(InputError::Isp(format!(
                        "isp {isp}: {} uses the {} interface ID, not {want}",
                        i.id, i.iid
                    )));
                }
            }
            return Ok(RuleSource::Builtin(choice));
        }
        if isp != "auto" && isp != "none" {
            return Err(InputError::IspWithRule(isp.to_string()));
        }
        let iid = self.iid.unwrap_or(IidFormat::Rfc7597);
        let mut rules = if let Some(s) = &self.rule {
            rulestr::parse_rules(s, iid, prefix)?
        } else if let Some(hex) = &self.dhcpv6_hex {
            let mut rules = S46ContMape::parse_hex(hex)?.to_rules()?;
            for r in &mut rules {
                r.iid = iid;
            }
            rules
        } else {
            vec![self.explicit_rule(iid, prefix)?]
        };
        if let Some(br) = self.br {
            // A BR given beside a rule string or DHCPv6 fills in rules that lack one.
            for r in rules.iter_mut().filter(|r| r.br.is_none()) {
                r.br = Some(br);
            }
        }
        Ok(RuleSource::Explicit(rules))
    }

    fn explicit_rule(
        &self,
        iid: IidFormat,
        prefix: Option<&CustomerPrefix>,
    ) -> Result<Rule, InputError> {
        let v6 = self.ipv6_prefix.ok_or(InputError::Missing("ip6prefix"))?;
        let v6len = self
            .ipv6_prefix_len
            .ok_or(InputError::Missing("ip6prefixlen"))?;
        let v6net = Ipv6Net::new(v6, v6len).map_err(|_| InputError::PrefixLen {
            key: "ip6prefixlen",
            value: v6len,
        })?;
        let v4 = self.ipv4_prefix.ok_or(InputError::Missing("ipaddr"))?;
        let v4len = self.ipv4_prefix_len.unwrap_or(32);
        let v4net = Ipv4Net::new(v4, v4len).map_err(|_| InputError::PrefixLen {
            key: "ip4prefixlen",
            value: v4len,
        })?;
        let ea_len = match (self.ea_len, prefix) {
            (Some(ea), _) => ea,
            (None, Some(p)) => {
                p.len()
                    .min(64)
                    .checked_sub(v6len)
                    .ok_or(InputError::EaUnderivable {
                        prefix: *p,
                        rule_len: v6len,
                    })?
            }
            (None, None) => return Err(InputError::Missing("ealen")),
        };
        let mut rule = Rule::new(v6net, v4net, ea_len, iid);
        if let Some(offset) = self.psid_offset {
            rule.psid_offset = offset;
        }
        rule.psid_len = self.psid_len.filter(|k| *k > 0);
        rule.psid = match self.psid {
            None => None,
            Some(PsidInput::Right(p)) => Some(p),
            Some(PsidInput::Left(left)) => {
                let k = rule.psid_len.ok_or(InputError::PsidNeedsLen)?;
                if k > 16 {
                    return Err(RuleError::PortBitsOverflow {
                        offset: rule.psid_offset,
                        psid_len: k,
                    }
                    .into());
                }
                Some(
                    psid_from_left_aligned(left, k).ok_or(InputError::PsidNotLeftAligned {
                        psid: left,
                        psid_len: k,
                    })?,
                )
            }
        };
        rule.br = self.br;
        rule.validate()?;
        Ok(rule)
    }
}
