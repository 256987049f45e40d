//! `mape netifd …`: the protocol handler's entry points.
//!
//! netifd runs `/lib/netifd/proto/mape.sh`, which is `exec /usr/sbin/mape netifd "$@"`, so we
//! receive netifd's own argument vector: `'' dump`, or `mape setup <iface> <config> [device]`,
//! `mape teardown <iface> <config>`. The proto name may be left out when running by hand:
//! `mape netifd setup wanmap '{"tunlink":"wan6"}' --dry-run --tunlink-status status.json`.

use std::time::Duration;

use super::{runtime, Failure};
use clap::Args;
use serde_json::Value;

use crate::engine::CustomerPrefix;
use crate::handler::{self, DryRun, RealSystem, System as _};
use crate::names::ifname_for;
use crate::render::netifd::dump;
use crate::state;

const ACTIONS: &[&str] = &[
    "dump", "setup", "teardown", "watch", "reapply", "renew", "restart",
];

#[derive(Args, Debug)]
pub struct NetifdArgs {
    /// [PROTO] ACTION [IFACE] [CONFIG] [DEVICE]: netifd's arguments. ACTION is dump, setup,
    /// teardown or watch; CONFIG is the interface's JSON (or a file holding it).
    #[arg(value_name = "ARGS", num_args = 1..)]
    pub args: Vec<String>,
    /// Print the ubus calls, kernel changes and nft script as JSON instead of doing them.
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: the tunnel link's `ubus call network.interface.<tunlink> status` (JSON or file).
    #[arg(long, value_name = "JSON|FILE")]
    pub tunlink_status: Option<String>,
    /// With --dry-run: the link device's MTU.
    #[arg(long, value_name = "BYTES", value_parser = super::number::<u32>)]
    pub link_mtu: Option<u32>,
    /// With --dry-run: keep the handler's state in DIR (`<iface>.json`), so a dry-run teardown
    /// knows what a dry-run setup added. Never the live state directory of a router.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// watch: the prefix in use (`none` while waiting for one).
    #[arg(long, value_name = "PREFIX")]
    pub current: Option<String>,
    /// watch: after a transient setup failure, end after SECONDS (netifd then retries).
    #[arg(long, value_name = "SECONDS", value_parser = super::number::<u64>)]
    pub retry_after: Option<u64>,
    /// watch: the owner token of the setup that started the task; the task ends once the
    /// interface's state names another owner (a newer setup took over).
    #[arg(long, value_name = "TOKEN")]
    pub owner: Option<String>,
    /// watch: look once (twice if the mapping seems to have changed, to confirm), do what the
    /// task would (with --owner: follow a new mapping in place) and exit: 0 running on, 3 the
    /// task would end (printing why).
    #[arg(long)]
    pub once: bool,
}

/// JSON given inline or as a file name.
fn json_arg(what: &str, s: &str) -> Result<String, String> {
    if s.trim_start().starts_with('{') {
        Ok(s.to_string())
    } else {
        std::fs::read_to_string(s).map_err(|e| format!("{what} {s:?}: {e}"))
    }
}

fn need<'a>(x: Option<&'a str>, action: &str, what: &str) -> Result<&'a str, String> {
    x.ok_or_else(|| format!("netifd {action}: missing {what}"))
}

pub fn run(a: &NetifdArgs) -> Result<i32, Failure> {
    let mut words: Vec<&str> = a.args.iter().map(String::as_str).collect();
    let proto = match words.first() {
        None => "mape",
        Some(w) if ACTIONS.contains(w) => "mape",
        Some(_) => words.remove(0),
    };
    let proto = if proto.is_empty() { "mape" } else { proto };
    let action = *words
        .first()
        .ok_or("netifd: missing action (dump, setup, teardown, watch)")?;
    let iface = words.get(1).copied();
    let config = words.get(2).copied();
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "/usr/sbin/mape".into());

    match action {
        "dump" => {
            println!("{}", dump(proto));
            Ok(0)
        }
        "setup" | "teardown" => {
            let iface = need(iface, action, "interface")?;
            crate::names::check_name("interface", iface).map_err(|e| e.to_string())?;
            let config = json_arg("config", need(config, action, "config JSON")?)?;
            if a.dry_run {
                let status = match &a.tunlink_status {
                    None => None,
                    Some(s) => Some(
                        serde_json::from_str::<Value>(&json_arg("--tunlink-status", s)?)
                            .map_err(|e| format!("--tunlink-status: {e}"))?,
                    ),
                };
                let mut sys = DryRun::new(status);
                sys.link_mtu = a.link_mtu;
                if let Some(dir) = &a.state_dir {
                    let saved = state::load(dir, iface).map_err(|e| format!("--state-dir: {e}"))?;
                    sys.state.extend(saved);
                }
                let code = if action == "setup" {
                    handler::setup(&mut sys, &exe, iface, &config)
                } else {
                    handler::teardown(&mut sys, iface)
                };
                if let Some(dir) = &a.state_dir {
                    match sys.state.iter().find(|s| s.name == iface) {
                        Some(s) => {
                            state::save(dir, s).map_err(|e| runtime(format!("--state-dir: {e}")))?
                        }
                        None => state::remove(dir, iface),
                    }
                }
                println!("{}", sys.report(iface, &ifname_for(iface)));
                Ok(code)
            } else {
                let mut sys = RealSystem::new();
                Ok(if action == "setup" {
                    handler::setup(&mut sys, &exe, iface, &config)
                } else {
                    handler::teardown(&mut sys, iface)
                })
            }
        }
        "watch" => {
            let iface = need(iface, action, "interface")?;
            crate::names::check_name("interface", iface).map_err(|e| e.to_string())?;
            let config = json_arg("config", need(config, action, "config JSON")?)?;
            let current = match a.current.as_deref() {
                None | Some("none") => None,
                Some(p) => Some(p.parse::<CustomerPrefix>().map_err(|e| e.to_string())?),
            };
            let (cfg, key) = handler::watch_start(&config, current)?;
            let mut sys = RealSystem::new();
            let mut watcher = handler::Watcher::new(key);
            if a.once {
                // What the task does at one look (with --owner: a running interface's, which
                // follows a new mapping in place): 3 when it would end.
                let owner = a.owner.as_deref();
                let mut look = || handler::watch::look(&mut sys, iface, &cfg, None);
                // (a look that decides at once decides the same when `act` feeds it again)
                let mut l = look();
                if watcher.feed(&l) == handler::Verdict::Confirm {
                    std::thread::sleep(handler::watch::CONFIRM_AFTER);
                    l = look();
                }
                let act = handler::watch::act(&mut sys, &mut watcher, &l, iface, &cfg, owner);
                return Ok(match act {
                    handler::watch::Act::End(why) => {
                        eprintln!("mape: {iface}: {why}");
                        3
                    }
                    _ => 0,
                });
            }
            // The port-usage check needs the mapping the setup saved.
            let usage = current.and_then(|_| {
                let m = sys.load_state(iface)?.mapping?;
                handler::usage::UsageCheck::new(m.ipv4, m.ipv4_prefix_len, &m.port_sets)
            });
            let mut events = handler::watch::UbusEvents::new(cfg.tunlink.clone());
            let why = handler::watch::run(
                &mut sys,
                &mut events,
                &mut watcher,
                handler::watch::TaskParams {
                    iface,
                    cfg: &cfg,
                    retry_after: a.retry_after.map(Duration::from_secs),
                    usage,
                    owner: a.owner.as_deref(),
                },
            );
            eprintln!("mape: {iface}: {why}: setting the interface up again");
            Ok(0)
        }
        "reapply" => Ok(handler::reapply(&mut RealSystem::new())),
        // Declared neither renew- nor restart-handler; netifd does not call these.
        "renew" | "restart" => Ok(0),
        other => {
            Err(format!("netifd: unknown action {other:?} (dump, setup, teardown, watch)").into())
        }
    }
}
