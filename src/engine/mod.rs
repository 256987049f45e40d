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
pub use snat::{round_robin, SnatError, SnatPlan, TableReadBack, BUCKETS};

/// The tunnel MTU the ISPs' paths allow: a 1500-byte IPv6 link minus the 40-byte IPv6 header
/// that encapsulation adds (RFC 7597 §8.3: nothing should fragment inside the domain).
pub const TUNNEL_MTU: u32 = 1460;
