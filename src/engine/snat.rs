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
//! destination bucket: a hash of the destination address and port picks one of [`BUCKETS`]
//! counters (per protocol). See docs/port-allocation.md for why and for the measurements.

use std::net::Ipv4Addr;

use super::{Mapping, PortSet};

/// Round-robin counters per protocol (TCP, UDP) on a shared address: each destination (address
/// and port) hashes to one of them. Chosen from the measurements in docs/port-allocation.md.
pub const BUCKETS: u16 = 64;

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
    let total: i64 = weights.iter().map(|w| i64::from(*w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&weights) {
            *c += i64::from(*w);
        }
        // The first of the largest: ties go to the lower range.
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
