//! Port sets (RFC 7597 §5.1).
//!
//! A port is split as `| A (a bits) | PSID (k bits) | j (m bits) |` with `a` the PSID offset,
//! `k` the PSID length and `m = 16 − a − k`. A CE owns every port whose PSID bits equal its PSID,
//! except the block A = 0 when a > 0 (those are the well-known and system ports, 0 … 2^(16−a) − 1).

/// One contiguous run of ports, both ends included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortSet {
    pub first: u16,
    pub last: u16,
}

impl PortSet {
    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    /// A port set is never empty; this exists for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// The port parameters of one CE: PSID offset `a`, PSID length `k` and the PSID itself.
///
/// `psid_len == 0` means no sharing: the CE owns all 65536 ports and the offset is irrelevant.
/// Constructed only through [`PortParams::new`], which guarantees `a ≤ 15`, `a + k ≤ 16` and
/// `psid < 2^k`, so every method below is total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortParams {
    offset: u8,
    psid_len: u8,
    psid: u16,
}

impl PortParams {
    /// `None` when the parameters cannot describe a port set (offset > 15, offset + length > 16,
    /// or a PSID that does not fit its length). [`crate::engine::Rule`] reports which.
    pub fn new(offset: u8, psid_len: u8, psid: u16) -> Option<Self> {
        if offset > 15 || u32::from(offset) + u32::from(psid_len) > 16 {
            return None;
        }
        if psid_len < 16 && u32::from(psid) >> psid_len != 0 {
            return None;
        }
        Some(Self {
            offset,
            psid_len,
            psid,
        })
    }

    /// All ports, no sharing (full IPv4 address or IPv4 prefix).
    pub fn unrestricted() -> Self {
        Self {
            offset: 0,
            psid_len: 0,
            psid: 0,
        }
    }

    pub fn offset(&self) -> u8 {
        self.offset
    }

    pub fn psid_len(&self) -> u8 {
        self.psid_len
    }

    pub fn psid(&self) -> u16 {
        self.psid
    }

    pub fn is_shared(&self) -> bool {
        self.psid_len > 0
    }

    /// m = 16 − a − k: the number of bits of the port index inside one set.
    fn m(&self) -> u32 {
        16 - u32::from(self.offset) - u32::from(self.psid_len)
    }

    /// Number of port sets: 2^a − 1 (A = 0 is excluded when a > 0), 1 when a = 0 or unshared.
    pub fn set_count(&self) -> u32 {
        if !self.is_shared() || self.offset == 0 {
            1
        } else {
            (1u32 << self.offset) - 1
        }
    }

    /// Ports in one set: 2^m (65536 when unshared).
    pub fn set_size(&self) -> u32 {
        if self.is_shared() {
            1u32 << self.m()
        } else {
            1 << 16
        }
    }

    pub fn port_count(&self) -> u32 {
        self.set_count() * self.set_size()
    }

    /// The port sets in ascending order.
    pub fn sets(&self) -> impl Iterator<Item = PortSet> + '_ {
        let first_a = if self.is_shared() && self.offset > 0 {
            1u32
        } else {
            0
        };
        let count = self.set_count();
        (first_a..first_a + count).map(move |a| self.set(a))
    }

    /// The port set with index `a` (caller keeps `a < 2^offset`).
    fn set(&self, a: u32) -> PortSet {
        if !self.is_shared() {
            return PortSet {
                first: 0,
                last: u16::MAX,
            };
        }
        let start = (a << (16 - u32::from(self.offset))) | (u32::from(self.psid) << self.m());
        let end = start + self.set_size() - 1;
        // Both fit in 16 bits: a < 2^offset and psid < 2^k place them inside 0..=65535.
        PortSet {
            first: start as u16,
            last: end as u16,
        }
    }

    /// Which PSID owns `port` under this offset and length; `None` if the port belongs to no
    /// PSID (the A = 0 block with a > 0) or nothing is shared.
    pub fn psid_of_port(&self, port: u16) -> Option<u16> {
        if !self.is_shared() {
            return None;
        }
        let port = u32::from(port);
        if self.offset > 0 && port >> (16 - u32::from(self.offset)) == 0 {
            return None;
        }
        let mask = (1u32 << self.psid_len) - 1;
        Some(((port >> self.m()) & mask) as u16)
    }

    /// Whether this CE may use `port` as an external source port.
    pub fn owns_port(&self, port: u16) -> bool {
        !self.is_shared() || self.psid_of_port(port) == Some(self.psid)
    }
}

/// The plain number of a PSID written left-aligned in 16 bits, as RFC 7598 PORTPARAMS carries
/// it and OpenWrt's `psid` option (and mapcalc's `psid=`) read it: PSID 212 with length 8 is
/// 54272. `None` when a bit below the PSID is set or the length is not 1 to 16.
pub fn psid_from_left_aligned(left: u16, psid_len: u8) -> Option<u16> {
    if psid_len == 0 || psid_len > 16 {
        return None;
    }
    let shift = 16 - u32::from(psid_len);
    let right = u32::from(left) >> shift;
    (right << shift == u32::from(left)).then_some(right as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v6plus_shape() {
        let p = PortParams::new(4, 8, 212).unwrap();
        let sets: Vec<_> = p.sets().collect();
        assert_eq!(sets.len(), 15);
        assert_eq!(
            sets[0],
            PortSet {
                first: 7488,
                last: 7503
            }
        );
        assert_eq!(
            sets[14],
            PortSet {
                first: 64832,
                last: 64847
            }
        );
        assert_eq!(p.port_count(), 240);
        assert_eq!(p.psid_of_port(7490), Some(212));
        assert_eq!(p.psid_of_port(100), None);
        assert!(p.owns_port(64847));
        assert!(!p.owns_port(64848));
    }

    #[test]
    fn offset_zero_keeps_block_zero() {
        let p = PortParams::new(0, 8, 3).unwrap();
        let sets: Vec<_> = p.sets().collect();
        assert_eq!(
            sets,
            vec![PortSet {
                first: 768,
                last: 1023
            }]
        );
        assert_eq!(p.psid_of_port(1000), Some(3));
    }

    #[test]
    fn invalid_parameters_are_refused() {
        assert!(PortParams::new(16, 0, 0).is_none());
        assert!(PortParams::new(6, 11, 0).is_none());
        assert!(PortParams::new(6, 8, 256).is_none());
        assert!(PortParams::new(0, 16, u16::MAX).is_some());
    }

    #[test]
    fn left_aligned_psid() {
        assert_eq!(psid_from_left_aligned(54272, 8), Some(212));
        assert_eq!(psid_from_left_aligned(0x3400, 8), Some(0x34));
        assert_eq!(psid_from_left_aligned(0xffff, 16), Some(0xffff));
        assert_eq!(psid_from_left_aligned(212, 8), None);
        assert_eq!(psid_from_left_aligned(0, 0), None);
        assert_eq!(psid_from_left_aligned(0, 17), None);
    }

    #[test]
    fn unshared_owns_everything() {
        let p = PortParams::unrestricted();
        assert_eq!(
            p.sets().collect::<Vec<_>>(),
            vec![PortSet {
                first: 0,
                last: 65535
            }]
        );
        assert_eq!(p.port_count(), 65536);
        assert!(p.owns_port(0));
    }
}
