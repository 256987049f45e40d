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

/// Test inputs shared by the renderers' unit tests.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::engine::{IidFormat, Mapping, Rule};

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
}
