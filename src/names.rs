//! Names of the things mape-rs creates, and the checks every name from outside passes.
//!
//! One place for all front ends (netifd handler, plain Linux, `mape status`, the rpcd plugin):
//! an interface `wanmap` always has the tunnel device [`ifname_for`] `map-wanmap` and the nft
//! table [`table_for`] `mape_wanmap`, whoever set it up and whoever looks at it. Names that
//! come from a configuration, a state file or a command line are checked with [`check_name`]
//! before they reach nft, a path or a command line.

use std::fmt;

/// The longest interface name we accept (UCI section names are not limited; nft table names
/// and our state file names are).
pub const MAX_NAME: usize = 32;
/// Linux's limit for a device name (IFNAMSIZ − 1).
pub const MAX_DEV: usize = 15;

/// A name with characters or a length we refuse; `key` says which option or field it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    pub key: &'static str,
    pub value: String,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?}: only letters, digits, _ - . are allowed (at most {MAX_NAME})",
            self.key, self.value
        )
    }
}

impl std::error::Error for NameError {}

/// Interface, device, zone and ISP names: letters, digits, `_`, `-` and `.` (what UCI section
/// names allow, plus `-` and `.` of device names), not starting with `-`, at most [`MAX_NAME`].
pub fn check_name(key: &'static str, s: &str) -> Result<(), NameError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NAME
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !s.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(NameError {
            key,
            value: s
                .chars()
                .take(64)
                .map(|c| if c.is_control() { '?' } else { c })
                .collect(),
        })
    }
}

/// A device name we may look up in sysfs: a checked name of at most 15 bytes, not `.`/`..`.
pub fn is_dev_name(s: &str) -> bool {
    check_name("dev", s).is_ok() && s != "." && s != ".." && s.len() <= MAX_DEV
}

/// An nft table name we may pass to `nft list table ip <name>`.
pub fn is_table_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The tunnel device name: `map-<iface>` if it fits Linux's 15 bytes, else a deterministic
/// short form `map-<first 6>_<4 hex of a hash of the whole name>`.
pub fn ifname_for(iface: &str) -> String {
    let full = format!("map-{iface}");
    if full.len() <= MAX_DEV {
        return full;
    }
    // FNV-1a: tiny, stable across versions and platforms.
    let mut h: u32 = 0x811c9dc5;
    for b in iface.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x01000193);
    }
    let head: String = iface.chars().take(6).collect();
    format!("map-{head}_{:04x}", h & 0xffff)
}

/// The nft table name for an interface (`mape_<iface>`, `-` and `.` mapped to `_`).
pub fn table_for(iface: &str) -> String {
    let clean: String = iface
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("mape_{clean}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifnames_fit_linux() {
        assert_eq!(ifname_for("wanmap"), "map-wanmap");
        assert_eq!(ifname_for("abcdefghijk"), "map-abcdefghijk");
        let long = ifname_for("abcdefghijkl");
        assert_eq!(long.len(), MAX_DEV);
        assert!(long.starts_with("map-abcdef_"));
        assert_ne!(long, ifname_for("abcdefghijkm"));
        assert_eq!(long, ifname_for("abcdefghijkl"));
        assert!(is_dev_name(&ifname_for(&"x".repeat(MAX_NAME))));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("interface", "wan_6-a.b").is_ok());
        for bad in [
            "",
            "-x",
            "a b",
            "a/b",
            "a\"b",
            "a;b",
            &"x".repeat(MAX_NAME + 1),
        ] {
            let e = check_name("interface", bad).unwrap_err().to_string();
            assert!(e.starts_with("interface "), "{e}");
            assert!(!e.contains('\n'));
        }
        assert_eq!(table_for("wan-6.x"), "mape_wan_6_x");
        assert!(is_table_name(&table_for("wan-6.x")));
        assert!(!is_dev_name(".."));
    }
}
