//! netifd inputs: the interface's config JSON (its UCI section as netifd passes it to a protocol
//! handler) and the tunnel link's `ubus call network.interface.<tunlink> status`.
//!
//! Option names and meanings are those of OpenWrt's `proto map`, so a user migrates by changing
//! `proto map` to `proto mape`. Every string that could later reach nft, a file name or a
//! command line is checked here against a strict character set: hostile values (quotes,
//! semicolons, newlines, `$()`) are rejected with an error naming the option.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value};

use super::input::{PsidInput, RuleInput};
use crate::engine::{CustomerPrefix, IidFormat, PortSet};
use crate::names::{check_name, NameError};

/// The UCI options the handler declares in `dump`, with their blobmsg types
/// (3 string, 5 int32, 7 bool). Same names as OpenWrt's `map`, plus `isp` and `ports_exclude`.
pub const OPTIONS: &[(&str, u8)] = &[
    ("maptype", 3),
    ("type", 3),
    ("rule", 3),
    ("ipaddr", 3),
    ("ip4prefixlen", 5),
    ("ip6prefix", 3),
    ("ip6prefixlen", 5),
    ("peeraddr", 3),
    ("ealen", 5),
    ("psidlen", 5),
    ("psid", 5),
    ("offset", 5),
    ("legacymap", 7),
    ("tunlink", 3),
    ("mtu", 5),
    ("ttl", 5),
    ("zone", 3),
    ("encaplimit", 3),
    ("isp", 3),
    ("ports_exclude", 3),
    // Not declared: `_prefsig` and `_addrsig`, which odhcp6c's dhcpv6.script sets on the dynamic
    // `map` interface it adds for option 94 (the signatures of the delegated prefixes and, for
    // lw4o6, of the addresses). A declared option that changes makes netifd reload the
    // interface, and netifd turns the reload of a dynamic interface that is up or setting up
    // into its removal (interface.c, `__interface_set_down` marks it IFC_REMOVE): the interface
    // was gone until dhcpv6.script's next call. The watch task follows a renumbering from
    // netifd's notifications instead; a changed rule (option 94 itself) still reloads it.
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("config: not a JSON object: {0}")]
    Json(String),
    #[error("{key} {value:?}: {why}")]
    Invalid {
        key: &'static str,
        value: String,
        why: &'static str,
    },
    #[error("maptype {0:?}: only map-e is supported by mape")]
    UnsupportedType(String),
    #[error(transparent)]
    Name(#[from] NameError),
}

/// `encaplimit`: "ignore" (no Destination Options header, what every BR here needs) or 0–255.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncapLimit {
    Ignore,
    Limit(u8),
}

impl EncapLimit {
    pub fn as_netifd(&self) -> String {
        match self {
            EncapLimit::Ignore => "ignore".into(),
            EncapLimit::Limit(n) => n.to_string(),
        }
    }
}

/// Everything the handler reads from its interface's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerConfig {
    pub rules: RuleInput,
    /// The netifd interface carrying the IPv6 prefix (e.g. `wan6`); `None`: search all.
    pub tunlink: Option<String>,
    /// Explicit tunnel MTU; `None`: the tunnel link's MTU − 40, at most 1460.
    pub mtu: Option<u32>,
    pub ttl: u8,
    /// Firewall zone for the tunnel device; `None` when set to `-`.
    pub zone: Option<String>,
    pub encaplimit: EncapLimit,
    /// Ports kept out of SNAT (for port forwards); must be our own ports.
    pub ports_exclude: Vec<PortSet>,
    /// Install the IPv4 default route on the tunnel (netifd's generic `defaultroute`).
    pub defaultroute: bool,
    /// Made by odhcp6c's dhcpv6.script for its binding (from DHCPv6 option 94): the script sets
    /// `_prefsig`, which nobody writes in /etc/config/network.
    pub dynamic: bool,
}

impl HandlerConfig {
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::Json("expected an object".into()))?;
        Self::from_object(obj)
    }

    pub fn from_object(o: &Map<String, Value>) -> Result<Self, ConfigError> {
        let maptype = string(o, "maptype")?.or(string(o, "type")?);
        if let Some(t) = maptype.as_deref() {
            if t != "map-e" {
                return Err(ConfigError::UnsupportedType(sanitize(t)));
            }
        }
        let legacymap = boolean(o, "legacymap")?;
        let isp = string(o, "isp")?;
        if let Some(isp) = &isp {
            check_name("isp", isp)?;
        }
        let rule = string(o, "rule")?;
        if let Some(r) = &rule {
            // The rule is parsed strictly later; refuse control characters and shell/nft
            // metacharacters here so the error names the option.
            if !r
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || " ,=:./-".contains(c))
            {
                return Err(invalid(
                    "rule",
                    r,
                    "only letters, digits and , = : . / - and spaces are allowed",
                ));
            }
        }
        let rules = RuleInput {
            isp,
            rule,
            dhcpv6_hex: None,
            ipv6_prefix: parsed(o, "ip6prefix", "not an IPv6 address")?,
            ipv6_prefix_len: int(o, "ip6prefixlen", 0, 128)?.map(|v| v as u8),
            ipv4_prefix: parsed::<Ipv4Addr>(o, "ipaddr", "not an IPv4 address")?,
            ipv4_prefix_len: int(o, "ip4prefixlen", 0, 32)?.map(|v| v as u8),
            ea_len: int(o, "ealen", 0, 48)?.map(|v| v as u8),
            psid_offset: int(o, "offset", 0, 15)?.map(|v| v as u8),
            // map's psidlen 0 means "derive".
            psid_len: int(o, "psidlen", 0, 16)?
                .map(|v| v as u8)
                .filter(|k| *k > 0),
            psid: int(o, "psid", 0, 0xffff)?.map(|v| PsidInput::Left(v as u16)),
            br: parsed::<Ipv6Addr>(o, "peeraddr", "not an IPv6 address")?,
            iid: legacymap.map(|l| {
                if l {
                    IidFormat::Draft03
                } else {
                    IidFormat::Rfc7597
                }
            }),
        };
        let tunlink = string(o, "tunlink")?;
        if let Some(t) = &tunlink {
            check_name("tunlink", t)?;
        }
        let zone = match string(o, "zone")? {
            None => Some("wan".to_string()),
            Some(z) if z == "-" || z.is_empty() => None,
            Some(z) => {
                check_name("zone", &z)?;
                Some(z)
            }
        };
        let encaplimit = match string(o, "encaplimit")? {
            None => EncapLimit::Ignore,
            Some(s) if s == "ignore" || s == "none" => EncapLimit::Ignore,
            Some(s) => EncapLimit::Limit(
                s.parse::<u8>()
                    .map_err(|_| invalid("encaplimit", &s, "expected ignore or 0-255"))?,
            ),
        };
        let ports_exclude = match string(o, "ports_exclude")? {
            None => Vec::new(),
            Some(s) => parse_port_list(&s).map_err(|why| invalid("ports_exclude", &s, why))?,
        };
        Ok(HandlerConfig {
            rules,
            tunlink,
            mtu: int(o, "mtu", 1280, 9000)?.map(|v| v as u32),
            ttl: int(o, "ttl", 1, 255)?.map_or(64, |v| v as u8),
            zone,
            encaplimit,
            ports_exclude,
            defaultroute: boolean(o, "defaultroute")?.unwrap_or(true),
            dynamic: o.contains_key("_prefsig"),
        })
    }

    /// The tunnel MTU: explicit, else the link MTU minus the 40-byte IPv6 header, at most 1460
    /// (the ISPs' path MTU is 1500 whatever the LAN-side link supports).
    pub fn tunnel_mtu(&self, link_mtu: Option<u32>) -> u32 {
        crate::engine::tunnel_mtu(self.mtu, link_mtu)
    }
}

/// "80 443 5000-5010" (space or comma separated).
pub fn parse_port_list(s: &str) -> Result<Vec<PortSet>, &'static str> {
    let mut out = Vec::new();
    for tok in s.split([' ', ',', '\t']).filter(|t| !t.is_empty()) {
        let (a, b) = tok.split_once('-').unwrap_or((tok, tok));
        let first: u16 = a
            .parse()
            .map_err(|_| "expected ports or ranges like 80 5000-5010")?;
        let last: u16 = b
            .parse()
            .map_err(|_| "expected ports or ranges like 80 5000-5010")?;
        if first == 0 || last < first {
            return Err("a range must be N-M with 1 <= N <= M <= 65535");
        }
        out.push(PortSet { first, last });
    }
    Ok(out)
}

fn invalid(key: &'static str, value: &str, why: &'static str) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: sanitize(value),
        why,
    }
}

/// A value as it may appear in a one-line error: control characters replaced, length capped.
fn sanitize(s: &str) -> String {
    s.chars()
        .take(64)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn string(o: &Map<String, Value>, key: &'static str) -> Result<Option<String>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(invalid(key, &other.to_string(), "expected a string")),
    }
}

fn parsed<T: std::str::FromStr>(
    o: &Map<String, Value>,
    key: &'static str,
    why: &'static str,
) -> Result<Option<T>, ConfigError> {
    match string(o, key)? {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| invalid(key, &s, why)),
    }
}

/// netifd passes int32 options as JSON numbers; strings are accepted too (hand-written JSON),
/// read like netifd reads UCI ints (`strtol(…, 0)`).
fn int(
    o: &Map<String, Value>,
    key: &'static str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, ConfigError> {
    let v = match o.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_i64(),
        Some(Value::String(s)) => super::rulestr::parse_num(key, s.trim(), u32::MAX)
            .ok()
            .map(i64::from),
        Some(_) => None,
    };
    let raw = o.get(key).map(|v| v.to_string()).unwrap_or_default();
    match v {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        Some(_) => Err(ConfigError::Invalid {
            key,
            value: sanitize(&raw),
            why: "out of range",
        }),
        None => Err(ConfigError::Invalid {
            key,
            value: sanitize(&raw),
            why: "expected an integer",
        }),
    }
}

fn boolean(o: &Map<String, Value>, key: &'static str) -> Result<Option<bool>, ConfigError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::Number(n)) if n.as_i64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_i64() == Some(1) => Ok(Some(true)),
        Some(Value::String(s)) => match s.as_str() {
            "1" | "true" | "on" | "yes" => Ok(Some(true)),
            "0" | "false" | "off" | "no" => Ok(Some(false)),
            _ => Err(invalid(key, s, "expected 0 or 1")),
        },
        Some(other) => Err(invalid(key, &other.to_string(), "expected 0 or 1")),
    }
}

/// What the handler learns from `ubus call network.interface.<tunlink> status` (or from the
/// same object in netifd's `interface.update` notification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    /// netifd is still setting the interface up (`pending`).
    pub pending: bool,
    /// The L3 device (e.g. `wan` or `eth1`), where the CE address goes.
    pub l3_device: Option<String>,
    /// Usable customer prefixes, best first: delegated prefixes (`ipv6-prefix`, which also
    /// holds a static `ip6prefix`), then global /64 addresses (`ipv6-address`, RA-only lines).
    /// A prefix whose valid lifetime is 0 (withdrawn: odhcp6c keeps listing the old prefix of a
    /// renumbering for a while, first) is never a candidate; within each kind the longest
    /// preferred lifetime comes first (a deprecated prefix, preferred 0, last), netifd's order
    /// breaking ties. Entries without lifetimes (static) count as infinite.
    pub prefixes: Vec<CustomerPrefix>,
}

impl LinkStatus {
    pub fn parse(json: &str) -> Result<Self, ConfigError> {
        let v: Value = serde_json::from_str(json).map_err(|e| ConfigError::Json(e.to_string()))?;
        Self::from_value(&v)
    }

    pub fn from_value(v: &Value) -> Result<Self, ConfigError> {
        let o = v
            .as_object()
            .ok_or_else(|| ConfigError::Json("status: expected an object".into()))?;
        let up = o.get("up").and_then(Value::as_bool).unwrap_or(false);
        let pending = o.get("pending").and_then(Value::as_bool).unwrap_or(false);
        let l3_device = o
            .get("l3_device")
            .or_else(|| o.get("device"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(d) = &l3_device {
            check_name("l3_device", d)?;
        }
        let entries = |key: &str| {
            o.get(key)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let mut pds: Vec<(CustomerPrefix, u64)> = Vec::new();
        for e in entries("ipv6-prefix") {
            if let Some((p, preferred)) = usable(&e) {
                if p.len() <= 64 && is_global(&p.addr()) {
                    pds.push((p, preferred));
                }
            }
        }
        let mut ras: Vec<(CustomerPrefix, u64)> = Vec::new();
        for e in entries("ipv6-address") {
            if let Some((p, preferred)) = usable(&e) {
                if is_global(&p.addr()) {
                    // An RA address: the line's /64 is what counts (bits past 64 are the host).
                    if let Some(p64) = CustomerPrefix::new(p.addr(), p.len().min(64)) {
                        ras.push((p64, preferred));
                    }
                }
            }
        }
        // Stable sorts: netifd's order breaks ties.
        pds.sort_by_key(|p| std::cmp::Reverse(p.1));
        ras.sort_by_key(|p| std::cmp::Reverse(p.1));
        Ok(LinkStatus {
            up,
            pending,
            l3_device,
            prefixes: pds.into_iter().chain(ras).map(|(p, _)| p).collect(),
        })
    }
}

/// An entry's prefix and preferred lifetime, unless it is withdrawn (valid lifetime over).
/// netifd gives lifetimes in seconds left, `-1` once over (it keeps listing a prefix a DHCPv6
/// server withdrew, first, for a while); without them (a static prefix) they are infinite.
fn usable(e: &Value) -> Option<(CustomerPrefix, u64)> {
    let addr: Ipv6Addr = e.get("address")?.as_str()?.parse().ok()?;
    let mask = e.get("mask")?.as_u64()?;
    let p = CustomerPrefix::new(addr, u8::try_from(mask).ok()?)?;
    let lifetime = |k: &str| match e.get(k) {
        None | Some(Value::Null) => Some(u64::MAX),
        Some(v) => v.as_i64().map(|t| t.max(0) as u64).or_else(|| v.as_u64()),
    };
    if lifetime("valid")? == 0 {
        return None;
    }
    Some((p, lifetime("preferred").unwrap_or(0)))
}

/// Global unicast (2000::/3): excludes link-local, ULA and the like, which never carry MAP-E.
fn is_global(a: &Ipv6Addr) -> bool {
    a.segments()[0] & 0xe000 == 0x2000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_better_than_map() {
        let c = HandlerConfig::parse(r#"{"proto":"mape","tunlink":"wan6"}"#).unwrap();
        assert_eq!(c.zone.as_deref(), Some("wan"));
        assert_eq!(c.encaplimit, EncapLimit::Ignore);
        assert_eq!(c.ttl, 64);
        assert!(c.defaultroute);
        assert_eq!(c.tunnel_mtu(Some(1454)), 1414);
        assert!(!c.dynamic);
        let d =
            HandlerConfig::parse(r#"{"proto":"map","tunlink":"wan6","_prefsig":" 2001:db8::/56"}"#)
                .unwrap();
        assert!(d.dynamic, "dhcpv6.script's interfaces carry _prefsig");
    }

    #[test]
    fn map_options_keep_their_meaning() {
        let c = HandlerConfig::parse(
            r#"{"maptype":"map-e","peeraddr":"2404:9200:225:100::64","ipaddr":"106.72.0.0","ip4prefixlen":15,
                "ip6prefix":"240b:10::","ip6prefixlen":31,"ealen":25,"psidlen":8,"offset":4,"legacymap":true,
                "psid":"54272","zone":"-","encaplimit":"4","ports_exclude":"7488 7490-7491","defaultroute":false}"#,
        )
        .unwrap();
        assert_eq!(c.rules.psid, Some(PsidInput::Left(54272)));
        assert_eq!(c.rules.iid, Some(IidFormat::Draft03));
        assert_eq!(c.zone, None);
        assert_eq!(c.encaplimit, EncapLimit::Limit(4));
        assert_eq!(c.ports_exclude.len(), 2);
        assert!(!c.defaultroute);
    }

    #[test]
    fn hostile_strings_are_rejected() {
        for (key, value) in [
            ("tunlink", "wan6\"; flush ruleset"),
            ("zone", "wan$(reboot)"),
            ("zone", "wan\nlan"),
            ("isp", "v6plus;"),
            ("rule", "type=map-e,br=`id`"),
            ("ports_exclude", "80;443"),
            ("maptype", "map-t"),
        ] {
            let json = serde_json::json!({ key: value }).to_string();
            let e = HandlerConfig::parse(&json).unwrap_err().to_string();
            assert!(e.starts_with(key), "{key}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn link_status_prefers_pd_then_ra_address() {
        let s = LinkStatus::parse(
            r#"{"up":true,"l3_device":"wan","ipv6-prefix":[{"address":"240b:10:3f6c:d400::","mask":56}],
               "ipv6-address":[{"address":"240b:10:3f6c:d4ab:1:2:3:4","mask":64},{"address":"fd00::1","mask":64}]}"#,
        )
        .unwrap();
        assert_eq!(s.l3_device.as_deref(), Some("wan"));
        let p: Vec<String> = s.prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(p, ["240b:10:3f6c:d400::/56", "240b:10:3f6c:d4ab::/64"]);
    }

    #[test]
    fn withdrawn_prefixes_are_never_used_and_the_longest_preferred_wins() {
        // odhcp6c during a renumbering: the old prefix first, withdrawn (valid 0).
        let s = LinkStatus::parse(
            r#"{"up":true,"l3_device":"wan","ipv6-prefix":[
                {"address":"240b:10:3f6c:d400::","mask":56,"preferred":0,"valid":0},
                {"address":"240b:10:1111:2200::","mask":56,"preferred":3600,"valid":7200}]}"#,
        )
        .unwrap();
        let p: Vec<String> = s.prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(p, ["240b:10:1111:2200::/56"]);
        // Several usable: the longest preferred lifetime first, a deprecated one last; RA
        // addresses after every delegated prefix; no lifetime (static) counts as infinite.
        let s = LinkStatus::parse(
            r#"{"up":true,"l3_device":"wan","ipv6-prefix":[
                {"address":"240b:10:aaaa:aa00::","mask":56,"preferred":0,"valid":100},
                {"address":"240b:10:bbbb:bb00::","mask":56,"preferred":600,"valid":700},
                {"address":"240b:10:cccc:cc00::","mask":56,"preferred":3000,"valid":7000},
                {"address":"240b:10:dddd:dd00::","mask":56}],
               "ipv6-address":[{"address":"240b:10:eeee:ee01::1","mask":64,"preferred":9999,"valid":9999}]}"#,
        )
        .unwrap();
        let p: Vec<String> = s.prefixes.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            p,
            [
                "240b:10:dddd:dd00::/56",
                "240b:10:cccc:cc00::/56",
                "240b:10:bbbb:bb00::/56",
                "240b:10:aaaa:aa00::/56",
                "240b:10:eeee:ee01::/64"
            ]
        );
        // Everything withdrawn: no prefix at all (the handler waits).
        let s = LinkStatus::parse(
            r#"{"up":true,"pending":true,"ipv6-prefix":[{"address":"240b:10:3f6c:d400::","mask":56,"preferred":0,"valid":0}],
               "ipv6-address":[{"address":"240b:10:3f6c:d400::1","mask":64,"preferred":0,"valid":0}]}"#,
        )
        .unwrap();
        assert!(s.prefixes.is_empty() && s.pending);
    }
}
