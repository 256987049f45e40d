//! The same SNAT and MSS clamping as [`crate::render::nft`], for hosts that still use iptables:
//! an `iptables-restore` file. It formats the engine's [`SnatPlan`] the same way:
//!
//! - per protocol (TCP, UDP), a walk per destination ([`walk`]): each destination address's
//!   position in the round robin is kept in xt_recent lists, one per position; a walk chain
//!   finds it (`-m recent --rcheck`), and the chain of position k moves the address to the next
//!   list (`--remove`, `--set`) and SNATs into slot k's range. So the flows to one destination
//!   take every range in turn, whatever else the LAN does. Unlike nft's sets, xt_recent keys by
//!   address alone (a host's ports share one walk) and keeps 100 addresses a list by default;
//! - lines with more slots than [`crate::engine::MAX_WALK_SLOTS`] get buckets instead: `HMARK`
//!   hashes the destination address and port into one of the plan's buckets (fewer for lines
//!   with many port sets, so that buckets × slots stays within
//!   [`crate::engine::SLOT_BUDGET`]), one rule per bucket jumps to that bucket's chain, and a
//!   bucket chain spreads new flows over the port ranges with a cascade of `statistic` matches:
//!   of N ranges, rule i matches every (N−i)th packet that reaches it and the last takes what is
//!   left. Each rule counts only the packets that got past the rules before it (the counter is
//!   per rule), so flow k of the bucket lands on range k mod N: exact round robin per bucket.
//!   HMARK sets the packet mark (only of the first packet of a new flow leaving through the
//!   tunnel, in nat POSTROUTING, after routing): a mark set earlier for that packet is replaced;
//! - ICMP takes one cascade: SNAT with a port range on `-p icmp` maps the echo identifier into
//!   the range, which keeps IPv4 ping working on a shared address.
//!
//! The nat table sees only the first packet of a connection, so "packet" here means "new flow".
//! Within the chosen range the kernel picks a free port.
//!
//! The file holds whole `nat` and `mangle` tables: `iptables-restore FILE` replaces those two
//! tables atomically (the `filter` table is untouched), so applying it twice equals once. With
//! `--noflush` the jumps from the built-in chains would pile up instead, so the header says to
//! merge by hand when other nat/mangle rules must stay.

use std::fmt::Write as _;

use crate::engine::{Backend, Mapping, PortSet, SnatError, SnatPlan, Walk};

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

/// The chain name for a table name: `mape_enp1s0` → `MAPE_enp1s0`, cut so that the walk's
/// chains (`<chain>_t511`) stay within iptables' 28 characters.
pub fn chain_for(table: &str) -> String {
    let rest = table.strip_prefix("mape_").unwrap_or(table);
    let mut c = format!("MAPE_{rest}");
    // XT_EXTENSION_MAXNAMELEN is 29 including the NUL; 5 more for `_t511`.
    c.truncate(23);
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
    let mut walks = Vec::new();
    match (&plan, plan.spread(Backend::Iptables)) {
        (SnatPlan::Shared { addr, ranges, .. }, Some(spread)) => {
            // Round-robin slots (one per range, or in proportion to the ranges' ports).
            let targets = spread.slots.targets(ranges);
            let n = targets.len();
            // Bucket counters per protocol: none for a walk per destination.
            let b = spread.walk.buckets();
            if spread.walk == Walk::PerDestination {
                let _ = writeln!(
                    s,
                    "# New flows to one destination address take the {n} round-robin slots (port ranges) in turn: each"
                );
                let _ = writeln!(
                    s,
                    "# address's position is kept in xt_recent lists (one per position; /proc/net/xt_recent/{chain}_t*)."
                );
            } else {
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
            }
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
                if spread.walk == Walk::PerDestination {
                    let entry = walk(&mut s, &mut walks, chain, tag, proto, *addr, &targets);
                    rules.push(format!("-A {chain} -p {proto} -j {entry}"));
                    continue;
                }
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
            rules.append(&mut walks);
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

/// How long xt_recent keeps a destination's position after its last new flow, in seconds.
/// Longer than nft's [`crate::render::nft::WALK_TIMEOUT`]: xt_recent lists are small and evict
/// the least recently seen address instead of sizing a hash table up front.
pub const WALK_SECONDS: u32 = 600;

/// The walk per destination address of `proto` over the slots `targets` (as nft's, see
/// [`crate::render::nft`]): chains declared into `s`, rules pushed to `rules`; returns the chain
/// the protocol jumps to. A destination at position k > 0 is in the xt_recent list
/// `<chain>_<tag><k>`, which is also the name of the chain of position k; `<chain>_<tag>any`
/// lists every destination seen. xt_recent keys by address alone (not the port), and a list
/// holds 100 addresses by default (module parameter `ip_list_tot`), dropping the least recently
/// seen: a destination that falls out starts again at position 0.
fn walk(
    s: &mut String,
    rules: &mut Vec<String>,
    chain: &str,
    tag: char,
    proto: &str,
    addr: std::net::Ipv4Addr,
    targets: &[PortSet],
) -> String {
    let n = targets.len();
    let entry = format!("{chain}_{tag}w");
    let any = format!("{chain}_{tag}any");
    let recent = |list: &str, op: &str| format!("-m recent --name {list} --rdest {op}");
    let check = format!("--rcheck --seconds {WALK_SECONDS}");
    let _ = writeln!(s, ":{entry} - [0:0]");
    for k in 0..n {
        let _ = writeln!(s, ":{chain}_{tag}{k} - [0:0]");
    }
    rules.push(format!(
        "-A {entry} -m recent ! {check} --name {any} --rdest -j {chain}_{tag}0"
    ));
    for k in 1..n {
        let list = format!("{chain}_{tag}{k}");
        rules.push(format!("-A {entry} {} -j {list}", recent(&list, &check)));
    }
    rules.push(format!("-A {entry} -j {chain}_{tag}0"));
    for (k, r) in targets.iter().enumerate() {
        let step = format!("{chain}_{tag}{k}");
        if k > 0 {
            rules.push(format!("-A {step} {}", recent(&step, "--remove")));
        }
        if k + 1 < n {
            let next = format!("{chain}_{tag}{}", k + 1);
            rules.push(format!("-A {step} {}", recent(&next, "--set")));
        }
        rules.push(format!("-A {step} {}", recent(&any, "--set")));
        rules.push(format!(
            "-A {step} -p {proto} -j SNAT --to-source {}",
            to_source(addr, r)
        ));
    }
    entry
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

    fn v6plus_file() -> String {
        restore_file(&IptablesParams {
            chain: "MAPE_wan",
            ifname: "map-wan",
            mapping: &v6plus(),
            exclude: &[],
            origin: "t",
        })
        .unwrap()
    }

    fn sets() -> Vec<String> {
        v6plus()
            .port_sets()
            .map(|p| format!("106.72.63.108:{}-{}", p.first, p.last))
            .collect()
    }

    /// Simulates the ICMP cascade as the kernel runs it (one counter per rule) and checks that
    /// flows are spread evenly, in order, over all sets.
    #[test]
    fn cascade_is_round_robin() {
        let s = v6plus_file();
        let rules: Vec<(Option<u32>, String)> = s
            .lines()
            .filter(|l| l.starts_with("-A MAPE_wan_i -p icmp "))
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
        let sets = sets();
        for (k, to) in got.iter().enumerate() {
            assert_eq!(to, &sets[k % 15], "flow {k}");
        }
    }

    /// Runs the walk chains as the kernel would, with xt_recent lists, for new flows to many
    /// destination addresses interleaved at random: each address takes every set in turn.
    #[test]
    fn each_destination_walks_every_set() {
        let s = v6plus_file();
        assert!(!s.contains("HMARK"));
        let mut chains: std::collections::HashMap<String, Vec<String>> = Default::default();
        for l in s.lines() {
            if let Some(r) = l.strip_prefix("-A ") {
                let (c, rule) = r.split_once(' ').unwrap();
                chains.entry(c.into()).or_default().push(rule.into());
            }
        }
        let entry = chains["MAPE_wan"]
            .iter()
            .find(|r| r.starts_with("-p udp -j "))
            .map(|r| r.rsplit(' ').next().unwrap().to_string())
            .unwrap();
        assert_eq!(entry, "MAPE_wan_uw");
        let mut lists: std::collections::HashSet<(String, u32)> = Default::default();
        let mut at: std::collections::HashMap<u32, usize> = Default::default();
        let mut seed = 0x9e37_79b9_u64;
        let sets = sets();
        for _ in 0..20 * 45 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let d = (seed % 20) as u32;
            let mut chain = entry.clone();
            let to = 'flow: loop {
                for rule in &chains[&chain] {
                    let w: Vec<&str> = rule.split(' ').collect();
                    let list = w.iter().position(|x| *x == "--name").map(|i| w[i + 1]);
                    let jump = w.iter().position(|x| *x == "-j").map(|i| w[i + 1]);
                    let matched = match list {
                        None => true,
                        Some(l) => {
                            let key = (l.to_string(), d);
                            if rule.contains("--remove") {
                                lists.remove(&key)
                            } else if rule.contains("--set") {
                                lists.insert(key);
                                true
                            } else {
                                lists.contains(&key) != rule.contains(" ! --rcheck")
                            }
                        }
                    };
                    match (matched, jump) {
                        (true, Some("SNAT")) => break 'flow w.last().unwrap().to_string(),
                        (true, Some(c)) => {
                            chain = c.to_string();
                            continue 'flow;
                        }
                        _ => {}
                    }
                }
                panic!("chain {chain} ends without SNAT");
            };
            let k = at.entry(d).or_insert(0);
            assert_eq!(to, sets[*k % 15], "destination {d}, flow {k}");
            *k += 1;
        }
    }

    #[test]
    fn chain_names_fit() {
        assert_eq!(chain_for("mape_enp1s0"), "MAPE_enp1s0");
        assert!(chain_for("mape_abcdefghijklmnopqrstuvwxyz0123").len() + "_t511".len() <= 28);
    }
}
