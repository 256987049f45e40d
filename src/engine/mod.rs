//! The pure MAP-E computation: rules, customer prefixes, port sets and the mapping itself.
//! Nothing in here does I/O, allocates more than a result, or panics on any input.

mod mapping;
mod ports;
mod prefix;
mod rule;
mod snat;

pub use mapping::{CeAddress, MapError, Mapping};
pub use ports::{psid_from_left_aligned, PortParams, PortSet};
pub use prefix::{CustomerPrefix, PrefixError};
pub use rule::{IidFormat, Rule, RuleError};
pub use snat::{
    buckets_for, counters, round_robin, Backend, Slots, SnatError, SnatPlan, Spread, TableReadBack,
    Walk, BUCKETS, MAX_RANGE_CHAINS, MAX_WALK_SLOTS, SLOT_BUDGET,
};

/// The tunnel MTU the ISPs' paths allow: a 1500-byte IPv6 link minus the 40-byte IPv6 header
/// that encapsulation adds (RFC 7597 §8.3: nothing should fragment inside the domain).
pub const TUNNEL_MTU: u32 = 1460;

/// The tunnel MTU to use: `explicit` if given, else the link MTU minus the 40-byte IPv6 header,
/// at most [`TUNNEL_MTU`] (the ISPs' path MTU is 1500 whatever the LAN-side link supports);
/// an unknown or too small link MTU gives [`TUNNEL_MTU`].
pub fn tunnel_mtu(explicit: Option<u32>, link_mtu: Option<u32>) -> u32 {
    explicit.unwrap_or(match link_mtu {
        Some(m) if m >= 1320 => (m - 40).min(TUNNEL_MTU),
        _ => TUNNEL_MTU,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn tunnel_mtu() {
        use super::tunnel_mtu;
        assert_eq!(tunnel_mtu(None, None), 1460);
        assert_eq!(tunnel_mtu(None, Some(1500)), 1460);
        assert_eq!(tunnel_mtu(None, Some(9000)), 1460);
        assert_eq!(tunnel_mtu(None, Some(1454)), 1414);
        assert_eq!(tunnel_mtu(None, Some(1300)), 1460);
        assert_eq!(tunnel_mtu(Some(1400), Some(1500)), 1400);
    }
}

/// Test inputs shared by the engine's and the renderers' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{IidFormat, Mapping, Rule};

    /// vector T3: v6plus 240b:10:3f6c:d400::/56 → 106.72.63.108, PSID 212, 240 ports.
    pub fn v6plus() -> Mapping {
        let mut r = Rule::new(
            "240b:10::/31".parse().unwrap(),
            "106.72.0.0/15".parse().unwrap(),
            25,
            IidFormat::Draft03,
        );
        r.psid_offset = 4;
        Mapping::compute(&r, "240b:10:3f6c:d400::/56".parse().unwrap()).unwrap()
    }

    /// The RFC rule `ealen=9` on a /24 (PSID length 1) with PSID offset `offset`, for
    /// 2001:db8:12:3400::/56: 192.0.2.18, PSID 0, 2^offset − 1 port sets (32767 at offset 15,
    /// the largest legal ruleset).
    pub fn rfc_offset(offset: u8) -> Mapping {
        let mut r = Rule::new(
            "2001:db8::/40".parse().unwrap(),
            "192.0.2.0/24".parse().unwrap(),
            9,
            IidFormat::Rfc7597,
        );
        r.psid_offset = offset;
        Mapping::compute(&r, "2001:db8:12:3400::/56".parse().unwrap()).unwrap()
    }
}
