//! The netifd protocol handler for `proto mape` (front end).
//!
//! netifd runs `/lib/netifd/proto/mape.sh`, a one-line `exec` of this binary, as
//! `mape.sh <proto> setup|teardown <iface> <config JSON>`. We do the work in Rust rather than
//! through `netifd-proto.sh` because the whole job is JSON in, JSON out plus two system calls,
//! and a shell layer would only add quoting hazards.
//!
//! Setup, in order (each step rolls back the earlier ones if it fails):
//! 1. parse and validate the config (a bad option is permanent: error + block restart);
//! 2. claim the interface: a fresh owner token goes into its state file (see "Ownership");
//! 3. read the link's prefixes (PD, static `ip6prefix`, else the RA /64 address) and map the
//!    first one that resolves; none yet, or none of a known ISP: report the error and start a
//!    proto task that waits for a usable prefix (the interface is not blocked);
//! 4. register a host dependency on the route to the BR over the tunnel link (as OpenWrt's
//!    dslite.sh does with its peer): netifd adds a host route to the BR there, takes us down
//!    when the link goes down and sets us up again when it is back. A dependency on `::` (what
//!    map.sh uses) needs a default route on the link; a link that only routes the BR's network
//!    would leave the interface unavailable (NO_DEVICE);
//! 5. record in the state what the next steps add (so a later setup or teardown knows it),
//!    then add the CE /128 to the link's device ourselves, with NODAD, *before* the tunnel
//!    exists: map.sh adds it later through a second dynamic interface and netifd's DAD delay,
//!    which is why users see "Local address not yet configured" and RX 0 (see the README);
//! 6. load our nft table (one atomic `nft -f`);
//! 7. send the update (tunnel, IPv4, default route, zone, `data.mape`);
//! 8. start the proto task that watches the link: when the prefix changes it exits, netifd
//!    tears us down and, because nothing blocked the restart, sets us up again. While the
//!    interface is up, each round also refreshes its port usage ([`status_round`]: the status
//!    file, and `data.mape_status` when it changed).
//!
//! Ownership: `ubus call network restart` makes netifd re-execute itself without waiting for
//! its handlers, so a setup of the old netifd can still be running while the new netifd's
//! setup of the same interface creates the same table and CE address. Each setup therefore
//! writes a fresh owner token into the interface's state before it changes anything, rolls
//! back only while the state still names it (a newer setup's table and address are left
//! alone), and hands the token to its watch task, which exits as soon as the state names
//! another owner (or none). Every ubus call has a bounded timeout (see [`RealSystem`]), so a
//! setup talking to a netifd that went away gives up within seconds.

mod netlink;
mod status;
mod system;

use std::net::Ipv6Addr;

use serde_json::{json, Value};

use crate::engine::{CustomerPrefix, MapError};
use crate::provision::netifd::{check_name, ConfigError, HandlerConfig, LinkStatus};
use crate::provision::{resolve, ResolveError, Resolved, RuleSource};
use crate::render::netifd::{self as msg, codes, ifname_for, table_for, UpdateParams};
use crate::render::nft::{self, NftParams};

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
    fn save_state(&mut self, iface: &str, state: &Value) -> Result<(), SysError>;
    fn load_state(&mut self, iface: &str) -> Option<Value>;
    fn clear_state(&mut self, iface: &str);
    /// The interfaces that have a saved state.
    fn state_ifaces(&mut self) -> Vec<String>;
    /// Keeps the latest `mape status` of the interface (`<state dir>/status/<iface>.json`).
    fn save_status(&mut self, iface: &str, status: &Value) -> Result<(), SysError> {
        let _ = (iface, status);
        Ok(())
    }
    /// A token no other setup of this interface has used, `<pid>.<sequence>` with a sequence
    /// that grows with time: names the owner of what a setup creates, and tells a teardown
    /// whether a setup started after it (see "Ownership" above).
    fn owner_token(&mut self) -> String;
    /// A line for the netifd log.
    fn log(&mut self, line: &str);
}

/// Exit statuses of the handler's actions.
pub const OK: i32 = 0;
pub const FAILED: i32 = 1;

/// The argument vector of the proto task: watch the link and exit when the mapping would
/// change, or when another setup owns the interface. `current` is the prefix now in use
/// (`none` while waiting); `owner` the token of the setup that starts it.
pub fn watch_command(
    exe: &str,
    iface: &str,
    config: &str,
    owner: &str,
    current: Option<&CustomerPrefix>,
) -> Vec<String> {
    vec![
        exe.to_string(),
        "netifd".into(),
        "watch".into(),
        iface.into(),
        config.into(),
        "--owner".into(),
        owner.into(),
        "--current".into(),
        current.map_or("none".to_string(), |p| p.to_string()),
    ]
}

/// Whether the interface's state still names `owner` (see "Ownership" above).
pub fn owns(sys: &mut dyn System, iface: &str, owner: &str) -> bool {
    sys.load_state(iface)
        .is_some_and(|s| s.get("owner").and_then(Value::as_str) == Some(owner))
}

/// Marks the interface as being set up by `owner`, keeping what an earlier state recorded
/// (a later step removes that earlier CE address if it differs).
fn claim(sys: &mut dyn System, iface: &str, owner: &str, prev: Option<&Value>) {
    let mut state = match prev {
        Some(Value::Object(o)) => Value::Object(o.clone()),
        _ => json!({}),
    };
    state["owner"] = json!(owner);
    if let Err(e) = sys.save_state(iface, &state) {
        sys.log(&format!("mape: {iface}: warning: cannot save state: {e}"));
    }
}

/// What a failed setup added, removed only while the setup still owns the interface: a newer
/// setup (of a restarted netifd) may have claimed it, with the same table and CE address.
fn roll_back(
    sys: &mut dyn System,
    iface: &str,
    owner: &str,
    table: Option<&str>,
    address: Option<(&str, Ipv6Addr)>,
) {
    if !owns(sys, iface, owner) {
        sys.log(&format!(
            "mape: {iface}: another setup owns the interface now: leaving its table and address"
        ));
        return;
    }
    if let Some(table) = table {
        let _ = sys.nft_apply(&nft::delete_script(table));
    }
    if let Some((dev, ce)) = address {
        let _ = sys.addr_del(dev, ce);
    }
    sys.clear_state(iface);
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
    usable_status(&v).map_err(|e| e.to_string())
}

/// The link's status without the prefixes and addresses whose valid lifetime is over. When a
/// DHCPv6 server renumbers in place it returns the old prefix with lifetime 0, and netifd keeps
/// listing it (`"valid": -1`, first) for a while: mapping that one made setup and the watch task
/// flip between the old and the new mapping, restarting the interface each time.
fn usable_status(status: &Value) -> Result<LinkStatus, ConfigError> {
    let mut v = status.clone();
    for key in ["ipv6-prefix", "ipv6-address"] {
        if let Some(list) = v.get_mut(key).and_then(Value::as_array_mut) {
            list.retain(|e| {
                e.get("valid")
                    .and_then(Value::as_i64)
                    .map_or(true, |t| t > 0)
            });
        }
    }
    LinkStatus::from_value(&v)
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
        if let Ok(status) = usable_status(i) {
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
    let owner = sys.owner_token();
    let prev = sys.load_state(iface);
    claim(sys, iface, &owner, prev.as_ref());
    let Some(tunlink) = tunlink_for(sys, iface, &cfg) else {
        report(
            sys,
            iface,
            codes::NO_PREFIX,
            "no interface has a usable IPv6 prefix yet (set tunlink)",
            false,
        );
        return start_task(sys, exe, iface, config_json, &owner, None);
    };

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
            return start_task(sys, exe, iface, config_json, &owner, None);
        }
        Err(e) => {
            report(sys, iface, codes::NO_PREFIX, &e, false);
            return start_task(sys, exe, iface, config_json, &owner, None);
        }
    };
    let resolved = match resolve_for_link(&cfg, &link) {
        Ok(r) => r,
        Err((code, detail, permanent)) => {
            report(sys, iface, code, &detail, permanent);
            return if permanent {
                roll_back(sys, iface, &owner, None, None);
                FAILED
            } else {
                start_task(sys, exe, iface, config_json, &owner, None)
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
        return start_task(sys, exe, iface, config_json, &owner, None);
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
            roll_back(sys, iface, &owner, None, None);
            return FAILED;
        }
    };
    let mtu = cfg.tunnel_mtu(sys.link_mtu(&dev));
    let ce = m.ce.addr();

    // Depend on the route to the BR over the tunnel link (no BR: on the link being up).
    let peer = m.br.map(|b| b.to_string()).unwrap_or_default();
    if let Err(e) = notify(sys, msg::host_dependency(iface, &peer, &tunlink)) {
        sys.log(&format!(
            "mape: {iface}: no route to the BR {peer} over {tunlink} ({e}): netifd keeps the \
             interface unavailable until there is one"
        ));
    }

    // netifd tears down before every setup, but a setup over a live one (a crashed teardown, a
    // manual `ifup`) must not leave the previous prefix's CE address behind.
    if let Some((old_dev, old_ce)) = prev.as_ref().and_then(state_address) {
        if (old_dev.as_str(), old_ce) != (dev.as_str(), ce) {
            let _ = sys.addr_del(&old_dev, old_ce);
        }
    }
    // The state names what the next steps add before they add it: a teardown, or the next
    // setup, must find the address and table even if this process dies half-way.
    // The script is kept so `reapply` can restore the table after `fw4 flush` (firewall stop).
    // `mapping` (the calculator JSON) lets `mape status` work without ubus.
    let state = json!({ "owner": owner, "ce": ce.to_string(), "dev": dev, "table": table,
                        "ifname": ifname, "tunlink": tunlink, "prefix": m.prefix.to_string(),
                        "nft": script, "mapping": crate::render::calc::to_json(&resolved) });
    if let Err(e) = sys.save_state(iface, &state) {
        sys.log(&format!("mape: {iface}: warning: cannot save state: {e}"));
    }
    if let Err(e) = sys.addr_add(&dev, ce) {
        report(
            sys,
            iface,
            codes::ADDR_FAILED,
            &format!("adding {ce}/128 to {dev}: {e}"),
            false,
        );
        roll_back(sys, iface, &owner, None, None);
        return FAILED;
    }
    if let Err(e) = sys.nft_apply(&script) {
        roll_back(sys, iface, &owner, None, Some((&dev, ce)));
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
        sys.log(&format!("mape: {iface}: notify_proto failed: {e}"));
        roll_back(sys, iface, &owner, Some(&table), Some((&dev, ce)));
        return FAILED;
    }
    sys.log(&format!(
        "mape: {iface}: up: {origin}, CE {ce}, BR {}",
        m.br.map(|b| b.to_string()).unwrap_or_default()
    ));
    start_task(sys, exe, iface, config_json, &owner, Some(&m.prefix))
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
    owner: &str,
    current: Option<&CustomerPrefix>,
) -> i32 {
    match notify(
        sys,
        msg::run_command(iface, &watch_command(exe, iface, config, owner, current)),
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
    // A teardown of a netifd that re-executed itself (`network restart`) can run after the new
    // netifd's setup of the interface claimed it: that setup's table and address stay.
    let started = sys.owner_token();
    let state = sys.load_state(iface);
    if let Some(owner) = state.as_ref().and_then(|s| s.get("owner")?.as_str()) {
        if claimed_after(owner, &started) {
            sys.log(&format!(
                "mape: {iface}: a setup that started after this teardown owns the interface: \
                 leaving its table and address"
            ));
            return OK;
        }
    }
    let table = table_for(iface);
    if let Err(e) = sys.nft_apply(&nft::delete_script(&table)) {
        sys.log(&format!("mape: {iface}: removing nft table {table}: {e}"));
    }
    if let Some((dev, ce)) = state.as_ref().and_then(state_address) {
        if let Err(e) = sys.addr_del(&dev, ce) {
            sys.log(&format!("mape: {iface}: removing {ce} from {dev}: {e}"));
        }
    }
    sys.clear_state(iface);
    OK
}

/// Whether owner token `a` was taken after token `b`. Tokens are `<pid>.<sequence>`, the
/// sequence growing with time (see [`System::owner_token`]); anything else is not comparable.
fn claimed_after(a: &str, b: &str) -> bool {
    let seq = |t: &str| t.rsplit_once('.')?.1.parse::<u128>().ok();
    matches!((seq(a), seq(b)), (Some(x), Some(y)) if x > y)
}

/// The device and CE address a saved state records (device names checked like any other).
fn state_address(state: &Value) -> Option<(String, Ipv6Addr)> {
    let dev = state.get("dev")?.as_str()?;
    let ce = state.get("ce")?.as_str()?.parse().ok()?;
    check_name("dev", dev).ok()?;
    Some((dev.to_string(), ce))
}

/// `reapply`: load the saved nft table of every interface that is up again. The firewall's
/// `fw4 flush` (on `/etc/init.d/firewall stop`) deletes every table, ours included; fw4 runs this
/// through its script include after each start or reload, and it is idempotent.
pub fn reapply(sys: &mut dyn System) -> i32 {
    let mut code = OK;
    for iface in sys.state_ifaces() {
        let Some(script) = sys
            .load_state(&iface)
            .and_then(|s| s.get("nft")?.as_str().map(str::to_string))
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
