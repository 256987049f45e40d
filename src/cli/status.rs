//! `mape status [--json] [--top N] [IFACE]`: ports in use per port set and LAN host, SNAT
//! failures, tunnel state, for every MAP-E interface (netifd's or `mape up`'s).

use super::{runtime, Failure};
use clap::Args;

use crate::status::report as render;
use crate::status::{self, Options, RealSource};

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Only this interface (its netifd or `mape up` name, tunnel device or nft table).
    #[arg(value_name = "IFACE")]
    pub iface: Option<String>,
    /// Print one JSON object (schema in the README).
    #[arg(long)]
    pub json: bool,
    /// How many LAN hosts and destinations to list.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = super::number::<usize>)]
    pub top: usize,
}

pub fn run(a: &StatusArgs) -> Result<i32, Failure> {
    let report = report(a.iface.as_deref(), a.top)?;
    if a.json {
        println!("{}", render::to_json(&report));
    } else if report.interfaces.is_empty() {
        println!(
            "no MAP-E interface (looked in ubus, {}, nft tables)",
            RealSource::state_dirs().join(", ")
        );
    } else {
        print!("{}", render::to_text(&report));
    }
    Ok(0)
}

/// One status sample of every MAP-E interface, or of `iface` only (its netifd or `mape up`
/// name, tunnel device or nft table). Shared by `mape status` and the rpcd plugin
/// (`mape rpcd call status`).
pub(super) fn report(iface: Option<&str>, top: usize) -> Result<status::Report, Failure> {
    // The conntrack table and nft need root; without it every count would be a wrong "0" or a
    // wrong "table missing". /proc/self belongs to the effective user.
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() != 0) {
        return Err(runtime(
            "status: needs root (it reads the conntrack table and nft)",
        ));
    }
    let mut src = RealSource::new(crate::render::nft::read_table);
    let dirs = RealSource::state_dirs();
    let mut targets = status::discover(&mut src, &dirs, true);
    if let Some(want) = iface {
        targets.retain(|t| t.name == want || t.ifname == want || t.table == want);
        if targets.is_empty() {
            return Err(runtime(format!(
                "status {want:?}: no such MAP-E interface (looked in ubus, {}, nft tables)",
                dirs.join(", ")
            )));
        }
    }
    Ok(status::collect(
        &mut src,
        targets,
        &Options { top, prev: None },
    ))
}
