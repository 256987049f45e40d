//! `mape generate`, `mape up`, `mape down`: MAP-E on a plain Linux router (issue 7).
//!
//! `generate` writes systemd-networkd, nft and iptables files for review; `up`/`down` apply the
//! same mapping directly with iproute2 and nft (see [`crate::linux`]). All three take the prefix
//! from `--prefix` or detect it on the WAN ([`crate::linux::detect`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::{runtime, Failure};
use clap::{Args, ValueEnum};
use serde_json::Value;

use super::calc::RuleFlags;
use crate::engine::{CustomerPrefix, PortSet};
use crate::linux::apply::{self, Plan, UpOutcome};
use crate::linux::detect;
use crate::linux::host::{show, state_dir};
use crate::linux::{DryRunHost, Host, RealHost};
use crate::names::{check_name, ifname_for, table_for};
use crate::provision::netifd::parse_port_list;
use crate::provision::{resolve, Resolved};
use crate::render::calc::DEFAULT_MTU;
use crate::render::iptables::{self, IptablesParams};
use crate::render::networkd::{self, File, NetworkdParams};
use crate::render::nft::{self, NftParams};
use crate::render::origin;

/// What `generate`, `up` and `down` share: where the tunnel goes and what it is called.
#[derive(Args, Debug, Clone)]
pub struct MapArgs {
    /// The WAN device: the IPv6 uplink the tunnel runs over.
    #[arg(long, value_name = "DEV")]
    pub wan: String,
    /// Names the tunnel map-<NAME>, the nft table mape_<NAME> and the state file (default: the
    /// WAN device's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Customer prefix (a delegated /56 or /60, an RA /64, or an address); default: detected on
    /// the WAN (delegated-prefix route, else the WAN's SLAAC /64).
    #[arg(long, value_name = "PREFIX")]
    pub prefix: Option<String>,
    #[command(flatten)]
    pub rule: RuleFlags,
    /// Tunnel MTU (default 1460; `up` takes the WAN's MTU minus 40 when that is smaller).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1280..=9000))]
    pub mtu: Option<u32>,
    /// Hop limit of the outer IPv6 header (default 64).
    #[arg(long, value_name = "HOPS", value_parser = clap::value_parser!(u8).range(1..))]
    pub ttl: Option<u8>,
    /// Ports kept out of SNAT (e.g. for port forwards), from this line's own ports:
    /// "7488 7490-7491".
    #[arg(long, value_name = "PORTS")]
    pub ports_exclude: Option<String>,
    /// Do not route IPv4 by default into the tunnel.
    #[arg(long)]
    pub no_default_route: bool,
    /// Metric of the IPv4 default route (default 0), e.g. to keep another uplink's route.
    #[arg(long, value_name = "N")]
    pub metric: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// systemd-networkd: a WAN drop-in, map-<NAME>.netdev, map-<NAME>.network.
    Networkd,
    /// The nft ruleset (the same as the OpenWrt handler's).
    Nft,
    /// An iptables-restore file, for hosts without nft.
    Iptables,
    /// All of the above.
    All,
}

impl Format {
    fn as_str(self) -> &'static str {
        match self {
            Format::Networkd => "networkd",
            Format::Nft => "nft",
            Format::Iptables => "iptables",
            Format::All => "all",
        }
    }
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub map: MapArgs,
    /// What to write.
    #[arg(long, value_enum, default_value = "all")]
    pub format: Format,
    /// Write the files into DIR (created if needed) and list them; default: print them.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The .network file that manages the WAN, which names the drop-in directory (default: the
    /// one in /etc/systemd/network whose [Match] Name= is the WAN, else <WAN>.network).
    #[arg(long, value_name = "FILE")]
    pub wan_network: Option<String>,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub map: MapArgs,
    /// Print the commands instead of running them (the system is still read).
    #[arg(long)]
    pub dry_run: bool,
    /// Do nothing when the state file shows the same mapping already applied and the tunnel,
    /// CE address and nft table are in place (for hooks and timers that run it often).
    #[arg(long)]
    pub if_changed: bool,
}

#[derive(Args, Debug)]
pub struct DownArgs {
    /// The WAN device given to `up` (it names the tunnel unless --name was given).
    #[arg(long, value_name = "DEV")]
    pub wan: Option<String>,
    /// The name given to `up`.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Print the commands instead of running them.
    #[arg(long)]
    pub dry_run: bool,
}

/// The names everything derives from, checked.
struct Names {
    name: String,
    ifname: String,
    table: String,
}

fn names(wan: Option<&str>, name: Option<&str>) -> Result<Names, String> {
    if let Some(w) = wan {
        check_name("wan", w).map_err(|e| e.to_string())?;
    }
    let name = name
        .or(wan)
        .ok_or("down: give --wan or --name (as given to up)")?;
    check_name("name", name).map_err(|e| e.to_string())?;
    Ok(Names {
        name: name.to_string(),
        ifname: ifname_for(name),
        table: table_for(name),
    })
}

/// The argument words of a command that repeats this one (for the files' headers).
fn rerun(cmd: &str, a: &MapArgs, tail: &[(&str, Option<String>)]) -> String {
    let mut words: Vec<String> = vec!["mape".into(), cmd.into(), "--wan".into(), a.wan.clone()];
    let r = &a.rule;
    let opts: Vec<(&str, Option<String>)> = vec![
        ("--name", a.name.clone()),
        ("--prefix", a.prefix.clone()),
        ("--isp", r.isp.clone()),
        ("--rule", r.rule.clone()),
        ("--dhcpv6-hex", r.dhcpv6_hex.clone()),
        ("--ipv6-prefix", r.ipv6_prefix.clone()),
        ("--ipv4-prefix", r.ipv4_prefix.clone()),
        ("--ea-len", r.ea_len.map(|v| v.to_string())),
        ("--psid-offset", r.psid_offset.map(|v| v.to_string())),
        ("--psid-len", r.psid_len.map(|v| v.to_string())),
        ("--psid", r.psid.map(|v| v.to_string())),
        ("--br", r.br.map(|v| v.to_string())),
        ("--iid", r.iid.map(|v| v.as_str().to_string())),
        ("--mtu", a.mtu.map(|v| v.to_string())),
        ("--ttl", a.ttl.map(|v| v.to_string())),
        ("--ports-exclude", a.ports_exclude.clone()),
        ("--metric", a.metric.map(|v| v.to_string())),
    ];
    for (flag, v) in opts.into_iter().chain(tail.iter().cloned()) {
        if let Some(v) = v {
            words.push(flag.to_string());
            words.push(v);
        }
    }
    if a.no_default_route {
        words.push("--no-default-route".into());
    }
    let refs: Vec<&str> = words.iter().map(String::as_str).collect();
    show(&refs)
}

/// The mapping for the prefix given or detected, and a note saying which.
fn mapping(a: &MapArgs, host: &mut dyn Host) -> Result<(Resolved, String), Failure> {
    let input = a.rule.to_input()?;
    let resolve_one = |p: CustomerPrefix| -> Result<Resolved, String> {
        let source = input.to_source(Some(&p)).map_err(|e| e.to_string())?;
        resolve(&source, p).map_err(|e| e.to_string())
    };
    if let Some(s) = &a.prefix {
        let p: CustomerPrefix = s
            .parse()
            .map_err(|e: crate::engine::PrefixError| e.to_string())?;
        return Ok((resolve_one(p)?, "given with --prefix".into()));
    }
    // A prefix found on the system that does not work is the system's state, not bad input.
    let (r, c) = detect::detect(host, &a.wan, &resolve_one).map_err(runtime)?;
    Ok((r, format!("detected on {} from {}", a.wan, c.origin)))
}

fn excludes(a: &MapArgs) -> Result<Vec<PortSet>, String> {
    match &a.ports_exclude {
        None => Ok(Vec::new()),
        Some(s) => parse_port_list(s).map_err(|why| format!("--ports-exclude {s:?}: {why}")),
    }
}

/// Finds the .network file under `dir` whose `[Match]` `Name=` lists `wan` literally.
fn find_wan_network(dir: &Path, wan: &str) -> Option<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let file = e.file_name().into_string().ok()?;
            if !file.ends_with(".network") {
                return None;
            }
            let text = std::fs::read_to_string(e.path()).ok()?;
            let mut in_match = false;
            for line in text.lines().map(str::trim) {
                if line.starts_with('[') {
                    in_match = line == "[Match]";
                } else if in_match {
                    if let Some(v) = line.strip_prefix("Name=") {
                        if v.split_whitespace().any(|n| n == wan) {
                            return Some(file);
                        }
                    }
                }
            }
            None
        })
        .collect();
    // networkd applies the first file in name order.
    found.sort();
    found.into_iter().next()
}

pub fn generate(a: &GenerateArgs) -> Result<i32, Failure> {
    let m = &a.map;
    let n = names(Some(&m.wan), m.name.as_deref())?;
    let mut host = RealHost::new(state_dir());
    let (resolved, note) = mapping(m, &mut host)?;
    let mapping = &resolved.mapping;
    let exclude = excludes(m)?;
    let out_arg = a.out.as_ref().map(|p| p.display().to_string());
    let wan_network = match &a.wan_network {
        Some(w) => {
            check_name("wan-network", w).map_err(|e| e.to_string())?;
            if !w.ends_with(".network") {
                return Err(format!("--wan-network {w:?}: must name a .network file").into());
            }
            w.clone()
        }
        None => {
            let dir = std::env::var_os("MAPE_NETWORKD_DIR")
                .map_or_else(|| PathBuf::from("/etc/systemd/network"), PathBuf::from);
            find_wan_network(&dir, &m.wan).unwrap_or_else(|| format!("{}.network", m.wan))
        }
    };
    let rerun = rerun(
        "generate",
        m,
        &[
            ("--format", Some(a.format.as_str().to_string())),
            ("--out", out_arg),
            ("--wan-network", a.wan_network.clone()),
        ],
    );
    let origin = origin::lines(&resolved, &note, &rerun);

    let mut files: Vec<File> = Vec::new();
    if matches!(a.format, Format::Networkd | Format::All) {
        if mapping.br.is_none() {
            return Err("the rule has no BR address: give --br".into());
        }
        files.extend(networkd::files(&NetworkdParams {
            resolved: &resolved,
            wan: &m.wan,
            wan_network: &wan_network,
            ifname: &n.ifname,
            mtu: m.mtu.unwrap_or(DEFAULT_MTU),
            ttl: m.ttl,
            default_route: !m.no_default_route,
            origin: &origin,
        }));
    }
    if matches!(a.format, Format::Nft | Format::All) {
        let text = nft::ruleset(&NftParams {
            table: &n.table,
            ifname: &n.ifname,
            mapping,
            exclude: &exclude,
            origin: &origin,
        })
        .map_err(|e| e.to_string())?;
        files.push(File {
            path: format!("{}.nft", n.table),
            text,
        });
    }
    if matches!(a.format, Format::Iptables | Format::All) {
        let chain = iptables::chain_for(&n.table);
        let text = iptables::restore_file(&IptablesParams {
            chain: &chain,
            ifname: &n.ifname,
            mapping,
            exclude: &exclude,
            origin: &origin,
        })
        .map_err(|e| e.to_string())?;
        files.push(File {
            path: format!("{}.iptables", n.table),
            text,
        });
    }
    for w in &resolved.warnings {
        eprintln!("mape: warning: {w}");
    }

    let Some(dir) = &a.out else {
        if let [one] = files.as_slice() {
            // One file: print it bare, so `mape generate --format nft | nft -f -` works.
            print!("{}", one.text);
        } else {
            for f in &files {
                println!("# ==> {} <==", f.path);
                print!("{}", f.text);
                println!();
            }
        }
        return Ok(0);
    };
    for f in &files {
        let path = dir.join(&f.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| runtime(format!("{}: {e}", parent.display())))?;
        }
        std::fs::write(&path, &f.text).map_err(|e| runtime(format!("{}: {e}", path.display())))?;
        println!("wrote {}", path.display());
    }
    let mut next = String::new();
    let d = dir.display();
    if matches!(a.format, Format::Networkd | Format::All) {
        let _ = writeln!(
            next,
            "  networkd: cp -r {d}/{wan_network}.d {d}/{0}.netdev {d}/{0}.network /etc/systemd/network/ && networkctl reload && networkctl reconfigure {1}",
            n.ifname, m.wan
        );
    }
    if matches!(a.format, Format::Nft | Format::All) {
        let _ = writeln!(
            next,
            "  nft:      nft -f {d}/{}.nft (or include it from /etc/nftables.conf)",
            n.table
        );
    }
    if matches!(a.format, Format::Iptables | Format::All) {
        let _ = writeln!(
            next,
            "  iptables: iptables-restore {d}/{}.iptables (replaces the nat and mangle tables)",
            n.table
        );
    }
    print!("review the files, then install:\n{next}");
    Ok(0)
}

fn link_mtu(host: &mut dyn Host, dev: &str) -> Option<u32> {
    let out = host.query(&["ip", "-j", "link", "show", "dev", dev]).ok()?;
    let v: Value = serde_json::from_str(&out).ok()?;
    v.get(0)?.get("mtu")?.as_u64().map(|m| m as u32)
}

pub fn up(a: &UpArgs) -> Result<i32, Failure> {
    let m = &a.map;
    let n = names(Some(&m.wan), m.name.as_deref())?;
    let real = RealHost::new(state_dir());
    let (mut dry, mut real) = if a.dry_run {
        (Some(DryRunHost::new(real)), None)
    } else {
        (None, Some(real))
    };
    let host: &mut dyn Host = match (&mut dry, &mut real) {
        (Some(d), _) => d,
        (None, Some(r)) => r,
        (None, None) => unreachable!("one of the two is set"),
    };
    let (resolved, note) = mapping(m, host)?;
    for w in &resolved.warnings {
        host.log(&format!("mape: warning: {w}"));
    }
    let mp = &resolved.mapping;
    let br = mp.br.ok_or("the rule has no BR address: give --br")?;
    let rerun = rerun("up", m, &[]);
    let origin = origin::lines(&resolved, &note, &rerun);
    let script = nft::ruleset(&NftParams {
        table: &n.table,
        ifname: &n.ifname,
        mapping: mp,
        exclude: &excludes(m)?,
        origin: &origin,
    })
    .map_err(|e| e.to_string())?;
    let plan = Plan {
        name: n.name.clone(),
        wan: m.wan.clone(),
        ifname: n.ifname.clone(),
        table: n.table.clone(),
        prefix: mp.prefix,
        ce: mp.ce.addr(),
        br,
        ipv4: mp.ipv4,
        ipv4_len: mp.ipv4_prefix_len,
        mtu: crate::engine::tunnel_mtu(m.mtu, link_mtu(host, &m.wan)),
        ttl: m.ttl.unwrap_or(64),
        default_route: !m.no_default_route,
        metric: m.metric,
        nft: script,
        mapping: Some(crate::render::calc::record(&resolved)),
    };
    let outcome = apply::up(host, &plan, a.if_changed).map_err(runtime)?;
    if let Some(dry) = &dry {
        println!("# mape up --dry-run: what up would run now (nothing was changed)");
        for line in &dry.script {
            println!("{line}");
        }
    }
    let ports = if mp.ports.is_shared() {
        format!("PSID {}, {} ports", mp.ports.psid(), mp.port_count())
    } else {
        "all ports".to_string()
    };
    match outcome {
        UpOutcome::Unchanged => println!(
            "mape: {} unchanged: prefix {} ({note})",
            plan.ifname, plan.prefix
        ),
        UpOutcome::Applied { old_prefix } => {
            let was = old_prefix.map_or(String::new(), |p| format!(", was {p}"));
            println!(
                "mape: {}{} up: IPv4 {} ({ports}), CE {}, BR {br}, prefix {} ({note}{was})",
                plan.ifname,
                if a.dry_run { " would be" } else { "" },
                mp.ipv4,
                plan.ce,
                plan.prefix
            );
        }
    }
    Ok(0)
}

pub fn down(a: &DownArgs) -> Result<i32, Failure> {
    let n = names(a.wan.as_deref(), a.name.as_deref())?;
    let real = RealHost::new(state_dir());
    let removed = if a.dry_run {
        let mut dry = DryRunHost::new(real);
        let r = apply::down(&mut dry, &n.name, &n.ifname, &n.table).map_err(runtime)?;
        println!("# mape down --dry-run: what down would run now (nothing was changed)");
        for line in &dry.script {
            println!("{line}");
        }
        r
    } else {
        let mut host = real;
        apply::down(&mut host, &n.name, &n.ifname, &n.table).map_err(runtime)?
    };
    if removed.items.is_empty() {
        println!("mape: {}: nothing to remove", n.ifname);
    } else {
        println!(
            "mape: {} down: {}{}",
            n.ifname,
            if a.dry_run {
                "would remove "
            } else {
                "removed "
            },
            removed.items.join(", ")
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_needs_a_name() {
        assert!(names(None, None).is_err());
        assert_eq!(names(Some("enp1s0"), None).unwrap().ifname, "map-enp1s0");
        assert_eq!(names(Some("enp1s0"), Some("x")).unwrap().table, "mape_x");
        assert!(names(Some("../x"), None).is_err());
    }
}
