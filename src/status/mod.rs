//! `mape status`: what each active MAP-E interface is doing with its ports.
//!
//! Port exhaustion is MAP-E's practical problem (240 ports on v6plus/BIGLOBE, 1008 on OCN), so
//! this reads the kernel's own view: every conntrack entry whose reply goes to our IPv4 address
//! holds one of our ports (or ICMP identifiers). We count them per port set, per protocol, per
//! LAN host and per destination, add conntrack's failure statistics and our nft counters, and
//! warn when usage passes 80%.
//!
//! - [`conntrack`]: pure parsers for the conntrack table and statistics;
//! - [`collect`](mod@collect): finding the interfaces (ubus, state files, nft tables) and counting, over a
//!   [`collect::Source`] that the tests replace with canned text;
//! - [`report`]: the dashboard text and the JSON (schema in docs/status.md).
//!
//! The same per-interface object goes into the interface's ubus data (`data.mape_status`,
//! pushed by the netifd watch task, see [`crate::handler::StatusPush`]) and into
//! `$MAPE_STATE_DIR/status/<iface>.json` every watch round.

pub mod collect;
pub mod conntrack;
pub mod report;

use std::net::Ipv4Addr;

use crate::engine::PortSet;
use crate::state::MappingRecord;
pub use collect::{collect, discover, discover_one, Options, RealSource, Source, Target};
pub use conntrack::{Proto, Stats};

/// Usage at or above this percentage of the ports is a warning.
pub const WARN_PERCENT: u32 = 80;

/// The mapping of one interface, from the calculator JSON (state file or `data.mape`) or, if
/// that is missing, read back from our nft table (then ISP, PSID, CE and BR are unknown).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingInfo {
    pub isp: Option<String>,
    pub prefix: Option<String>,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix_len: u8,
    pub psid: Option<u16>,
    pub psid_len: Option<u8>,
    /// Ascending, non-overlapping.
    pub port_sets: Vec<PortSet>,
    pub port_count: u32,
    pub ce: Option<String>,
    pub br: Option<String>,
}

impl MappingInfo {
    /// From the calculator's record (state file, `data.mape`).
    pub fn from_record(r: &MappingRecord) -> Self {
        Self::new(
            r.ipv4,
            r.ipv4_prefix_len,
            r.port_sets.clone(),
            MappingExtra {
                isp: r.isp.clone(),
                prefix: Some(r.prefix.clone()),
                psid: Some(r.psid),
                psid_len: Some(r.rule.psid_len),
                ce: Some(r.ce.to_string()),
                br: r.br.map(|b| b.to_string()),
            },
        )
    }

    fn new(ipv4: Ipv4Addr, ipv4_prefix_len: u8, mut sets: Vec<PortSet>, x: MappingExtra) -> Self {
        sets.sort();
        sets.dedup_by(|b, a| b.first <= a.last); // drop overlaps (never in a real mapping)
        let port_count = sets.iter().map(PortSet::len).sum();
        MappingInfo {
            isp: x.isp,
            prefix: x.prefix,
            ipv4,
            ipv4_prefix_len,
            psid: x.psid,
            psid_len: x.psid_len,
            port_sets: sets,
            port_count,
            ce: x.ce,
            br: x.br,
        }
    }

    /// Whether `a` is our address (or inside our IPv4 prefix).
    pub fn owns_addr(&self, a: Ipv4Addr) -> bool {
        let len = u32::from(self.ipv4_prefix_len.min(32));
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        u32::from(a) & mask == u32::from(self.ipv4) & mask
    }

    /// Index of the port set holding `port`.
    pub fn set_of(&self, port: u16) -> Option<usize> {
        let i = self.port_sets.partition_point(|s| s.last < port);
        (i < self.port_sets.len() && self.port_sets[i].contains(port)).then_some(i)
    }
}

#[derive(Default)]
struct MappingExtra {
    isp: Option<String>,
    prefix: Option<String>,
    psid: Option<u16>,
    psid_len: Option<u8>,
    ce: Option<String>,
    br: Option<String>,
}

/// The tunnel device, from sysfs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tunnel {
    pub ifname: String,
    pub present: bool,
    pub up: bool,
    pub mtu: Option<u32>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    pub rx_packets: Option<u64>,
    pub tx_packets: Option<u64>,
}

/// Our nft table and its named counters (packets, bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub present: bool,
    pub counters: Vec<(String, u64, u64)>,
}

/// Distinct ports and flows of one protocol.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtoUse {
    pub ports: u32,
    pub connections: u32,
}

/// One port set: distinct ports in use (any protocol), per protocol, and flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetUse {
    pub set: PortSet,
    pub in_use: u32,
    /// tcp, udp, icmp (as [`Proto::PORTED`]).
    pub by_proto: [u32; 3],
    pub connections: u32,
}

/// One LAN host (original source address) and the ports its flows hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostUse {
    pub host: Ipv4Addr,
    pub ports: u32,
    pub by_proto: [u32; 3],
    pub connections: u32,
}

/// One destination (protocol, address, port) and how many of our flows go there. The kernel
/// may reuse a port towards different destinations, so the hard limit is per destination:
/// at most one flow per port of ours to the same address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DestUse {
    pub proto: Proto,
    pub addr: Ipv4Addr,
    pub port: u16,
    pub connections: u32,
}

/// The port accounting of one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Distinct port numbers of ours used by at least one flow (any protocol).
    pub in_use: u32,
    pub connections: u32,
    pub by_proto: [ProtoUse; 3],
    /// Flows of protocols without ports (they hold our address only).
    pub other_connections: u32,
    /// Flows with our address but a port outside our sets (the BR drops those).
    pub outside_sets: u32,
    pub sets: Vec<SetUse>,
    /// Number of distinct LAN hosts with flows.
    pub hosts: u32,
    pub top_hosts: Vec<HostUse>,
    pub top_destinations: Vec<DestUse>,
    /// The destination with the most flows (also when `top_destinations` is cut to none).
    pub busiest_destination: Option<DestUse>,
}

impl Usage {
    /// `in_use` as a whole percentage of `port_count`, rounded down.
    pub fn percent(&self, port_count: u32) -> u32 {
        percent(self.in_use, port_count)
    }
}

/// `part * 100 / whole`, rounded down (0 when `whole` is 0).
pub fn percent(part: u32, whole: u32) -> u32 {
    if whole == 0 {
        0
    } else {
        (u64::from(part) * 100 / u64::from(whole)) as u32
    }
}

/// Something the user should act on. `code` is stable (LuCI may translate it): one of ours
/// (see the README) or a netifd error code of the interface (`NO_PREFIX`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub code: String,
    pub message: String,
}

impl Warning {
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Warning {
            code: code.to_string(),
            message: message.into(),
        }
    }
}

/// `ok`, `warning` (something to look at) or `down` (no working SNAT through the tunnel).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warning,
    Down,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warning => "warning",
            Level::Down => "down",
        }
    }
}

/// Warning codes that mean the interface does not work (level `down`).
pub const DOWN_CODES: &[&str] = &[
    "INTERFACE_DOWN",
    "TUNNEL_DOWN",
    "TABLE_MISSING",
    "NO_MAPPING",
];

/// Everything about one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IfaceStatus {
    pub name: String,
    /// Where the interface was found: `ubus`, `state` (a state file) or `nft` (a table only).
    pub origin: &'static str,
    pub up: bool,
    pub mapping: Option<MappingInfo>,
    pub tunnel: Tunnel,
    pub table: Table,
    /// `None` when conntrack could not be read or the mapping is unknown.
    pub usage: Option<Usage>,
    pub warnings: Vec<Warning>,
}

impl IfaceStatus {
    pub fn level(&self) -> Level {
        if !self.up
            || self
                .warnings
                .iter()
                .any(|w| DOWN_CODES.contains(&w.code.as_str()))
        {
            Level::Down
        } else if self.warnings.is_empty() {
            Level::Ok
        } else {
            Level::Warning
        }
    }
}

/// Failures counted since the previous look (the watch task keeps the previous sample).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recent {
    pub seconds: u64,
    pub insert_failed: u64,
    pub drop: u64,
    pub early_drop: u64,
}

/// The conntrack side, shared by all interfaces (one table per network namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CtInfo {
    /// `/proc/net/nf_conntrack` or `conntrack -L`; `None` if neither could be read.
    pub source: Option<&'static str>,
    pub error: Option<String>,
    pub entries: Option<u64>,
    pub max: Option<u64>,
    pub stats: Stats,
    pub recent: Option<Recent>,
}

/// One `mape status` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Unix time of the sample, in seconds.
    pub time: u64,
    pub interfaces: Vec<IfaceStatus>,
    pub conntrack: CtInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping_from_the_record() {
        let mut r = crate::state::tests::record();
        r.port_sets.reverse();
        let m = MappingInfo::from_record(&r);
        assert_eq!(m.port_count, 32);
        assert_eq!(m.port_sets[0].first, 7488, "sorted");
        assert_eq!(m.set_of(7490), Some(0));
        assert_eq!(m.set_of(11599), Some(1));
        assert_eq!(m.set_of(7504), None);
        assert_eq!(m.set_of(1), None);
        assert_eq!(m.psid, Some(212));
        assert_eq!(m.psid_len, Some(8));
        assert!(m.owns_addr("106.72.63.108".parse().unwrap()));
        assert!(!m.owns_addr("106.72.63.109".parse().unwrap()));
    }

    #[test]
    fn prefix_ownership_and_percent() {
        let mut r = crate::state::tests::record();
        r.ipv4 = "192.0.2.16".parse().unwrap();
        r.ipv4_prefix_len = 28;
        r.port_sets = vec![PortSet {
            first: 0,
            last: 65535,
        }];
        let m = MappingInfo::from_record(&r);
        assert_eq!(m.port_count, 65536);
        assert!(m.owns_addr("192.0.2.31".parse().unwrap()));
        assert!(!m.owns_addr("192.0.2.32".parse().unwrap()));
        assert_eq!(percent(192, 240), 80);
        assert_eq!(percent(191, 240), 79);
        assert_eq!(percent(1, 0), 0);
    }
}
