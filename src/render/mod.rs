//! Renderers: turn a [`crate::provision::Resolved`] mapping into text for people and programs.
//! No I/O here; the front ends decide where the text goes.

pub mod calc;
pub mod iptables;
pub mod netifd;
pub mod networkd;
pub mod nft;
pub mod origin;
pub mod status;
