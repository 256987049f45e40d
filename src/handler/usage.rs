//! The watch task's port-usage check: cheap enough to run on a MIPS router with tens of
//! thousands of flows, so that the log says when the line's ports run short.
//!
//! Every [`USAGE_EVERY`] it streams `/proc/net/nf_conntrack` once and parses only the lines
//! whose reply goes to our IPv4 address (a substring test on each line; the full parser runs on
//! ours alone), counting the distinct ports of ours in use; and it reads the conntrack failure
//! counters (`/proc/net/stat/nf_conntrack`, a few lines). It logs a line when usage crosses
//! [`crate::status::WARN_PERCENT`] (and when it falls back), and when failed inserts (SNAT
//! found no free port) grow. It publishes nothing through netifd: the full `mape status` is
//! computed on demand (the rpcd plugin, the command).

use std::io::Read;

/// Bytes read at a time from the conntrack table.
const CHUNK: usize = 256 * 1024;

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) => break,
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(at)
}
use std::net::Ipv4Addr;
use std::time::Duration;

use crate::engine::PortSet;
use crate::status::conntrack::{self, Proto, Stats};
use crate::status::{percent, WARN_PERCENT};

/// How often the task counts (see docs/openwrt.md for the measured cost).
pub const USAGE_EVERY: Duration = Duration::from_secs(60);

pub const PROC_CONNTRACK: &str = "/proc/net/nf_conntrack";
pub const PROC_STAT: &str = "/proc/net/stat/nf_conntrack";

/// Ports of ours in use and our flows, from one pass over the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub ports_in_use: u32,
    pub flows: u32,
}

/// What the check remembers between rounds.
#[derive(Debug, Clone)]
pub struct UsageCheck {
    ipv4: Ipv4Addr,
    needle: String,
    sets: Vec<PortSet>,
    port_count: u32,
    high: bool,
    failed: Option<u64>,
}

impl UsageCheck {
    /// For a shared address and its port sets; `None` when ports are not scarce (a full
    /// address or an IPv4 prefix: all 65536 ports).
    pub fn new(ipv4: Ipv4Addr, ipv4_prefix_len: u8, sets: &[PortSet]) -> Option<Self> {
        let port_count: u32 = sets.iter().map(PortSet::len).sum();
        if ipv4_prefix_len != 32 || port_count >= 65536 || port_count == 0 {
            return None;
        }
        let mut sets = sets.to_vec();
        sets.sort();
        Some(UsageCheck {
            ipv4,
            needle: format!("dst={ipv4} "),
            sets,
            port_count,
            high: false,
            failed: None,
        })
    }

    fn ours(&self, port: u16) -> bool {
        let i = self.sets.partition_point(|s| s.last < port);
        i < self.sets.len() && self.sets[i].contains(port)
    }

    /// One pass over a conntrack table. The text is read in large chunks and searched for
    /// our address as a reply destination (`dst=<ours> `) with one substring search per chunk;
    /// only the lines around a hit are parsed. Most lines are never looked at one by one.
    pub fn count(&self, mut table: impl Read) -> std::io::Result<Counts> {
        // One bit per port (8 KiB): which of ours are in use.
        let mut ports = vec![0u64; 1 << 10];
        let mut flows = 0;
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 512);
        let mut eof = false;
        while !eof {
            // Fill up to CHUNK bytes after what is left of the previous chunk.
            let start = buf.len();
            buf.resize(start + CHUNK, 0);
            let n = read_full(&mut table, &mut buf[start..])?;
            buf.truncate(start + n);
            eof = n < CHUNK;
            // Complete lines only; the rest waits for the next chunk.
            let end = if eof {
                buf.len()
            } else {
                match buf.iter().rposition(|b| *b == b'\n') {
                    Some(i) => i + 1,
                    None => continue, // a line longer than a chunk: keep reading
                }
            };
            // /proc/net/nf_conntrack is ASCII; anything else is skipped.
            if let Ok(text) = std::str::from_utf8(&buf[..end]) {
                for (at, _) in text.match_indices(self.needle.as_str()) {
                    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
                    let Some(e) = conntrack::parse_line(&text[line_start..line_end]) else {
                        continue;
                    };
                    // The original destination may be ours too (a LAN host talking to our
                    // own address): count each flow once, by its reply destination.
                    let in_reply = text[line_start..at].matches(" src=").count() >= 2;
                    if !in_reply || e.nat_addr != self.ipv4 || e.proto == Proto::Other {
                        continue;
                    }
                    flows += 1;
                    if self.ours(e.nat_port) {
                        ports[usize::from(e.nat_port >> 6)] |= 1 << (e.nat_port & 63);
                    }
                }
            }
            buf.drain(..end);
        }
        Ok(Counts {
            ports_in_use: ports.iter().map(|w| w.count_ones()).sum(),
            flows,
        })
    }

    /// Judges one round; returns the lines worth logging (transitions only).
    pub fn judge(&mut self, c: Counts, stats: Stats) -> Vec<String> {
        let mut out = Vec::new();
        let pc = percent(c.ports_in_use, self.port_count);
        let high = pc >= WARN_PERCENT;
        if high != self.high {
            out.push(if high {
                format!(
                    "warning: PORTS_HIGH: {} of {} ports in use ({pc}%), {} flows: new flows will start to fail",
                    c.ports_in_use, self.port_count, c.flows
                )
            } else {
                format!(
                    "port usage back to {} of {} ({pc}%)",
                    c.ports_in_use, self.port_count
                )
            });
            self.high = high;
        }
        if let Some(now) = stats.insert_failed {
            if let Some(before) = self.failed {
                if now > before {
                    out.push(format!(
                        "warning: SNAT_FAILING: {} new flows could not be set up since the last look (conntrack insert_failed): no free port for their destination",
                        now - before
                    ));
                }
            }
            self.failed = Some(now);
        }
        out
    }

    /// One round on the running system.
    pub fn round(&mut self) -> Vec<String> {
        let counts = match std::fs::File::open(PROC_CONNTRACK) {
            Ok(f) => self.count(f),
            Err(e) => Err(e),
        };
        let stats = std::fs::read_to_string(PROC_STAT)
            .map(|t| conntrack::parse_proc_stat(&t))
            .unwrap_or_default();
        match counts {
            Ok(c) => self.judge(c, stats),
            Err(_) => Vec::new(), // no conntrack table (module not loaded): nothing to count
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(src: &str, nat: &str, port: u16) -> String {
        format!("ipv4     2 tcp      6 100 ESTABLISHED src={src} dst=10.0.0.1 sport=40000 dport=443 src=10.0.0.1 dst={nat} sport=443 dport={port} [ASSURED] mark=0 use=1\n")
    }

    fn check() -> UsageCheck {
        let sets = [
            PortSet {
                first: 7488,
                last: 7503,
            },
            PortSet {
                first: 11584,
                last: 11599,
            },
        ];
        UsageCheck::new("106.72.63.108".parse().unwrap(), 32, &sets).unwrap()
    }

    #[test]
    fn counts_only_our_flows_and_ports() {
        let c = check();
        let mut t = String::new();
        t += &line("192.168.1.2", "106.72.63.108", 7488);
        t += &line("192.168.1.3", "106.72.63.108", 7488); // same port, other flow
        t += &line("192.168.1.2", "106.72.63.108", 11590);
        t += &line("192.168.1.2", "106.72.63.109", 7489); // another address
        t += &line("192.168.1.2", "106.72.63.10", 7490); // a prefix of ours as text
        t += "ipv6     10 tcp      6 100 ESTABLISHED src=2001:db8::1 dst=2001:db8::2 sport=1 dport=2 src=2001:db8::2 dst=2001:db8::1 sport=2 dport=1 use=1\n";
        let n = c.count(t.as_bytes()).unwrap();
        assert_eq!(
            n,
            Counts {
                ports_in_use: 2,
                flows: 3
            }
        );
    }

    #[test]
    fn logs_transitions_and_failures_only() {
        let mut c = check();
        let stats = |f| Stats {
            insert_failed: Some(f),
            ..Stats::default()
        };
        assert!(c
            .judge(
                Counts {
                    ports_in_use: 10,
                    flows: 10
                },
                stats(5)
            )
            .is_empty());
        let l = c.judge(
            Counts {
                ports_in_use: 26,
                flows: 40,
            },
            stats(5),
        );
        assert_eq!(l.len(), 1);
        assert!(
            l[0].contains("PORTS_HIGH: 26 of 32 ports in use (81%)"),
            "{l:?}"
        );
        assert!(c
            .judge(
                Counts {
                    ports_in_use: 27,
                    flows: 41
                },
                stats(5)
            )
            .is_empty());
        let l = c.judge(
            Counts {
                ports_in_use: 27,
                flows: 41,
            },
            stats(9),
        );
        assert!(l[0].contains("SNAT_FAILING: 4 new flows"), "{l:?}");
        let l = c.judge(
            Counts {
                ports_in_use: 3,
                flows: 3,
            },
            stats(9),
        );
        assert!(l[0].contains("back to 3 of 32"), "{l:?}");
        assert!(UsageCheck::new("192.0.2.0".parse().unwrap(), 28, &[]).is_none());
    }
}
