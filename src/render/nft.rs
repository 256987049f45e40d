//! The nftables ruleset (SNAT into the port sets, MSS clamping, counters) and its reader.
//!
//! One table of our own per interface (`table ip mape_<iface>`), never fw4's `inet fw4`, so a
//! firewall reload leaves it alone. The script replaces the table atomically: `nft -f` runs it
//! as one transaction (add, delete, re-create), and applying it twice equals applying it once.
//!
//! SNAT formats the engine's [`SnatPlan`] as its [`Spread`] says. On a shared address
//! (docs/port-allocation.md) with up to [`MAX_RANGE_CHAINS`](crate::engine::MAX_RANGE_CHAINS)
//! port ranges (every built-in ISP):
//! - one chain per port range, `set_<i>`, with `snat ip to <v4>:<lo>-<hi>` for TCP, UDP and
//!   ICMP (ICMP maps the echo identifier into the range: without it IPv4 ping breaks on a shared
//!   address). The kernel picks a free port inside the range;
//! - per protocol, a walk per destination ([`walk_chains`]): the position of each destination
//!   (`ip daddr . tcp dport`) in the round robin is kept in the kernel, in dynamic sets (one
//!   per position, `tcp_at<k>`); `tcp_walk` finds it, the chain of position k (`tcp_step<k>`)
//!   moves the destination to the next set from the packet path and goes to the set chain of
//!   slot k (one slot per range, or slots in proportion to the ranges' ports when
//!   `ports_exclude` cut some short). So the flows to one destination take every range in
//!   turn, and flows to other destinations never move it. ICMP echo takes one counter
//!   (`numgen inc mod <slots> vmap`).
//!   Lines with more than [`MAX_WALK_SLOTS`](crate::engine::MAX_WALK_SLOTS) slots get what
//!   mape-rs used before: a round-robin chain per destination bucket (`jhash ip daddr . tcp
//!   dport mod <buckets>`), fewer buckets as buckets × slots would pass
//!   [`SLOT_BUDGET`](crate::engine::SLOT_BUDGET).
//!
//! With more ranges (PSID offset 11 and up: at most 16 ports each) chains would cost far more
//! than one map entry per port, so one chain `ports` holds one map of every port, shared by TCP,
//! UDP and ICMP: `meta l4proto { tcp, udp, icmp } snat ip to <v4> : numgen inc mod <ports> map
//! { 0 : <port>, … }`, one counter. The script stays below [`MAX_SCRIPT`] for every legal rule.
//!
//! The chain runs at `srcnat - 1`, before fw4's masquerade, and the first NAT binding made for a
//! connection wins. Everything here is nft syntax older than nftables 1.0.2 (OpenWrt 22.03):
//! both shapes load and run with Debian's nftables 0.9.8, 1.0.6 and 1.1.3
//! (docs/port-allocation.md).
//!
//! [`read_table`] reads `nft list table` (or this script) back for `mape status`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::engine::Mapping;
use crate::engine::{Backend, PortSet, Slots, SnatError, SnatPlan, Spread, TableReadBack, Walk};

/// The table's named counters (their names live in the engine, beside the plan they count,
/// so that `mape status` can show them without importing this module).
pub use crate::engine::counters::{COUNTERS, MSS_CLAMP, SNAT_ICMP, SNAT_OTHER, SNAT_TCP, SNAT_UDP};
/// The named set that lists the `ports_exclude` ranges (read back by `mape status`).
pub const EXCLUDE_SET: &str = "ports_exclude";
/// The largest script [`ruleset`] writes for any legal rule, in bytes (a line with 32767 port
/// sets writes about 480 KB: one map entry per port). Tests hold the script to it.
pub const MAX_SCRIPT: usize = 640 * 1024;
/// The chain with the single-port map (lines with very many port sets).
const PORT_CHAIN: &str = "ports";
/// The chain with the SNAT of protocols without ports (the address alone).
const OTHER_CHAIN: &str = "other";

/// jhash seeds of the TCP and UDP buckets: different, so that a TCP and a UDP destination on
/// the same address and port (HTTPS and QUIC) do not share a counter.
const SEED_TCP: u32 = 0x6d61_7065; // "mape"
const SEED_UDP: u32 = 0x7564_7030; // "udp0"

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

/// The whole script for `nft -f`.
pub fn ruleset(p: &NftParams) -> Result<String, SnatError> {
    let plan = SnatPlan::new(p.mapping, p.exclude)?;
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
    for c in COUNTERS {
        let _ = writeln!(s, "\tcounter {c} {{ }}");
    }
    let excluded: &[PortSet] = match &plan {
        SnatPlan::Shared { excluded, .. } => excluded,
        _ => &[],
    };
    let _ = writeln!(s, "\tset {EXCLUDE_SET} {{");
    let _ = writeln!(s, "\t\ttype inet_service");
    let _ = writeln!(s, "\t\tflags interval");
    if !excluded.is_empty() {
        let items: Vec<String> = excluded.iter().map(|r| ports(r, "-")).collect();
        let _ = writeln!(s, "\t\telements = {{ {} }}", items.join(", "));
    }
    let _ = writeln!(s, "\t}}");
    let mut srcnat = Vec::new();
    let addrs = match (&plan, plan.spread(Backend::Nft)) {
        (SnatPlan::Shared { addr, ranges, .. }, Some(spread)) => {
            shared(&mut s, &mut srcnat, dev, *addr, ranges, &spread);
            (*addr, *addr)
        }
        (SnatPlan::Shared { addr, .. }, None) | (SnatPlan::Single(addr), _) => (*addr, *addr),
        (SnatPlan::Prefix { first, last }, _) => (*first, *last),
    };
    let other = FillRule {
        proto: None,
        addrs,
        ports: None,
    };
    // Protocols without ports cannot be told apart by the BR on a shared address; they still
    // leave with our address rather than a private one. The address sits in a chain of its own,
    // like the port ranges, so that a new mapping only refills chains ([`update_script`]).
    let _ = writeln!(s, "\tchain {OTHER_CHAIN} {{");
    let _ = writeln!(s, "\t\t{other}");
    let _ = writeln!(s, "\t}}");
    srcnat.push(format!(
        "oifname \"{dev}\" counter name \"{SNAT_OTHER}\" goto {OTHER_CHAIN}"
    ));
    let _ = writeln!(s, "\tchain srcnat {{");
    let _ = writeln!(
        s,
        "\t\ttype nat hook postrouting priority srcnat - 1; policy accept;"
    );
    for r in srcnat {
        let _ = writeln!(s, "\t\t{r}");
    }
    let _ = writeln!(s, "\t}}");
    // Clamp the MSS of SYNs both ways to the route MTU (the tunnel's), so TCP never needs
    // fragmentation or PMTUD through the tunnel.
    let _ = writeln!(s, "\tchain mssclamp {{");
    let _ = writeln!(
        s,
        "\t\ttype filter hook forward priority mangle; policy accept;"
    );
    for dir in ["oifname", "iifname"] {
        let _ = writeln!(
            s,
            "\t\t{dir} \"{dev}\" tcp flags & (syn | rst) == syn counter name \"{MSS_CLAMP}\" tcp option maxseg size set rt mtu"
        );
    }
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "}}");
    Ok(s)
}

/// The chains of a shared address (written into `s`) and its `srcnat` rules (pushed to
/// `srcnat`), as `spread` says.
fn shared(
    s: &mut String,
    srcnat: &mut Vec<String>,
    dev: &str,
    addr: Ipv4Addr,
    ranges: &[PortSet],
    spread: &Spread,
) {
    let n = spread.slots.len();
    match &spread.slots {
        Slots::Ranges(slots) => {
            for (i, r) in ranges.iter().enumerate() {
                let _ = writeln!(s, "\tchain set_{i} {{");
                for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
                    let rule = FillRule {
                        proto: Some(proto),
                        addrs: (addr, addr),
                        ports: Some(*r),
                    };
                    let _ = writeln!(s, "\t\t{rule}");
                }
                let _ = writeln!(s, "\t}}");
            }
            let to_sets = elements(slots.iter().map(|i| format!("goto set_{i}")));
            for (proto, c, seed) in [("tcp", SNAT_TCP, SEED_TCP), ("udp", SNAT_UDP, SEED_UDP)] {
                let head = format!("oifname \"{dev}\" meta l4proto {proto} counter name \"{c}\"");
                let b = match spread.walk {
                    Walk::PerDestination => {
                        let entry = walk_chains(s, proto, slots);
                        srcnat.push(format!("{head} goto {entry}"));
                        continue;
                    }
                    Walk::Buckets(b) => b,
                };
                if b == 1 {
                    srcnat.push(format!("{head} numgen inc mod {n} vmap {to_sets}"));
                    continue;
                }
                for i in 0..b {
                    let _ = writeln!(s, "\tchain {proto}_{i} {{");
                    let _ = writeln!(s, "\t\tnumgen inc mod {n} vmap {to_sets}");
                    let _ = writeln!(s, "\t}}");
                }
                let buckets = elements((0..b).map(|i| format!("goto {proto}_{i}")));
                srcnat.push(format!(
                    "{head} jhash ip daddr . {proto} dport mod {b} seed {seed:#010x} vmap {buckets}"
                ));
            }
            srcnat.push(format!(
                "oifname \"{dev}\" meta l4proto icmp counter name \"{SNAT_ICMP}\" numgen inc mod {n} vmap {to_sets}"
            ));
        }
        Slots::Ports(list) => {
            // One anonymous map of every port, in one chain that TCP, UDP and ICMP share: a
            // chain per range would cost far more (docs/port-allocation.md).
            let map = elements(list.iter().map(u16::to_string));
            let _ = writeln!(s, "\tchain {PORT_CHAIN} {{");
            let _ = writeln!(
                s,
                "\t\tmeta l4proto {{ tcp, udp, icmp }} snat ip to {addr} : numgen inc mod {n} map {map}"
            );
            let _ = writeln!(s, "\t}}");
            for (proto, c) in [("tcp", SNAT_TCP), ("udp", SNAT_UDP), ("icmp", SNAT_ICMP)] {
                srcnat.push(format!(
                    "oifname \"{dev}\" meta l4proto {proto} counter name \"{c}\" goto {PORT_CHAIN}"
                ));
            }
        }
    }
}

/// How long a destination's position in its walk is kept after its last new flow. A destination
/// that comes back later starts again, at a slot of the shared counter.
pub const WALK_TIMEOUT: &str = "2m";
/// Destinations `<proto>_any` holds at most.
pub const WALK_SIZE_ANY: u32 = 4096;
/// Destinations each position's set holds at most.
pub const WALK_SIZE_AT: u32 = 256;

/// The chains and dynamic sets of the per-destination walk of `proto` over `slots` (slot k goes
/// to `set_<slots[k]>`), written into `s`; returns the chain `srcnat` goes to.
///
/// A destination's (`ip daddr . <proto> dport`) position k is kept in the kernel: at k > 0 it
/// is in the dynamic set `<proto>_at<k>`, at 0 in none, and `<proto>_any` holds every
/// destination seen within [`WALK_TIMEOUT`]. `<proto>_walk` starts a destination that is not in
/// `_any` (a new one: most flows) at the slot a shared counter gives (`numgen inc`), so that
/// the walks of unrelated destinations do not all begin at slot 0; it finds the others' sets in
/// order. The chain of position k, `<proto>_step<k>`, moves the destination to the set of
/// k + 1 (mod n) from the packet path and goes to the set chain of slot k. So every
/// destination walks every slot in turn, and flows to other destinations never move it.
///
/// One set per position, not one per bit of k: a packet-path `delete` only marks the element
/// dead until the set is cleaned up, and an `add` of the same destination soon after fails
/// (measured: most re-adds fail within microseconds, some after a millisecond), which made a
/// binary count stall (docs/port-allocation.md). Here a destination comes back to a set it
/// left only n - 1 flows later, and `_any` is only added to and refreshed (it expires).
///
/// The sets are small on purpose: the kernel sizes a set's hash table for its `size` up front
/// (65535, nft's default, took 258 MB for OCN's 126 sets). When a set is full its `add` or
/// `update` fails, the rule stops there and the next one takes the same slot: a destination
/// stays where it is, or, not in `_any`, takes the shared counter again next time.
fn walk_chains(s: &mut String, proto: &str, slots: &[usize]) -> String {
    let n = slots.len();
    if n == 1 {
        return format!("set_{}", slots[0]);
    }
    let key = format!("ip daddr . {proto} dport");
    let set = |s: &mut String, name: &str, size: u32| {
        let _ = writeln!(s, "\tset {name} {{");
        let _ = writeln!(s, "\t\ttype ipv4_addr . inet_service");
        let _ = writeln!(s, "\t\tsize {size}");
        let _ = writeln!(s, "\t\tflags dynamic,timeout");
        let _ = writeln!(s, "\t\ttimeout {WALK_TIMEOUT}");
        let _ = writeln!(s, "\t}}");
    };
    set(s, &format!("{proto}_any"), WALK_SIZE_ANY);
    for k in 1..n {
        set(s, &format!("{proto}_at{k}"), WALK_SIZE_AT);
    }
    for (k, slot) in slots.iter().enumerate() {
        let mut ops = Vec::new();
        if k + 1 < n {
            ops.push(format!("add @{proto}_at{} {{ {key} }}", k + 1));
        }
        ops.push(format!("update @{proto}_any {{ {key} }}"));
        if k > 0 {
            ops.push(format!("delete @{proto}_at{k} {{ {key} }}"));
        }
        let _ = writeln!(s, "\tchain {proto}_step{k} {{");
        let _ = writeln!(s, "\t\t{} goto set_{slot}", ops.join(" "));
        let _ = writeln!(s, "\t\tgoto set_{slot}");
        let _ = writeln!(s, "\t}}");
    }
    let walk = format!("{proto}_walk");
    let steps = elements((0..n).map(|k| format!("goto {proto}_step{k}")));
    let _ = writeln!(s, "\tchain {walk} {{");
    let _ = writeln!(
        s,
        "\t\t{key} != @{proto}_any numgen inc mod {n} vmap {steps}"
    );
    for k in 1..n {
        let _ = writeln!(s, "\t\t{key} @{proto}_at{k} goto {proto}_step{k}");
    }
    let _ = writeln!(s, "\t\tgoto {proto}_step0");
    let _ = writeln!(s, "\t}}");
    walk
}

/// The script that removes our table (and succeeds if it is already gone).
pub fn delete_script(table: &str) -> String {
    format!("add table ip {table}\ndelete table ip {table}\n")
}

/// Whether chain `name` of our table holds the mapping (the address and the port ranges): the
/// only chains that differ between two mappings of the same shape.
fn is_fill_chain(name: &str) -> bool {
    name == OTHER_CHAIN
        || name == PORT_CHAIN
        || name
            .strip_prefix("set_")
            .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
}

/// A script of [`ruleset`], split: the table name, everything but the comments and the rules
/// of the fill chains (the frame), and the fill chains with their rules, in order.
struct Split<'a> {
    table: &'a str,
    frame: Vec<&'a str>,
    fills: Vec<(&'a str, Vec<&'a str>)>,
}

fn split(script: &str) -> Option<Split<'_>> {
    let mut out = Split {
        table: "",
        frame: Vec::new(),
        fills: Vec::new(),
    };
    let mut fill: Option<(&str, Vec<&str>)> = None;
    for line in script.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(t) = line.strip_prefix("table ip ") {
            out.table = t.strip_suffix(" {")?;
        }
        if let Some((name, rules)) = fill.as_mut() {
            if line == "\t}" {
                out.fills.push((name, std::mem::take(rules)));
                fill = None;
            } else {
                rules.push(line.trim());
            }
            continue;
        }
        out.frame.push(line);
        if let Some(name) = line
            .strip_prefix("\tchain ")
            .and_then(|l| l.strip_suffix(" {"))
            .filter(|n| is_fill_chain(n))
        {
            fill = Some((name, Vec::new()));
        }
    }
    (!out.table.is_empty() && fill.is_none()).then_some(out)
}

/// The script that turns the loaded table of script `old` into that of script `new` (both
/// from [`ruleset`]) by refilling the chains that hold the mapping: `flush chain` and the rules
/// again, in one transaction like the whole script. `None` unless everything else is the same
/// (table, tunnel, number of ranges, buckets, exclusions). About a third of the whole script's
/// `nft -f` time (the bucket maps stay as they are) and the counters keep counting; it fails
/// as a whole if the table or a chain is gone, and the caller then loads `new` itself.
pub fn update_script(old: &str, new: &str) -> Option<String> {
    let (a, b) = (split(old)?, split(new)?);
    // The frame holds the table's lines and every chain's header, the fill chains' included.
    if a.frame != b.frame {
        return None;
    }
    Some(refill_text(
        new,
        b.table,
        b.fills.iter().map(|(c, r)| (*c, r)),
    ))
}

/// A refill that makes the running table of script `old` SNAT into the mapping of script `new`
/// when their shapes differ (another rule with the same BR, e.g. 63 port sets, then 15): each
/// `set_<i>` chain of `old` gets the rules of `new`'s range `i mod n` (`n`: `new`'s ranges),
/// `other` gets `new`'s. Every connection then takes one of `new`'s port sets, though unevenly
/// (and only `old`'s count of them when `new` has more) until `new` is loaded whole: a bridge
/// that keeps a whole `nft -f` off the way back to IPv4. `None` unless both have chains per
/// range, in the same table and on the same tunnel.
pub fn bridge_script(old: &str, new: &str) -> Option<String> {
    let (a, b) = (split(old)?, split(new)?);
    if a.table != b.table || tunnel(&a.frame)? != tunnel(&b.frame)? {
        return None;
    }
    let fill = |name: &str| b.fills.iter().find(|(c, _)| *c == name).map(|(_, r)| r);
    let ranges: Vec<&Vec<&str>> = (0..).map_while(|i| fill(&format!("set_{i}"))).collect();
    let mut chains = Vec::new();
    for (chain, _) in &a.fills {
        let rules = match chain.strip_prefix("set_") {
            Some(i) => *ranges.get(i.parse::<usize>().ok()? % ranges.len().max(1))?,
            None if *chain == OTHER_CHAIN => fill(OTHER_CHAIN)?,
            None => return None,
        };
        chains.push((*chain, rules));
    }
    Some(refill_text(new, b.table, chains.into_iter()))
}

/// The tunnel device the `srcnat` rules of a script's frame name.
fn tunnel<'a>(frame: &[&'a str]) -> Option<&'a str> {
    frame.iter().find_map(|l| {
        let rest = l.split_once("oifname \"")?.1;
        rest.split_once('"').map(|x| x.0)
    })
}

/// A refill script: the comments of `new`, then per chain `flush chain` and its rules.
fn refill_text<'a>(
    new: &str,
    t: &str,
    chains: impl Iterator<Item = (&'a str, &'a Vec<&'a str>)>,
) -> String {
    let mut s = String::new();
    for line in new.lines().take_while(|l| l.starts_with('#')) {
        let _ = writeln!(s, "{line}");
    }
    for (chain, rules) in chains {
        let _ = writeln!(s, "flush chain ip {t} {chain}");
        for r in rules {
            let _ = writeln!(s, "add rule ip {t} {chain} {r}");
        }
    }
    s
}

/// A protocol that a rule of a fill chain matches first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    const ALL: [(Proto, &'static str); 3] = [
        (Proto::Tcp, "tcp"),
        (Proto::Udp, "udp"),
        (Proto::Icmp, "icmp"),
    ];

    fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(p, _)| *p == self)
            .map_or("", |x| x.1)
    }
}

/// One rule of a chain that holds the mapping (`set_<i>`, `other`):
/// `[meta l4proto <p>] snat ip to <a>[-<b>][:<lo>[-<hi>]]`, written by [`ruleset`] (its
/// `Display`) and read back from a refill by [`read_update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FillRule {
    pub proto: Option<Proto>,
    /// The first and last address (the same for one).
    pub addrs: (Ipv4Addr, Ipv4Addr),
    pub ports: Option<PortSet>,
}

impl std::fmt::Display for FillRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(p) = self.proto {
            write!(f, "meta l4proto {} ", p.name())?;
        }
        let (a, b) = self.addrs;
        write!(f, "snat ip to {a}")?;
        if b != a {
            write!(f, "-{b}")?;
        }
        if let Some(r) = &self.ports {
            write!(f, ":{}", ports(r, "-"))?;
        }
        Ok(())
    }
}

impl FillRule {
    /// The rule its `Display` wrote, exactly; `None` for anything else.
    fn parse(s: &str) -> Option<FillRule> {
        let (proto, rest) = match s.strip_prefix("meta l4proto ") {
            Some(r) => {
                let (name, rest) = r.split_once(' ')?;
                let p = Proto::ALL.iter().find(|(_, n)| *n == name)?.0;
                (Some(p), rest)
            }
            None => (None, s),
        };
        let target = rest.strip_prefix("snat ip to ")?;
        let (addrs, ports) = match target.split_once(':') {
            Some((a, p)) => (a, Some(parse_range(p).filter(|r| ports(r, "-") == p)?)),
            None => (target, None),
        };
        let (a, b) = addrs.split_once('-').unwrap_or((addrs, addrs));
        let rule = FillRule {
            proto,
            addrs: (a.parse().ok()?, b.parse().ok()?),
            ports,
        };
        (rule.to_string() == s).then_some(rule)
    }
}

/// A refill of [`update_script`], read back: the table, and each chain with its new rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill<'a> {
    pub table: &'a str,
    pub chains: Vec<(&'a str, Vec<FillRule>)>,
}

/// Reads a script of [`update_script`] back, for a loader that does not run `nft` (the handler
/// sends it over netlink); `None` if a line is not a `flush chain` or a [`FillRule`] of ours
/// (the single-port map of very many port sets): that script goes to `nft`.
pub fn read_update(script: &str) -> Option<Refill<'_>> {
    let mut out = Refill {
        table: "",
        chains: Vec::new(),
    };
    for line in script.lines().filter(|l| !l.starts_with('#')) {
        if let Some(rest) = line.strip_prefix("flush chain ip ") {
            let (t, c) = rest.split_once(' ')?;
            if !out.table.is_empty() && out.table != t {
                return None;
            }
            out.table = t;
            out.chains.push((c, Vec::new()));
            continue;
        }
        let rest = line.strip_prefix("add rule ip ")?;
        let (t, rest) = rest.split_once(' ')?;
        let (c, rule) = rest.split_once(' ')?;
        let (chain, rules) = out.chains.last_mut()?;
        if t != out.table || c != *chain {
            return None;
        }
        rules.push(FillRule::parse(rule)?);
    }
    (!out.table.is_empty()).then_some(out)
}

/// `lo-hi`, or `lo` for a one-port range (`sep` between the ends).
fn ports(r: &PortSet, sep: &str) -> String {
    if r.first == r.last {
        r.first.to_string()
    } else {
        format!("{}{sep}{}", r.first, r.last)
    }
}

fn elements(values: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = values
        .enumerate()
        .map(|(i, v)| format!("{i} : {v}"))
        .collect();
    format!("{{ {} }}", items.join(", "))
}

fn parse_range(s: &str) -> Option<PortSet> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (first, last) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (first <= last).then_some(PortSet { first, last })
}

/// A tunnel device name as `mape status` may use it in a sysfs path.
fn is_dev_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

/// What one SNAT target says: `A`, `A-B`, `A/len`, `A:lo-hi`, `A . lo-hi`.
enum Target {
    Ports(Ipv4Addr, PortSet),
    Addrs(Ipv4Addr, Ipv4Addr),
}

fn parse_target(spec: &str) -> Option<Target> {
    let spec = spec.trim();
    if let Some((a, p)) = spec.split_once(':').or_else(|| spec.split_once(" . ")) {
        return Some(Target::Ports(a.trim().parse().ok()?, parse_range(p)?));
    }
    if let Some((a, len)) = spec.split_once('/') {
        let a: Ipv4Addr = a.parse().ok()?;
        let len: u32 = len.parse().ok().filter(|l| *l <= 32)?;
        let host = if len == 32 { 0 } else { u32::MAX >> len };
        return Some(Target::Addrs(a, Ipv4Addr::from(u32::from(a) | host)));
    }
    let (a, b) = spec.split_once('-').unwrap_or((spec, spec));
    Some(Target::Addrs(a.parse().ok()?, b.parse().ok()?))
}

/// Reads our table back: `nft list table ip mape_<iface>` (text) or this module's own script.
/// Named counters (a declaration without values counts 0), the tunnel device of the SNAT rules,
/// the `ports_exclude` set, and the SNAT: the port ranges of the `snat … to <v4>:<lo>-<hi>`
/// rules (or of an older mape's `snat … map { i : <v4> . <lo>-<hi>, … }`), else the address or
/// range of a plain `snat to <v4>[-<v4>]`. Never fails: what it does not recognise is left out.
pub fn read_table(text: &str) -> TableReadBack {
    let mut t = TableReadBack::default();
    let mut lines = text.lines().map(str::trim).peekable();
    let mut addr: Option<Ipv4Addr> = None;
    let mut ranges: Vec<PortSet> = Vec::new();
    let mut plain: Option<(Ipv4Addr, Ipv4Addr)> = None;
    let mut excluded: Vec<PortSet> = Vec::new();
    while let Some(line) = lines.next() {
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        if words.len() >= 3 && words[0] == "counter" && words[2] == "{" {
            let name = words[1].to_string();
            if words.get(3) == Some(&"}") {
                t.counters.push((name, 0, 0));
                continue;
            }
            let body = lines.peek().copied().unwrap_or("");
            let b: Vec<&str> = body.split_ascii_whitespace().collect();
            if b.len() >= 4 && b[0] == "packets" && b[2] == "bytes" {
                if let (Ok(p), Ok(by)) = (b[1].parse(), b[3].parse()) {
                    t.counters.push((name, p, by));
                }
            }
            continue;
        }
        if words.len() >= 2 && words[0] == "set" && words[1] == EXCLUDE_SET {
            // The set's lines up to its closing `}`; `elements = { … }` may wrap.
            let mut body = String::new();
            for l in lines.by_ref() {
                if l == "}" {
                    break;
                }
                body.push_str(l);
                body.push(' ');
            }
            if let Some(items) = body
                .split_once("elements = {")
                .and_then(|(_, rest)| rest.split_once('}'))
                .map(|(b, _)| b)
            {
                excluded.extend(items.split(',').filter_map(|i| parse_range(i.trim())));
            }
            continue;
        }
        let Some(at) = words.iter().position(|w| *w == "snat") else {
            if words.contains(&"jhash") || words.contains(&"goto") {
                take_ifname(&mut t, &words);
            }
            continue;
        };
        take_ifname(&mut t, &words);
        if let Some((head, rest)) = line.split_once("map {") {
            // The elements may wrap onto the next lines (nft's listing does that for big maps).
            let mut body = rest.to_string();
            while !body.contains('}') {
                let Some(l) = lines.next() else { break };
                body.push(' ');
                body.push_str(l);
            }
            let body = body.split_once('}').map_or(body.as_str(), |(b, _)| b);
            // A port map names the address before it (`to <v4> : numgen …`, listed as
            // `to <v4>:numgen …`); an older mape's map gives address and ports in each element.
            let port_map = head
                .split_once(" to ")
                .and_then(|(_, to)| to.split(':').next())
                .and_then(|a| a.trim().parse::<Ipv4Addr>().ok());
            for item in body.split(',') {
                let Some((_, target)) = item.split_once(':') else {
                    continue;
                };
                let found = match port_map {
                    Some(a) => parse_range(target.trim()).map(|r| (a, r)),
                    None => match parse_target(target) {
                        Some(Target::Ports(a, r)) => Some((a, r)),
                        _ => None,
                    },
                };
                if let Some((a, r)) = found {
                    addr.get_or_insert(a);
                    ranges.push(r);
                }
            }
            continue;
        }
        let to = words[at..].iter().position(|w| *w == "to");
        match to
            .and_then(|i| words.get(at + i + 1))
            .and_then(|s| parse_target(s))
        {
            Some(Target::Ports(a, r)) => {
                addr.get_or_insert(a);
                ranges.push(r);
            }
            Some(Target::Addrs(a, b)) => {
                plain.get_or_insert((a, b));
            }
            None => {}
        }
    }
    // A single-port map lists every port: adjacent ports are one range again (the ranges of a
    // plan never touch each other: port sets are apart, and exclusions lie between pieces).
    ranges.sort();
    let ranges = ranges.into_iter().fold(Vec::<PortSet>::new(), |mut v, r| {
        match v.last_mut() {
            Some(l) if u32::from(r.first) <= u32::from(l.last) + 1 => l.last = l.last.max(r.last),
            _ => v.push(r),
        }
        v
    });
    excluded.sort();
    excluded.dedup();
    t.snat = match (addr, plain) {
        (Some(addr), _) => Some(SnatPlan::Shared {
            addr,
            ranges,
            excluded,
        }),
        (None, Some((a, b))) if a == b => Some(SnatPlan::Single(a)),
        (None, Some((first, last))) if first < last => Some(SnatPlan::Prefix { first, last }),
        _ => None,
    };
    t
}

fn take_ifname(t: &mut TableReadBack, words: &[&str]) {
    if t.ifname.is_some() {
        return;
    }
    if let Some(i) = words.iter().position(|w| *w == "oifname") {
        let name = words.get(i + 1).map(|w| w.trim_matches('"'));
        t.ifname = name.filter(|n| is_dev_name(n)).map(str::to_string);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::fixtures::{rfc_offset as offset, v6plus};
    use crate::engine::round_robin;

    fn script(m: &Mapping, exclude: &[PortSet]) -> String {
        ruleset(&NftParams {
            table: "mape_wan",
            ifname: "map-wan",
            mapping: m,
            exclude,
            origin: "t",
        })
        .unwrap()
    }

    #[test]
    fn one_chain_per_set_and_a_walk_per_destination() {
        let m = v6plus();
        let s = script(&m, &[]);
        assert!(s.contains(
            "\tchain set_0 {\n\t\tmeta l4proto tcp snat ip to 106.72.63.108:7488-7503\n\t\tmeta l4proto udp snat ip to 106.72.63.108:7488-7503\n\t\tmeta l4proto icmp snat ip to 106.72.63.108:7488-7503\n\t}"
        ));
        assert!(
            s.contains("chain set_14 {\n\t\tmeta l4proto tcp snat ip to 106.72.63.108:64832-64847")
        );
        assert!(!s.contains("chain set_15 "));
        for proto in ["tcp", "udp"] {
            // 15 positions: a dynamic set for each but 0, and _any; a chain per position.
            let decl = |name: &str, size: u32| {
                format!(
                    "\tset {proto}_{name} {{\n\t\ttype ipv4_addr . inet_service\n\t\tsize {size}\n\t\tflags dynamic,timeout\n\t\ttimeout {WALK_TIMEOUT}\n\t}}"
                )
            };
            assert!(s.contains(&decl("any", WALK_SIZE_ANY)));
            for k in 1..15 {
                assert!(s.contains(&decl(&format!("at{k}"), WALK_SIZE_AT)), "at{k}");
            }
            assert!(
                !s.contains(&format!("set {proto}_at0 "))
                    && !s.contains(&format!("set {proto}_at15 "))
            );
            assert_eq!(s.matches(&format!("\tchain {proto}_step")).count(), 15);
            let key = format!("ip daddr . {proto} dport");
            // One rule moves the destination and goes to the slot; if a set is full, it stops
            // and the next one goes to the same slot.
            assert!(s.contains(&format!(
                "\tchain {proto}_step0 {{\n\t\tadd @{proto}_at1 {{ {key} }} update @{proto}_any {{ {key} }} goto set_0\n\t\tgoto set_0\n\t}}"
            )));
            assert!(s.contains(&format!(
                "\tchain {proto}_step3 {{\n\t\tadd @{proto}_at4 {{ {key} }} update @{proto}_any {{ {key} }} delete @{proto}_at3 {{ {key} }} goto set_3\n\t\tgoto set_3\n\t}}"
            )));
            assert!(s.contains(&format!(
                "\tchain {proto}_step14 {{\n\t\tupdate @{proto}_any {{ {key} }} delete @{proto}_at14 {{ {key} }} goto set_14\n\t\tgoto set_14\n\t}}"
            )));
            assert!(s.contains(&format!(
                "\tchain {proto}_walk {{\n\t\t{key} != @{proto}_any numgen inc mod 15 vmap {{ 0 : goto {proto}_step0, 1 : goto {proto}_step1, "
            )));
            assert!(s.contains(&format!(
                " 14 : goto {proto}_step14 }}\n\t\t{key} @{proto}_at1 goto {proto}_step1\n"
            )));
            let line = s
                .lines()
                .find(|l| l.contains(&format!("meta l4proto {proto} counter")))
                .unwrap();
            assert!(line.ends_with(&format!("goto {proto}_walk")), "{line}");
            assert!(!s.contains("jhash"));
        }
        // ICMP echo: one counter.
        assert_eq!(
            s.matches("numgen inc mod 15 vmap { 0 : goto set_0, 1 : goto set_1, ")
                .count(),
            1
        );
        assert!(s.contains("priority srcnat - 1"));
        assert!(s.contains("maxseg size set rt mtu"));
    }

    /// Runs the script's chains as the kernel would for new flows of `proto` to `dests` (one
    /// flow each, in order), with the dynamic sets in `sets` (never full here): for each flow the
    /// walk position it took (the `_step<k>` chain; 0 without one) and the set chain it reached.
    fn run_walk(
        script: &str,
        proto: &str,
        sets: &mut std::collections::HashSet<(String, u32)>,
        dests: &[u32],
    ) -> Vec<(usize, usize)> {
        let mut chains = std::collections::HashMap::new();
        let mut name = None;
        for line in script.lines() {
            let l = line.trim();
            if let Some(n) = l.strip_prefix("chain ").and_then(|r| r.strip_suffix(" {")) {
                name = Some(n.to_string());
                chains.insert(n.to_string(), Vec::new());
            } else if l == "}" {
                name = None;
            } else if let Some(n) = &name {
                chains.get_mut(n).unwrap().push(l.to_string());
            }
        }
        let entry = chains["srcnat"]
            .iter()
            .find(|r| r.contains(&format!("meta l4proto {proto} counter")))
            .and_then(|r| r.rsplit_once("goto ").map(|(_, c)| c.to_string()))
            .unwrap();
        let key = format!("ip daddr . {proto} dport");
        let step = format!("{proto}_step");
        let mut numgen: std::collections::HashMap<String, usize> = Default::default();
        let mut out = Vec::new();
        for d in dests {
            let mut chain = entry.clone();
            let mut pos = 0;
            'flow: for _ in 0..64 {
                if let Some(k) = chain.strip_prefix(&step) {
                    pos = k.parse().unwrap();
                }
                if let Some(set) = chain.strip_prefix("set_") {
                    out.push((pos, set.parse().unwrap()));
                    break 'flow;
                }
                for rule in &chains[&chain] {
                    if let Some(to) = rule.strip_prefix("goto ") {
                        chain = to.to_string();
                        continue 'flow;
                    }
                    if ["add ", "update ", "delete "]
                        .iter()
                        .any(|op| rule.starts_with(op))
                    {
                        // `op @set { key } … goto X`: every statement, then the verdict.
                        let (ops, to) = rule.rsplit_once(" goto ").unwrap();
                        for st in ops.split(" } ").map(|st| st.trim_end_matches(" }")) {
                            let (op, rest) = st.split_once(" @").unwrap();
                            let (set, k) = rest.split_once(" { ").unwrap();
                            assert_eq!(k, key, "{rule}");
                            let e = (set.to_string(), *d);
                            match op {
                                "add" | "update" => sets.insert(e),
                                "delete" => sets.remove(&e),
                                _ => panic!("{rule}"),
                            };
                        }
                        chain = to.to_string();
                        continue 'flow;
                    }
                    let (k, rest) = rule.split_once(" @").unwrap();
                    let (k, absent) = match k.strip_suffix(" !=") {
                        Some(k) => (k, true),
                        None => (k, false),
                    };
                    assert_eq!(k, key, "{rule}");
                    let (set, then) = rest.split_once(' ').unwrap();
                    if sets.contains(&(set.to_string(), *d)) == absent {
                        continue;
                    }
                    if let Some(to) = then.strip_prefix("goto ") {
                        chain = to.to_string();
                        continue 'flow;
                    }
                    // `numgen inc mod N vmap { 0 : goto A, … }`: one counter per rule.
                    let n: usize = then
                        .strip_prefix("numgen inc mod ")
                        .and_then(|r| r.split(' ').next())
                        .and_then(|n| n.parse().ok())
                        .unwrap_or_else(|| panic!("{rule}"));
                    let c = numgen.entry(rule.clone()).or_insert(0);
                    let i = *c % n;
                    *c += 1;
                    let items = then.split_once(" vmap { ").unwrap().1;
                    let item = items.split(", ").nth(i).unwrap();
                    chain = item
                        .trim_end_matches(" }")
                        .rsplit_once("goto ")
                        .unwrap()
                        .1
                        .to_string();
                    continue 'flow;
                }
                panic!("chain {chain} ends without a verdict");
            }
        }
        out
    }

    /// Runs the chains as the kernel does: every destination walks the slots in order from the
    /// slot it started at (a shared counter's), however the flows of many destinations
    /// interleave, for every slot count from 1 to 70 and for v6plus with `ports_exclude`
    /// (weighted slots); new destinations start at different slots.
    #[test]
    fn one_destination_walks_every_set() {
        let mut cases: Vec<(String, Vec<usize>)> = Vec::new();
        for n in 1..=70u32 {
            // n port sets of 16 ports each, as an explicit rule gives them.
            let ranges: Vec<PortSet> = (0..n as u16)
                .map(|i| PortSet {
                    first: 1024 + 32 * i,
                    last: 1024 + 32 * i + 15,
                })
                .collect();
            let slots = round_robin(&ranges);
            let mut s = String::new();
            let mut srcnat = Vec::new();
            let spread = Spread {
                walk: Walk::PerDestination,
                slots: Slots::Ranges(slots.clone()),
            };
            shared(
                &mut s,
                &mut srcnat,
                "map-x",
                Ipv4Addr::LOCALHOST,
                &ranges,
                &spread,
            );
            s.push_str("\tchain srcnat {\n");
            for r in srcnat {
                s.push_str(&format!("\t\t{r}\n"));
            }
            s.push_str("\t}\n");
            cases.push((s, slots));
        }
        let m = v6plus();
        let excluded = [PortSet {
            first: 7488,
            last: 7495,
        }];
        let SnatPlan::Shared { ranges, .. } = SnatPlan::new(&m, &excluded).unwrap() else {
            panic!()
        };
        cases.push((script(&m, &excluded), round_robin(&ranges)));
        let mut seed = 0x2545_f491_u64;
        for (s, slots) in cases {
            let n = slots.len();
            for proto in ["tcp", "udp"] {
                let mut sets = std::collections::HashSet::new();
                // 20 destinations, 3n flows each (three rounds), interleaved at random.
                let mut flows: Vec<u32> = (0..20u32).cycle().take(60 * n).collect();
                for i in (1..flows.len()).rev() {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    flows.swap(i, (seed % (i as u64 + 1)) as usize);
                }
                let got = run_walk(&s, proto, &mut sets, &flows);
                let mut at: std::collections::HashMap<u32, usize> = Default::default();
                let mut starts = std::collections::HashSet::new();
                for (d, (pos, set)) in flows.iter().zip(got) {
                    let k = *at.entry(*d).or_insert_with(|| {
                        starts.insert(pos);
                        pos
                    });
                    assert_eq!(pos, k % n, "n {n} {proto}: destination {d}");
                    assert_eq!(set, slots[pos], "n {n} {proto}: destination {d}");
                    at.insert(*d, k + 1);
                }
                assert!(
                    n == 1 || starts.len() > 1,
                    "n {n}: every walk began at one slot"
                );
            }
        }
    }

    #[test]
    fn counters_are_declared_and_named_by_the_rules() {
        let s = script(&v6plus(), &[]);
        for c in COUNTERS {
            assert!(s.contains(&format!("\tcounter {c} {{ }}")), "{c}");
            assert!(s.contains(&format!("counter name \"{c}\"")), "{c}");
        }
    }

    fn builtin(prefix: &str) -> Mapping {
        use crate::provision::{builtin::IspChoice, resolve, RuleSource};
        resolve(
            &RuleSource::Builtin(IspChoice::Auto),
            prefix.parse().unwrap(),
        )
        .unwrap()
        .mapping
    }

    fn rfc(ea_len: u8, prefix: &str) -> Mapping {
        use crate::engine::{IidFormat, Rule};
        let r = Rule::new(
            "2001:db8::/40".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
            ea_len,
            IidFormat::Rfc7597,
        );
        Mapping::compute(&r, prefix.parse().unwrap()).unwrap()
    }

    /// The table `old`'s script leaves in the kernel after `update` ran on it, written as a
    /// script: each flushed chain holds the rules added to it (what nft does with them).
    fn apply_update(old: &str, update: &str) -> String {
        let mut fills: Vec<(String, Vec<String>)> = Vec::new();
        for l in update.lines().filter(|l| !l.starts_with('#')) {
            let w: Vec<&str> = l.splitn(6, ' ').collect();
            match (w[0], w[1]) {
                ("flush", "chain") => fills.push((w[4].to_string(), Vec::new())),
                ("add", "rule") => {
                    let (c, r) = fills.last_mut().expect("a rule after its flush");
                    assert_eq!(c, w[4], "{l}");
                    r.push(w[5].to_string());
                }
                _ => panic!("unexpected line in an update: {l}"),
            }
        }
        let mut out = String::new();
        let mut skip = false;
        for l in old.lines() {
            if skip {
                skip = l != "\t}";
                if skip {
                    continue;
                }
            }
            out.push_str(l);
            out.push('\n');
            let name = l
                .strip_prefix("\tchain ")
                .and_then(|c| c.strip_suffix(" {"));
            if let Some((_, rules)) = fills.iter().find(|(c, _)| Some(c.as_str()) == name) {
                for r in rules {
                    out.push_str(&format!("\t\t{r}\n"));
                }
                skip = true;
            }
        }
        out
    }

    fn without_comments(s: &str) -> String {
        s.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }

    /// A new mapping of the same shape (a renumbering within the rule: another IPv4 and PSID)
    /// refills the chains that hold the mapping; the table it leaves is the new script's.
    #[test]
    fn update_refills_the_mapping_chains_only() {
        for (a, b) in [
            (
                rfc(16, "2001:db8:12:3400::/56"),
                rfc(16, "2001:db8:13:3600::/56"),
            ),
            (
                builtin("240b:10:3f6c:d400::/56"),
                builtin("240b:11:8000:1200::/56"),
            ),
            (rfc(8, "2001:db8:12::/48"), rfc(8, "2001:db8:13::/48")),
            (offset(12), {
                let mut m = offset(12);
                m.ipv4 = "192.0.2.77".parse().unwrap();
                m
            }),
        ] {
            assert_ne!((a.ipv4, a.ports.psid()), (b.ipv4, b.ports.psid()));
            let (old, new) = (script(&a, &[]), script(&b, &[]));
            let up = update_script(&old, &new).expect("same shape");
            assert_eq!(
                without_comments(&apply_update(&old, &up)),
                without_comments(&new)
            );
            assert!(up.contains(&format!("add rule ip mape_wan other snat ip to {}", b.ipv4)));
            assert!(!up.contains("vmap"), "the bucket maps stay: {up}");
            // With chains per range the bucket maps are most of the script; the single-port
            // map (offset 12) is the mapping itself and gains nothing.
            if new.contains("\tchain set_") {
                assert!(up.len() * 2 < new.len(), "{} of {}", up.len(), new.len());
            }
            // Applied to itself: a refill with the same rules.
            let same = update_script(&new, &new).unwrap();
            assert_eq!(
                without_comments(&apply_update(&new, &same)),
                without_comments(&new)
            );
        }
    }

    /// Another shape (OCN's 63 port sets, then v6plus's 15, and back): the bridge refills every
    /// chain of the running table with the new mapping's ranges, so each packet leaves in one of
    /// the new port sets; from 15 chains to 63 ranges only 15 of them until the whole load.
    #[test]
    fn a_bridge_snats_into_the_new_mapping_from_a_table_of_another_shape() {
        let (ocn, v6) = (
            builtin("2400:4050:a0:c400::/56"),
            builtin("240b:10:3f6c:d400::/56"),
        );
        for (a, b, used) in [(&ocn, &v6, 15), (&v6, &ocn, 15)] {
            let (old, new) = (script(a, &[]), script(b, &[]));
            assert_eq!(update_script(&old, &new), None);
            let bridge = bridge_script(&old, &new).expect("both have chains per range");
            let left = apply_update(&old, &bridge);
            // the old frame (its bucket maps over the old chains) with the new rules
            assert_eq!(split(&left).unwrap().frame, split(&old).unwrap().frame);
            let Some(SnatPlan::Shared { addr, ranges, .. }) = read_table(&left).snat else {
                panic!("{left}")
            };
            assert_eq!(addr, b.ipv4);
            let sets: Vec<PortSet> = b.port_sets().collect();
            assert!(ranges.iter().all(|r| sets.contains(r)), "{ranges:?}");
            let mut distinct = ranges.clone();
            distinct.sort_by_key(|r| r.first);
            distinct.dedup();
            assert_eq!(distinct.len(), used);
            assert!(bridge.contains(&format!(
                "add rule ip mape_wan other snat ip to {}\n",
                b.ipv4
            )));
            let refill = read_update(&bridge).expect("a refill of fill rules");
            assert_eq!(refill.chains.len(), split(&old).unwrap().fills.len());
        }
        // not for another table or tunnel, nor the single-port map
        let (old, new) = (script(&ocn, &[]), script(&v6, &[]));
        assert_eq!(
            bridge_script(&old, &new.replace("mape_wan", "mape_x")),
            None
        );
        assert_eq!(
            bridge_script(&old, &new.replace("\"map-wan\"", "\"map-x\"")),
            None
        );
        let ports = script(&offset(12), &[]);
        assert_eq!(bridge_script(&old, &ports), None);
        assert_eq!(bridge_script(&ports, &new), None);
    }

    /// A refill reads back into its chains and rules, which write the same script again; the
    /// single-port map (offset 12) is not a list of fill rules and stays with nft.
    #[test]
    fn a_refill_reads_back_into_the_rules_it_was_written_from() {
        let prefix = {
            let mut m = rfc(8, "2001:db8:12::/48");
            m.ipv4_prefix_len = 28;
            m
        };
        for (m, chains) in [
            (rfc(16, "2001:db8:13:3600::/56"), Some(64)),
            (builtin("240b:11:8000:1200::/56"), Some(16)),
            (rfc(8, "2001:db8:13::/48"), Some(1)),
            (prefix, Some(1)),
            (offset(12), None),
        ] {
            let new = script(&m, &[]);
            let up = update_script(&new, &new).unwrap();
            let Some(refill) = read_update(&up) else {
                assert_eq!(chains, None, "{up}");
                continue;
            };
            assert_eq!(Some(refill.chains.len()), chains);
            assert_eq!(refill.table, "mape_wan");
            let (a, b) = refill.chains[0].1[0].addrs;
            assert_eq!(a == b, m.ipv4_prefix_len == 32, "{up}");
            let mut again = String::new();
            for (c, rules) in &refill.chains {
                again += &format!("flush chain ip mape_wan {c}\n");
                for r in rules {
                    again += &format!("add rule ip mape_wan {c} {r}\n");
                }
            }
            assert_eq!(again, without_comments(&up));
        }
        let rule = |s: &str| FillRule::parse(s);
        assert_eq!(
            rule("meta l4proto udp snat ip to 192.0.2.18:1232-1235"),
            Some(FillRule {
                proto: Some(Proto::Udp),
                addrs: ("192.0.2.18".parse().unwrap(), "192.0.2.18".parse().unwrap()),
                ports: Some(PortSet {
                    first: 1232,
                    last: 1235
                }),
            })
        );
        assert!(rule("snat ip to 192.0.2.16-192.0.2.31").is_some());
        for odd in [
            "meta l4proto sctp snat ip to 192.0.2.18:1-2",
            "meta l4proto { tcp, udp, icmp } snat ip to 192.0.2.18 : numgen inc mod 2 map { 0 : 1, 1 : 2 }",
            "snat ip to 192.0.2.18:5-5",
            "snat ip to 192.0.2.18:6-5",
            "snat ip to 192.0.2.18-192.0.2.18",
            "snat ip to 192.0.2.18:01-5",
            "snat ip to  192.0.2.18",
            "snat to 192.0.2.18",
            "dnat ip to 192.0.2.18",
            "",
        ] {
            assert_eq!(rule(odd), None, "{odd}");
        }
        // a rule of another chain or table, or before any flush, is not a refill
        for bad in [
            "add rule ip mape_wan set_0 snat ip to 192.0.2.1\n",
            "flush chain ip mape_wan set_0\nadd rule ip mape_x set_0 snat ip to 192.0.2.1\n",
            "flush chain ip mape_wan set_0\nadd rule ip mape_wan set_1 snat ip to 192.0.2.1\n",
            "flush chain ip mape_wan set_0\nflush chain ip mape_x set_1\n",
            "# only a comment\n",
        ] {
            assert_eq!(read_update(bad), None, "{bad}");
        }
    }

    /// Anything but the mapping chains differs: no update, the caller loads the whole script.
    #[test]
    fn update_needs_the_same_shape() {
        let a = builtin("240b:10:3f6c:d400::/56");
        let old = script(&a, &[]);
        // another line (a different number of port sets), other exclusions, another table,
        // another tunnel, a script that is not ours
        let ocn = script(&builtin("2400:4050:a0:c400::/56"), &[]);
        let r = a.ports.sets().nth(1).unwrap();
        let cut = script(
            &a,
            &[PortSet {
                first: r.first,
                last: r.first,
            }],
        );
        let other_table = old.replace("mape_wan", "mape_wan2");
        let other_dev = old.replace("\"map-wan\"", "\"map-wan2\"");
        for new in [&ocn, &cut, &other_table, &other_dev] {
            assert_eq!(update_script(&old, new), None);
            assert_eq!(update_script(new, &old), None);
        }
        assert_eq!(update_script("", &old), None);
        assert_eq!(
            update_script(&old, "table ip mape_wan {\n\tchain set_0 {\n"),
            None
        );
    }

    /// Many port sets: buckets shrink to the budget, and past [`MAX_RANGE_CHAINS`] ranges one
    /// map of single ports replaces the chains; the script stays small for every offset.
    #[test]
    fn many_sets_stay_small() {
        let s = script(&offset(8), &[]);
        assert_eq!(s.matches("\tchain set_").count(), 255);
        // A walk per destination: a chain and (but position 0) a set per position.
        assert_eq!(s.matches("\tchain tcp_step").count(), 255);
        assert_eq!(s.matches("\tset tcp_at").count(), 254);
        assert!(!s.contains("jhash"));
        // Past MAX_WALK_SLOTS: buckets (8 for 1023 slots).
        let s = script(&offset(10), &[]);
        assert_eq!(s.matches("\tchain set_").count(), 1023);
        assert_eq!(s.matches("\tchain udp_").count(), 8);
        assert!(s.contains("jhash ip daddr . udp dport mod 8 seed 0x75647030"));
        let s = script(&offset(15), &[]);
        assert!(!s.contains("chain set_") && !s.contains("jhash"), "flat");
        assert_eq!(s.matches("goto ports").count(), 3);
        let map = s
            .lines()
            .find(|l| {
                l.contains("snat ip to 192.0.2.18 : numgen inc mod 32767 map { 0 : 2, 1 : 4, ")
            })
            .unwrap();
        assert!(
            map.starts_with("\t\tmeta l4proto { tcp, udp, icmp } snat"),
            "{map}"
        );
        assert!(
            map.ends_with(", 32766 : 65534 }"),
            "{}",
            &map[map.len() - 40..]
        );
        for o in 0..=15 {
            let s = script(&offset(o), &[]);
            assert!(s.len() <= MAX_SCRIPT, "offset {o}: {} bytes", s.len());
        }
    }

    /// Parse next to emit: what the reader gets from our own script is the plan it was made
    /// from, with every counter. (tests/netns.rs checks the same on the kernel's listing.)
    #[test]
    fn read_table_recovers_what_ruleset_wrote() {
        let ps = |first, last| PortSet { first, last };
        let cases = [
            (
                "v6plus",
                builtin("240b:10:3f6c:d400::/56"),
                vec![ps(7490, 7491), ps(64832, 64847)],
            ),
            (
                "OCN",
                builtin("2400:4050:1234:5600::/56"),
                vec![ps(1380, 1381)],
            ),
            ("BIGLOBE", builtin("2404:7a81:1122:3300::/56"), vec![]),
            ("RFC IPv4 prefix", rfc(4, "2001:db8:10::/44"), vec![]),
            ("RFC full address", rfc(8, "2001:db8:12::/48"), vec![]),
            ("offset 10, 1023 sets", offset(10), vec![ps(2048, 2050)]),
            (
                "offset 12, 4095 sets",
                offset(12),
                vec![ps(16, 17), ps(4096, 4103)],
            ),
            ("offset 15, 32767 sets", offset(15), vec![ps(6, 6)]),
            ("offset 15, no exclusions", offset(15), vec![]),
        ];
        for (name, m, x) in cases {
            let plan = SnatPlan::new(&m, &x).unwrap();
            let t = read_table(&script(&m, &x));
            assert_eq!(t.snat.as_ref(), Some(&plan), "{name}");
            let names: Vec<&str> = t.counters.iter().map(|c| c.0.as_str()).collect();
            assert_eq!(names, COUNTERS, "{name}");
            assert!(t.counters.iter().all(|c| (c.1, c.2) == (0, 0)), "{name}");
            assert_eq!(t.ifname.as_deref(), Some("map-wan"), "{name}");
        }
        let ocn = builtin("2400:4050:1234:5600::/56");
        let Some(SnatPlan::Shared { ranges, .. }) = read_table(&script(&ocn, &[])).snat else {
            panic!()
        };
        assert_eq!(ranges.len(), 63);
        assert_eq!(ranges[0], ps(1376, 1391));
    }

    #[test]
    fn nft_listing_is_read_back() {
        // What `nft list table` prints (nft 1.0.6) for an older mape's table.
        let old = "table ip mape_wanmap {\n\tcounter snat_tcp {\n\t\tpackets 41 bytes 2460\n\t}\n\n\tcounter snat_udp {\n\t\tpackets 5 bytes 300\n\t}\n\n\tchain srcnat {\n\t\ttype nat hook postrouting priority srcnat - 1; policy accept;\n\t\toifname \"map-wanmap\" meta l4proto tcp counter name \"snat_tcp\" snat ip to numgen inc mod 2 map { 0 : 106.72.63.108 . 7488-7503, 1 : 106.72.63.108 . 11584-11599 }\n\t\toifname \"map-wanmap\" counter name \"snat_other\" snat to 106.72.63.108\n\t}\n}\n";
        let t = read_table(old);
        assert_eq!(t.ifname.as_deref(), Some("map-wanmap"));
        assert_eq!(
            t.counters,
            [("snat_tcp".into(), 41, 2460), ("snat_udp".into(), 5, 300)]
        );
        let Some(SnatPlan::Shared { addr, ranges, .. }) = t.snat else {
            panic!("{t:?}")
        };
        assert_eq!(addr, Ipv4Addr::new(106, 72, 63, 108));
        assert_eq!(
            ranges,
            [
                PortSet {
                    first: 7488,
                    last: 7503
                },
                PortSet {
                    first: 11584,
                    last: 11599
                }
            ]
        );
        let listed = "table ip mape_x {\n\tset ports_exclude {\n\t\ttype inet_service\n\t\tflags interval\n\t\telements = { 7490-7491, 8000,\n\t\t\t     9000-9001 }\n\t}\n\n\tchain set_0 {\n\t\tmeta l4proto tcp snat to 106.72.63.108:7488-7489\n\t}\n\tchain srcnat {\n\t\toifname \"map-x\" counter name \"snat_other\" snat to 106.72.63.108\n\t}\n}\n";
        let t = read_table(listed);
        let Some(SnatPlan::Shared { excluded, .. }) = t.snat else {
            panic!("{t:?}")
        };
        assert_eq!(excluded.len(), 3);
        assert_eq!(
            excluded[1],
            PortSet {
                first: 8000,
                last: 8000
            }
        );
        let plain = "table ip mape_x {\n\tchain srcnat {\n\t\toifname \"map-x\" counter name \"snat_other\" snat ip to 192.0.2.16/28\n\t}\n}\n";
        assert_eq!(
            read_table(plain).snat,
            Some(SnatPlan::Prefix {
                first: Ipv4Addr::new(192, 0, 2, 16),
                last: Ipv4Addr::new(192, 0, 2, 31)
            })
        );
        assert_eq!(read_table("junk {\n}").snat, None);
        // A single-port map as nft lists it, wrapped: adjacent ports are one range again.
        let listed = "table ip mape_x {\n\tchain ports {\n\t\tmeta l4proto { icmp, tcp, udp } snat to 192.0.2.18:numgen inc mod 5 map { 0 : 4, 1 : 5,\n\t\t\t2 : 8, 3 : 12,\n\t\t\t4 : 13 }\n\t}\n\tchain srcnat {\n\t\toifname \"map-x\" meta l4proto tcp counter name \"snat_tcp\" goto ports\n\t\toifname \"map-x\" counter name \"snat_other\" snat to 192.0.2.18\n\t}\n}\n";
        let t = read_table(listed);
        assert_eq!(t.ifname.as_deref(), Some("map-x"));
        let Some(SnatPlan::Shared { addr, ranges, .. }) = t.snat else {
            panic!("{t:?}")
        };
        assert_eq!(addr, Ipv4Addr::new(192, 0, 2, 18));
        let ps = |first, last| PortSet { first, last };
        assert_eq!(ranges, [ps(4, 5), ps(8, 8), ps(12, 13)]);
        // A hostile device name is not used as a path.
        let bad = old.replace("map-wanmap", "../../etc");
        assert_eq!(read_table(&bad).ifname, None);
    }
}
