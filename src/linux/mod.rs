//! The plain-Linux front end (a mini-PC router on Debian/Arch with systemd-networkd or none):
//! find the prefix on the WAN ([`detect`]), and bring the MAP-E tunnel up or down with iproute2
//! and nft ([`apply`]). `mape generate` (files for review) needs only the renderers; this
//! module is what `mape up` / `mape down` do to the running system.
//!
//! Why `ip` and `nft` commands rather than netlink: both are on every such system, and the dry
//! run can print the exact commands, which the user can read, or run by hand, before trusting
//! the tool (`mape up --dry-run`).

pub mod apply;
pub mod detect;
pub mod host;

pub use host::{DryRunHost, Host, HostError, RealHost};
