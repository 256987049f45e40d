//! The nftables ruleset: SNAT into the port sets, MSS clamping, counters.
//!
//! One table of our own per interface (`table ip mape_<iface>`), never fw4's `inet fw4`, so a
//! firewall reload leaves it alone. The script replaces the table atomically: `nft -f` runs it
//! as one transaction (add, delete, re-create), and applying it twice equals applying it once.
//!
//! SNAT uses one rule per protocol of the form
//! `snat ip to numgen inc mod N map { 0 : <v4> . <lo>-<hi>, … }`: each new flow gets the next
//! port set round-robin and the kernel picks a free port inside that set, so all sets are used
//! (OpenWrt's fw4 path only ever uses the first). ICMP is included, which maps echo identifiers
//! into the port set: without it IPv4 ping breaks on a shared address. The chain runs at
//! `srcnat - 1`, before fw4's masquerade, and the first NAT binding made for a connection wins.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::engine::{Mapping, PortSet};

/// Everything the ruleset depends on.
#[derive(Debug, Clone)]
pub struct NftParams<'a> {
    /// Table name, e.g. `mape_wanmap` (letters, digits and `_` only: checked by the caller).
    pub table: &'a str,
    /// The tunnel device, e.g. `map-wanmap`.
    pub ifname: &'a str,
    pub mapping: &'a Mapping,
    /// Port ranges (from the CE's own sets) kept out of SNAT, e.g. for port forwards.
    pub exclude: &'a [PortSet],
    /// A header comment saying where the rules came from.
    pub origin: &'a str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NftError {
    #[error("ports_exclude {0}: not one of this line's ports (PSID {1})")]
    ExcludeNotOurs(PortSet, u16),
    #[error("ports_exclude: excludes every port of the line")]
    ExcludesAll,
}

/// The port ranges SNAT may use: the mapping's sets minus `exclude`.
pub fn snat_ranges(m: &Mapping, exclude: &[PortSet]) -> Result<Vec<PortSet>, NftError> {
    for x in exclude {
        if !m.ports.is_shared() {
            continue;
        }
        // Every port of an excluded range must be ours: excluding a port we never had would hide
        // a typo in a port forward.
        if !(x.first..=x.last).all(|p| m.owns_port(p)) {
            return Err(NftError::ExcludeNotOurs(*x, m.ports.psid()));
        }
    }
    let mut out = Vec::new();
    for set in m.port_sets() {
        let mut lo = u32::from(set.first).max(1); // port 0 is not a usable source port
        let hi = u32::from(set.last);
        let mut cuts: Vec<&PortSet> = exclude
            .iter()
            .filter(|x| x.last >= set.first && x.first <= set.last)
            .collect();
        cuts.sort();
        for x in cuts {
            if u32::from(x.first) > lo {
                out.push(PortSet {
                    first: lo as u16,
                    last: (u32::from(x.first) - 1) as u16,
                });
            }
            lo = lo.max(u32::from(x.last) + 1);
        }
        if lo <= hi {
            out.push(PortSet {
                first: lo as u16,
                last: hi as u16,
            });
        }
    }
    if out.is_empty() {
        return Err(NftError::ExcludesAll);
    }
    Ok(out)
}

/// The whole script for `nft -f`.
pub fn ruleset(p: &NftParams) -> Result<String, NftError> {
    let m = p.mapping;
    let mut s = String::new();
    let t = p.table;
    let dev = p.ifname;
    let _ = writeln!(s, "# mape-rs: MAP-E SNAT and MSS clamping for {dev}");
    for line in p.origin.lines() {
        let _ = writeln!(s, "# {line}");
    }
    // Create-then-delete makes the delete succeed whether or not the table exists; the new
    // table follows in the same transaction, so there is no moment without rules.
    let _ = writeln!(s, "add table ip {t}");
    let _ = writeln!(s, "delete table ip {t}");
    let _ = writeln!(s, "table ip {t} {{");
    for c in [
        "snat_tcp",
        "snat_udp",
        "snat_icmp",
        "snat_other",
        "mss_clamp",
    ] {
        let _ = writeln!(s, "\tcounter {c} {{ }}");
    }
    let _ = writeln!(s, "\tchain srcnat {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority srcnat - 1; policy accept;"
    );
    if m.ports.is_shared() {
        let ranges = snat_ranges(m, p.exclude)?;
        let map = port_map(m.ipv4, &ranges);
        for proto in ["tcp", "udp", "icmp"] {
            let _ = writeln!(
                s,
                "\t\toifname \"{dev}\" meta l4proto {proto} counter name \"snat_{proto}\" snat ip to numgen inc mod {} map {map}",
                ranges.len()
            );
        }
        // Protocols without ports cannot be told apart by the BR on a shared address; they
        // still leave with our address rather than a private one.
        let _ = writeln!(
            s,
            "\t\toifname \"{dev}\" counter name \"snat_other\" snat ip to {}",
            m.ipv4
        );
    } else if m.ipv4_prefix_len < 32 {
        let last = Ipv4Addr::from(u32::from(m.ipv4) | (u32::MAX >> m.ipv4_prefix_len));
        let _ = writeln!(
            s,
            "\t\toifname \"{dev}\" counter name \"snat_other\" snat ip to {}-{last}",
            m.ipv4
        );
    } else {
        let _ = writeln!(
            s,
            "\t\toifname \"{dev}\" counter name \"snat_other\" snat ip to {}",
            m.ipv4
        );
    }
    let _ = writeln!(s, "\t}}");
    // Clamp the MSS of SYNs both ways to the route MTU (the tunnel's), so TCP never needs
    // fragmentation or PMTUD through the tunnel.
    let _ = writeln!(s, "\tchain mssclamp {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority mangle; policy accept;"
    );
    let _ = writeln!(
        s,
        "\t\toifname \"{dev}\" tcp flags syn / syn,rst counter name \"mss_clamp\" tcp option maxseg size set rt mtu"
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{dev}\" tcp flags syn / syn,rst counter name \"mss_clamp\" tcp option maxseg size set rt mtu"
    );
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    Ok(s)
}

/// The script that removes our table (and succeeds if it is already gone).
pub fn delete_script(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

fn port_map(v4: Ipv4Addr, ranges: &[PortSet]) -> String {
    let items: Vec<String> = ranges
        .iter()
        .enumerate()
        .map(|(i, r)| {
            if r.first == r.last {
                format!("{i} : {v4} . {}", r.first)
            } else {
                format!("{i} : {v4} . {}-{}", r.first, r.last)
            }
        })
        .collect();
    format!("{{ {} }}", items.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::v6plus;

    #[test]
    fn every_set_in_one_map_per_protocol() {
        let m = v6plus();
        let s = ruleset(&NftParams {
            table: "mape_wan",
            ifname: "map-wan",
            mapping: &m,
            exclude: &[],
            origin: "t",
        })
        .unwrap();
        for proto in ["tcp", "udp", "icmp"] {
            let line = s
                .lines()
                .find(|l| l.contains(&format!("l4proto {proto} ")))
                .unwrap();
            assert!(
                line.contains("numgen inc mod 15 map { 0 : 106.72.63.108 . 7488-7503,"),
                "{line}"
            );
            assert!(
                line.contains("14 : 106.72.63.108 . 64832-64847 }"),
                "{line}"
            );
        }
        assert!(s.contains("priority srcnat - 1"));
        assert!(s.contains("maxseg size set rt mtu"));
    }

    #[test]
    fn exclusions_split_sets_and_must_be_ours() {
        let m = v6plus();
        let x = [
            PortSet {
                first: 7490,
                last: 7491,
            },
            PortSet {
                first: 64832,
                last: 64847,
            },
        ];
        let r = snat_ranges(&m, &x).unwrap();
        assert_eq!(
            r[0],
            PortSet {
                first: 7488,
                last: 7489
            }
        );
        assert_eq!(
            r[1],
            PortSet {
                first: 7492,
                last: 7503
            }
        );
        assert_eq!(r.len(), 15);
        assert_eq!(r.iter().map(|p| p.len()).sum::<u32>(), 240 - 2 - 16);
        let bad = [PortSet {
            first: 80,
            last: 80,
        }];
        assert_eq!(
            snat_ranges(&m, &bad),
            Err(NftError::ExcludeNotOurs(bad[0], 212))
        );
    }
}
