//! mape-rs: MAP-E (RFC 7597) for Linux routers.
//!
//! Data flows one way through the modules:
//!
//! ```text
//! provision (built-in ISP tables, rule strings, DHCPv6 option 94, netifd/UCI config)
//!     -> engine::Rule -> engine::Mapping (IPv4, PSID, port sets, CE address, BR)
//!     -> render (calculator text/JSON, netifd payloads, nftables, systemd-networkd)
//! ```
//!
//! `engine` is pure computation (no I/O); `provision` turns inputs into rules; `render` turns a
//! mapping into text; `cli`, the netifd `handler` and `linux` (plain Linux routers) are thin front
//! ends doing the I/O.

pub mod engine;
pub mod names;
pub mod provision;
pub mod render;
pub mod state;

pub mod cli;
pub mod command;
pub mod handler;
#[cfg(feature = "linux")]
pub mod linux;
pub mod netlink;
pub mod status;
pub mod ubus;
