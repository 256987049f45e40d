//! The same SNAT and MSS clamping as [`crate::render::nft`], for hosts that still use iptables:
//! an `iptables-restore` file. It formats the engine's [`SnatPlan`] the same way:
//!
//! - per protocol (TCP, UDP), `HMARK` hashes the destination address and port into one of the
//!   plan's buckets (64 for every built-in ISP; fewer for lines with many port sets, so that
//!   buckets × slots stays within [`crate::engine::SLOT_BUDGET`]: iptables cannot share a
//!   cascade between buckets), and one rule per bucket jumps to that bucket's chain. With one
//!   bucket there is no HMARK, only a jump;
//! - a bucket chain spreads new flows over the port ranges with a cascade of `statistic`
//!   matches: of N ranges, rule i matches every (N−i)th packet that reaches it and the last
//!   takes what is left. Each rule counts only the packets that got past the rules before it
//!   (the counter is per rule), so flow k of the bucket lands on range k mod N: exact round
//!   robin per bucket, as nft's `numgen inc` per bucket chain. The nat table sees only the first
//!   packet of a connection, so "packet" here means "new flow". Within the chosen range the
//!   kernel picks a free port;
//! - ICMP takes one cascade: SNAT with a port range on `-p icmp` maps the echo identifier into
//!   the range, which keeps IPv4 ping working on a shared address.
//!
//! HMARK sets the packet mark (only of the first packet of a new flow leaving through the
//! tunnel, in nat POSTROUTING, after routing): a mark set earlier for that packet is replaced.
//!
//! The file holds whole `nat` and `mangle` tables: `iptables-restore FILE` replaces those two
//! tables atomically (the `filter` table is untouched), so applying it twice equals once. With
//! `--noflush` the jumps from the built-in chains would pile up instead, so the header says to
//! merge by hand when other nat/mangle rules must stay.

use std::fmt::Write as _;

use crate::engine::{Backend, Mapping, PortSet, SnatError, SnatPlan};

/// The first HMARK mark: buckets are `MARK_BASE + 0 …` (one mark per bucket).
const MARK_BASE: u32 = 0x4d41_0000;
/// HMARK's hash seeds for TCP and UDP (different, as nft's jhash seeds).
const RND_TCP: u32 = 0x6d61_7065;
const RND_UDP: u32 = 0x7564_7030;

/// Everything the file depends on.
#[derive(Debug, Clone)]
pub struct IptablesParams<'a> {
    /// Our chain in the nat table, e.g. `MAPE_enp1s0` (see [`chain_for`]).
    pub chain: &'a str,
    /// The tunnel device, e.g. `map-enp1s0`.
    pub ifname: &'a str,
    pub mapping: &'a Mapping,
    /// Port ranges kept out of SNAT, as for nft.
    pub exclude: &'a [PortSet],
    /// Header lines (see [`crate::render::origin`]).
    pub origin: &'a str,
}

/// The chain name for a table name: `mape_enp1s0` → `MAPE_enp1s0`, cut so that the bucket
/// chains (`<chain>_t63`) stay within iptables' 28 characters.
pub fn chain_for(table: &str) -> String {
    let rest = table.strip_prefix("mape_").unwrap_or(table);
    let mut c = format!("MAPE_{rest}");
    // XT_EXTENSION_MAXNAMELEN is 29 including the NUL; 4 more for `_t63`.
    c.truncate(24);
    c
}

/// The whole `iptables-restore` file.
pub fn restore_file(p: &IptablesParams) -> Result<String, SnatError> {
    let plan = SnatPlan::new(p.mapping, p.exclude)?;
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
    let mut rules = vec![format!("-A POSTROUTING -o {dev} -j {chain}")];
    match (&plan, plan.spread(Backend::Iptables)) {
        (SnatPlan::Shared { addr, ranges, .. }, Some(spread)) => {
            // Round-robin slots (one per range, or in proportion to the ranges' ports).
            let targets = spread.slots.targets(ranges);
            let n = targets.len();
            let b = spread.buckets;
            let _ = writeln!(
                s,
                "# New flows to one destination take the {n} round-robin slots (port ranges) in turn: HMARK puts the destination"
            );
            let _ = writeln!(
                s,
                "# (address, port) in one of {b} buckets; in a bucket's chain rule i of {n} matches every"
            );
            let _ = writeln!(
                s,
                "# ({n}-i)th flow that reaches it and the last rule takes the rest."
            );
            let cascade = |rules: &mut Vec<String>, from: &str, proto: &str| {
                for (i, r) in targets.iter().enumerate() {
                    let to = to_source(*addr, r);
                    rules.push(if i + 1 < n {
                        format!(
                            "-A {from} -p {proto} -m statistic --mode nth --every {} --packet 0 -j SNAT --to-source {to}",
                            n - i
                        )
                    } else {
                        format!("-A {from} -p {proto} -j SNAT --to-source {to}")
                    });
                }
            };
            for (proto, tag, rnd) in [("tcp", 't', RND_TCP), ("udp", 'u', RND_UDP)] {
                if b == 1 {
                    // One counter: no hash, one chain.
                    let bc = format!("{chain}_{tag}0");
                    let _ = writeln!(s, ":{bc} - [0:0]");
                    rules.push(format!("-A {chain} -p {proto} -j {bc}"));
                    continue;
                }
                rules.push(format!(
                    "-A {chain} -p {proto} -j HMARK --hmark-tuple dst,dport --hmark-mod {b} --hmark-offset {MARK_BASE:#x} --hmark-rnd {rnd:#x}"
                ));
                for i in 0..b {
                    let bc = format!("{chain}_{tag}{i}");
                    let _ = writeln!(s, ":{bc} - [0:0]");
                    rules.push(format!(
                        "-A {chain} -p {proto} -m mark --mark {:#x} -j {bc}",
                        MARK_BASE + u32::from(i)
                    ));
                }
            }
            let ic = format!("{chain}_i");
            let _ = writeln!(s, ":{ic} - [0:0]");
            rules.push(format!("-A {chain} -p icmp -j {ic}"));
            // Protocols without ports cannot be told apart by the BR on a shared address; they
            // still leave with our address rather than a private one.
            rules.push(format!("-A {chain} -j SNAT --to-source {addr}"));
            for (proto, tag) in [("tcp", 't'), ("udp", 'u')] {
                for i in 0..b {
                    cascade(&mut rules, &format!("{chain}_{tag}{i}"), proto);
                }
            }
            cascade(&mut rules, &ic, "icmp");
        }
        (SnatPlan::Shared { addr, .. }, None) | (SnatPlan::Single(addr), _) => {
            rules.push(format!("-A {chain} -j SNAT --to-source {addr}"))
        }
        (SnatPlan::Prefix { first, last }, _) => {
            rules.push(format!("-A {chain} -j SNAT --to-source {first}-{last}"));
        }
    }
    for r in rules {
        let _ = writeln!(s, "{r}");
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

fn to_source(v4: std::net::Ipv4Addr, r: &PortSet) -> String {
    if r.first == r.last {
        format!("{v4}:{}", r.first)
    } else {
        format!("{v4}:{}-{}", r.first, r.last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::v6plus;

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
            .filter(|l| l.starts_with("-A MAPE_wan_t7 -p tcp "))
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
        assert!(chain_for("mape_abcdefghijklmnopqrstuvwxyz0123").len() + "_t63".len() <= 28);
    }
}
