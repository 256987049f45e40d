//! Where rules come from: the built-in ISP tables, OpenWrt rule strings, DHCPv6 option 94 and
//! explicit parameters. Every source produces the same [`Rule`]; [`resolve`] then picks the
//! Basic Mapping Rule for a prefix and maps it.

pub mod builtin;
pub mod dhcpv6;
pub mod input;
pub mod netifd;
pub mod rulestr;

use crate::engine::{CustomerPrefix, MapError, Mapping, Rule};
use builtin::{IspChoice, IspInfo};

/// The rules a CE was given, before a prefix is known.
#[derive(Debug, Clone)]
pub enum RuleSource {
    /// Look the prefix up in the built-in tables.
    Builtin(IspChoice),
    /// Explicit rules (rule strings, DHCPv6, flags); the BMR is the longest match.
    Explicit(Vec<Rule>),
}

/// The result of provisioning a prefix: the mapping and what else the CE should know.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub isp: Option<&'static IspInfo>,
    pub mapping: Mapping,
    /// Rules flagged as FMR (including the BMR if it is one), for `tunnel.data.fmrs`.
    pub fmrs: Vec<Rule>,
    /// Things the user should hear about but that do not stop the mapping.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "prefix {prefix}: matches no rule of any supported ISP ({isps}); give the rule explicitly"
    )]
    NoIspRule {
        prefix: CustomerPrefix,
        isps: String,
    },
    #[error("prefix {prefix}: matches no rule of isp {isp}")]
    NotInIsp {
        prefix: CustomerPrefix,
        isp: &'static str,
    },
    #[error("prefix {prefix}: matches none of the {count} given rule(s)")]
    NoMatchingRule {
        prefix: CustomerPrefix,
        count: usize,
    },
    #[error(transparent)]
    Map(#[from] MapError),
}

/// Index of the Basic Mapping Rule: the rule whose IPv6 prefix is the longest match.
pub fn select_bmr(rules: &[Rule], prefix: &CustomerPrefix) -> Option<usize> {
    rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.matches(prefix))
        .max_by_key(|(_, r)| r.ipv6_prefix.prefix_len())
        .map(|(i, _)| i)
}

/// Picks the rule for `prefix` from `source` and computes the mapping.
pub fn resolve(source: &RuleSource, prefix: CustomerPrefix) -> Result<Resolved, ResolveError> {
    let mut warnings = Vec::new();
    let (isp, rule, fmrs) = match source {
        RuleSource::Builtin(choice) => {
            let found = builtin::lookup(&prefix, *choice).ok_or_else(|| match choice {
                IspChoice::Auto => ResolveError::NoIspRule {
                    prefix,
                    isps: builtin::isp_ids().join(", "),
                },
                IspChoice::Only(isp) => ResolveError::NotInIsp {
                    prefix,
                    isp: isp.id,
                },
            })?;
            if !found.verified {
                warnings.push(format!(
                    "rule {} of {} is unverified (extrapolated by a third party): check the result against your ISP",
                    found.rule.ipv6_prefix, found.isp.id
                ));
            }
            (Some(found.isp), found.rule, Vec::new())
        }
        RuleSource::Explicit(rules) => {
            let i = select_bmr(rules, &prefix).ok_or(ResolveError::NoMatchingRule {
                prefix,
                count: rules.len(),
            })?;
            let fmrs = rules.iter().filter(|r| r.fmr).cloned().collect();
            (None, rules[i].clone(), fmrs)
        }
    };
    let mapping = Mapping::compute(&rule, prefix)?;
    // A CE address outside the given prefix (a /60 or /64 of the /56 other than subnet 0, as
    // behind an NTT home gateway) is how MAP-E works, not a problem: no warning (docs/hgw.md).
    if mapping.br.is_none() {
        warnings.push("the rule has no BR address: the tunnel needs one (peeraddr / --br)".into());
    }
    Ok(Resolved {
        isp,
        mapping,
        fmrs,
        warnings,
    })
}
