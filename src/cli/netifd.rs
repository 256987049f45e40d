//! `mape netifd …`: the protocol handler's entry points.
//!
//! netifd runs `/lib/netifd/proto/mape.sh`, which is `exec /usr/sbin/mape netifd "$@"`, so we
//! receive netifd's own argument vector: `'' dump`, or `mape setup <iface> <config> [device]`,
//! `mape teardown <iface> <config>`. The proto name may be left out when running by hand:
//! `mape netifd setup wanmap '{"tunlink":"wan6"}' --dry-run --tunlink-status status.json`.

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::engine::CustomerPrefix;
use crate::handler::{self, DryRun, RealSystem, WatchVerdict};
use crate::render::netifd::{dump, ifname_for};

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
    #[arg(long, value_name = "BYTES")]
    pub link_mtu: Option<u32>,
    /// With --dry-run: keep the handler's state in DIR (`<iface>.json`), so a dry-run teardown
    /// knows what a dry-run setup added. Never the live state directory of a router.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    /// watch: the prefix in use (`none` while waiting for one).
    #[arg(long, value_name = "PREFIX")]
    pub current: Option<String>,
    /// watch: the owner token of the setup that started the task; the task exits once the
    /// interface's state names another owner (a newer setup took over).
    #[arg(long, value_name = "TOKEN")]
    pub owner: Option<String>,
    /// watch: seconds between looks at the link (default 10, or $MAPE_WATCH_INTERVAL).
    #[arg(long, value_name = "SECONDS")]
    pub interval: Option<u64>,
    /// watch: look once, print the verdict and exit (0 same, 3 changed).
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

pub fn run(a: &NetifdArgs) -> Result<i32, String> {
    let mut words: Vec<&str> = a.args.iter().map(String::as_str).collect();
    let proto = if ACTIONS.contains(&words[0]) {
        "mape"
    } else {
        words.remove(0)
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
                let state_file = a
                    .state_dir
                    .as_ref()
                    .map(|d| d.join(format!("{iface}.json")));
                if let Some(f) = &state_file {
                    crate::provision::netifd::check_name("interface", iface)
                        .map_err(|e| e.to_string())?;
                    if let Ok(text) = std::fs::read_to_string(f) {
                        let v = serde_json::from_str(&text)
                            .map_err(|e| format!("{}: {e}", f.display()))?;
                        sys.state.insert(iface.to_string(), v);
                    }
                }
                let code = if action == "setup" {
                    handler::setup(&mut sys, &exe, iface, &config)
                } else {
                    handler::teardown(&mut sys, iface)
                };
                if let Some(f) = &state_file {
                    let written = match sys.state.get(iface) {
                        Some(v) => std::fs::write(f, v.to_string()),
                        None => std::fs::remove_file(f).or_else(|e| {
                            if e.kind() == std::io::ErrorKind::NotFound {
                                Ok(())
                            } else {
                                Err(e)
                            }
                        }),
                    };
                    written.map_err(|e| format!("--state-dir {}: {e}", f.display()))?;
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
            let config = json_arg("config", need(config, action, "config JSON")?)?;
            let current = match a.current.as_deref() {
                None | Some("none") => None,
                Some(p) => Some(p.parse::<CustomerPrefix>().map_err(|e| e.to_string())?),
            };
            let interval = a
                .interval
                .or_else(|| std::env::var("MAPE_WATCH_INTERVAL").ok()?.parse().ok())
                .unwrap_or(10)
                .max(1);
            let mut sys = RealSystem::new();
            // While the interface is up, each round also refreshes its status (file and ubus
            // data.mape_status, see handler::status_round); the first round right after setup
            // only looks at the link.
            let mut status = handler::StatusWatch::new(
                handler::StatusPush::from_env(),
                crate::status::RealSource::state_dirs(),
            );
            let mut src = crate::status::RealSource::new();
            loop {
                if let Some(owner) = &a.owner {
                    if !handler::owns(&mut sys, iface, owner) {
                        eprintln!(
                            "mape: {iface}: another setup owns the interface: this watch task ends"
                        );
                        return Ok(0);
                    }
                }
                match handler::watch_once(&mut sys, iface, &config, current) {
                    WatchVerdict::Changed(why) => {
                        eprintln!("mape: {iface}: {why}: restarting the interface");
                        return Ok(if a.once { 3 } else { 0 });
                    }
                    WatchVerdict::Same if a.once => {
                        if current.is_some() {
                            handler::status_round(&mut sys, &mut src, iface, &mut status);
                        }
                        return Ok(0);
                    }
                    WatchVerdict::Same => {
                        std::thread::sleep(Duration::from_secs(interval));
                        if current.is_some() {
                            handler::status_round(&mut sys, &mut src, iface, &mut status);
                        }
                    }
                }
            }
        }
        "reapply" => Ok(handler::reapply(&mut RealSystem::new())),
        // Declared neither renew- nor restart-handler; netifd does not call these.
        "renew" | "restart" => Ok(0),
        other => Err(format!(
            "netifd: unknown action {other:?} (dump, setup, teardown, watch)"
        )),
    }
}
