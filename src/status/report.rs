//! `mape status` output: a dashboard for people and the JSON documented in the README
//! (schema version [`SCHEMA_VERSION`]). The per-interface object is also what the netifd watch
//! task publishes as `data.mape_status` ([`ubus_payload`]).

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use super::{percent, CtInfo, IfaceStatus, Report, Usage};

/// Bumped only when a key changes meaning or disappears; new keys may appear at any time.
pub const SCHEMA_VERSION: u32 = 1;

fn proto_obj(u: &Usage, i: usize) -> Value {
    json!({ "ports": u.by_proto[i].ports, "connections": u.by_proto[i].connections })
}

fn usage_json(u: &Usage, port_count: u32) -> (Value, Value, Value, Value) {
    let ports = json!({
        "in_use": u.in_use,
        "usage_percent": u.percent(port_count),
        "connections": u.connections,
        "tcp": proto_obj(u, 0),
        "udp": proto_obj(u, 1),
        "icmp": proto_obj(u, 2),
        "other_connections": u.other_connections,
        "outside_sets": u.outside_sets,
        "hosts": u.hosts,
    });
    let sets: Vec<Value> = u
        .sets
        .iter()
        .map(|s| {
            json!({
                "first": s.set.first, "last": s.set.last, "size": s.set.len(),
                "in_use": s.in_use, "tcp": s.by_proto[0], "udp": s.by_proto[1],
                "icmp": s.by_proto[2], "connections": s.connections,
            })
        })
        .collect();
    let hosts: Vec<Value> = u
        .top_hosts
        .iter()
        .map(|h| {
            json!({
                "address": h.host.to_string(), "ports": h.ports, "tcp": h.by_proto[0],
                "udp": h.by_proto[1], "icmp": h.by_proto[2], "connections": h.connections,
            })
        })
        .collect();
    let dests: Vec<Value> = u
        .top_destinations
        .iter()
        .map(|d| {
            json!({
                "proto": d.proto.as_str(), "address": d.addr.to_string(), "port": d.port,
                "connections": d.connections, "usage_percent": percent(d.connections, port_count),
            })
        })
        .collect();
    (
        ports,
        Value::from(sets),
        Value::from(hosts),
        Value::from(dests),
    )
}

/// The object of one interface (an element of `interfaces`).
pub fn iface_json(s: &IfaceStatus) -> Value {
    let m = s.mapping.as_ref();
    let counters: Map<String, Value> = s
        .table
        .counters
        .iter()
        .map(|(n, p, b)| (n.clone(), json!({ "packets": p, "bytes": b })))
        .collect();
    let (ports, sets, hosts, dests) = match (&s.usage, m) {
        (Some(u), Some(m)) => usage_json(u, m.port_count),
        _ => (Value::Null, Value::Null, Value::Null, Value::Null),
    };
    let warnings: Vec<Value> = s
        .warnings
        .iter()
        .map(|w| json!({ "code": w.code, "message": w.message }))
        .collect();
    let t = &s.tunnel;
    json!({
        "interface": s.name,
        "origin": s.origin,
        "up": s.up,
        "level": s.level().as_str(),
        "isp": m.and_then(|m| m.isp.clone()),
        "prefix": m.and_then(|m| m.prefix.clone()),
        "ipv4": m.map(|m| m.ipv4.to_string()),
        "ipv4_prefix_len": m.map(|m| m.ipv4_prefix_len),
        "psid": m.and_then(|m| m.psid),
        "psid_len": m.and_then(|m| m.psid_len),
        "port_count": m.map(|m| m.port_count),
        "ce": m.and_then(|m| m.ce.clone()),
        "br": m.and_then(|m| m.br.clone()),
        "tunnel": {
            "ifname": t.ifname, "present": t.present, "up": t.up, "mtu": t.mtu,
            "rx_bytes": t.rx_bytes, "tx_bytes": t.tx_bytes,
            "rx_packets": t.rx_packets, "tx_packets": t.tx_packets,
        },
        "nft": { "table": s.table.name, "present": s.table.present, "counters": counters },
        "ports": ports,
        "port_sets": sets,
        "top_hosts": hosts,
        "top_destinations": dests,
        "warnings": warnings,
    })
}

pub fn conntrack_json(ct: &CtInfo) -> Value {
    json!({
        "source": ct.source,
        "error": ct.error,
        "entries": ct.entries,
        "max": ct.max,
        "insert_failed": ct.stats.insert_failed,
        "drop": ct.stats.drop,
        "early_drop": ct.stats.early_drop,
        "recent": ct.recent.map(|r| json!({
            "seconds": r.seconds, "insert_failed": r.insert_failed,
            "drop": r.drop, "early_drop": r.early_drop,
        })),
    })
}

/// `mape status --json`.
pub fn to_json(r: &Report) -> Value {
    json!({
        "version": SCHEMA_VERSION,
        "time": r.time,
        "conntrack": conntrack_json(&r.conntrack),
        "interfaces": r.interfaces.iter().map(iface_json).collect::<Vec<_>>(),
    })
}

/// `data.mape_status` and `$MAPE_STATE_DIR/status/<iface>.json`: the interface object plus
/// `version`, `time` and `conntrack`.
pub fn ubus_payload(r: &Report, s: &IfaceStatus) -> Value {
    let mut v = iface_json(s);
    if let Some(o) = v.as_object_mut() {
        o.insert("version".into(), json!(SCHEMA_VERSION));
        o.insert("time".into(), json!(r.time));
        o.insert("conntrack".into(), conntrack_json(&r.conntrack));
    }
    v
}

const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];

fn bytes(n: Option<u64>) -> String {
    let Some(n) = n else {
        return "?".into();
    };
    match scaled(n) {
        (_, 0) => format!("{n} B"),
        (v, i) => {
            let t = tenths(v);
            format!("{}.{} {}", t / 10, t % 10, UNITS[i])
        }
    }
}

/// `n` in the largest of [`UNITS`] (powers of 1000) that keeps it at least 1, and that unit.
fn scaled(n: u64) -> (f64, usize) {
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i + 1 < UNITS.len() {
        v /= 1000.0;
        i += 1;
    }
    (v, i)
}

/// `v` (1 <= v < 2^32) in tenths, rounded as `format!("{v:.1}")` rounds: the exact binary value,
/// ties to even. By hand, because float formatting would add ~12 KB to the router binary
/// (docs/sizes.md); a test compares the two.
fn tenths(v: f64) -> u64 {
    let bits = v.to_bits();
    // v = m * 2^-shift exactly, with 21 <= shift <= 52 in this range
    let shift = 1075 - ((bits >> 52) & 0x7ff);
    let m = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
    let scaled = m * 10;
    let (q, r) = (scaled >> shift, scaled & ((1 << shift) - 1));
    let half = 1 << (shift - 1);
    (q + u128::from(r > half || (r == half && q % 2 == 1))) as u64
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A bar of at most 16 cells for `used` of `size`; a cell is filled as soon as it holds one.
fn bar(used: u32, size: u32) -> String {
    let cells = size.clamp(1, 16);
    let filled = if used == 0 {
        0
    } else {
        ((u64::from(used) * u64::from(cells)).div_ceil(u64::from(size.max(1)))) as u32
    };
    (0..cells)
        .map(|i| if i < filled.min(cells) { '#' } else { '.' })
        .collect()
}

fn iface_text(out: &mut String, s: &IfaceStatus, ct: &CtInfo) {
    let isp = s
        .mapping
        .as_ref()
        .and_then(|m| m.isp.clone())
        .unwrap_or_else(|| "explicit rule".into());
    let _ = writeln!(
        out,
        "{}: {} ({}), {isp}",
        s.name,
        if s.up { "up" } else { "down" },
        s.level().as_str()
    );
    if let Some(m) = &s.mapping {
        let mut ipv4 = m.ipv4.to_string();
        if m.ipv4_prefix_len < 32 {
            let _ = write!(ipv4, "/{}", m.ipv4_prefix_len);
        }
        let psid = match (m.psid, m.psid_len) {
            (Some(p), Some(l)) if l > 0 => format!("PSID {p}, "),
            (Some(_), Some(_)) => "no port sharing, ".into(),
            _ => String::new(),
        };
        let sets = m.port_sets.len() as u32;
        let size = m.port_sets.first().map_or(0, |s| s.len());
        let same = m.port_sets.iter().all(|s| s.len() == size);
        let shape = if same {
            format!("{} of {size}", plural(sets, "set", "sets"))
        } else {
            plural(sets, "range", "ranges")
        };
        let _ = writeln!(
            out,
            "  IPv4        {ipv4}  {psid}{} ports in {shape}",
            m.port_count
        );
        if let Some(prefix) = &m.prefix {
            let _ = writeln!(out, "  Prefix      {prefix}");
        }
        let _ = writeln!(out, "  CE          {}", opt(m.ce.as_deref()));
        let _ = writeln!(out, "  BR          {}", opt(m.br.as_deref()));
    }
    let t = &s.tunnel;
    if t.present {
        let _ = writeln!(
            out,
            "  Tunnel      {} {}, MTU {}, RX {} ({} pkts), TX {} ({} pkts)",
            t.ifname,
            if t.up { "up" } else { "down" },
            opt(t.mtu),
            bytes(t.rx_bytes),
            opt(t.rx_packets),
            bytes(t.tx_bytes),
            opt(t.tx_packets)
        );
    } else {
        let _ = writeln!(out, "  Tunnel      {} absent", t.ifname);
    }
    match (&s.usage, &s.mapping) {
        (Some(u), Some(m)) => {
            let _ = writeln!(
                out,
                "  Ports       {}/{} in use ({}%): tcp {}, udp {}, icmp {}; {}, {}",
                u.in_use,
                m.port_count,
                u.percent(m.port_count),
                u.by_proto[0].ports,
                u.by_proto[1].ports,
                u.by_proto[2].ports,
                plural(u.connections, "flow", "flows"),
                plural(u.hosts, "host", "hosts")
            );
            if u.sets.len() > 1 {
                let _ = writeln!(out, "  Port sets   ports in use per set");
                let cells: Vec<String> = u
                    .sets
                    .iter()
                    .map(|s| {
                        format!(
                            "{:>11} [{}] {:>3}",
                            s.set.to_string(),
                            bar(s.in_use, s.set.len()),
                            s.in_use
                        )
                    })
                    .collect();
                for pair in cells.chunks(2) {
                    let _ = writeln!(out, "    {}", pair.join("    ").trim_end());
                }
            }
            for (i, h) in u.top_hosts.iter().enumerate() {
                let label = if i == 0 { "Top hosts" } else { "" };
                let _ = writeln!(
                    out,
                    "  {label:<11} {:<15} {} (tcp {}, udp {}, icmp {}), {}",
                    h.host.to_string(),
                    plural(h.ports, "port", "ports"),
                    h.by_proto[0],
                    h.by_proto[1],
                    h.by_proto[2],
                    plural(h.connections, "flow", "flows")
                );
            }
            for (i, d) in u.top_destinations.iter().enumerate() {
                let label = if i == 0 { "Top dests" } else { "" };
                let _ = writeln!(
                    out,
                    "  {label:<11} {} {}:{}  {} ({}% of the ports)",
                    d.proto.as_str(),
                    d.addr,
                    d.port,
                    plural(d.connections, "flow", "flows"),
                    percent(d.connections, m.port_count)
                );
            }
        }
        _ => {
            let _ = writeln!(out, "  Ports       unknown");
        }
    }
    if s.table.present {
        let c = |name: &str| {
            s.table
                .counters
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or("?".into(), |(_, p, _)| p.to_string())
        };
        let _ = writeln!(
            out,
            "  SNAT        new flows (attempts) since the table was loaded: tcp {}, udp {}, icmp {}, other {}",
            c(crate::engine::counters::SNAT_TCP),
            c(crate::engine::counters::SNAT_UDP),
            c(crate::engine::counters::SNAT_ICMP),
            c(crate::engine::counters::SNAT_OTHER)
        );
    }
    let st = &ct.stats;
    let mut line = format!(
        "  Conntrack   {}/{} entries; failures since boot: insert_failed {}, drop {}, early_drop {}",
        opt(ct.entries),
        opt(ct.max),
        opt(st.insert_failed),
        opt(st.drop),
        opt(st.early_drop)
    );
    if let Some(r) = ct.recent {
        let _ = write!(line, "; last {} s: {}", r.seconds, r.insert_failed + r.drop);
    }
    let _ = writeln!(out, "{line}");
    for w in &s.warnings {
        let _ = writeln!(out, "  warning     {}: {}", w.code, w.message);
    }
}

/// The dashboard: one block per interface.
pub fn to_text(r: &Report) -> String {
    let mut out = String::new();
    for (i, s) in r.interfaces.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        iface_text(&mut out, s, &r.conntrack);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_round_as_float_formatting_does() {
        // ties (1250: 1.25 exactly, to even), near-ties in binary (1050, 1350), unit edges
        let mut ns = vec![
            0, 1, 999, 1000, 1049, 1050, 1250, 1350, 1450, 12_250, 999_949, 999_950,
        ];
        ns.extend([
            999_999,
            1_000_000,
            1_234_567_890,
            999_999_999_999_999,
            u64::MAX,
            1 << 53,
        ]);
        // and a spread over every magnitude (a fixed-seed xorshift)
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ns.push(x >> (x % 61));
            ns.push((x >> (x % 61)) / 50 * 50);
        }
        for n in ns {
            let (v, i) = scaled(n);
            let want = if i == 0 {
                format!("{n} B")
            } else {
                format!("{v:.1} {}", UNITS[i])
            };
            assert_eq!(bytes(Some(n)), want, "{n}");
        }
        assert_eq!(bytes(Some(1250)), "1.2 kB");
        assert_eq!(bytes(Some(1050)), "1.1 kB");
        assert_eq!(bytes(None), "?");
    }
    use crate::status::{
        CtInfo, HostUse, MappingInfo, Proto, ProtoUse, SetUse, Stats, Table, Tunnel, Usage, Warning,
    };

    fn sample() -> Report {
        let mut r = crate::state::tests::record();
        r.ce = "240b::1".parse().unwrap();
        r.br = Some("2404::64".parse().unwrap());
        let m = MappingInfo::from_record(&r);
        let set = |i: usize, in_use, tcp| SetUse {
            set: m.port_sets[i],
            in_use,
            by_proto: [tcp, 0, 0],
            connections: tcp,
        };
        let usage = Usage {
            in_use: 27,
            connections: 27,
            by_proto: [
                ProtoUse {
                    ports: 27,
                    connections: 27,
                },
                ProtoUse::default(),
                ProtoUse::default(),
            ],
            sets: vec![set(0, 16, 16), set(1, 11, 11)],
            hosts: 1,
            top_hosts: vec![HostUse {
                host: "192.168.1.2".parse().unwrap(),
                ports: 27,
                by_proto: [27, 0, 0],
                connections: 27,
            }],
            top_destinations: vec![crate::status::DestUse {
                proto: Proto::Tcp,
                addr: "10.0.0.1".parse().unwrap(),
                port: 443,
                connections: 27,
            }],
            ..Usage::default()
        };
        Report {
            time: 42,
            interfaces: vec![IfaceStatus {
                name: "wanmap".into(),
                origin: "state",
                up: true,
                mapping: Some(m),
                tunnel: Tunnel {
                    ifname: "map-wanmap".into(),
                    present: true,
                    up: true,
                    mtu: Some(1460),
                    rx_bytes: Some(1_234_567),
                    ..Tunnel::default()
                },
                table: Table {
                    name: "mape_wanmap".into(),
                    present: true,
                    counters: vec![("snat_tcp".into(), 30, 1800)],
                },
                usage: Some(usage),
                warnings: vec![Warning::new("PORTS_HIGH", "27 of 32 ports in use (84%)")],
            }],
            conntrack: CtInfo {
                source: Some("/proc/net/nf_conntrack"),
                entries: Some(30),
                max: Some(65536),
                stats: Stats {
                    insert_failed: Some(2),
                    drop: Some(2),
                    early_drop: Some(0),
                },
                ..CtInfo::default()
            },
        }
    }

    #[test]
    fn json_schema_keys() {
        let r = sample();
        let v = to_json(&r);
        assert_eq!(v["version"], 1);
        assert_eq!(v["time"], 42);
        assert_eq!(v["conntrack"]["insert_failed"], 2);
        assert_eq!(v["conntrack"]["recent"], Value::Null);
        let i = &v["interfaces"][0];
        assert_eq!(i["interface"], "wanmap");
        assert_eq!(i["level"], "warning");
        assert_eq!(i["port_count"], 32);
        assert_eq!(i["ports"]["in_use"], 27);
        assert_eq!(i["ports"]["usage_percent"], 84);
        assert_eq!(i["ports"]["tcp"]["connections"], 27);
        assert_eq!(i["port_sets"][0]["size"], 16);
        assert_eq!(i["port_sets"][1]["in_use"], 11);
        assert_eq!(i["top_hosts"][0]["address"], "192.168.1.2");
        assert_eq!(i["top_destinations"][0]["usage_percent"], 84);
        assert_eq!(i["nft"]["counters"]["snat_tcp"]["packets"], 30);
        assert_eq!(i["warnings"][0]["code"], "PORTS_HIGH");
        let u = ubus_payload(&r, &r.interfaces[0]);
        assert_eq!(u["version"], 1);
        assert_eq!(u["conntrack"]["entries"], 30);
        assert_eq!(u["ports"], i["ports"]);
    }

    #[test]
    fn dashboard_text() {
        let t = to_text(&sample());
        assert!(t.starts_with("wanmap: up (warning), v6plus\n"), "{t}");
        assert!(t.contains("IPv4        106.72.63.108  PSID 212, 32 ports in 2 sets of 16"));
        assert!(
            t.contains("Ports       27/32 in use (84%): tcp 27, udp 0, icmp 0; 27 flows, 1 host")
        );
        assert!(
            t.contains("  7488-7503 [################]  16    11584-11599 [###########.....]  11"),
            "{t}"
        );
        assert!(
            t.contains("Top hosts   192.168.1.2     27 ports (tcp 27, udp 0, icmp 0), 27 flows")
        );
        assert!(t.contains("Tunnel      map-wanmap up, MTU 1460, RX 1.2 MB"));
        assert!(t.contains("insert_failed 2, drop 2, early_drop 0"));
        assert!(t.contains("warning     PORTS_HIGH: 27 of 32 ports in use (84%)"));
    }

    #[test]
    fn bars() {
        assert_eq!(bar(0, 16), "................");
        assert_eq!(bar(1, 16), "#...............");
        assert_eq!(bar(1, 4096), "#...............");
        assert_eq!(bar(4096, 4096), "################");
        assert_eq!(bar(3, 4), "###.");
    }
}
