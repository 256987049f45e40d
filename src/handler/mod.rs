//! The netifd protocol handler for `proto mape` (front end).
//!
//! netifd runs `/lib/netifd/proto/mape.sh`, a one-line `exec` of this binary, as
//! `mape.sh <proto> setup|teardown <iface> <config JSON>`. We do the work in Rust rather than
//! through `netifd-proto.sh` because the whole job is JSON in, JSON out plus two system calls,
//! and a shell layer would only add quoting hazards.
//!
//! Setup, in order (each step rolls back the earlier ones if it fails):
//! 1. parse and validate the config (a bad option is permanent: error + block restart);
//! 2. register a host dependency on the tunnel link, so netifd brings us back with it;
//! 3. read the link's prefixes (PD, static `ip6prefix`, else the RA /64 address) and map the
//!    first one that resolves; none yet, or none of a known ISP: report the error and start a
//!    proto task that waits for a usable prefix (the interface is not blocked);
//! 4. add the CE /128 to the link's device ourselves, with NODAD, *before* the tunnel exists:
//!    map.sh adds it later through a second dynamic interface and netifd's DAD delay, which is
//!    why users see "Local address not yet configured" and RX 0 (see the README);
//! 5. load our nft table (one atomic `nft -f`);
//! 6. send the update (tunnel, IPv4, default route, zone, `data.mape`);
//! 7. start the proto task that watches the link: when the prefix changes it exits, netifd
//!    tears us down and, because nothing blocked the restart, sets us up again. While the
//!    interface is up, each round also refreshes its port usage ([`status_round`]: the status
//!    file, and `data.mape_status` when it changed).

mod netlink;
mod status;
mod system;

use std::net::Ipv6Addr;

use serde_json::{json, Value};

use crate::engine::{CustomerPrefix, MapError};
use crate::names::{check_name, ifname_for, table_for};
use crate::provision::netifd::{ConfigError, HandlerConfig, LinkStatus};
use crate::provision::{resolve, ResolveError, Resolved, RuleSource};
use crate::render::netifd::{self as msg, codes, UpdateParams};
use crate::render::nft::{self, NftParams};
use crate::state::{Frontend, State};

pub use status::{status_round, StatusPush, StatusWatch};
pub use system::{DryRun, RealSystem, SysError};

/// What the handler needs from the system; [`RealSystem`] on a router, [`DryRun`] to print
/// instead of doing.
pub trait System {
    /// `ubus call <object> <method> <args>`; the reply (`Null` if empty).
    fn ubus_call(&mut self, object: &str, method: &str, args: &Value) -> Result<Value, SysError>;
    /// `nft -f -` with this script, as one transaction.
    fn nft_apply(&mut self, script: &str) -> Result<(), SysError>;
    /// Adds `addr/128` to `dev` without duplicate address detection.
    fn addr_add(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError>;
    /// Removes `addr/128` from `dev`; absent is not an error.
    fn addr_del(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError>;
    /// The MTU of a device, if known.
    fn link_mtu(&mut self, dev: &str) -> Option<u32>;
    fn save_state(&mut self, state: &State) -> Result<(), SysError>;
    /// The saved state of `iface`; an unreadable or refused one is logged and taken as none.
    fn load_state(&mut self, iface: &str) -> Option<State>;
    fn clear_state(&mut self, iface: &str);
    /// The interfaces that have a saved state.
    fn state_ifaces(&mut self) -> Vec<String>;
    /// Keeps the latest `mape status` of the interface (`<state dir>/status/<iface>.json`).
    fn save_status(&mut self, iface: &str, status: &Value) -> Result<(), SysError> {
        let _ = (iface, status);
        Ok(())
    }
    /// A line for the netifd log.
    fn log(&mut self, line: &str);
}

/// Exit statuses of the handler's actions.
pub const OK: i32 = 0;
pub const FAILED: i32 = 1;

/// The argument vector of the proto task: watch the link and exit when the mapping would
/// change. `current` is the prefix now in use (`none` while waiting).
pub fn watch_command(
    exe: &str,
    iface: &str,
    config: &str,
    current: Option<&CustomerPrefix>,
) -> Vec<String> {
    vec![
        exe.to_string(),
        "netifd".into(),
        "watch".into(),
        iface.into(),
        config.into(),
        "--current".into(),
        current.map_or("none".to_string(), |p| p.to_string()),
    ]
}

/// Resolves the first prefix of the link that maps under the configured rules.
/// `Err` carries the first prefix's error (or none if the link has no prefix).
pub fn select(
    source: &RuleSource,
    link: &LinkStatus,
) -> Result<Resolved, Option<crate::provision::ResolveError>> {
    let mut first_err = None;
    for p in &link.prefixes {
        match resolve(source, *p) {
            Ok(r) => return Ok(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    Err(first_err)
}

fn notify(sys: &mut dyn System, payload: Value) -> Result<Value, SysError> {
    sys.ubus_call("network.interface", "notify_proto", &payload)
}

/// Reports an error (and optionally blocks restarts); the message also goes to the log.
fn report(sys: &mut dyn System, iface: &str, code: &str, detail: &str, permanent: bool) {
    sys.log(&format!("mape: {iface}: {code}: {detail}"));
    let _ = notify(sys, msg::error(iface, code, &[detail.to_string()]));
    if permanent {
        let _ = notify(sys, msg::block_restart(iface));
    }
}

fn link_status(sys: &mut dyn System, tunlink: &str) -> Result<LinkStatus, String> {
    let v = sys
        .ubus_call(
            &format!("network.interface.{tunlink}"),
            "status",
            &json!({}),
        )
        .map_err(|e| format!("tunlink {tunlink}: {e}"))?;
    LinkStatus::from_value(&v).map_err(|e| e.to_string())
}

/// Finds a tunnel link when `tunlink` is not set: the first interface with a prefix that maps.
fn find_tunlink(sys: &mut dyn System, iface: &str, source: &RuleSource) -> Option<String> {
    let dump = sys
        .ubus_call("network.interface", "dump", &json!({}))
        .ok()?;
    for i in dump.get("interface")?.as_array()? {
        let name = i.get("interface")?.as_str()?;
        if name == iface || check_name("tunlink", name).is_err() {
            continue;
        }
        if let Ok(status) = LinkStatus::from_value(i) {
            if select(source, &status).is_ok() {
                return Some(name.to_string());
            }
        }
    }
    None
}

/// The configured `tunlink`, else the first interface with a prefix that maps under the rules.
fn tunlink_for(sys: &mut dyn System, iface: &str, cfg: &HandlerConfig) -> Option<String> {
    if let Some(t) = &cfg.tunlink {
        return Some(t.clone());
    }
    // Without a prefix the rule source may not be complete (ealen derived from it): an empty
    // rule list then finds no interface, which is reported as "no prefix yet".
    let probe = cfg
        .rules
        .to_source(None)
        .unwrap_or(RuleSource::Explicit(Vec::new()));
    find_tunlink(sys, iface, &probe)
}

/// `setup`: see the module documentation for the steps.
pub fn setup(sys: &mut dyn System, exe: &str, iface: &str, config_json: &str) -> i32 {
    if let Err(e) = check_name("interface", iface) {
        sys.log(&format!("mape: {e}"));
        return FAILED;
    }
    let cfg = match HandlerConfig::parse(config_json) {
        Ok(c) => c,
        Err(e) => {
            report(sys, iface, config_code(&e), &e.to_string(), true);
            return FAILED;
        }
    };
    // The rule source does not depend on the prefix unless ealen must be derived; check the
    // prefix-independent part now so a bad option is reported even before a prefix exists.
    if let Err(e) = cfg.rules.to_source(None) {
        if !matches!(e, crate::provision::input::InputError::Missing("ealen")) {
            report(sys, iface, codes::INVALID_MAP_RULE, &e.to_string(), true);
            return FAILED;
        }
    }
    let Some(tunlink) = tunlink_for(sys, iface, &cfg) else {
        report(
            sys,
            iface,
            codes::NO_PREFIX,
            "no interface has a usable IPv6 prefix yet (set tunlink)",
            false,
        );
        return start_task(sys, exe, iface, config_json, None);
    };
    let _ = notify(sys, msg::host_dependency(iface, "::", &tunlink));

    let link = match link_status(sys, &tunlink) {
        Ok(l) if l.up && !l.prefixes.is_empty() => l,
        Ok(_) => {
            report(
                sys,
                iface,
                codes::NO_PREFIX,
                &format!("tunlink {tunlink}: no IPv6 prefix yet, waiting"),
                false,
            );
            return start_task(sys, exe, iface, config_json, None);
        }
        Err(e) => {
            report(sys, iface, codes::NO_PREFIX, &e, false);
            return start_task(sys, exe, iface, config_json, None);
        }
    };
    let resolved = match resolve_for_link(&cfg, &link) {
        Ok(r) => r,
        Err((code, detail, permanent)) => {
            report(sys, iface, code, &detail, permanent);
            return if permanent {
                FAILED
            } else {
                start_task(sys, exe, iface, config_json, None)
            };
        }
    };
    for w in &resolved.warnings {
        sys.log(&format!("mape: {iface}: warning: {w}"));
    }
    let Some(dev) = link.l3_device.clone() else {
        report(
            sys,
            iface,
            codes::NO_PREFIX,
            &format!("tunlink {tunlink}: no device"),
            false,
        );
        return start_task(sys, exe, iface, config_json, None);
    };
    let ifname = ifname_for(iface);
    let table = table_for(iface);
    let m = &resolved.mapping;
    let origin = format!(
        "interface {iface}, prefix {} on {tunlink}, IPv4 {}, PSID {}, {} ports",
        m.prefix,
        m.ipv4,
        m.ports.psid(),
        m.port_count()
    );
    let script = match nft::ruleset(&NftParams {
        table: &table,
        ifname: &ifname,
        mapping: m,
        exclude: &cfg.ports_exclude,
        origin: &origin,
    }) {
        Ok(s) => s,
        Err(e) => {
            report(sys, iface, codes::INVALID_OPTION, &e.to_string(), true);
            return FAILED;
        }
    };
    let mtu = cfg.tunnel_mtu(sys.link_mtu(&dev));
    let ce = m.ce.addr();

    // netifd tears down before every setup, but a setup over a live one (a crashed teardown, a
    // manual `ifup`) must not leave the previous prefix's CE address behind.
    if let Some(old) = sys.load_state(iface) {
        if (old.dev.as_str(), old.ce) != (dev.as_str(), ce) {
            let _ = sys.addr_del(&old.dev, old.ce);
        }
    }
    if let Err(e) = sys.addr_add(&dev, ce) {
        report(
            sys,
            iface,
            codes::ADDR_FAILED,
            &format!("adding {ce}/128 to {dev}: {e}"),
            false,
        );
        return FAILED;
    }
    if let Err(e) = sys.nft_apply(&script) {
        let _ = sys.addr_del(&dev, ce);
        report(sys, iface, codes::NFT_FAILED, &e.to_string(), true);
        return FAILED;
    }
    let update = msg::update(&UpdateParams {
        iface,
        ifname: &ifname,
        tunlink: &tunlink,
        mtu,
        config: &cfg,
        resolved: &resolved,
    });
    if let Err(e) = notify(sys, update) {
        let _ = sys.nft_apply(&nft::delete_script(&table));
        let _ = sys.addr_del(&dev, ce);
        sys.log(&format!("mape: {iface}: notify_proto failed: {e}"));
        return FAILED;
    }
    // The script is kept so `reapply` can restore the table after `fw4 flush` (firewall stop).
    // `mapping` (the calculator JSON) lets `mape status` work without ubus.
    let state = State {
        frontend: Frontend::Netifd,
        name: iface.to_string(),
        ifname: ifname.clone(),
        table,
        dev,
        ce,
        prefix: m.prefix.to_string(),
        tunlink: Some(tunlink.clone()),
        nft: script,
        mtu: Some(mtu),
        ttl: Some(cfg.ttl),
        default_route: cfg.defaultroute,
        metric: None,
        mapping: Some(crate::render::calc::record(&resolved)),
        owner: None,
    };
    if let Err(e) = sys.save_state(&state) {
        sys.log(&format!("mape: {iface}: warning: cannot save state: {e}"));
    }
    sys.log(&format!(
        "mape: {iface}: up: {origin}, CE {ce}, BR {}",
        m.br.map(|b| b.to_string()).unwrap_or_default()
    ));
    start_task(sys, exe, iface, config_json, Some(&m.prefix))
}

/// The netifd error code of a configuration error.
fn config_code(e: &ConfigError) -> &'static str {
    match e {
        ConfigError::UnsupportedType(_) => codes::UNSUPPORTED_TYPE,
        _ => codes::INVALID_OPTION,
    }
}

/// The netifd error code of a mapping failure: OpenWrt map's codes where they exist.
fn resolve_code(e: &ResolveError) -> &'static str {
    match e {
        ResolveError::NoIspRule { .. } | ResolveError::NotInIsp { .. } => codes::NO_MATCHING_RULE,
        ResolveError::NoMatchingRule { .. } => codes::NO_MATCHING_PD,
        ResolveError::Map(MapError::Rule(_)) => codes::INVALID_MAP_RULE,
        ResolveError::Map(_) => codes::NO_MATCHING_PD,
    }
}

/// Maps the link's prefixes under the configured rules; on failure, the error code, the
/// message and whether it is permanent (a config error) or may heal with another prefix.
fn resolve_for_link(
    cfg: &HandlerConfig,
    link: &LinkStatus,
) -> Result<Resolved, (&'static str, String, bool)> {
    let source = cfg
        .rules
        .to_source(link.prefixes.first())
        .map_err(|e| (codes::INVALID_MAP_RULE, e.to_string(), true))?;
    select(&source, link).map_err(|e| match e {
        None => (codes::NO_PREFIX, "no IPv6 prefix".to_string(), false),
        Some(e) => {
            let code = resolve_code(&e);
            (code, e.to_string(), code == codes::INVALID_MAP_RULE)
        }
    })
}

fn start_task(
    sys: &mut dyn System,
    exe: &str,
    iface: &str,
    config: &str,
    current: Option<&CustomerPrefix>,
) -> i32 {
    match notify(
        sys,
        msg::run_command(iface, &watch_command(exe, iface, config, current)),
    ) {
        Ok(_) => OK,
        Err(e) => {
            sys.log(&format!("mape: {iface}: cannot start the watch task: {e}"));
            FAILED
        }
    }
}

/// `teardown`: remove our nft table and the CE address; idempotent, never fails the caller.
pub fn teardown(sys: &mut dyn System, iface: &str) -> i32 {
    if let Err(e) = check_name("interface", iface) {
        sys.log(&format!("mape: {e}"));
        return FAILED;
    }
    let table = table_for(iface);
    if let Err(e) = sys.nft_apply(&nft::delete_script(&table)) {
        sys.log(&format!("mape: {iface}: removing nft table {table}: {e}"));
    }
    if let Some(s) = sys.load_state(iface) {
        if let Err(e) = sys.addr_del(&s.dev, s.ce) {
            sys.log(&format!(
                "mape: {iface}: removing {} from {}: {e}",
                s.ce, s.dev
            ));
        }
    }
    sys.clear_state(iface);
    OK
}

/// `reapply`: load the saved nft table of every interface that is up again. The firewall's
/// `fw4 flush` (on `/etc/init.d/firewall stop`) deletes every table, ours included; fw4 runs this
/// through its script include after each start or reload, and it is idempotent.
pub fn reapply(sys: &mut dyn System) -> i32 {
    let mut code = OK;
    for iface in sys.state_ifaces() {
        let Some(script) = sys
            .load_state(&iface)
            .map(|s| s.nft)
            .filter(|s| !s.is_empty())
        else {
            continue;
        };
        if let Err(e) = sys.nft_apply(&script) {
            sys.log(&format!("mape: {iface}: reapplying the nft table: {e}"));
            code = FAILED;
        }
    }
    code
}

/// What the watch task decides after looking at the link once.
#[derive(Debug, PartialEq, Eq)]
pub enum WatchVerdict {
    /// The mapping would be the same: keep watching.
    Same,
    /// The prefix in use changed (or one appeared, or it went away): restart the interface.
    Changed(String),
}

/// One look at the link: would setup now pick another prefix than `current`?
pub fn watch_once(
    sys: &mut dyn System,
    iface: &str,
    config_json: &str,
    current: Option<CustomerPrefix>,
) -> WatchVerdict {
    let Ok(cfg) = HandlerConfig::parse(config_json) else {
        return WatchVerdict::Same; // setup reported it; nothing a restart would fix
    };
    let Some(tunlink) = tunlink_for(sys, iface, &cfg) else {
        return WatchVerdict::Same;
    };
    let now = match link_status(sys, &tunlink) {
        Ok(link) => resolve_for_link(&cfg, &link).ok().map(|r| r.mapping.prefix),
        Err(_) => None,
    };
    // Compared as network and length: bits past the length (an RA address) are not a change.
    let key = |p: Option<CustomerPrefix>| p.map(|p| (p.network(), p.len()));
    if key(now) == key(current) {
        WatchVerdict::Same
    } else {
        let show = |p: Option<CustomerPrefix>| p.map_or("none".to_string(), |p| p.to_string());
        WatchVerdict::Changed(format!(
            "prefix on {tunlink} is now {} (was {})",
            show(now),
            show(current)
        ))
    }
}
