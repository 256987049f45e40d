//! OpenWrt `mapcalc` / odhcp6c rule strings.
//!
//! `type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,
//! psidlen=8,offset=4,br=2404:9200:225:100::64[,fmr]` — several rules separated by white space,
//! empty fields (odhcp6c ends every rule with a comma) ignored.
//!
//! Two quirks are kept for compatibility, because odhcp6c and map.sh depend on them:
//! - `psid` is **left-aligned** in 16 bits (odhcp6c passes the raw RFC 7598 PORTPARAMS field):
//!   PSID 212 with `psidlen=8` is written `psid=54272` (212 << 8). A value with bits set below
//!   the PSID is refused with the right-aligned reading as a hint.
//! - an explicit `psid` is only honoured together with an explicit `psidlen > 0`, as in mapcalc.
//!
//! Numbers are read like C's `strtoul(s, 0)`: `0x` hex, a leading `0` octal, else decimal.

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};

use crate::engine::{psid_from_left_aligned, CustomerPrefix, IidFormat, Rule, RuleError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleStringError {
    #[error("rule: unknown key {0:?}")]
    UnknownKey(String),
    #[error("rule: {key}={value:?} is not valid")]
    BadValue { key: &'static str, value: String },
    #[error("rule: {0} is missing")]
    Missing(&'static str),
    #[error("rule: type={0:?} is not supported (only map-e)")]
    UnsupportedType(String),
    #[error(
        "rule: psid={psid} is not left-aligned for psidlen={psid_len} (psid is a 16-bit left-aligned field here; PSID {right} is written psid={})",
        u32::from(*right) << (16 - u32::from(*psid_len))
    )]
    PsidNotLeftAligned { psid: u16, psid_len: u8, right: u16 },
    #[error("rule: ealen is missing and prefix {prefix} is shorter than prefix6len {prefix6len}")]
    EaUnderivable {
        prefix: CustomerPrefix,
        prefix6len: u8,
    },
    #[error("rule: {0}")]
    Rule(#[from] RuleError),
    #[error("rule: empty")]
    Empty,
}

/// Parses one or more rules. `iid` sets the interface-identifier format and default offset
/// (`legacymap`); `prefix`, when known, lets a rule without `ealen` take it from the prefix
/// length as mapcalc does (`ealen = prefix length − prefix6len`).
pub fn parse_rules(
    s: &str,
    iid: IidFormat,
    prefix: Option<&CustomerPrefix>,
) -> Result<Vec<Rule>, RuleStringError> {
    let rules = s
        .split_whitespace()
        .map(|one| parse_rule(one, iid, prefix))
        .collect::<Result<Vec<_>, _>>()?;
    if rules.is_empty() {
        return Err(RuleStringError::Empty);
    }
    Ok(rules)
}

/// Parses one comma-separated rule.
pub fn parse_rule(
    s: &str,
    iid: IidFormat,
    prefix: Option<&CustomerPrefix>,
) -> Result<Rule, RuleStringError> {
    let mut fields = Fields::default();
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = field.split_once('=').unwrap_or((field, ""));
        match key {
            "fmr" => fields.fmr = value.is_empty() || parse_num("fmr", value, 1)? == 1,
            "type" => {
                if value != "map-e" {
                    return Err(RuleStringError::UnsupportedType(value.to_string()));
                }
            }
            "ipv6prefix" => fields.ipv6prefix = Some(value),
            "ipv4prefix" => fields.ipv4prefix = Some(value),
            "prefix6len" => fields.prefix6len = Some(parse_num("prefix6len", value, 128)? as u8),
            "prefix4len" => fields.prefix4len = Some(parse_num("prefix4len", value, 32)? as u8),
            "ealen" => fields.ealen = Some(parse_num("ealen", value, 48)? as u8),
            "offset" => fields.offset = Some(parse_num("offset", value, 15)? as u8),
            "psidlen" => fields.psidlen = Some(parse_num("psidlen", value, 16)? as u8),
            "psid" => fields.psid = Some(parse_num("psid", value, 0xffff)? as u16),
            "br" => {
                let br: Ipv6Addr = value.parse().map_err(|_| bad("br", value))?;
                fields.br = Some(br);
            }
            other => return Err(RuleStringError::UnknownKey(other.to_string())),
        }
    }
    fields.build(iid, prefix)
}

#[derive(Default)]
struct Fields<'a> {
    fmr: bool,
    ipv6prefix: Option<&'a str>,
    ipv4prefix: Option<&'a str>,
    prefix6len: Option<u8>,
    prefix4len: Option<u8>,
    ealen: Option<u8>,
    offset: Option<u8>,
    psidlen: Option<u8>,
    psid: Option<u16>,
    br: Option<Ipv6Addr>,
}

impl Fields<'_> {
    fn build(
        self,
        iid: IidFormat,
        prefix: Option<&CustomerPrefix>,
    ) -> Result<Rule, RuleStringError> {
        let v6 = self
            .ipv6prefix
            .ok_or(RuleStringError::Missing("ipv6prefix"))?;
        let (v6addr, v6len) = split_len("ipv6prefix", v6)?;
        let v6addr: Ipv6Addr = v6addr.parse().map_err(|_| bad("ipv6prefix", v6))?;
        let prefix6len = match (self.prefix6len, v6len) {
            (Some(a), Some(b)) if a != b => return Err(bad("prefix6len", &a.to_string())),
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => return Err(RuleStringError::Missing("prefix6len")),
        };
        let ipv6_prefix = Ipv6Net::new(v6addr, prefix6len)
            .map_err(|_| bad("prefix6len", &prefix6len.to_string()))?;

        let v4 = self
            .ipv4prefix
            .ok_or(RuleStringError::Missing("ipv4prefix"))?;
        let (v4addr, v4len) = split_len("ipv4prefix", v4)?;
        let v4addr: Ipv4Addr = v4addr.parse().map_err(|_| bad("ipv4prefix", v4))?;
        let prefix4len = self.prefix4len.or(v4len).unwrap_or(32);
        let ipv4_prefix = Ipv4Net::new(v4addr, prefix4len)
            .map_err(|_| bad("prefix4len", &prefix4len.to_string()))?;

        let ea_len = match (self.ealen, prefix) {
            (Some(ea), _) => ea,
            (None, Some(p)) => p
                .len()
                .min(64)
                .checked_sub(prefix6len)
                .filter(|ea| *ea <= 48)
                .ok_or(RuleStringError::EaUnderivable {
                    prefix: *p,
                    prefix6len,
                })?,
            (None, None) => return Err(RuleStringError::Missing("ealen")),
        };

        let mut rule = Rule::new(ipv6_prefix, ipv4_prefix, ea_len, iid);
        rule.psid_offset = self.offset.unwrap_or(iid.default_offset());
        rule.br = self.br;
        rule.fmr = self.fmr;
        // mapcalc: no (or zero) psidlen means "derive", and a psid alone is discarded.
        if let Some(k) = self.psidlen.filter(|k| *k > 0) {
            rule.psid_len = Some(k);
            if let Some(left) = self.psid {
                rule.psid = Some(psid_from_left_aligned(left, k).ok_or(
                    RuleStringError::PsidNotLeftAligned {
                        psid: left,
                        psid_len: k,
                        right: left,
                    },
                )?);
            }
        }
        rule.validate()?;
        Ok(rule)
    }
}

/// Writes a rule in the same syntax (psid left-aligned), so that `parse_rule(emit(r))` maps
/// exactly like `r`, and equals it for rules in the parsers' form (no `psid_len` of 0, a `psid`
/// only beside its `psid_len`).
pub fn emit_rule(rule: &Rule) -> String {
    let mut s = format!(
        "type=map-e,ipv6prefix={},prefix6len={},ipv4prefix={},prefix4len={},ealen={},offset={}",
        rule.ipv6_prefix.addr(),
        rule.ipv6_prefix.prefix_len(),
        rule.ipv4_prefix.addr(),
        rule.ipv4_prefix.prefix_len(),
        rule.ea_len,
        rule.psid_offset
    );
    // A psid is only read beside a psidlen (mapcalc drops a lone one), so an explicit PSID on a
    // rule whose length is derived (`--psid` without `--psid-len`) needs that length written
    // too: without it the PSID silently came back from the EA bits instead.
    let psid_len = rule.psid_len.filter(|k| *k > 0).or_else(|| {
        rule.psid
            .and_then(|_| rule.validate().ok())
            .filter(|k| *k > 0)
    });
    if let Some(k) = psid_len {
        s.push_str(&format!(",psidlen={k}"));
        if let Some(psid) = rule.psid {
            s.push_str(&format!(",psid={}", u32::from(psid) << (16 - u32::from(k))));
        }
    }
    if let Some(br) = rule.br {
        s.push_str(&format!(",br={br}"));
    }
    if rule.fmr {
        s.push_str(",fmr");
    }
    s
}

fn bad(key: &'static str, value: &str) -> RuleStringError {
    RuleStringError::BadValue {
        key,
        value: value.to_string(),
    }
}

fn split_len<'a>(key: &'static str, s: &'a str) -> Result<(&'a str, Option<u8>), RuleStringError> {
    match s.split_once('/') {
        None => Ok((s, None)),
        Some((a, l)) => Ok((a, Some(l.parse().map_err(|_| bad(key, s))?))),
    }
}

/// C `strtoul(s, &end, 0)` with the whole string consumed, and an upper bound.
pub fn parse_num(key: &'static str, s: &str, max: u32) -> Result<u32, RuleStringError> {
    let (digits, radix) = if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        (h, 16)
    } else if s.len() > 1 && s.starts_with('0') {
        (&s[1..], 8)
    } else {
        (s, 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return Err(bad(key, s));
    }
    u32::from_str_radix(digits, radix)
        .ok()
        .filter(|v| *v <= max)
        .ok_or_else(|| bad(key, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const V6PLUS: &str = "type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,psidlen=8,offset=4,br=2404:9200:225:100::64";

    #[test]
    fn parses_mapcalc_rule() {
        let r = parse_rule(V6PLUS, IidFormat::Draft03, None).unwrap();
        assert_eq!(r.ipv6_prefix.to_string(), "240b:10::/31");
        assert_eq!(r.ipv4_prefix.to_string(), "106.72.0.0/15");
        assert_eq!((r.ea_len, r.psid_offset, r.psid_len), (25, 4, Some(8)));
        assert_eq!(r.br.unwrap().to_string(), "2404:9200:225:100::64");
        assert_eq!(
            parse_rule(&emit_rule(&r), IidFormat::Draft03, None).unwrap(),
            r
        );
    }

    #[test]
    fn odhcp6c_form_with_fmr_and_trailing_commas() {
        let s = "fmr,type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1, type=map-e,ealen=0,prefix4len=32,prefix6len=56,ipv4prefix=192.0.2.18,ipv6prefix=2001:db8:12:3400::,offset=6,psidlen=8,psid=0x3400,";
        let rules = parse_rules(s, IidFormat::Rfc7597, None).unwrap();
        assert_eq!(rules.len(), 2);
        assert!(rules[0].fmr && !rules[1].fmr);
        assert_eq!(rules[1].psid, Some(0x34));
    }

    #[test]
    fn psid_must_be_left_aligned() {
        let s = format!("{V6PLUS},psid=212");
        let e = parse_rule(&s, IidFormat::Draft03, None).unwrap_err();
        assert!(e.to_string().contains("psid=54272"), "{e}");
        let ok = parse_rule(&format!("{V6PLUS},psid=54272"), IidFormat::Draft03, None).unwrap();
        assert_eq!(ok.psid, Some(212));
    }

    #[test]
    fn ealen_from_prefix_like_mapcalc() {
        let s = V6PLUS.replace(",ealen=25", "");
        assert_eq!(
            parse_rule(&s, IidFormat::Draft03, None),
            Err(RuleStringError::Missing("ealen"))
        );
        let p: CustomerPrefix = "240b:10:3251:6400::/56".parse().unwrap();
        assert_eq!(
            parse_rule(&s, IidFormat::Draft03, Some(&p)).unwrap().ea_len,
            25
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("type=map-t,ipv6prefix=2001:db8::", "map-t"),
            ("bogus=1", "bogus"),
            ("ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=1.2.3.0,prefix4len=24,ealen=99", "ealen"),
            ("ipv6prefix=zz,prefix6len=40", "ipv6prefix"),
            ("ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=1.2.3.0,prefix4len=24,ealen=16,offset=08", "offset"),
        ];
        for (s, needle) in cases {
            let e = parse_rule(s, IidFormat::Rfc7597, None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn strtoul_bases() {
        assert_eq!(parse_num("x", "0x10", 100), Ok(16));
        assert_eq!(parse_num("x", "010", 100), Ok(8));
        assert_eq!(parse_num("x", "0", 100), Ok(0));
        assert!(parse_num("x", "", 100).is_err());
        assert!(parse_num("x", "-1", 100).is_err());
        assert!(parse_num("x", "101", 100).is_err());
    }
}
