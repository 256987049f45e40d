//! The SNAT plan: which IPv4 source addresses and ports the CE's traffic may leave with, and how
//! new flows are spread over the port sets. The nft and iptables renderers only format it.
//!
//! Three cases (RFC 7597 §5.2):
//! - a shared address: SNAT into the port sets of our PSID, minus `ports_exclude`;
//! - an IPv4 prefix: SNAT to the whole address range, every port;
//! - a full address: SNAT to it, every port.
//!
//! On a shared address each new flow picks one port range round-robin, and the kernel picks a
//! free port inside it (it searches only that contiguous range). So that the flows to ONE
//! destination walk every range in turn, whatever else the LAN does, the round robin is kept per
//! destination: the kernel keeps each destination's position ([`Walk::PerDestination`]: nft
//! dynamic sets keyed by address and port, iptables xt_recent lists keyed by address); lines with
//! very many slots keep it per destination bucket instead (a hash of the destination picks one
//! of up to [`BUCKETS`] counters per protocol). [`SnatPlan::spread`] decides the walk and what a
//! round-robin slot is, so that the ruleset stays small for every legal rule (up to 32767 port
//! sets): see docs/port-allocation.md for the size rule and the measurements.

use std::net::Ipv4Addr;

use super::{Mapping, PortSet};

/// Round-robin counters per protocol (TCP, UDP) on a shared address, at most: each destination
/// (address and port) hashes to one of them. Chosen from the measurements in
/// docs/port-allocation.md.
pub const BUCKETS: u16 = 64;

/// Bucket counters × round-robin slots per protocol, at most: what one protocol's buckets cost
/// (nft vmap entries, iptables cascade rules). 8192 keeps [`BUCKETS`] for up to 128 slots (every
/// built-in ISP, also with `ports_exclude`) and halves the buckets for each doubling beyond.
pub const SLOT_BUDGET: usize = 8192;

/// Port ranges that get an nft chain each, at most. A chain per range costs script, load time
/// and nft memory in proportion to the ranges (1023: 0.5 MB, 0.15 s; 16383: 4 MB, 2 s, 250 MB
/// in nft), while one map of every port costs the same for any line (at most 32767 ports: 0.5
/// MB, 0.15 s, 29 MB); the two meet here (docs/port-allocation.md). Lines with more ranges
/// (PSID offset 11 and up) get single-port slots.
pub const MAX_RANGE_CHAINS: usize = 1024;

/// Round-robin slots walked per destination, at most. The walk costs a set (nft) or an xt_recent
/// list (iptables) and a chain per slot and protocol, and each new flow of a destination seen
/// before looks it up in up to this many; lines with more slots (PSID offset 10, or 9 with
/// `ports_exclude`) get buckets.
pub const MAX_WALK_SLOTS: usize = 512;

/// The rule syntax a spread is formatted for: they differ in what they can share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// nftables: chains per range and maps; many ranges become a single-port map.
    Nft,
    /// iptables: a cascade of `statistic` rules per bucket, one rule per slot.
    Iptables,
}

/// How the new flows of a shared address are spread over its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spread {
    /// Whose round robin a new flow advances.
    pub walk: Walk,
    /// The round-robin slots: each new flow of a walk takes the next one.
    pub slots: Slots,
}

/// Whose round robin a new TCP or UDP flow advances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Walk {
    /// Its destination's own (per protocol; nft: address and port, iptables: address): other
    /// traffic never moves it. The kernel keeps each destination's position (nft dynamic sets,
    /// xt_recent lists).
    PerDestination,
    /// One of this many counters per protocol, picked by a hash of the destination (1: one
    /// counter, no hash): a flow to another destination of the same bucket moves it too.
    Buckets(u16),
}

impl Walk {
    /// The bucket counters per protocol a ruleset holds for this walk (0 for a walk per
    /// destination, whose positions live in the kernel's sets or lists).
    pub fn buckets(self) -> u16 {
        match self {
            Walk::PerDestination => 0,
            Walk::Buckets(b) => b,
        }
    }
}

/// What a round-robin slot names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slots {
    /// Slot i is the port range `ranges[v[i]]` of the plan (see [`round_robin`]); the kernel
    /// searches the range for a free port.
    Ranges(Vec<usize>),
    /// Slot i is the single port `v[i]`: every port of the plan once, ascending. For lines with
    /// more ranges than [`MAX_RANGE_CHAINS`], whose ranges are at most 16 ports each.
    Ports(Vec<u16>),
}

impl Slots {
    /// How many slots.
    pub fn len(&self) -> usize {
        match self {
            Slots::Ranges(v) => v.len(),
            Slots::Ports(v) => v.len(),
        }
    }

    /// Whether there are none (never for a plan's spread).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The port range each slot SNATs to, in slot order.
    pub fn targets(&self, ranges: &[PortSet]) -> Vec<PortSet> {
        match self {
            Slots::Ranges(v) => v.iter().map(|i| ranges[*i]).collect(),
            Slots::Ports(v) => v
                .iter()
                .map(|p| PortSet {
                    first: *p,
                    last: *p,
                })
                .collect(),
        }
    }
}

/// The bucket count for `slots` round-robin slots: [`BUCKETS`], halved until buckets × slots
/// fits [`SLOT_BUDGET`] (at least 1).
pub fn buckets_for(slots: usize) -> u16 {
    let mut b = BUCKETS;
    while b > 1 && usize::from(b).saturating_mul(slots) > SLOT_BUDGET {
        b /= 2;
    }
    b
}

/// Names of the named counters of our table (`render::nft` writes and reads them, `mape
/// status` shows them).
pub mod counters {
    /// New TCP flows through the tunnel (attempts: a flow whose SNAT clashes is counted too).
    pub const SNAT_TCP: &str = "snat_tcp";
    /// New UDP flows.
    pub const SNAT_UDP: &str = "snat_udp";
    /// New ICMP flows (echo requests).
    pub const SNAT_ICMP: &str = "snat_icmp";
    /// New flows of other protocols (SNAT to the address only).
    pub const SNAT_OTHER: &str = "snat_other";
    /// TCP SYNs whose MSS was clamped.
    pub const MSS_CLAMP: &str = "mss_clamp";
    /// Every named counter of the table, in the order the script declares them.
    pub const COUNTERS: [&str; 5] = [SNAT_TCP, SNAT_UDP, SNAT_ICMP, SNAT_OTHER, MSS_CLAMP];
}

/// The SNAT a mapping needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnatPlan {
    /// A shared address: only these port ranges (ascending), which are the mapping's port sets
    /// with `excluded` cut out.
    Shared {
        addr: Ipv4Addr,
        ranges: Vec<PortSet>,
        /// The `ports_exclude` ranges as given (each inside our sets), ascending.
        excluded: Vec<PortSet>,
    },
    /// An IPv4 prefix, all ports: every address from `first` to `last`.
    Prefix { first: Ipv4Addr, last: Ipv4Addr },
    /// A full IPv4 address, all ports.
    Single(Ipv4Addr),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnatError {
    #[error("ports_exclude {0}: not one of this line's ports (PSID {1})")]
    ExcludeNotOurs(PortSet, u16),
    #[error("ports_exclude: excludes every port of the line")]
    ExcludesAll,
}

impl SnatPlan {
    /// The plan for `m`, with `exclude` (ports kept out of SNAT, e.g. for port forwards) cut
    /// out of the port sets. Exclusions only apply to a shared address (a full address or prefix
    /// keeps every port, and the kernel keeps a forwarded port's own connections apart).
    pub fn new(m: &Mapping, exclude: &[PortSet]) -> Result<Self, SnatError> {
        if !m.ports.is_shared() {
            if m.ipv4_prefix_len < 32 {
                let last = u32::from(m.ipv4) | (u32::MAX >> m.ipv4_prefix_len);
                return Ok(SnatPlan::Prefix {
                    first: m.ipv4,
                    last: Ipv4Addr::from(last),
                });
            }
            return Ok(SnatPlan::Single(m.ipv4));
        }
        for x in exclude {
            // Every port of an excluded range must be ours: excluding a port we never had would
            // hide a typo in a port forward.
            if !(x.first..=x.last).all(|p| m.owns_port(p)) {
                return Err(SnatError::ExcludeNotOurs(*x, m.ports.psid()));
            }
        }
        let mut excluded = exclude.to_vec();
        excluded.sort();
        excluded.dedup();
        let ranges = cut(m.port_sets(), &excluded);
        if ranges.is_empty() {
            return Err(SnatError::ExcludesAll);
        }
        Ok(SnatPlan::Shared {
            addr: m.ipv4,
            ranges,
            excluded,
        })
    }

    /// The (first) IPv4 address.
    pub fn ipv4(&self) -> Ipv4Addr {
        match self {
            SnatPlan::Shared { addr, .. } => *addr,
            SnatPlan::Prefix { first, .. } => *first,
            SnatPlan::Single(a) => *a,
        }
    }

    /// The prefix length the addresses make (32 for one address; a range that is not a whole
    /// prefix also counts as 32).
    pub fn ipv4_prefix_len(&self) -> u8 {
        let SnatPlan::Prefix { first, last } = self else {
            return 32;
        };
        let n = u32::from(*last)
            .wrapping_sub(u32::from(*first))
            .wrapping_add(1);
        if n.is_power_of_two() && u32::from(*first) & (n - 1) == 0 {
            32 - n.trailing_zeros() as u8
        } else {
            32
        }
    }

    /// How new flows are spread over the ports, for `backend`; `None` unless the address is
    /// shared (a full address or prefix needs no round robin). Per-range slots, walked per
    /// destination up to [`MAX_WALK_SLOTS`] slots and by [`buckets_for`] the slot count beyond;
    /// nft gets single-port slots in one flat map with one counter instead when there are more
    /// than [`MAX_RANGE_CHAINS`] ranges (iptables keeps per-range slots).
    pub fn spread(&self, backend: Backend) -> Option<Spread> {
        let SnatPlan::Shared { ranges, .. } = self else {
            return None;
        };
        if backend == Backend::Nft && ranges.len() > MAX_RANGE_CHAINS {
            let ports = ranges.iter().flat_map(|r| r.first..=r.last).collect();
            return Some(Spread {
                walk: Walk::Buckets(1),
                slots: Slots::Ports(ports),
            });
        }
        let slots = round_robin(ranges);
        let walk = if slots.len() <= MAX_WALK_SLOTS {
            Walk::PerDestination
        } else {
            Walk::Buckets(buckets_for(slots.len()))
        };
        Some(Spread {
            walk,
            slots: Slots::Ranges(slots),
        })
    }

    /// The source ports flows may get: the ranges of a shared address, else all of them.
    pub fn port_ranges(&self) -> Vec<PortSet> {
        match self {
            SnatPlan::Shared { ranges, .. } => ranges.clone(),
            _ => vec![PortSet {
                first: 0,
                last: u16::MAX,
            }],
        }
    }
}

/// Round-robin slots for `ranges`: each new flow takes the next slot, a slot names a range.
/// Every range gets slots in proportion to its ports (by their greatest common divisor), so a
/// range cut short by `ports_exclude` fills no sooner than the others, as long as that needs at
/// most 2 slots a range on average; beyond that (small or odd pieces) each range gets one slot,
/// which keeps the ruleset size bounded (see docs/port-allocation.md for the trade-off). Without
/// exclusions every range has the same size: slot i is range i. The slots are interleaved
/// (smooth weighted round robin), so consecutive flows take different ranges.
pub fn round_robin(ranges: &[PortSet]) -> Vec<usize> {
    let lens: Vec<u32> = ranges.iter().map(PortSet::len).collect();
    let g = lens.iter().copied().fold(0, gcd).max(1);
    let mut weights: Vec<u32> = lens.iter().map(|l| l / g).collect();
    if weights.iter().sum::<u32>() as usize > 2 * ranges.len() {
        weights = vec![1; ranges.len()];
    }
    smooth_weighted(&weights)
}

/// Smooth weighted round robin over `weights` (each ≥ 1): at every step each range's credit
/// grows by its weight, the first range with the most credit is picked and pays the total.
/// Ranges of equal weight are picked in index order, so only the next one of each weight is a
/// candidate: O(slots × distinct weights), not O(slots × ranges) (32767 ranges happen).
fn smooth_weighted(weights: &[u32]) -> Vec<usize> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    // Per distinct weight: its ranges (ascending) and how often the group was picked.
    let mut groups: Vec<(u32, Vec<usize>, u64)> = Vec::new();
    for (i, w) in weights.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == *w) {
            Some(g) => g.1.push(i),
            None => groups.push((*w, vec![i], 0)),
        }
    }
    let mut out = Vec::with_capacity(total as usize);
    for t in 1..=total {
        // Credit of a range after t steps: t × weight − total × its picks. In a group the
        // next range (index picks mod size) has the fewest picks, picks div size.
        let mut best: Option<(i128, usize, usize)> = None;
        for (gi, (w, members, picks)) in groups.iter().enumerate() {
            let size = members.len() as u64;
            let i = members[(*picks % size) as usize];
            let credit =
                i128::from(t) * i128::from(*w) - i128::from(total) * i128::from(*picks / size);
            let better = match best {
                None => true,
                Some((c, j, _)) => credit > c || (credit == c && i < j),
            };
            if better {
                best = Some((credit, i, gi));
            }
        }
        let Some((_, i, gi)) = best else { break };
        groups[gi].2 += 1;
        out.push(i);
    }
    out
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// `sets` minus `cuts` (sorted), without port 0 (never a usable source port).
fn cut(sets: impl Iterator<Item = PortSet>, cuts: &[PortSet]) -> Vec<PortSet> {
    let mut out = Vec::new();
    for set in sets {
        let mut lo = u32::from(set.first).max(1);
        let hi = u32::from(set.last);
        for x in cuts
            .iter()
            .filter(|x| x.last >= set.first && x.first <= set.last)
        {
            if u32::from(x.first) > lo {
                out.push(range(lo, u32::from(x.first) - 1));
            }
            lo = lo.max(u32::from(x.last) + 1);
        }
        if lo <= hi {
            out.push(range(lo, hi));
        }
    }
    out
}

fn range(first: u32, last: u32) -> PortSet {
    // Both ends come from u16 ports (lo ≤ hi ≤ 65535), so they fit.
    PortSet {
        first: first as u16,
        last: last as u16,
    }
}

/// What our own nft table says, as read back by the renderer's reader (`render::nft::read_table`)
/// for `mape status`: its named counters (name, packets, bytes), the tunnel device its SNAT rules
/// match, and the SNAT they do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableReadBack {
    pub counters: Vec<(String, u64, u64)>,
    pub ifname: Option<String>,
    pub snat: Option<SnatPlan>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{IidFormat, Rule};

    use crate::engine::fixtures::v6plus;

    fn ps(first: u16, last: u16) -> PortSet {
        PortSet { first, last }
    }

    #[test]
    fn exclusions_split_sets_and_must_be_ours() {
        let m = v6plus();
        let x = [ps(64832, 64847), ps(7490, 7491)];
        let SnatPlan::Shared {
            addr,
            ranges,
            excluded,
        } = SnatPlan::new(&m, &x).unwrap()
        else {
            panic!("shared")
        };
        assert_eq!(addr, Ipv4Addr::new(106, 72, 63, 108));
        assert_eq!(excluded, [ps(7490, 7491), ps(64832, 64847)]);
        assert_eq!(ranges[0], ps(7488, 7489));
        assert_eq!(ranges[1], ps(7492, 7503));
        assert_eq!(ranges.len(), 15);
        assert_eq!(ranges.iter().map(|p| p.len()).sum::<u32>(), 240 - 2 - 16);
        let bad = [ps(80, 80)];
        assert_eq!(
            SnatPlan::new(&m, &bad),
            Err(SnatError::ExcludeNotOurs(bad[0], 212))
        );
        let all: Vec<PortSet> = m.port_sets().collect();
        assert_eq!(SnatPlan::new(&m, &all), Err(SnatError::ExcludesAll));
    }

    #[test]
    fn round_robin_weighs_ranges_by_their_ports() {
        let m = v6plus();
        let whole: Vec<PortSet> = m.port_sets().collect();
        assert_eq!(round_robin(&whole), (0..15).collect::<Vec<_>>());
        // Half a set excluded: 8 and 14 × 16 ports, 1 + 14 × 2 slots.
        let SnatPlan::Shared { ranges, .. } = SnatPlan::new(&m, &[ps(7488, 7495)]).unwrap() else {
            panic!()
        };
        let slots = round_robin(&ranges);
        assert_eq!(slots.len(), 29);
        let count = |i| slots.iter().filter(|s| **s == i).count();
        assert_eq!((count(0), count(1), count(14)), (1, 2, 2));
        // Interleaved: no range twice in a row.
        assert!(slots.windows(2).all(|w| w[0] != w[1]), "{slots:?}");
        // Pieces of 2 and 12 ports would need 119 slots: one slot each instead.
        let SnatPlan::Shared { ranges, .. } = SnatPlan::new(&m, &[ps(7490, 7491)]).unwrap() else {
            panic!()
        };
        assert_eq!(round_robin(&ranges), (0..16).collect::<Vec<_>>());
    }

    /// The grouped smooth round robin picks exactly what the plain one (every range's credit
    /// each step) picks.
    #[test]
    fn smooth_weighted_matches_the_plain_algorithm() {
        fn plain(weights: &[u32]) -> Vec<usize> {
            let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
            let mut current = vec![0i64; weights.len()];
            let mut out = Vec::new();
            for _ in 0..total {
                for (c, w) in current.iter_mut().zip(weights) {
                    *c += i64::from(*w);
                }
                let mut pick = 0;
                for (i, c) in current.iter().enumerate() {
                    if *c > current[pick] {
                        pick = i;
                    }
                }
                current[pick] -= total;
                out.push(pick);
            }
            out
        }
        let mut seed = 0x2545_f491_u32;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            seed
        };
        for case in 0..300 {
            let n = 1 + (next() % 40) as usize;
            let top = 1 + case % 5;
            let w: Vec<u32> = (0..n).map(|_| 1 + next() % top).collect();
            assert_eq!(smooth_weighted(&w), plain(&w), "{w:?}");
        }
    }

    /// Lines up to [`MAX_WALK_SLOTS`] slots (every built-in ISP) walk per destination, longer
    /// ones get buckets with buckets × slots within the budget, and lines with more ranges than
    /// nft should have chains get one single-port slot per port.
    #[test]
    fn spread_stays_within_the_budget() {
        assert_eq!(buckets_for(15), 64);
        assert_eq!(buckets_for(126), 64); // OCN with every set cut in two weighted pieces
        assert_eq!(buckets_for(255), 32);
        assert_eq!(buckets_for(511), 16);
        assert_eq!(buckets_for(1023), 8);
        assert_eq!(buckets_for(32767), 1);
        for offset in 0..=15 {
            let m = crate::engine::fixtures::rfc_offset(offset);
            let plan = SnatPlan::new(&m, &[]).unwrap();
            let SnatPlan::Shared { ranges, .. } = &plan else {
                panic!("offset {offset}: shared")
            };
            let ports: u32 = ranges.iter().map(PortSet::len).sum();
            for backend in [Backend::Nft, Backend::Iptables] {
                let s = plan.spread(backend).unwrap();
                assert!(
                    usize::from(s.walk.buckets()) * s.slots.len()
                        <= SLOT_BUDGET.max(ports as usize),
                    "offset {offset} {backend:?}"
                );
                let t = s.slots.targets(ranges);
                // Every port is some slot's, and no slot SNATs outside the plan.
                let covered: u32 = {
                    let mut u = t.clone();
                    u.sort();
                    u.dedup();
                    u.iter().map(PortSet::len).sum()
                };
                assert_eq!(covered, ports, "offset {offset} {backend:?}");
                match (&s.slots, backend) {
                    (Slots::Ports(p), Backend::Nft) => {
                        assert!(ranges.len() > MAX_RANGE_CHAINS, "offset {offset}");
                        assert_eq!(p.len() as u32, ports);
                        assert_eq!(s.walk, Walk::Buckets(1));
                    }
                    (Slots::Ranges(v), _) => {
                        assert!(
                            backend == Backend::Iptables || ranges.len() <= MAX_RANGE_CHAINS,
                            "offset {offset}"
                        );
                        let want = if v.len() <= MAX_WALK_SLOTS {
                            Walk::PerDestination
                        } else {
                            Walk::Buckets(buckets_for(v.len()))
                        };
                        assert_eq!(s.walk, want, "offset {offset} {backend:?}");
                    }
                    (Slots::Ports(_), Backend::Iptables) => panic!("iptables has no port map"),
                }
            }
        }
        assert_eq!(
            SnatPlan::Single(Ipv4Addr::LOCALHOST).spread(Backend::Nft),
            None
        );
    }

    #[test]
    fn prefix_and_full_address() {
        let r = Rule::new(
            "2001:db8::/40".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
            4,
            IidFormat::Rfc7597,
        );
        let m = Mapping::compute(&r, "2001:db8:10::/44".parse().unwrap()).unwrap();
        assert_eq!(
            (m.ipv4, m.ipv4_prefix_len),
            (Ipv4Addr::new(192, 0, 2, 16), 28)
        );
        let plan = SnatPlan::new(&m, &[ps(80, 80)]).unwrap();
        assert_eq!(
            plan,
            SnatPlan::Prefix {
                first: m.ipv4,
                last: Ipv4Addr::from(u32::from(m.ipv4) | 0xf)
            }
        );
        assert_eq!(plan.ipv4_prefix_len(), 28);
        assert_eq!(plan.port_ranges(), [ps(0, 65535)]);
        let r = Rule::new(
            "2001:db8::/40".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
            8,
            IidFormat::Rfc7597,
        );
        let m = Mapping::compute(&r, "2001:db8:12::/48".parse().unwrap()).unwrap();
        assert_eq!(m.ipv4, Ipv4Addr::new(192, 0, 2, 18));
        let plan = SnatPlan::new(&m, &[]).unwrap();
        assert_eq!(plan, SnatPlan::Single(m.ipv4));
        assert_eq!(plan.ipv4_prefix_len(), 32);
    }
}
