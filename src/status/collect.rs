//! Finding the MAP-E interfaces and counting what their flows hold.
//!
//! Discovery ([`discover`]), in this order, merged by interface name:
//! 1. ubus (OpenWrt): `network.interface dump`, every interface of proto `mape` (and of proto
//!    `map` served by our compat handler, recognised by its `data.mape`): up or down, netifd
//!    errors, the mapping from `data.mape`;
//! 2. state files: `*.json` in `$MAPE_STATE_DIR` (default `/var/run/mape`, the netifd handler's)
//!    and `/run/mape` (`mape up` on plain Linux): `ifname`, `table` and the mapping (`mapping`,
//!    the calculator JSON; or the calculator keys at the top level);
//! 3. nft: every `table ip mape_*` nobody claimed; the mapping is read back from its SNAT map.
//!
//! Then [`collect`] reads each table (counters, presence), the tunnel's sysfs entry, the
//! conntrack table once for all interfaces, and the conntrack statistics.

use std::io::BufRead as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::conntrack::{self, Proto, Stats};
use super::{
    percent, CtInfo, DestUse, HostUse, IfaceStatus, MappingExtra, MappingInfo, Recent, Report,
    SetUse, Table, Tunnel, Usage, Warning, WARN_PERCENT,
};
use crate::engine::TableReadBack;
use crate::names::{check_name, ifname_for, is_dev_name, is_table_name, table_for};
use crate::state::{self, MappingRecord, State};

const PROC_CONNTRACK: &str = "/proc/net/nf_conntrack";
const PROC_STAT: &str = "/proc/net/stat/nf_conntrack";
const CT_COUNT: &str = "/proc/sys/net/netfilter/nf_conntrack_count";
const CT_MAX: &str = "/proc/sys/net/netfilter/nf_conntrack_max";

/// What status reads from the system. [`RealSource`] on a router; tests feed canned text.
pub trait Source {
    /// A whole (small) file, `None` if it cannot be read.
    fn read(&mut self, path: &str) -> Option<String>;
    /// Names of the state files in `dir` (see [`crate::state::list`]), sorted.
    fn state_names(&mut self, dir: &str) -> Vec<String>;
    /// The state `name` in `dir`, if there is one we may trust ([`crate::state::load`]).
    fn state(&mut self, dir: &str, name: &str) -> Option<State>;
    /// Runs a command (no shell) and returns its stdout.
    fn run(&mut self, cmd: &str, args: &[&str]) -> Result<String, String>;
    /// `ubus call <object> <method>` without arguments; `None` where there is no ubus.
    fn ubus_call(&mut self, object: &str, method: &str) -> Option<Value>;
    /// Unix time in seconds.
    fn now(&mut self) -> u64;
    /// Our nft table `table` (`ip` family) as read back, `None` if nft cannot list it. Only its
    /// counters unless `whole` (the mapping is known from elsewhere).
    fn nft_table(&mut self, table: &str, whole: bool) -> Option<TableReadBack>;
    /// The names of the `ip` tables.
    fn nft_tables(&mut self) -> Option<Vec<String>>;
    /// Feeds every line of the conntrack table to `line`; returns where it came from.
    fn conntrack_lines(&mut self, line: &mut dyn FnMut(&str)) -> Result<&'static str, String> {
        if let Some(text) = self.read(PROC_CONNTRACK) {
            text.lines().for_each(&mut *line);
            return Ok(PROC_CONNTRACK);
        }
        let text = self
            .run("conntrack", &["-L", "-o", "extended"])
            .map_err(|e| format!("cannot read {PROC_CONNTRACK} (root only) nor run {e}"))?;
        text.lines().for_each(line);
        Ok("conntrack -L")
    }
}

/// The real system: files, `nft`, `ubus` and `conntrack` from PATH. `nft list table` text is
/// read by the reader the front end passes in (`render::nft::read_table`, which lives beside
/// the writer of that table).
#[derive(Debug)]
pub struct RealSource {
    read_table: fn(&str) -> TableReadBack,
}

impl RealSource {
    pub fn new(read_table: fn(&str) -> TableReadBack) -> Self {
        RealSource { read_table }
    }

    /// Where state files are looked for: `$MAPE_STATE_DIR` (default `/var/run/mape`) and
    /// `/run/mape`, without duplicates (on OpenWrt `/var/run` is `/run`).
    pub fn state_dirs() -> Vec<String> {
        let first = std::env::var("MAPE_STATE_DIR").unwrap_or_else(|_| "/var/run/mape".into());
        let mut seen: Vec<PathBuf> = Vec::new();
        let mut out = Vec::new();
        for d in [first, "/run/mape".to_string()] {
            let canon = std::fs::canonicalize(&d).unwrap_or_else(|_| PathBuf::from(&d));
            if !seen.contains(&canon) {
                seen.push(canon);
                out.push(d);
            }
        }
        out
    }
}

impl Source for RealSource {
    fn read(&mut self, path: &str) -> Option<String> {
        std::fs::read_to_string(path).ok()
    }

    fn state_names(&mut self, dir: &str) -> Vec<String> {
        state::list(Path::new(dir))
    }

    fn state(&mut self, dir: &str, name: &str) -> Option<State> {
        state::load(Path::new(dir), name).ok().flatten()
    }

    fn run(&mut self, cmd: &str, args: &[&str]) -> Result<String, String> {
        let argv: Vec<&str> = std::iter::once(cmd).chain(args.iter().copied()).collect();
        crate::command::run(&argv, None).map_err(|e| e.to_string())
    }

    fn ubus_call(&mut self, object: &str, method: &str) -> Option<Value> {
        let mut u = crate::ubus::Ubus::connect(None, std::time::Duration::from_secs(5)).ok()?;
        u.call(object, method, &Value::Object(Default::default()))
            .ok()
    }

    fn now(&mut self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The counters over netlink (`nft list table` fetches and prints the whole table: seconds
    /// on a slow router); the whole table through nft when the mapping must be read back from it.
    /// (nft itself talks netlink: where netlink fails, nft would too.)
    fn nft_table(&mut self, table: &str, whole: bool) -> Option<TableReadBack> {
        if whole {
            let text = self.run("nft", &["list", "table", "ip", table]).ok()?;
            return Some((self.read_table)(&text));
        }
        if !self.nft_tables()?.iter().any(|t| t == table) {
            return None;
        }
        let counters = crate::netlink::counters(table).ok()?;
        Some(TableReadBack {
            counters,
            ..TableReadBack::default()
        })
    }

    fn nft_tables(&mut self) -> Option<Vec<String>> {
        crate::netlink::ip_tables().ok()
    }

    /// Streams `/proc/net/nf_conntrack` line by line: a busy router has tens of thousands of
    /// entries, and the watch task reads them every round.
    fn conntrack_lines(&mut self, line: &mut dyn FnMut(&str)) -> Result<&'static str, String> {
        match std::fs::File::open(PROC_CONNTRACK) {
            Ok(f) => {
                let mut r = std::io::BufReader::with_capacity(64 * 1024, f);
                let mut buf = String::new();
                loop {
                    buf.clear();
                    match r.read_line(&mut buf) {
                        Ok(0) => break,
                        Ok(_) => line(&buf),
                        Err(e) => return Err(format!("{PROC_CONNTRACK}: {e}")),
                    }
                }
                Ok(PROC_CONNTRACK)
            }
            Err(proc_err) => {
                let text = self
                    .run("conntrack", &["-L", "-o", "extended"])
                    .map_err(|e| format!("{PROC_CONNTRACK}: {proc_err}; {e}"))?;
                text.lines().for_each(line);
                Ok("conntrack -L")
            }
        }
    }
}

/// One interface to report on, before looking at it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: String,
    /// `ubus`, `state` or `nft`.
    pub origin: &'static str,
    /// netifd's `up`, when ubus knows the interface.
    pub ubus_up: Option<bool>,
    /// The interface's netifd errors (code, data).
    pub errors: Vec<Warning>,
    /// The mapping, if known.
    pub mapping: Option<MappingRecord>,
    /// A state file without the mapping (mape-rs 0.1's `mape up`): its prefix and CE address
    /// complete a mapping read back from the nft table.
    pub hints: Option<State>,
    pub ifname: String,
    pub table: String,
}

impl Target {
    fn new(name: &str, origin: &'static str) -> Self {
        Target {
            name: name.to_string(),
            origin,
            ubus_up: None,
            errors: Vec::new(),
            mapping: None,
            hints: None,
            ifname: ifname_for(name),
            table: table_for(name),
        }
    }
}

fn apply_state(t: &mut Target, state: &State) {
    if t.mapping.is_none() {
        t.mapping = state.mapping.clone();
        if t.mapping.is_none() {
            t.hints = Some(state.clone());
        }
    }
    if t.ubus_up != Some(true) {
        t.ifname = state.ifname.clone();
    }
    t.table = state.table.clone();
}

/// The one interface `name`, from its state file (the first of `dirs` that has one), else by
/// its default table name: what the watch task uses every round (no ubus, no listing).
pub fn discover_one(src: &mut dyn Source, dirs: &[String], name: &str) -> Option<Target> {
    check_name("interface", name).ok()?;
    for dir in dirs {
        if let Some(state) = src.state(dir, name) {
            let mut t = Target::new(name, "state");
            apply_state(&mut t, &state);
            return Some(t);
        }
    }
    Some(Target::new(name, "nft"))
}

/// Finds the MAP-E interfaces (see the module documentation). `dirs`: state directories;
/// `use_ubus`: ask netifd too (quietly skipped where there is no ubus).
pub fn discover(src: &mut dyn Source, dirs: &[String], use_ubus: bool) -> Vec<Target> {
    let mut out: Vec<Target> = Vec::new();
    let mut states: Vec<(String, State)> = Vec::new();
    for dir in dirs {
        for name in src.state_names(dir) {
            if states.iter().any(|(n, _)| *n == name) {
                continue;
            }
            if let Some(v) = src.state(dir, &name) {
                states.push((name, v));
            }
        }
    }

    if use_ubus {
        let dump = src.ubus_call("network.interface", "dump");
        let list = dump
            .as_ref()
            .and_then(|d| d.get("interface"))
            .and_then(Value::as_array);
        for i in list.into_iter().flatten() {
            let Some(name) = i.get("interface").and_then(Value::as_str) else {
                continue;
            };
            let proto = i.get("proto").and_then(Value::as_str).unwrap_or("");
            let data_mape = i.get("data").and_then(|d| d.get("mape")).cloned();
            let has_state = states.iter().any(|(n, _)| n == name);
            let ours = proto == "mape" || (proto == "map" && (data_mape.is_some() || has_state));
            if !ours || check_name("interface", name).is_err() {
                continue;
            }
            let mut t = Target::new(name, "ubus");
            t.ubus_up = i.get("up").and_then(Value::as_bool);
            t.mapping = data_mape.as_ref().and_then(MappingRecord::from_json);
            if let Some(dev) = i.get("l3_device").and_then(Value::as_str) {
                if is_dev_name(dev) {
                    t.ifname = dev.to_string();
                }
            }
            for e in i
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(code) = e.get("code").and_then(Value::as_str) else {
                    continue;
                };
                let data: Vec<&str> = e
                    .get("data")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let message = if data.is_empty() {
                    format!("netifd reports {code}")
                } else {
                    data.join(" ")
                };
                t.errors.push(Warning::new(code, message));
            }
            out.push(t);
        }
    }

    for (name, state) in states {
        let pos = match out.iter().position(|t| t.name == name) {
            Some(p) => p,
            None => {
                out.push(Target::new(&name, "state"));
                out.len() - 1
            }
        };
        apply_state(&mut out[pos], &state);
    }

    for table in src.nft_tables().unwrap_or_default() {
        let Some(name) = table.strip_prefix("mape_") else {
            continue;
        };
        if !is_table_name(&table) || out.iter().any(|t| t.table == table) {
            continue;
        }
        let mut t = Target::new(name, "nft");
        t.table.clone_from(&table);
        out.push(t);
    }
    out
}

/// What `collect` needs besides the targets.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// How many hosts and destinations to list.
    pub top: usize,
    /// The previous sample (time, statistics) for the `recent` failure counts.
    pub prev: Option<(u64, Stats)>,
}

fn read_u64(src: &mut dyn Source, path: &str) -> Option<u64> {
    src.read(path)?.trim().parse().ok()
}

fn tunnel(src: &mut dyn Source, ifname: &str) -> Tunnel {
    let mut t = Tunnel {
        ifname: ifname.to_string(),
        ..Tunnel::default()
    };
    if !is_dev_name(ifname) {
        return t;
    }
    let base = format!("/sys/class/net/{ifname}");
    let Some(flags) = src.read(&format!("{base}/flags")) else {
        return t;
    };
    t.present = true;
    let flags = u32::from_str_radix(flags.trim().trim_start_matches("0x"), 16).unwrap_or(0);
    let oper = src
        .read(&format!("{base}/operstate"))
        .unwrap_or_default()
        .trim()
        .to_string();
    // IFF_UP; a tunnel's operstate is "unknown" while it works.
    t.up = flags & 1 != 0 && !matches!(oper.as_str(), "down" | "lowerlayerdown" | "notpresent");
    t.mtu = read_u64(src, &format!("{base}/mtu")).and_then(|m| u32::try_from(m).ok());
    t.rx_bytes = read_u64(src, &format!("{base}/statistics/rx_bytes"));
    t.tx_bytes = read_u64(src, &format!("{base}/statistics/tx_bytes"));
    t.rx_packets = read_u64(src, &format!("{base}/statistics/rx_packets"));
    t.tx_packets = read_u64(src, &format!("{base}/statistics/tx_packets"));
    t
}

/// Flows of one interface, as they are read; counted in [`Acc::finish`] by sorting (a hash
/// map per count would cost the router binary more: docs/sizes.md).
#[derive(Default)]
struct Acc {
    /// (protocol, our port, LAN host, destination, destination port) of each flow.
    flows: Vec<(Proto, u16, Ipv4Addr, Ipv4Addr, u16)>,
    other: u32,
}

impl Acc {
    fn add(&mut self, e: &conntrack::Entry) {
        if e.proto == Proto::Other {
            self.other += 1;
            return;
        }
        self.flows
            .push((e.proto, e.nat_port, e.src, e.dst, e.dport));
    }

    fn finish(self, m: &MappingInfo, top: usize) -> Usage {
        let mut u = Usage {
            other_connections: self.other,
            connections: self.other,
            ..Usage::default()
        };
        let mut set_ports: Vec<(usize, u16)> = Vec::new();
        let mut sets: Vec<SetUse> = m
            .port_sets
            .iter()
            .map(|s| SetUse {
                set: *s,
                in_use: 0,
                by_proto: [0; 3],
                connections: 0,
            })
            .collect();
        // Flows per (protocol, our port).
        let mut ports: Vec<(Proto, u16)> = self.flows.iter().map(|f| (f.0, f.1)).collect();
        ports.sort_unstable();
        for run in ports.chunk_by(|a, b| a == b) {
            let ((proto, port), n) = (run[0], run.len() as u32);
            u.connections += n;
            let Some(p) = proto.index() else { continue };
            u.by_proto[p].connections += n;
            match m.set_of(port) {
                Some(i) => {
                    u.by_proto[p].ports += 1;
                    sets[i].by_proto[p] += 1;
                    sets[i].connections += n;
                    set_ports.push((i, port));
                }
                None => u.outside_sets += n,
            }
        }
        set_ports.sort_unstable();
        set_ports.dedup();
        for (i, _) in &set_ports {
            sets[*i].in_use += 1;
        }
        u.in_use = set_ports.len() as u32;
        u.sets = sets;

        // Per LAN host: its distinct (protocol, port) pairs, its ports, its flows.
        let mut by_host: Vec<(Ipv4Addr, Proto, u16)> =
            self.flows.iter().map(|f| (f.2, f.0, f.1)).collect();
        by_host.sort_unstable();
        let mut hosts: Vec<HostUse> = by_host
            .chunk_by(|a, b| a.0 == b.0)
            .map(|flows| {
                let mut by_proto = [0u32; 3];
                for pair in flows.chunk_by(|a, b| (a.1, a.2) == (b.1, b.2)) {
                    if let Some(i) = pair[0].1.index() {
                        by_proto[i] += 1;
                    }
                }
                let mut ports: Vec<u16> = flows.iter().map(|f| f.2).collect();
                ports.sort_unstable();
                ports.dedup();
                HostUse {
                    host: flows[0].0,
                    ports: ports.len() as u32,
                    by_proto,
                    connections: flows.len() as u32,
                }
            })
            .collect();
        hosts.sort_by(|a, b| {
            (b.ports, b.connections, a.host).cmp(&(a.ports, a.connections, b.host))
        });
        u.hosts = hosts.len() as u32;
        hosts.truncate(top);
        u.top_hosts = hosts;

        let mut by_dest: Vec<(Proto, Ipv4Addr, u16)> =
            self.flows.iter().map(|f| (f.0, f.3, f.4)).collect();
        by_dest.sort_unstable();
        let mut dests: Vec<DestUse> = by_dest
            .chunk_by(|a, b| a == b)
            .map(|run| DestUse {
                proto: run[0].0,
                addr: run[0].1,
                port: run[0].2,
                connections: run.len() as u32,
            })
            .collect();
        dests.sort_by(|a, b| {
            (b.connections, a.proto, a.addr, a.port).cmp(&(a.connections, b.proto, b.addr, b.port))
        });
        u.busiest_destination = dests.first().copied();
        dests.truncate(top);
        u.top_destinations = dests;
        u
    }
}

/// Looks at every target once and builds the report.
pub fn collect(src: &mut dyn Source, targets: Vec<Target>, opts: &Options) -> Report {
    let time = src.now();
    let mut ifaces: Vec<IfaceStatus> = Vec::new();
    for t in &targets {
        let nft = src.nft_table(&t.table, t.mapping.is_none());
        let mut ifname = t.ifname.clone();
        let mut mapping = t.mapping.as_ref().map(MappingInfo::from_record);
        if mapping.is_none() {
            if let Some(plan) = nft.as_ref().and_then(|n| n.snat.as_ref()) {
                let extra = MappingExtra {
                    prefix: t.hints.as_ref().map(|h| h.prefix.clone()),
                    ce: t.hints.as_ref().map(|h| h.ce.to_string()),
                    ..MappingExtra::default()
                };
                mapping = Some(MappingInfo::new(
                    plan.ipv4(),
                    plan.ipv4_prefix_len(),
                    plan.port_ranges(),
                    extra,
                ));
            }
            if let Some(n) = nft.as_ref().and_then(|n| n.ifname.clone()) {
                if t.ubus_up != Some(true) {
                    ifname = n;
                }
            }
        }
        let table = Table {
            name: t.table.clone(),
            present: nft.is_some(),
            counters: nft.map(|n| n.counters).unwrap_or_default(),
        };
        let tunnel = tunnel(src, &ifname);
        let up = t.ubus_up.unwrap_or(tunnel.up && table.present);
        ifaces.push(IfaceStatus {
            name: t.name.clone(),
            origin: t.origin,
            up,
            mapping,
            tunnel,
            table,
            usage: None,
            warnings: t.errors.clone(),
        });
    }

    let mut ct = CtInfo::default();
    let mut accs: Vec<Acc> = ifaces.iter().map(|_| Acc::default()).collect();
    if ifaces.iter().any(|i| i.mapping.is_some()) {
        let owners: Vec<(usize, &MappingInfo)> = ifaces
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i, s.mapping.as_ref()?)))
            .collect();
        let result = src.conntrack_lines(&mut |line| {
            let Some(e) = conntrack::parse_line(line) else {
                return;
            };
            if let Some((i, _)) = owners.iter().find(|(_, m)| m.owns_addr(e.nat_addr)) {
                accs[*i].add(&e);
            }
        });
        match result {
            Ok(s) => ct.source = Some(s),
            Err(e) => ct.error = Some(e),
        }
    }
    ct.stats = src
        .read(PROC_STAT)
        .map(|t| conntrack::parse_proc_stat(&t))
        .filter(Stats::is_known)
        .or_else(|| {
            let t = src.run("conntrack", &["-S"]).ok()?;
            Some(conntrack::parse_conntrack_s(&t)).filter(Stats::is_known)
        })
        .unwrap_or_default();
    ct.entries = read_u64(src, CT_COUNT);
    ct.max = read_u64(src, CT_MAX);
    if let (Some((t0, s0)), Some(f), Some(d), Some(x)) = (
        opts.prev,
        ct.stats.insert_failed,
        ct.stats.drop,
        ct.stats.early_drop,
    ) {
        if let (Some(f0), Some(d0), Some(x0)) = (s0.insert_failed, s0.drop, s0.early_drop) {
            ct.recent = Some(Recent {
                seconds: time.saturating_sub(t0),
                insert_failed: f.saturating_sub(f0),
                drop: d.saturating_sub(d0),
                early_drop: x.saturating_sub(x0),
            });
        }
    }

    for (s, acc) in ifaces.iter_mut().zip(accs) {
        if let (Some(m), None) = (&s.mapping, &ct.error) {
            s.usage = Some(acc.finish(m, opts.top));
        }
        let w = warnings(s, &ct);
        s.warnings.extend(w);
    }
    Report {
        time,
        interfaces: ifaces,
        conntrack: ct,
    }
}

fn warnings(s: &IfaceStatus, ct: &CtInfo) -> Vec<Warning> {
    let mut w = Vec::new();
    if !s.up && s.origin == "ubus" {
        w.push(Warning::new("INTERFACE_DOWN", "the interface is down"));
        return w;
    }
    if s.mapping.is_none() {
        w.push(Warning::new(
            "NO_MAPPING",
            "the mapping is unknown (no state file, no data.mape, no SNAT rule in our nft table)",
        ));
    }
    if !s.tunnel.present {
        w.push(Warning::new(
            "TUNNEL_DOWN",
            format!("the tunnel device {} does not exist", s.tunnel.ifname),
        ));
    } else if !s.tunnel.up {
        w.push(Warning::new(
            "TUNNEL_DOWN",
            format!("the tunnel device {} is down", s.tunnel.ifname),
        ));
    }
    if !s.table.present {
        w.push(Warning::new(
            "TABLE_MISSING",
            format!(
                "nft table ip {} is missing: no port-set SNAT (restart the interface, or run `mape netifd reapply`)",
                s.table.name
            ),
        ));
    }
    if let Some(e) = &ct.error {
        w.push(Warning::new(
            "CONNTRACK_UNREADABLE",
            format!("ports in use unknown: {e}"),
        ));
    }
    if let (Some(u), Some(m)) = (&s.usage, &s.mapping) {
        let pc = percent(u.in_use, m.port_count);
        if pc >= WARN_PERCENT {
            w.push(Warning::new(
                "PORTS_HIGH",
                format!(
                    "{} of {} ports in use ({pc}%): new flows will start to fail",
                    u.in_use, m.port_count
                ),
            ));
        }
        if let Some(d) = u.busiest_destination {
            let dp = percent(d.connections, m.port_count);
            if dp >= WARN_PERCENT {
                w.push(Warning::new(
                    "DESTINATION_HIGH",
                    format!(
                        "{} flows to {} {}:{} use {dp}% of the ports one destination can have; more to it will fail",
                        d.connections,
                        d.proto.as_str(),
                        d.addr,
                        d.port
                    ),
                ));
            }
        }
        if u.outside_sets > 0 {
            w.push(Warning::new(
                "STRAY_PORTS",
                format!(
                    "{} flows leave with our address but a port outside our port sets (the BR drops them)",
                    u.outside_sets
                ),
            ));
        }
    }
    if let (Some(n), Some(max)) = (ct.entries, ct.max) {
        let pc = percent(
            n.min(u64::from(u32::MAX)) as u32,
            max.min(u64::from(u32::MAX)) as u32,
        );
        if pc >= WARN_PERCENT {
            w.push(Warning::new(
                "CONNTRACK_HIGH",
                format!("the conntrack table is {pc}% full ({n} of {max})"),
            ));
        }
    }
    if let Some(r) = ct.recent {
        if r.insert_failed > 0 || r.drop > 0 {
            w.push(Warning::new(
                "SNAT_FAILING",
                format!(
                    "{} flows could not be set up in the last {} s (conntrack insert_failed {}, drop {}): no free port for the destination, or a full table",
                    r.insert_failed.max(r.drop),
                    r.seconds,
                    r.insert_failed,
                    r.drop
                ),
            ));
        }
    }
    w
}

#[cfg(test)]
pub(crate) mod tests {
    use super::super::{Level, ProtoUse};
    use super::*;
    use crate::engine::{PortSet, SnatPlan};
    use std::collections::BTreeMap;

    /// Canned files and command outputs.
    #[derive(Default)]
    pub(crate) struct Fake {
        pub files: BTreeMap<String, String>,
        pub cmds: BTreeMap<String, String>,
        /// nft tables as `render::nft::read_table` reads them.
        pub tables: BTreeMap<String, TableReadBack>,
        pub ran: Vec<String>,
        pub time: u64,
    }

    impl Source for Fake {
        fn read(&mut self, path: &str) -> Option<String> {
            self.files.get(path).cloned()
        }
        fn state_names(&mut self, dir: &str) -> Vec<String> {
            let prefix = format!("{dir}/");
            self.files
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix)?.strip_suffix(".json"))
                .filter(|n| !n.contains('/'))
                .map(str::to_string)
                .collect()
        }
        fn state(&mut self, dir: &str, name: &str) -> Option<State> {
            let text = self.files.get(&format!("{dir}/{name}.json"))?;
            State::from_json(name, &serde_json::from_str(text).ok()?).ok()
        }
        fn run(&mut self, cmd: &str, args: &[&str]) -> Result<String, String> {
            let line = format!("{cmd} {}", args.join(" "));
            self.ran.push(line.clone());
            self.cmds
                .get(&line)
                .cloned()
                .ok_or_else(|| format!("{cmd}: not found"))
        }
        fn now(&mut self) -> u64 {
            self.time
        }
        fn ubus_call(&mut self, object: &str, method: &str) -> Option<Value> {
            let line = format!("ubus call {object} {method}");
            self.ran.push(line.clone());
            serde_json::from_str(self.cmds.get(&line)?).ok()
        }
        fn nft_table(&mut self, table: &str, _whole: bool) -> Option<TableReadBack> {
            self.tables.get(table).cloned()
        }
        /// The `ip` tables of the faked `nft list tables`.
        fn nft_tables(&mut self) -> Option<Vec<String>> {
            let text = self.run("nft", &["list", "tables"]).ok()?;
            Some(
                text.lines()
                    .filter_map(|l| l.strip_prefix("table ip "))
                    .map(|t| t.trim().to_string())
                    .collect(),
            )
        }
    }

    pub(crate) const V6PLUS_CALC: &str = r#"{"isp":"v6plus","prefix":"240b:10:3f6c:d400::/56","rule":{"ipv6_prefix":"240b:10::/31","ipv4_prefix":"106.72.0.0/15","ea_len":25,"psid_offset":4,"psid_len":8},"iid_format":"draft03","ipv4":"106.72.63.108","ipv4_prefix_len":32,"psid":212,"port_sets":[[7488,7503],[11584,11599],[15680,15695],[19776,19791],[23872,23887],[27968,27983],[32064,32079],[36160,36175],[40256,40271],[44352,44367],[48448,48463],[52544,52559],[56640,56655],[60736,60751],[64832,64847]],"port_count":240,"ce":"240b:10:3f6c:d400:6a:483f:6c00:d400","br":"2404:9200:225:100::64","warnings":[]}"#;

    /// Table `mape_wanmap` with two port sets, as read back from nft.
    pub(crate) fn table(ifname: &str) -> TableReadBack {
        let ps = |first, last| PortSet { first, last };
        TableReadBack {
            counters: vec![("snat_tcp".into(), 41, 2460), ("snat_udp".into(), 5, 300)],
            ifname: Some(ifname.into()),
            snat: Some(SnatPlan::Shared {
                addr: Ipv4Addr::new(106, 72, 63, 108),
                ranges: vec![ps(7488, 7503), ps(11584, 11599)],
                excluded: Vec::new(),
            }),
        }
    }

    fn ct_line(proto: &str, src: &str, dst: &str, dport: u16, nat: &str, port: u16) -> String {
        if proto == "icmp" {
            format!("ipv4     2 icmp     1 29 src={src} dst={dst} type=8 code=0 id=99 src={dst} dst={nat} type=0 code=0 id={port} mark=0 use=1\n")
        } else {
            let num = if proto == "tcp" { 6 } else { 17 };
            format!("ipv4     2 {proto:<8} {num} 100 ESTABLISHED src={src} dst={dst} sport=40000 dport={dport} src={dst} dst={nat} sport={dport} dport={port} [ASSURED] mark=0 use=1\n")
        }
    }

    /// A v6plus router (state file from the handler) with a known set of flows.
    pub(crate) fn router() -> Fake {
        let mut f = Fake {
            time: 1000,
            ..Fake::default()
        };
        f.files.insert(
            "/st/wanmap.json".into(),
            format!(
                r#"{{"version":2,"frontend":"netifd","ifname":"map-wanmap","table":"mape_wanmap",
                   "dev":"wan","ce":"240b:10:3f6c:d400:6a:483f:6c00:d400","mapping":{V6PLUS_CALC}}}"#
            ),
        );
        f.cmds
            .insert("nft list tables".into(), "table ip mape_wanmap\n".into());
        f.tables.insert("mape_wanmap".into(), table("map-wanmap"));
        for (k, v) in [
            ("flags", "0x10d1"),
            ("operstate", "unknown"),
            ("mtu", "1460"),
            ("statistics/rx_bytes", "1000"),
            ("statistics/tx_bytes", "2000"),
            ("statistics/rx_packets", "10"),
            ("statistics/tx_packets", "20"),
        ] {
            f.files
                .insert(format!("/sys/class/net/map-wanmap/{k}"), v.into());
        }
        let mut ct = String::new();
        // Host .2: 3 TCP flows in set 0, to one server; the same port twice towards two
        // destinations (the kernel reuses ports across destinations).
        ct += &ct_line("tcp", "192.168.1.2", "10.0.0.1", 443, "106.72.63.108", 7488);
        ct += &ct_line("tcp", "192.168.1.2", "10.0.0.1", 443, "106.72.63.108", 7489);
        ct += &ct_line("tcp", "192.168.1.2", "10.0.0.2", 443, "106.72.63.108", 7489);
        // Host .2: UDP on a port number its TCP also uses, ICMP in set 14.
        ct += &ct_line("udp", "192.168.1.2", "10.0.0.3", 53, "106.72.63.108", 7488);
        ct += &ct_line("icmp", "192.168.1.2", "10.0.0.3", 0, "106.72.63.108", 64847);
        // Host .3: one TCP flow in set 1.
        ct += &ct_line(
            "tcp",
            "192.168.1.3",
            "10.0.0.1",
            443,
            "106.72.63.108",
            11590,
        );
        // Not ours: another address, and an IPv6 flow.
        ct += &ct_line("tcp", "192.168.1.3", "10.0.0.1", 443, "106.72.63.109", 7490);
        ct += "ipv6     10 tcp      6 100 ESTABLISHED src=2001:db8::1 dst=2001:db8::2 sport=1 dport=2 src=2001:db8::2 dst=2001:db8::1 sport=2 dport=1 mark=0 use=1\n";
        // A stray: our address, a port outside our sets.
        ct += &ct_line("udp", "192.168.1.4", "10.0.0.9", 123, "106.72.63.108", 123);
        f.files.insert(PROC_CONNTRACK.into(), ct);
        f.files.insert(PROC_STAT.into(), "entries insert_failed drop early_drop\n00000009 00000002 00000003 00000000\n00000009 00000001 00000000 00000000\n".into());
        f.files.insert(CT_COUNT.into(), "9\n".into());
        f.files.insert(CT_MAX.into(), "65536\n".into());
        f
    }

    #[test]
    fn counts_per_set_protocol_host_and_destination() {
        let mut f = router();
        let targets = discover(&mut f, &["/st".into()], false);
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].origin, "state");
        let r = collect(&mut f, targets, &Options { top: 5, prev: None });
        assert_eq!(r.time, 1000);
        let s = &r.interfaces[0];
        assert!(s.up);
        assert_eq!(s.mapping.as_ref().unwrap().port_count, 240);
        assert_eq!(s.tunnel.mtu, Some(1460));
        assert!(s.tunnel.up && s.table.present);
        assert_eq!(s.table.counters[0], ("snat_tcp".into(), 41, 2460));
        let u = s.usage.as_ref().unwrap();
        // Ports 7488, 7489 (set 0), 11590 (set 1), 64847 (set 14).
        assert_eq!(u.in_use, 4);
        assert_eq!(u.connections, 7);
        assert_eq!(
            u.by_proto[0],
            ProtoUse {
                ports: 3,
                connections: 4
            }
        );
        assert_eq!(
            u.by_proto[1],
            ProtoUse {
                ports: 1,
                connections: 2
            }
        );
        assert_eq!(
            u.by_proto[2],
            ProtoUse {
                ports: 1,
                connections: 1
            }
        );
        assert_eq!(u.outside_sets, 1);
        assert_eq!(u.sets.len(), 15);
        assert_eq!(u.sets[0].in_use, 2);
        assert_eq!(u.sets[0].by_proto, [2, 1, 0]);
        assert_eq!(u.sets[0].connections, 4);
        assert_eq!(u.sets[1].in_use, 1);
        assert_eq!(u.sets[14].by_proto, [0, 0, 1]);
        assert_eq!(u.sets[5].in_use, 0);
        assert_eq!(u.hosts, 3);
        let h = u.top_hosts[0];
        assert_eq!(h.host, Ipv4Addr::new(192, 168, 1, 2));
        assert_eq!((h.ports, h.by_proto, h.connections), (3, [2, 1, 1], 5));
        assert_eq!(u.top_hosts[1].ports, 1);
        let d = u.top_destinations[0];
        assert_eq!(
            (d.proto, d.addr, d.port, d.connections),
            (Proto::Tcp, Ipv4Addr::new(10, 0, 0, 1), 443, 3)
        );
        assert_eq!(r.conntrack.stats.insert_failed, Some(3));
        assert_eq!(r.conntrack.stats.drop, Some(3));
        assert_eq!(r.conntrack.source, Some(PROC_CONNTRACK));
        let codes: Vec<&str> = s.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(codes, ["STRAY_PORTS"]);
        assert_eq!(s.level(), Level::Warning);
    }

    #[test]
    fn high_usage_failures_and_missing_pieces_warn() {
        let mut f = router();
        let mut ct = String::new();
        // 200 flows to one destination, over 200 distinct ports of ours: 83%.
        let m = MappingInfo::from_record(
            &MappingRecord::from_json(&serde_json::from_str(V6PLUS_CALC).unwrap()).unwrap(),
        );
        let ports: Vec<u16> = m
            .port_sets
            .iter()
            .flat_map(|s| s.first..=s.last)
            .take(200)
            .collect();
        for p in ports {
            ct += &ct_line("tcp", "192.168.1.9", "10.0.0.1", 443, "106.72.63.108", p);
        }
        f.files.insert(PROC_CONNTRACK.into(), ct);
        f.files.insert(CT_COUNT.into(), "60000\n".into());
        f.time = 1010;
        let targets = discover(&mut f, &["/st".into()], false);
        let prev = Stats {
            insert_failed: Some(1),
            drop: Some(3),
            early_drop: Some(0),
        };
        let r = collect(
            &mut f,
            targets,
            &Options {
                top: 5,
                prev: Some((1000, prev)),
            },
        );
        let s = &r.interfaces[0];
        let codes: Vec<&str> = s.warnings.iter().map(|w| w.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "PORTS_HIGH",
                "DESTINATION_HIGH",
                "CONNTRACK_HIGH",
                "SNAT_FAILING"
            ]
        );
        assert!(s.warnings[0]
            .message
            .starts_with("200 of 240 ports in use (83%)"));
        let recent = r.conntrack.recent.unwrap();
        assert_eq!(
            (recent.seconds, recent.insert_failed, recent.drop),
            (10, 2, 0)
        );

        // The tunnel gone and the table flushed: down.
        f.files.retain(|k, _| !k.starts_with("/sys/"));
        f.tables.remove("mape_wanmap");
        f.cmds.remove("nft list tables");
        let targets = discover(&mut f, &["/st".into()], false);
        let r = collect(&mut f, targets, &Options::default());
        let s = &r.interfaces[0];
        assert!(!s.up);
        let codes: Vec<&str> = s.warnings.iter().map(|w| w.code.as_str()).collect();
        assert!(codes.contains(&"TUNNEL_DOWN") && codes.contains(&"TABLE_MISSING"));
        assert_eq!(s.level(), Level::Down);
    }

    #[test]
    fn ubus_interfaces_merge_with_state_and_tables() {
        let mut f = router();
        let dump = format!(
            r#"{{"interface":[
              {{"interface":"wanmap","up":true,"proto":"mape","l3_device":"map-wanmap","data":{{"mape":{V6PLUS_CALC},"zone":"wan"}}}},
              {{"interface":"wan6","up":true,"proto":"dhcpv6"}},
              {{"interface":"other","up":false,"proto":"mape","errors":[{{"subsystem":"mape","code":"NO_PREFIX","data":["tunlink wan6: no IPv6 prefix yet, waiting"]}}]}},
              {{"interface":"wan6_4","up":false,"proto":"map"}}
            ]}}"#
        );
        f.cmds
            .insert("ubus call network.interface dump".into(), dump);
        // A table nobody claims (e.g. state lost): found through nft, mapping read back.
        f.cmds.insert(
            "nft list tables".into(),
            "table inet fw4\ntable ip mape_wanmap\ntable ip mape_old\n".into(),
        );
        f.tables.insert("mape_old".into(), table("map-old"));
        let targets = discover(&mut f, &["/st".into()], true);
        let names: Vec<(&str, &str)> = targets
            .iter()
            .map(|t| (t.name.as_str(), t.origin))
            .collect();
        assert_eq!(
            names,
            [("wanmap", "ubus"), ("other", "ubus"), ("old", "nft")]
        );
        let r = collect(&mut f, targets, &Options { top: 5, prev: None });
        assert!(r.interfaces[0].up);
        let other = &r.interfaces[1];
        assert!(!other.up);
        assert_eq!(other.warnings[0].code, "NO_PREFIX");
        assert!(other.warnings[0].message.contains("waiting"));
        assert_eq!(other.level(), Level::Down);
        let old = &r.interfaces[2];
        let m = old.mapping.as_ref().unwrap();
        assert_eq!(m.port_count, 32);
        assert_eq!(m.psid, None);
        assert_eq!(old.tunnel.ifname, "map-old");
        assert!(!old.up, "no tunnel device map-old");
    }

    #[test]
    fn legacy_plain_linux_state_without_mapping_uses_the_table() {
        // mape-rs 0.1's `mape up` state file (in /run/mape): no mapping; the table has the ports.
        let mut f = router();
        f.files.remove("/st/wanmap.json");
        f.files.insert(
            "/run/mape/wan.json".into(),
            r#"{"name":"wan","wan":"eth0","ifname":"map-wanmap","table":"mape_wanmap","prefix":"240b:10:3f6c:d400::/56","ce":"240b::1","br":"2404::64","ipv4":"106.72.63.108/32"}"#.into(),
        );
        let targets = discover(&mut f, &["/st".into(), "/run/mape".into()], false);
        assert_eq!(targets.len(), 1, "the table is claimed by the state file");
        assert_eq!(
            (targets[0].name.as_str(), targets[0].origin),
            ("wan", "state")
        );
        let r = collect(&mut f, targets, &Options { top: 5, prev: None });
        let s = &r.interfaces[0];
        let m = s.mapping.as_ref().unwrap();
        assert_eq!(
            (m.port_count, m.ce.as_deref(), m.br.as_deref()),
            (32, Some("240b::1"), None)
        );
        assert_eq!(m.prefix.as_deref(), Some("240b:10:3f6c:d400::/56"));
        assert!(s.up);
        assert_eq!(
            s.usage.as_ref().unwrap().in_use,
            3,
            "64847 is outside the table's two sets"
        );
        assert_eq!(
            discover_one(&mut f, &["/st".into(), "/run/mape".into()], "wan")
                .unwrap()
                .origin,
            "state"
        );
    }

    #[test]
    fn unreadable_conntrack_is_reported_not_fatal() {
        let mut f = router();
        f.files.remove(PROC_CONNTRACK);
        let targets = discover(&mut f, &["/st".into()], false);
        let r = collect(&mut f, targets, &Options::default());
        assert!(r.conntrack.error.is_some());
        let s = &r.interfaces[0];
        assert!(s.usage.is_none());
        assert_eq!(s.warnings[0].code, "CONNTRACK_UNREADABLE");
        assert!(f.ran.iter().any(|c| c == "conntrack -L -o extended"));
    }
}
