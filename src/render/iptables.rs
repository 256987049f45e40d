//! The same SNAT and MSS clamping as [`crate::render::nft`], for hosts that still use iptables:
//! an `iptables-restore` file.
//!
//! iptables has no `numgen … map`, so new flows are spread over the port sets with a cascade of
//! `statistic` matches: of N sets, rule i matches every (N−i)th packet that reaches it, and the
//! last takes what is left. Each rule counts only the packets that got past the rules before it
//! (the counter is per rule), so flow k lands on set k mod N: exact round robin. The nat table
//! sees only the first packet of a connection, so "packet" here means "new flow". Within the
//! chosen set the kernel picks a free port, as with nft.
//!
//! ICMP gets the same cascade: SNAT with a port range on `-p icmp` maps the echo identifier into
//! the range, which keeps IPv4 ping working on a shared address.
//!
//! The file holds whole `nat` and `mangle` tables: `iptables-restore FILE` replaces those two
//! tables atomically (the `filter` table is untouched), so applying it twice equals once. With
//! `--noflush` the jumps from the built-in chains would pile up instead, so the header says to
//! merge by hand when other nat/mangle rules must stay.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::nft::{snat_ranges, NftError};
use crate::engine::{Mapping, PortSet};

/// Everything the file depends on.
#[derive(Debug, Clone)]
pub struct IptablesParams<'a> {
    /// Our chain in the nat table, e.g. `MAPE_enp1s0` (iptables allows 28 characters).
    pub chain: &'a str,
    /// The tunnel device, e.g. `map-enp1s0`.
    pub ifname: &'a str,
    pub mapping: &'a Mapping,
    /// Port ranges kept out of SNAT, as for nft.
    pub exclude: &'a [PortSet],
    /// Header lines (see [`crate::render::origin`]).
    pub origin: &'a str,
}

/// The chain name for a table name: `mape_enp1s0` → `MAPE_enp1s0`, cut to iptables' limit.
pub fn chain_for(table: &str) -> String {
    let rest = table.strip_prefix("mape_").unwrap_or(table);
    let mut c = format!("MAPE_{rest}");
    // XT_EXTENSION_MAXNAMELEN is 29 including the NUL.
    c.truncate(28);
    c
}

/// The whole `iptables-restore` file.
pub fn restore_file(p: &IptablesParams) -> Result<String, NftError> {
    let m = p.mapping;
    let dev = p.ifname;
    let chain = p.chain;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# mape-rs: MAP-E SNAT and MSS clamping for {dev} (iptables-restore format)"
    );
    for line in p.origin.lines() {
        let _ = writeln!(s, "# {line}");
    }
    let _ = writeln!(
        s,
        "# Apply with `iptables-restore FILE`: it replaces the nat and mangle tables as a whole"
    );
    let _ = writeln!(
        s,
        "# (filter stays). To keep other nat/mangle rules, merge these lines into your own file."
    );
    let _ = writeln!(s, "*nat");
    for c in ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"] {
        let _ = writeln!(s, ":{c} ACCEPT [0:0]");
    }
    let _ = writeln!(s, ":{chain} - [0:0]");
    let _ = writeln!(s, "-A POSTROUTING -o {dev} -j {chain}");
    if m.ports.is_shared() {
        let ranges = snat_ranges(m, p.exclude)?;
        let n = ranges.len();
        let _ = writeln!(
            s,
            "# New flows take the {n} port ranges in turn: rule i of {n} matches every ({n}-i)th flow that"
        );
        let _ = writeln!(s, "# reaches it, the last rule takes the rest.");
        for proto in ["tcp", "udp", "icmp"] {
            for (i, r) in ranges.iter().enumerate() {
                let to = to_source(m.ipv4, r);
                if i + 1 < n {
                    let _ = writeln!(
                        s,
                        "-A {chain} -p {proto} -m statistic --mode nth --every {} --packet 0 -j SNAT --to-source {to}",
                        n - i
                    );
                } else {
                    let _ = writeln!(s, "-A {chain} -p {proto} -j SNAT --to-source {to}");
                }
            }
        }
        // Protocols without ports cannot be told apart by the BR on a shared address; they
        // still leave with our address rather than a private one.
        let _ = writeln!(s, "-A {chain} -j SNAT --to-source {}", m.ipv4);
    } else if m.ipv4_prefix_len < 32 {
        let last = Ipv4Addr::from(u32::from(m.ipv4) | (u32::MAX >> m.ipv4_prefix_len));
        let _ = writeln!(s, "-A {chain} -j SNAT --to-source {}-{last}", m.ipv4);
    } else {
        let _ = writeln!(s, "-A {chain} -j SNAT --to-source {}", m.ipv4);
    }
    let _ = writeln!(s, "COMMIT");
    let _ = writeln!(s, "*mangle");
    for c in ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"] {
        let _ = writeln!(s, ":{c} ACCEPT [0:0]");
    }
    // --clamp-mss-to-pmtu takes the smaller of the MTUs towards both ends, so one rule per
    // direction keeps TCP segments inside the tunnel MTU (as nft's `rt mtu`).
    for dir in ["-o", "-i"] {
        let _ = writeln!(
            s,
            "-A FORWARD {dir} {dev} -p tcp -m tcp --tcp-flags SYN,RST SYN -j TCPMSS --clamp-mss-to-pmtu"
        );
    }
    let _ = writeln!(s, "COMMIT");
    Ok(s)
}

fn to_source(v4: Ipv4Addr, r: &PortSet) -> String {
    if r.first == r.last {
        format!("{v4}:{}", r.first)
    } else {
        format!("{v4}:{}-{}", r.first, r.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::v6plus;

    /// Simulates the cascade as the kernel runs it (one counter per rule) and checks that flows
    /// are spread evenly, in order, over all sets.
    #[test]
    fn cascade_is_round_robin() {
        let m = v6plus();
        let s = restore_file(&IptablesParams {
            chain: "MAPE_wan",
            ifname: "map-wan",
            mapping: &m,
            exclude: &[],
            origin: "t",
        })
        .unwrap();
        let rules: Vec<(Option<u32>, String)> = s
            .lines()
            .filter(|l| l.starts_with("-A MAPE_wan -p tcp "))
            .map(|l| {
                let every = l
                    .split_once("--every ")
                    .map(|(_, r)| r.split(' ').next().unwrap().parse().unwrap());
                (every, l.rsplit(' ').next().unwrap().to_string())
            })
            .collect();
        assert_eq!(rules.len(), 15);
        let mut counters = vec![0u32; rules.len()];
        let mut got = Vec::new();
        for _flow in 0..45 {
            for (i, (every, to)) in rules.iter().enumerate() {
                let hit = match every {
                    Some(e) => {
                        let c = counters[i];
                        counters[i] = (c + 1) % e;
                        c == 0
                    }
                    None => true,
                };
                if hit {
                    got.push(to.clone());
                    break;
                }
            }
        }
        let sets: Vec<String> = m
            .port_sets()
            .map(|p| format!("106.72.63.108:{}-{}", p.first, p.last))
            .collect();
        for (k, to) in got.iter().enumerate() {
            assert_eq!(to, &sets[k % 15], "flow {k}");
        }
    }

    #[test]
    fn chain_names_fit() {
        assert_eq!(chain_for("mape_enp1s0"), "MAPE_enp1s0");
        assert!(chain_for("mape_abcdefghijklmnopqrstuvwxyz0123").len() <= 28);
    }
}
