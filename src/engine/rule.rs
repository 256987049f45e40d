//! A MAP-E mapping rule (BMR or FMR) and its validation.

use std::fmt;
use std::net::Ipv6Addr;

use ipnet::{Ipv4Net, Ipv6Net};

use super::ports::PortParams;

/// Layout of the CE address's interface identifier (bits 64–127).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IidFormat {
    /// RFC 7597 §6: `0000 | IPv4 (32) | PSID (16)`.
    Rfc7597,
    /// draft-ietf-softwire-map-03, "legacy" in OpenWrt: `00 | IPv4 (32) | PSID (16) | 00`.
    /// What v6plus, OCN, BIGLOBE and NURO BRs expect.
    Draft03,
}

impl IidFormat {
    pub fn as_str(&self) -> &'static str {
        match self {
            IidFormat::Rfc7597 => "rfc7597",
            IidFormat::Draft03 => "draft03",
        }
    }

    /// RFC 7597 makes 6 the default PSID offset; draft-03 deployments (and OpenWrt's `legacymap`)
    /// default to 4.
    pub fn default_offset(&self) -> u8 {
        match self {
            IidFormat::Rfc7597 => 6,
            IidFormat::Draft03 => 4,
        }
    }
}

impl fmt::Display for IidFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IidFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rfc7597" | "rfc" => Ok(IidFormat::Rfc7597),
            "draft03" | "legacy" => Ok(IidFormat::Draft03),
            _ => Err(format!("iid format {s:?}: expected rfc7597 or draft03")),
        }
    }
}

/// One MAP rule: the rule prefixes, EA-bits length and port parameters.
///
/// `psid_len` and `psid` are optional: normally the PSID length follows from
/// `ea_len − (32 − ipv4 prefix length)` and the PSID from the EA bits. With `ea_len = 0`
/// (RFC 7597 Appendix A, Examples 4 and 5) they are provisioned explicitly. `psid` is always the
/// plain (right-aligned) number here; left-aligned wire forms are converted by the parsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub ipv6_prefix: Ipv6Net,
    pub ipv4_prefix: Ipv4Net,
    pub ea_len: u8,
    pub psid_offset: u8,
    pub psid_len: Option<u8>,
    pub psid: Option<u16>,
    pub br: Option<Ipv6Addr>,
    pub iid: IidFormat,
    /// May be used as a Forwarding Mapping Rule (direct CE-to-CE).
    pub fmr: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("ealen {0}: must be 0 to 48")]
    EaTooLong(u8),
    #[error("ealen {ea_len}: rule IPv6 prefix /{prefix_len} + EA bits = {} exceeds 64", u16::from(*prefix_len) + u16::from(*ea_len))]
    EaPastInterfaceId { prefix_len: u8, ea_len: u8 },
    #[error("offset {0}: PSID offset must be 0 to 15")]
    OffsetTooLarge(u8),
    #[error("psidlen {psid_len}: offset {offset} + PSID length exceeds 16 port bits")]
    PortBitsOverflow { offset: u8, psid_len: u8 },
    #[error(
        "psidlen {given}: contradicts ealen {ea_len} with IPv4 prefix /{ipv4_len} (which gives PSID length {derived})"
    )]
    PsidLenMismatch {
        given: u8,
        derived: u8,
        ea_len: u8,
        ipv4_len: u8,
    },
    #[error("psid {psid}: does not fit in a PSID length of {psid_len} bits")]
    PsidTooLarge { psid: u16, psid_len: u8 },
    #[error("psidlen {psid_len}: port sharing needs a full IPv4 address, but the rule gives a /{ipv4_len} prefix")]
    SharingNeedsFullAddress { psid_len: u8, ipv4_len: u8 },
    #[error("psid: PSID length {0} needs an explicit PSID when the rule has no EA bits")]
    MissingPsid(u8),
    #[error("ipv6prefix {0}: host bits are set (did you mean {1}?)")]
    Ipv6HostBits(Ipv6Net, Ipv6Net),
    #[error("ipv4prefix {0}: host bits are set (did you mean {1}?)")]
    Ipv4HostBits(Ipv4Net, Ipv4Net),
}

impl Rule {
    /// A rule with the given prefixes and EA length; offset from the IID format's default,
    /// everything else unset.
    pub fn new(ipv6_prefix: Ipv6Net, ipv4_prefix: Ipv4Net, ea_len: u8, iid: IidFormat) -> Self {
        Rule {
            ipv6_prefix,
            ipv4_prefix,
            ea_len,
            psid_offset: iid.default_offset(),
            psid_len: None,
            psid: None,
            br: None,
            iid,
            fmr: false,
        }
    }

    /// Number of IPv4 suffix bits (32 − IPv4 prefix length).
    pub fn ipv4_suffix_len(&self) -> u8 {
        32 - self.ipv4_prefix.prefix_len()
    }

    /// Checks every constraint of RFC 7597 §5 and returns the effective port parameters'
    /// PSID length. Host bits in the rule prefixes are refused (not masked): a typo in a rule
    /// prefix would otherwise silently map to another customer's address. Parsers of formats
    /// where the RFC says "receiver ignores" (DHCPv6) mask before building the rule.
    pub fn validate(&self) -> Result<u8, RuleError> {
        if self.ea_len > 48 {
            return Err(RuleError::EaTooLong(self.ea_len));
        }
        let prefix_len = self.ipv6_prefix.prefix_len();
        if u16::from(prefix_len) + u16::from(self.ea_len) > 64 {
            return Err(RuleError::EaPastInterfaceId {
                prefix_len,
                ea_len: self.ea_len,
            });
        }
        if self.ipv6_prefix.addr() != self.ipv6_prefix.network() {
            return Err(RuleError::Ipv6HostBits(
                self.ipv6_prefix,
                self.ipv6_prefix.trunc(),
            ));
        }
        if self.ipv4_prefix.addr() != self.ipv4_prefix.network() {
            return Err(RuleError::Ipv4HostBits(
                self.ipv4_prefix,
                self.ipv4_prefix.trunc(),
            ));
        }
        if self.psid_offset > 15 {
            return Err(RuleError::OffsetTooLarge(self.psid_offset));
        }
        let suffix = self.ipv4_suffix_len();
        let ipv4_len = self.ipv4_prefix.prefix_len();
        let psid_len = if self.ea_len == 0 {
            // Nothing embedded: IPv4 and PSID are provisioned (RFC 7597 Appendix A, Ex. 4/5).
            let k = self.psid_len.unwrap_or(0);
            if k > 0 && suffix > 0 {
                return Err(RuleError::SharingNeedsFullAddress {
                    psid_len: k,
                    ipv4_len,
                });
            }
            if k > 0 && self.psid.is_none() {
                return Err(RuleError::MissingPsid(k));
            }
            k
        } else {
            let derived = self.ea_len.saturating_sub(suffix);
            if let Some(given) = self.psid_len {
                if given != derived {
                    return Err(RuleError::PsidLenMismatch {
                        given,
                        derived,
                        ea_len: self.ea_len,
                        ipv4_len,
                    });
                }
            }
            derived
        };
        if u16::from(self.psid_offset) + u16::from(psid_len) > 16 {
            return Err(RuleError::PortBitsOverflow {
                offset: self.psid_offset,
                psid_len,
            });
        }
        if let Some(psid) = self.psid {
            if psid_len < 16 && u32::from(psid) >> psid_len != 0 {
                return Err(RuleError::PsidTooLarge { psid, psid_len });
            }
        }
        Ok(psid_len)
    }

    /// Whether the customer prefix lies inside this rule's IPv6 prefix.
    pub fn matches(&self, prefix: &super::CustomerPrefix) -> bool {
        prefix.len() >= self.ipv6_prefix.prefix_len() && self.ipv6_prefix.contains(&prefix.addr())
    }

    /// The port parameters for a given PSID under this rule (`None` if the rule is invalid).
    pub fn port_params(&self, psid: u16) -> Option<PortParams> {
        let k = self.validate().ok()?;
        if k == 0 {
            Some(PortParams::unrestricted())
        } else {
            PortParams::new(self.psid_offset, k, psid)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v6plus() -> Rule {
        let mut r = Rule::new(
            "240b:10::/31".parse().unwrap(),
            "106.72.0.0/15".parse().unwrap(),
            25,
            IidFormat::Draft03,
        );
        r.psid_len = Some(8);
        r
    }

    #[test]
    fn valid_rule_gives_psid_len() {
        assert_eq!(v6plus().validate(), Ok(8));
    }

    #[test]
    fn each_constraint_has_its_error() {
        let mut r = v6plus();
        r.ea_len = 49;
        assert_eq!(r.validate(), Err(RuleError::EaTooLong(49)));
        let mut r = v6plus();
        r.ea_len = 34;
        assert!(matches!(
            r.validate(),
            Err(RuleError::EaPastInterfaceId { .. })
        ));
        let mut r = v6plus();
        r.psid_offset = 16;
        assert_eq!(r.validate(), Err(RuleError::OffsetTooLarge(16)));
        let mut r = v6plus();
        r.psid_offset = 9;
        assert!(matches!(
            r.validate(),
            Err(RuleError::PortBitsOverflow { .. })
        ));
        let mut r = v6plus();
        r.psid_len = Some(6);
        assert!(matches!(
            r.validate(),
            Err(RuleError::PsidLenMismatch { derived: 8, .. })
        ));
        let mut r = v6plus();
        r.psid = Some(256);
        assert!(matches!(r.validate(), Err(RuleError::PsidTooLarge { .. })));
        let mut r = v6plus();
        r.ipv4_prefix = "106.72.1.0/15".parse().unwrap();
        assert!(matches!(r.validate(), Err(RuleError::Ipv4HostBits(..))));
        let mut r = v6plus();
        r.ipv6_prefix = "240b:11::/31".parse().unwrap();
        assert!(matches!(r.validate(), Err(RuleError::Ipv6HostBits(..))));
    }

    #[test]
    fn provisioned_sharing_needs_full_address_and_psid() {
        let mut r = Rule::new(
            "2001:db8:12:3400::/56".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
            0,
            IidFormat::Rfc7597,
        );
        r.psid_len = Some(8);
        r.psid = Some(0x34);
        assert!(matches!(
            r.validate(),
            Err(RuleError::SharingNeedsFullAddress { .. })
        ));
        r.ipv4_prefix = "192.0.2.18/32".parse().unwrap();
        assert_eq!(r.validate(), Ok(8));
        r.psid = None;
        assert_eq!(r.validate(), Err(RuleError::MissingPsid(8)));
    }
}
