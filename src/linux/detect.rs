//! Finding the customer prefix on a running Linux router.
//!
//! What a router knows about its prefix, from `ip -j -6 route show` and
//! `ip -j -6 addr show scope global`, tried in this order (the first that maps under the rules
//! wins):
//! 1. a delegated prefix: an `unreachable` or `blackhole` route of length ≤ 64 for a global
//!    prefix. DHCPv6-PD clients install one for the whole delegation so that unused subnets are
//!    not routed back out of the WAN (systemd-networkd, dhcpcd, OpenWrt's netifd);
//! 2. a global address on the WAN with a prefix length ≤ 64: the /64 an RA-only line
//!    (no PD, e.g. FLET'S without Hikari Denwa) gives by SLAAC;
//! 3. a global address ≤ 64 on another interface: the LAN side of a delegation whose client left
//!    no route (wide-dhcpv6). MAP-E reads only the first rule-prefix + EA bits (≤ 56 with the
//!    Japanese rules), so any /64 of the delegation maps like the delegation itself.
//!
//! Left out: /128 addresses (DHCPv6 IA_NA, and our own CE address), deprecated and dadfailed
//! addresses, link-local and ULA space (only 2000::/3 is looked at).

use std::fmt;
use std::net::Ipv6Addr;

use serde_json::Value;

use super::host::Host;
use crate::engine::CustomerPrefix;
use crate::provision::Resolved;

/// Where a candidate prefix was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// An unreachable/blackhole route: a delegated prefix.
    DelegatedRoute,
    /// A global address on the WAN (SLAAC from the RA).
    WanAddress,
    /// A global address on another interface (LAN side of a delegation).
    OtherInterface(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::DelegatedRoute => f.write_str("the delegated-prefix route"),
            Origin::WanAddress => f.write_str("a global address on the WAN"),
            Origin::OtherInterface(dev) => write!(f, "a global address on {dev}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub prefix: CustomerPrefix,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DetectError {
    #[error("cannot read the IPv6 configuration: {0}")]
    Query(String),
    #[error("{what}: unexpected output of `ip -j` ({why})")]
    Parse { what: &'static str, why: String },
    #[error("wan {wan}: no IPv6 prefix found (no delegated-prefix route, no global address of /64 or shorter); wait for the line to come up, or give --prefix")]
    NoPrefix { wan: String },
    #[error("wan {wan}: no prefix maps under the rules: {tried}")]
    NoneMaps { wan: String, tried: String },
}

fn is_global(a: &Ipv6Addr) -> bool {
    // 2000::/3: global unicast. Excludes ULA, link-local, multicast, documentation aside.
    (a.segments()[0] & 0xe000) == 0x2000
}

fn parse_list(what: &'static str, json: &str) -> Result<Vec<Value>, DetectError> {
    if json.trim().is_empty() {
        return Ok(Vec::new());
    }
    match serde_json::from_str::<Value>(json) {
        Ok(Value::Array(v)) => Ok(v),
        Ok(_) => Err(DetectError::Parse {
            what,
            why: "not a JSON array".into(),
        }),
        Err(e) => Err(DetectError::Parse {
            what,
            why: e.to_string(),
        }),
    }
}

/// Candidate prefixes, best first, from `ip -j -6 route show` and
/// `ip -j -6 addr show scope global` (no duplicates).
pub fn candidates(wan: &str, routes: &str, addrs: &str) -> Result<Vec<Candidate>, DetectError> {
    let mut out: Vec<Candidate> = Vec::new();
    let push = |c: Candidate, out: &mut Vec<Candidate>| {
        if !out.iter().any(|o| o.prefix == c.prefix) {
            out.push(c);
        }
    };
    for r in parse_list("ip -6 route", routes)? {
        let kind = r.get("type").and_then(Value::as_str).unwrap_or("unicast");
        if kind != "unreachable" && kind != "blackhole" {
            continue;
        }
        let Some(dst) = r.get("dst").and_then(Value::as_str) else {
            continue;
        };
        let Ok(p) = dst.parse::<CustomerPrefix>() else {
            continue;
        };
        if p.len() <= 64 && p.len() >= 16 && is_global(&p.network()) {
            push(
                Candidate {
                    prefix: p,
                    origin: Origin::DelegatedRoute,
                },
                &mut out,
            );
        }
    }
    let links = parse_list("ip -6 addr", addrs)?;
    // The WAN first, then the other interfaces in the kernel's order.
    let ordered = links
        .iter()
        .filter(|l| l.get("ifname").and_then(Value::as_str) == Some(wan))
        .chain(
            links
                .iter()
                .filter(|l| l.get("ifname").and_then(Value::as_str) != Some(wan)),
        );
    for link in ordered {
        let dev = link.get("ifname").and_then(Value::as_str).unwrap_or("");
        let Some(infos) = link.get("addr_info").and_then(Value::as_array) else {
            continue;
        };
        for a in infos {
            if a.get("family").and_then(Value::as_str) != Some("inet6") {
                continue;
            }
            let flag = |k: &str| a.get(k).and_then(Value::as_bool).unwrap_or(false);
            if flag("deprecated") || flag("dadfailed") {
                continue;
            }
            let Some(addr) = a
                .get("local")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Ipv6Addr>().ok())
            else {
                continue;
            };
            let Some(len) = a.get("prefixlen").and_then(Value::as_u64) else {
                continue;
            };
            if !(16..=64).contains(&len) || !is_global(&addr) {
                continue;
            }
            let Some(p) = CustomerPrefix::new(addr, len as u8) else {
                continue;
            };
            let origin = if dev == wan {
                Origin::WanAddress
            } else {
                Origin::OtherInterface(dev.to_string())
            };
            // Keep the address bits (CustomerPrefix does): equality is on the network.
            let p = CustomerPrefix::new(p.network(), p.len()).unwrap_or(p);
            push(Candidate { prefix: p, origin }, &mut out);
        }
    }
    Ok(out)
}

/// Reads the system and returns the first candidate that `resolve` maps.
pub fn detect(
    host: &mut dyn Host,
    wan: &str,
    resolve: &dyn Fn(CustomerPrefix) -> Result<Resolved, String>,
) -> Result<(Resolved, Candidate), DetectError> {
    let routes = host
        .query(&["ip", "-j", "-6", "route", "show"])
        .map_err(|e| DetectError::Query(e.to_string()))?;
    let addrs = host
        .query(&["ip", "-j", "-6", "addr", "show", "scope", "global"])
        .map_err(|e| DetectError::Query(e.to_string()))?;
    let list = candidates(wan, &routes, &addrs)?;
    if list.is_empty() {
        return Err(DetectError::NoPrefix {
            wan: wan.to_string(),
        });
    }
    let mut tried = Vec::new();
    for c in list {
        match resolve(c.prefix) {
            Ok(r) => return Ok((r, c)),
            Err(e) => tried.push(format!("{} (from {}): {e}", c.prefix, c.origin)),
        }
    }
    Err(DetectError::NoneMaps {
        wan: wan.to_string(),
        tried: tried.join("; "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTES: &str = r#"[
        {"dst":"240b:10:3f6c:d400::/64","dev":"lan0","protocol":"kernel","metric":256,"flags":[]},
        {"type":"unreachable","dst":"240b:10:3f6c:d400::/56","dev":"lo","protocol":"dhcp","metric":1024,"flags":[]},
        {"type":"unreachable","dst":"fd00::/48","dev":"lo","metric":1024,"flags":[]},
        {"dst":"default","gateway":"fe80::1","dev":"wan0","protocol":"ra","metric":1024,"flags":[]}
    ]"#;

    const ADDRS: &str = r#"[
        {"ifindex":3,"ifname":"lan0","addr_info":[
            {"family":"inet6","local":"240b:10:3f6c:d401::1","prefixlen":64,"scope":"global"}]},
        {"ifindex":2,"ifname":"wan0","addr_info":[
            {"family":"inet6","local":"240b:10:3f6c:d400:6a:483f:6c00:d400","prefixlen":128,"scope":"global","nodad":true},
            {"family":"inet6","local":"2409:10:aaaa:bb00::9","prefixlen":64,"scope":"global","deprecated":true},
            {"family":"inet6","local":"240b:11:1:2:aabb:ccff:fedd:eeff","prefixlen":64,"scope":"global","dynamic":true,"mngtmpaddr":true}]}
    ]"#;

    #[test]
    fn delegated_route_first_then_wan_then_lan() {
        let c = candidates("wan0", ROUTES, ADDRS).unwrap();
        let got: Vec<(String, Origin)> = c
            .iter()
            .map(|c| (c.prefix.to_string(), c.origin.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("240b:10:3f6c:d400::/56".to_string(), Origin::DelegatedRoute),
                ("240b:11:1:2::/64".to_string(), Origin::WanAddress),
                (
                    "240b:10:3f6c:d401::/64".to_string(),
                    Origin::OtherInterface("lan0".into())
                ),
            ]
        );
    }

    #[test]
    fn nothing_usable_is_empty_and_garbage_is_an_error() {
        assert!(candidates("wan0", "[]", "").unwrap().is_empty());
        assert!(candidates("wan0", "{", "[]").is_err());
        assert!(candidates("wan0", "{}", "[]").is_err());
    }
}
