//! The pure MAP-E computation: rules, customer prefixes, port sets and the mapping itself.
//! Nothing in here does I/O, allocates more than a result, or panics on any input.

mod mapping;
mod ports;
mod prefix;
mod rule;

pub use mapping::{CeAddress, MapError, Mapping};
pub use ports::{PortParams, PortSet};
pub use prefix::{CustomerPrefix, PrefixError};
pub use rule::{IidFormat, Rule, RuleError};
