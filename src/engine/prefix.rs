//! The customer's IPv6 prefix (the End-user IPv6 prefix of RFC 7597).

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;

/// A delegated prefix (/56, /60), an RA /64, or a full address (/128).
///
/// Bits past `len` are kept as given: a user pasting `240b:10:3f6c:d4ab::1/64` from `ip -6 addr`
/// means "my /64", and the mapping only ever reads the first `rule6 + EA` bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomerPrefix {
    addr: Ipv6Addr,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("prefix {0:?}: not an IPv6 address or ADDRESS/LENGTH")]
    Syntax(String),
    #[error("prefix {0:?}: length must be 0 to 128")]
    Length(String),
}

impl CustomerPrefix {
    pub fn new(addr: Ipv6Addr, len: u8) -> Option<Self> {
        (len <= 128).then_some(Self { addr, len })
    }

    pub fn addr(&self) -> Ipv6Addr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bits(&self) -> u128 {
        self.addr.to_bits()
    }

    /// The first `len` bits, the rest zero.
    pub fn network(&self) -> Ipv6Addr {
        Ipv6Addr::from_bits(self.bits() & mask128(self.len))
    }
}

/// A mask with the top `len` bits of 128 set (`len` is clamped to 128).
pub(crate) fn mask128(len: u8) -> u128 {
    match len {
        0 => 0,
        l if l >= 128 => u128::MAX,
        l => u128::MAX << (128 - u32::from(l)),
    }
}

impl FromStr for CustomerPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (addr, len) = match t.split_once('/') {
            Some((a, l)) => {
                let len: u8 = l.parse().map_err(|_| PrefixError::Length(s.to_string()))?;
                (a, len)
            }
            None => (t, 128),
        };
        let addr: Ipv6Addr = addr
            .parse()
            .map_err(|_| PrefixError::Syntax(s.to_string()))?;
        Self::new(addr, len).ok_or_else(|| PrefixError::Length(s.to_string()))
    }
}

impl fmt::Display for CustomerPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prefixes_and_addresses() {
        let p: CustomerPrefix = "240b:10:3f6c:d400::/56".parse().unwrap();
        assert_eq!(p.len(), 56);
        let a: CustomerPrefix = "240b:12:3456:7800:a:100:2000:3000".parse().unwrap();
        assert_eq!(a.len(), 128);
        let h: CustomerPrefix = "240b:10:3f6c:d4ab::1/64".parse().unwrap();
        assert_eq!(h.to_string(), "240b:10:3f6c:d4ab::/64");
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "/",
            "240b::/129",
            "240b::/x",
            "1.2.3.4",
            "240b::/56/1",
            "::/-1",
        ] {
            assert!(bad.parse::<CustomerPrefix>().is_err(), "{bad}");
        }
    }
}
