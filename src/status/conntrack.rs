//! Conntrack input: the connection table (`/proc/net/nf_conntrack`, or `conntrack -L -o
//! extended`, same line format) and the statistics (`/proc/net/stat/nf_conntrack`, or
//! `conntrack -S`). Pure parsers; the reading is done by [`super::collect::Source`].
//!
//! A table line is `ipv4 2 tcp 6 431999 ESTABLISHED src=… dst=… sport=… dport=… [UNREPLIED]
//! src=… dst=… sport=… dport=… [ASSURED] mark=0 use=1`: the first tuple is the original
//! direction (LAN host → server), the second the reply direction (server → us, after SNAT), so
//! the reply tuple's `dst`/`dport` (for ICMP, its `id`) is the address and port SNAT gave the
//! flow. `conntrack -L` without `-o extended` leaves out the leading `ipv4 2`; both are read.

use std::net::Ipv4Addr;

/// Protocols whose flows hold a port (or an ICMP identifier) of the CE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    /// Anything else (GRE, ESP, …): it holds the address only.
    Other,
}

impl Proto {
    pub const PORTED: [Proto; 3] = [Proto::Tcp, Proto::Udp, Proto::Icmp];

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Other => "other",
        }
    }

    /// Index into per-protocol arrays of [`Proto::PORTED`] (`Other` has none).
    pub fn index(self) -> Option<usize> {
        match self {
            Proto::Tcp => Some(0),
            Proto::Udp => Some(1),
            Proto::Icmp => Some(2),
            Proto::Other => None,
        }
    }
}

/// The part of an IPv4 conntrack entry that status needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub proto: Proto,
    /// Original source: the LAN host (or our own address for the router's own flows).
    pub src: Ipv4Addr,
    /// Original destination and port (0 for ICMP and other protocols).
    pub dst: Ipv4Addr,
    pub dport: u16,
    /// Reply destination: the address the flow leaves with (ours if SNATed).
    pub nat_addr: Ipv4Addr,
    /// Reply destination port, or the ICMP identifier (0 for other protocols).
    pub nat_port: u16,
}

#[derive(Default)]
struct Tuple {
    src: Option<Ipv4Addr>,
    dst: Option<Ipv4Addr>,
    dport: Option<u16>,
    id: Option<u16>,
}

/// Parses one table line; `None` for IPv6, malformed lines and blank lines.
pub fn parse_line(line: &str) -> Option<Entry> {
    let mut words = line.split_ascii_whitespace().peekable();
    match *words.peek()? {
        "ipv4" => {
            words.next();
            words.next(); // "2", the l3 protocol number
        }
        "ipv6" => return None,
        _ => {}
    }
    let proto = match words.next()? {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv6" => return None,
        _ => Proto::Other,
    };
    let mut tuples = [Tuple::default(), Tuple::default()];
    let mut n = 0usize; // tuples started
    for w in words {
        let Some((key, value)) = w.split_once('=') else {
            continue; // protocol number, timeout, state, [FLAGS]
        };
        if key == "src" {
            n += 1;
            if n > 2 {
                break;
            }
        }
        if n == 0 {
            continue;
        }
        let t = &mut tuples[n - 1];
        match key {
            // An IPv6 address here (conntrack -L without -o extended) fails to parse: skipped.
            "src" => t.src = Some(value.parse().ok()?),
            "dst" => t.dst = Some(value.parse().ok()?),
            "dport" => t.dport = value.parse().ok(),
            "id" => t.id = value.parse().ok(),
            _ => {}
        }
    }
    let [orig, reply] = tuples;
    let (dport, nat_port) = match proto {
        Proto::Tcp | Proto::Udp => (orig.dport?, reply.dport?),
        Proto::Icmp => (0, reply.id?),
        Proto::Other => (0, 0),
    };
    Some(Entry {
        proto,
        src: orig.src?,
        dst: orig.dst?,
        dport,
        nat_addr: reply.dst?,
        nat_port,
    })
}

/// Conntrack statistics of the network namespace, summed over CPUs. `None`: not available.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries that could not be inserted: for a NATed flow, no free port for its destination
    /// in the chosen set ("SNAT failed"); also lost races of simultaneous packets.
    pub insert_failed: Option<u64>,
    /// Packets dropped by conntrack (a failed insert, or a full table).
    pub drop: Option<u64>,
    /// Entries evicted early because the table was full.
    pub early_drop: Option<u64>,
}

const STAT_KEYS: [&str; 3] = ["insert_failed", "drop", "early_drop"];

impl Stats {
    fn add(&mut self, key: &str, v: u64) {
        let slot = match key {
            "insert_failed" => &mut self.insert_failed,
            "drop" => &mut self.drop,
            "early_drop" => &mut self.early_drop,
            _ => return,
        };
        *slot = Some(slot.unwrap_or(0).saturating_add(v));
    }

    pub fn is_known(&self) -> bool {
        self.insert_failed.is_some() || self.drop.is_some() || self.early_drop.is_some()
    }
}

/// `/proc/net/stat/nf_conntrack`: a header of column names, then one row of hex numbers per
/// CPU. Columns are found by name (they differ between kernels).
pub fn parse_proc_stat(text: &str) -> Stats {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Stats::default();
    };
    let names: Vec<&str> = header.split_ascii_whitespace().collect();
    let mut stats = Stats::default();
    for row in lines {
        let values: Vec<&str> = row.split_ascii_whitespace().collect();
        if values.len() != names.len() {
            continue;
        }
        for (name, value) in names.iter().zip(values) {
            if STAT_KEYS.contains(name) {
                if let Ok(v) = u64::from_str_radix(value, 16) {
                    stats.add(name, v);
                }
            }
        }
    }
    stats
}

/// `conntrack -S`: one line per CPU of `key=value` words (decimal).
pub fn parse_conntrack_s(text: &str) -> Stats {
    let mut stats = Stats::default();
    for w in text.split_ascii_whitespace() {
        if let Some((k, v)) = w.split_once('=') {
            if let Ok(v) = v.parse::<u64>() {
                stats.add(k, v);
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "ipv4     2 tcp      6 431999 ESTABLISHED src=192.168.1.2 dst=10.99.0.2 sport=51234 dport=8080 src=10.99.0.2 dst=106.72.63.108 sport=8080 dport=7490 [ASSURED] mark=0 zone=0 use=2";

    #[test]
    fn tcp_reply_tuple_gives_the_nat_port() {
        let e = parse_line(TCP).unwrap();
        assert_eq!(e.proto, Proto::Tcp);
        assert_eq!(e.src, Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!(e.dst, Ipv4Addr::new(10, 99, 0, 2));
        assert_eq!(e.dport, 8080);
        assert_eq!(e.nat_addr, Ipv4Addr::new(106, 72, 63, 108));
        assert_eq!(e.nat_port, 7490);
    }

    #[test]
    fn udp_unreplied_icmp_and_accounting_fields() {
        let udp = "ipv4     2 udp      17 29 src=192.168.1.3 dst=8.8.8.8 sport=40000 dport=53 packets=1 bytes=60 [UNREPLIED] src=8.8.8.8 dst=106.72.63.108 sport=53 dport=11590 packets=0 bytes=0 mark=0 use=1";
        let e = parse_line(udp).unwrap();
        assert_eq!((e.proto, e.dport, e.nat_port), (Proto::Udp, 53, 11590));
        let icmp = "ipv4     2 icmp     1 29 src=192.168.1.2 dst=10.99.0.2 type=8 code=0 id=4242 src=10.99.0.2 dst=106.72.63.108 type=0 code=0 id=7500 mark=0 use=1";
        let e = parse_line(icmp).unwrap();
        assert_eq!((e.proto, e.dport, e.nat_port), (Proto::Icmp, 0, 7500));
        // conntrack -L without -o extended: no leading "ipv4 2".
        let short = TCP.trim_start_matches("ipv4     2 ");
        assert_eq!(parse_line(short), parse_line(TCP));
    }

    #[test]
    fn other_protocols_ipv6_and_junk() {
        let gre = "ipv4     2 gre      47 179 timeout=180, stream_timeout=180 src=192.168.1.5 dst=203.0.113.9 srckey=0x0 dstkey=0x0 src=203.0.113.9 dst=106.72.63.108 srckey=0x0 dstkey=0x0 [ASSURED] mark=0 use=1";
        let e = parse_line(gre).unwrap();
        assert_eq!((e.proto, e.nat_port), (Proto::Other, 0));
        assert_eq!(e.nat_addr, Ipv4Addr::new(106, 72, 63, 108));
        let v6 = "ipv6     10 tcp      6 100 ESTABLISHED src=2001:db8::1 dst=2001:db8::2 sport=1 dport=2 src=2001:db8::2 dst=2001:db8::1 sport=2 dport=1 mark=0 use=1";
        assert_eq!(parse_line(v6), None);
        assert_eq!(parse_line(&v6.replace("ipv6     10 ", "")), None);
        assert_eq!(parse_line(""), None);
        assert_eq!(parse_line("ipv4 2 tcp 6 10 src=1.2.3.4"), None);
        assert_eq!(
            parse_line("ipv4 2 tcp 6 10 src=x dst=y sport=1 dport=2"),
            None
        );
        assert_eq!(
            parse_line("conntrack v1.4.7 (conntrack-tools): 3 flow entries have been shown."),
            None
        );
    }

    #[test]
    fn stats_sum_cpus_by_column_name() {
        let text = "entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart\n\
                    0000002a  00000000 00000000 00000000 00000003 00000000 00000000 00000000 00000000 00000010 00000011 00000001 00000000  00000000 00000000 00000000 00000000\n\
                    0000002a  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000000  00000000 00000000 00000000 00000000\n";
        let s = parse_proc_stat(text);
        assert_eq!(s.insert_failed, Some(0x12));
        assert_eq!(s.drop, Some(0x13));
        assert_eq!(s.early_drop, Some(1));
        assert!(s.is_known());
        assert!(!parse_proc_stat("").is_known());
        let cli = "cpu=0   \tfound=0 invalid=5 insert=0 insert_failed=3 drop=3 early_drop=0 error=0 search_restart=0 \n\
                   cpu=1   \tfound=0 invalid=0 insert=0 insert_failed=1 drop=2 early_drop=4 error=0 search_restart=0 \n";
        let s = parse_conntrack_s(cli);
        assert_eq!(
            (s.insert_failed, s.drop, s.early_drop),
            (Some(4), Some(5), Some(4))
        );
    }
}
