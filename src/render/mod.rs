//! Renderers: turn a [`crate::provision::Resolved`] mapping into text for people and programs.
//! No I/O here; the front ends decide where the text goes.

pub mod calc;
#[cfg(feature = "linux")]
pub mod iptables;
pub mod netifd;
#[cfg(feature = "linux")]
pub mod networkd;
pub mod nft;
#[cfg(feature = "linux")]
pub mod origin;
