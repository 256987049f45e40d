//! The netifd protocol handler for `proto mape` (front end).
//!
//! netifd runs `/lib/netifd/proto/mape.sh`, a one-line `exec` of this binary, as
//! `mape.sh <proto> setup|teardown <iface> <config JSON>`. We do the work in Rust rather than
//! through `netifd-proto.sh` because the whole job is JSON in, JSON out plus two system calls,
//! and a shell layer would only add quoting hazards.
//!
//! Setup, in order (each step rolls back the earlier ones if it fails):
//! 1. parse and validate the config (a bad option is permanent: error + block restart);
//! 2. read the link's prefixes (PD, static `ip6prefix`, else the RA /64 address) and map the
//!    best one that resolves; none yet, or none of a known ISP: report the error and start a
//!    proto task that waits for a usable prefix (the interface is not blocked);
//! 3. claim the interface (owner token in the state);
//! 4. add the CE /128 to the link's device ourselves, with NODAD, *before* the tunnel exists:
//!    map.sh adds it later through a second dynamic interface and netifd's DAD delay, which is
//!    why users see "Local address not yet configured" and RX 0 (see the README);
//! 5. load our nft table (one atomic `nft -f`);
//! 6. send the update (tunnel, IPv4, default route, zone, `data.mape`);
//! 7. start the proto task that watches the link ([`watch`]): when the mapping changes it
//!    follows it in place ([`renumber`]), or else exits, and netifd tears us down and, because
//!    nothing blocked the restart, sets us up again.
//!    Once the setup has exited, the task registers the host dependency on the route to the BR
//!    through the tunnel link ([`depend`]), so netifd takes us down and back up with the link.

mod system;
pub mod usage;
pub mod watch;

use std::net::Ipv6Addr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::engine::{CustomerPrefix, MapError};
use crate::names::{check_name, ifname_for, table_for};
use crate::provision::netifd::{ConfigError, HandlerConfig, LinkStatus};
use crate::provision::{resolve, ResolveError, Resolved, RuleSource};
use crate::render::netifd::{self as msg, codes, UpdateParams};
use crate::render::nft::{self, NftParams};
use crate::state::{Frontend, State};

pub use system::{state_dir, DryRun, RealSystem, Step, SysError};
pub use watch::{Look, MappingKey, Verdict, Wake, Watcher};

/// What the handler needs from the system; [`RealSystem`] on a router, [`DryRun`] to print
/// instead of doing (and to fail on purpose in tests).
pub trait System {
    /// `ubus call <object> <method> <args>`; the reply (`Null` if empty).
    fn ubus_call(&mut self, object: &str, method: &str, args: &Value) -> Result<Value, SysError>;
    /// `nft -f -` with this script, as one transaction.
    fn nft_apply(&mut self, script: &str) -> Result<(), SysError>;
    /// Runs a refill of [`nft::update_script`] (as one transaction, like `nft -f`).
    fn nft_refill(&mut self, update: &str) -> Result<(), SysError> {
        self.nft_apply(update)
    }
    /// Deletes our table `ip <table>`; absent is not an error.
    fn nft_delete(&mut self, table: &str) -> Result<(), SysError> {
        self.nft_apply(&nft::delete_script(table))
    }
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
    /// A token unique to this run, `<pid>.<sequence>` with a sequence that grows with time: it
    /// marks the state a setup owns, and tells a teardown whether a setup started after it.
    fn owner_token(&mut self) -> String;
    /// How many setups of `iface` in a row failed for a transient reason (for the back-off).
    fn failures(&mut self, iface: &str) -> u32;
    fn set_failures(&mut self, iface: &str, n: u32);
    /// Keeps the latest `mape status` of the interface (`<state dir>/status/<iface>.json`).
    fn save_status(&mut self, iface: &str, status: &Value) -> Result<(), SysError> {
        let _ = (iface, status);
        Ok(())
    }
    /// Waits up to `limit` until process `pid` has exited and been reaped; whether it has.
    fn wait_exited(&mut self, pid: u32, limit: Duration) -> bool;
    /// Whether log lines may carry durations (a dry run's output must not vary from run to run).
    fn timed(&self) -> bool {
        true
    }
    /// A line for the netifd log.
    fn log(&mut self, line: &str);
}

/// Exit statuses of the handler's actions.
pub const OK: i32 = 0;
pub const FAILED: i32 = 1;

/// The first wait before netifd retries a setup that failed for a transient reason; it
/// doubles with each failure in a row, up to [`RETRY_MAX`].
pub const RETRY_FIRST: Duration = Duration::from_secs(5);
pub const RETRY_MAX: Duration = Duration::from_secs(120);

/// The back-off after `failures` transient failures in a row (the first is 1).
pub fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(8);
    (RETRY_FIRST * factor).min(RETRY_MAX)
}

/// How the proto task is started: watch the link, or wait for a prefix, or wait for a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    /// Running with the mapping of this prefix: end when the mapping changes.
    Watch(CustomerPrefix),
    /// No usable prefix yet: end when one appears.
    Wait,
    /// A transient failure: end after this back-off (or when a usable prefix appears).
    Retry(Duration),
}

/// The argument vector of the proto task; `owner` is the token of the setup that starts it (the
/// task ends once another setup owns the interface).
pub fn watch_command(
    exe: &str,
    iface: &str,
    config: &str,
    task: &Task,
    owner: Option<&str>,
) -> Vec<String> {
    let mut argv = vec![
        exe.to_string(),
        "netifd".into(),
        "watch".into(),
        iface.into(),
        config.into(),
        "--current".into(),
    ];
    match task {
        Task::Watch(p) => argv.push(p.to_string()),
        Task::Wait => argv.push("none".into()),
        Task::Retry(d) => {
            argv.push("none".into());
            argv.push("--retry-after".into());
            argv.push(d.as_secs().to_string());
        }
    }
    if let Some(o) = owner {
        argv.push("--owner".into());
        argv.push(o.into());
    }
    argv
}

/// Whether the interface's state still names `owner` as the setup that owns it.
pub fn owns(sys: &mut dyn System, iface: &str, owner: &str) -> bool {
    sys.load_state(iface)
        .is_some_and(|s| s.owner.as_deref() == Some(owner))
}

/// Whether owner token `a` was taken after token `b`. Tokens are `<pid>.<sequence>`, the
/// sequence growing with time (see [`System::owner_token`]); others are not comparable.
fn claimed_after(a: &str, b: &str) -> bool {
    let seq = |t: &str| t.rsplit_once('.')?.1.parse::<u128>().ok();
    matches!((seq(a), seq(b)), (Some(x), Some(y)) if x > y)
}

/// Resolves the best usable prefix of the link under the configured rules (the link lists
/// them best first: see [`LinkStatus`]). `Err` carries the first prefix's error (or none if
/// the link has no usable prefix).
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

/// Reports an error (and, for configuration errors only, blocks restarts); the message also
/// goes to the log.
fn report(sys: &mut dyn System, iface: &str, code: &str, detail: &str, permanent: bool) {
    sys.log(&format!("mape: {iface}: {code}: {detail}"));
    let _ = notify(sys, msg::error(iface, code, &[detail.to_string()]));
    if permanent {
        let _ = notify(sys, msg::block_restart(iface));
    }
}

fn link_status(sys: &mut dyn System, tunlink: &str) -> Result<LinkStatus, SysError> {
    let v = sys.ubus_call(
        &format!("network.interface.{tunlink}"),
        "status",
        &json!({}),
    )?;
    LinkStatus::from_value(&v).map_err(|e| SysError::BadReply {
        what: format!("ubus network.interface.{tunlink} status"),
        why: e.to_string(),
    })
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

/// Why a setup did not bring the interface up, and what happens next.
enum Failure {
    /// A configuration error: report it, block restarts (until the user changes the config).
    Config(&'static str, String),
    /// Nothing usable yet (no prefix, no link): report it and wait for one.
    Waiting(&'static str, String),
    /// Something that may heal by itself (the kernel, nft, netifd refused or timed out):
    /// report it, and let netifd retry after a back-off.
    Transient(&'static str, String),
    /// The tunnel link (named here) is down, not setting up: the binding that provisioned this
    /// dynamic interface ended (see [`HandlerConfig::dynamic`]).
    Gone(String),
}

/// `setup`: see the module documentation for the steps.
pub fn setup(sys: &mut dyn System, exe: &str, iface: &str, config_json: &str) -> i32 {
    if let Err(e) = check_name("interface", iface) {
        sys.log(&format!("mape: {e}"));
        return FAILED;
    }
    let failure = match try_setup(sys, iface, config_json) {
        Ok((prefix, owner)) => {
            sys.set_failures(iface, 0);
            return start_task(
                sys,
                exe,
                iface,
                config_json,
                &Task::Watch(prefix),
                Some(&owner),
            );
        }
        Err(f) => f,
    };
    match failure {
        Failure::Config(code, detail) => {
            report(sys, iface, code, &detail, true);
            FAILED
        }
        Failure::Waiting(code, detail) => {
            report(sys, iface, code, &detail, false);
            start_task(sys, exe, iface, config_json, &Task::Wait, None)
        }
        Failure::Gone(tunlink) => {
            // dhcpv6.script adds a map interface for each binding with option 94 and never
            // removes one: a waiting interface would come back with the old rule at the next
            // binding even when the server no longer sends it. Removed now, the interface comes
            // back from dhcpv6.script if the next binding carries option 94. (netifd removes
            // it 100 ms after asking; the task keeps it in setup until then.)
            report(
                sys,
                iface,
                codes::NO_PREFIX,
                &format!(
                    "tunlink {tunlink} is down: removing this interface of its DHCPv6 binding"
                ),
                false,
            );
            let _ = sys.ubus_call(&format!("network.interface.{iface}"), "remove", &json!({}));
            start_task(sys, exe, iface, config_json, &Task::Wait, None)
        }
        Failure::Transient(code, detail) => {
            let n = sys.failures(iface).saturating_add(1);
            sys.set_failures(iface, n);
            let delay = retry_delay(n);
            report(
                sys,
                iface,
                code,
                &format!("{detail}; retrying in {} s", delay.as_secs()),
                false,
            );
            // The task keeps the interface in setup (netifd keeps even a dynamic one) and
            // ends after the back-off, when netifd sets it up again.
            start_task(sys, exe, iface, config_json, &Task::Retry(delay), None)
        }
    }
}

/// The steps of a setup; `Ok` with the prefix in use and the setup's owner token once the
/// interface is up.
fn try_setup(
    sys: &mut dyn System,
    iface: &str,
    config_json: &str,
) -> Result<(CustomerPrefix, String), Failure> {
    let started = std::time::Instant::now();
    let cfg = HandlerConfig::parse(config_json)
        .map_err(|e| Failure::Config(config_code(&e), e.to_string()))?;
    // The rule source does not depend on the prefix unless ealen must be derived; check the
    // prefix-independent part now so a bad option is reported even before a prefix exists.
    if let Err(e) = cfg.rules.to_source(None) {
        if !matches!(e, crate::provision::input::InputError::Missing("ealen")) {
            return Err(Failure::Config(codes::INVALID_MAP_RULE, e.to_string()));
        }
    }
    let Some(tunlink) = tunlink_for(sys, iface, &cfg) else {
        return Err(Failure::Waiting(
            codes::NO_PREFIX,
            "no interface has a usable IPv6 prefix yet (set tunlink)".into(),
        ));
    };
    let link = match link_status(sys, &tunlink) {
        Ok(l) if l.up && !l.prefixes.is_empty() => l,
        Ok(l) if cfg.dynamic && !l.up && !l.pending => return Err(Failure::Gone(tunlink)),
        Ok(_) => {
            return Err(Failure::Waiting(
                codes::NO_PREFIX,
                format!("tunlink {tunlink}: no usable IPv6 prefix yet, waiting"),
            ))
        }
        Err(SysError::NotFound(_)) => {
            return Err(Failure::Waiting(
                codes::NO_PREFIX,
                format!("tunlink {tunlink}: no such interface (yet), waiting"),
            ))
        }
        Err(e) => {
            return Err(Failure::Waiting(
                codes::NO_PREFIX,
                format!("tunlink {tunlink}: status unknown ({e}), waiting"),
            ))
        }
    };
    let resolved = resolve_for_link(&cfg, &link).map_err(|(code, detail, permanent)| {
        if permanent {
            Failure::Config(code, detail)
        } else {
            Failure::Waiting(code, detail)
        }
    })?;
    for w in &resolved.warnings {
        sys.log(&format!("mape: {iface}: warning: {w}"));
    }
    let Some(dev) = link.l3_device.clone() else {
        return Err(Failure::Waiting(
            codes::NO_PREFIX,
            format!("tunlink {tunlink}: no device"),
        ));
    };
    let owner = sys.owner_token();
    let mut plan = plan(sys, iface, &cfg, &tunlink, &dev, &resolved, &owner)?;
    let update = std::mem::take(&mut plan.update);
    let (state, ce) = (&plan.state, plan.state.ce);

    // netifd tears down before every setup, but a setup over a live one (a crashed teardown, a
    // manual `ifup`) must not leave the previous prefix's CE address behind.
    let previous = sys.load_state(iface);
    if let Some(old) = &previous {
        if (old.dev.as_str(), old.ce) != (dev.as_str(), ce) {
            let _ = sys.addr_del(&old.dev, old.ce);
        }
    }
    // Claim the interface before changing anything: a setup still running from an earlier
    // netifd (after `network restart`) sees that it no longer owns it and leaves our address
    // and table alone when it rolls back.
    if let Err(e) = sys.save_state(state) {
        return Err(Failure::Transient(
            codes::ADDR_FAILED,
            format!("cannot save the state: {e}"),
        ));
    }
    if let Err(e) = sys.addr_add(&dev, ce) {
        rollback(sys, iface, &owner, state);
        return Err(Failure::Transient(
            codes::ADDR_FAILED,
            format!("adding {ce}/128 to {dev}: {e}"),
        ));
    }
    let nft_at = std::time::Instant::now();
    if let Err(e) = sys.nft_apply(&state.nft) {
        rollback(sys, iface, &owner, state);
        return Err(Failure::Transient(codes::NFT_FAILED, e.to_string()));
    }
    let update_at = std::time::Instant::now();
    if let Err(e) = notify(sys, update) {
        rollback(sys, iface, &owner, state);
        return Err(Failure::Transient(
            codes::UPDATE_FAILED,
            format!("netifd refused the update: {e}"),
        ));
    }
    // The host dependency comes from the proto task once this process has exited: see
    // [`depend`].
    log_up(sys, iface, &plan, "setup", [started, nft_at, update_at], "");
    Ok((resolved.mapping.prefix, owner))
}

/// What a setup, or a renumbering in place, puts on the system for one mapping: the state it
/// saves (with the whole nft script and the owner token) and the update for netifd.
struct Plan {
    state: State,
    update: Value,
    /// Where the mapping comes from, for the log.
    origin: String,
    /// The CE address lies outside the prefix (subnet 0 of the end-user prefix): the log says so.
    ce_outside: Option<(String, String)>,
}

fn plan(
    sys: &mut dyn System,
    iface: &str,
    cfg: &HandlerConfig,
    tunlink: &str,
    dev: &str,
    resolved: &Resolved,
    owner: &str,
) -> Result<Plan, Failure> {
    let m = &resolved.mapping;
    let ifname = ifname_for(iface);
    let table = table_for(iface);
    let origin = format!(
        "interface {iface}, prefix {} on {tunlink}, IPv4 {}, PSID {}, {} ports",
        m.prefix,
        m.ipv4,
        m.ports.psid(),
        m.port_count()
    );
    let script = nft::ruleset(&NftParams {
        table: &table,
        ifname: &ifname,
        mapping: m,
        exclude: &cfg.ports_exclude,
        origin: &origin,
    })
    .map_err(|e| Failure::Config(codes::INVALID_OPTION, e.to_string()))?;
    let mtu = cfg.tunnel_mtu(sys.link_mtu(dev));
    let update = msg::update(&UpdateParams {
        iface,
        ifname: &ifname,
        tunlink,
        mtu,
        config: cfg,
        resolved,
    });
    let state = State {
        frontend: Frontend::Netifd,
        name: iface.to_string(),
        ifname,
        table,
        dev: dev.to_string(),
        ce: m.ce.addr(),
        prefix: m.prefix.to_string(),
        tunlink: Some(tunlink.to_string()),
        nft: script,
        mtu: Some(mtu),
        ttl: Some(cfg.ttl),
        default_route: cfg.defaultroute,
        metric: None,
        mapping: Some(crate::render::calc::record(resolved)),
        owner: Some(owner.to_string()),
    };
    let ce_outside = m
        .ce_outside_prefix()
        .then(|| (m.end_user_prefix().to_string(), m.prefix.to_string()));
    Ok(Plan {
        state,
        update,
        origin,
        ce_outside,
    })
}

/// The log line of an interface that is up (`how`: "setup" or "in place"), with the times
/// of its steps from `[start, nft, update]` to now, and a note about the CE address if needed.
fn log_up(
    sys: &mut dyn System,
    iface: &str,
    plan: &Plan,
    how: &str,
    at: [std::time::Instant; 3],
    loaded: &str,
) {
    let done = std::time::Instant::now();
    let ms = |from: std::time::Instant, to: std::time::Instant| {
        u64::try_from(to.duration_since(from).as_millis()).unwrap_or(u64::MAX)
    };
    let times = if sys.timed() {
        format!(
            " ({how} {} ms: nft {} ms{loaded}, update {} ms)",
            ms(at[0], done),
            ms(at[1], at[2]),
            ms(at[2], done)
        )
    } else {
        String::new()
    };
    let (ce, dev) = (plan.state.ce, &plan.state.dev);
    let br = plan.state.mapping.as_ref().and_then(|m| m.br);
    sys.log(&format!(
        "mape: {iface}: up: {}, CE {ce}, BR {}{times}",
        plan.origin,
        br.map(|b| b.to_string()).unwrap_or_default(),
    ));
    if let Some((eup, prefix)) = &plan.ce_outside {
        sys.log(&format!(
            "mape: {iface}: the CE address is in subnet 0 of {eup}, outside {prefix} (normal behind an NTT home gateway): it is on {dev}"
        ));
    }
}

/// How [`load_table`] loaded the table, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loaded {
    /// The chains that hold the mapping refilled (the same shape).
    Refilled,
    /// The old table's chains refilled with the new mapping's port sets (another shape): the
    /// whole script is still to load.
    Bridged,
    Whole,
}

impl Loaded {
    fn note(self) -> &'static str {
        match self {
            Loaded::Refilled => " refilled",
            Loaded::Bridged => " bridged",
            Loaded::Whole => "",
        }
    }
}

/// Loads our table `table` for `script` while the link is lost (no traffic uses it): by
/// refilling the running table of `old` (a script of ours) when it has the same shape; else by
/// a bridge ([`nft::bridge_script`]: the caller loads the whole script once IPv4 is back);
/// else (or if those fail: the table is gone) the whole script, after deleting the old table.
/// nft reads the whole ruleset before it changes it: replacing OCN's 63-set table with a
/// 15-set one took 1.8 s in the test VM, the refill over netlink 0.16 s.
fn load_table(
    sys: &mut dyn System,
    iface: &str,
    table: &str,
    old: &str,
    script: &str,
) -> (Result<(), SysError>, Loaded) {
    let refill = nft::update_script(old, script)
        .map(|r| (r, Loaded::Refilled))
        .or_else(|| Some((nft::bridge_script(old, script)?, Loaded::Bridged)));
    if let Some((refill, how)) = refill {
        match sys.nft_refill(&refill) {
            Ok(()) => return (Ok(()), how),
            Err(e) => sys.log(&format!(
                "mape: {iface}: refilling the nft table failed ({e}): loading it whole"
            )),
        }
    }
    let _ = sys.nft_delete(table);
    (sys.nft_apply(script), Loaded::Whole)
}

/// Why a renumbering was not done in place ([`renumber`]); the proto task then ends and netifd
/// sets the interface up again (teardown, setup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotInPlace {
    /// Nothing was changed (the interface is not ours, the BR or the link differs, netifd did
    /// not take the interface down).
    Untouched(&'static str),
    /// A step after netifd took the interface down failed; the state names what is there, so
    /// the teardown that follows removes it.
    Failed(String),
}

/// Follows a new mapping of a running interface from its proto task (owner token `owner`),
/// without a teardown and a setup: the way netifd follows a PPP session that reconnects. It
/// tells netifd the link is lost (netifd drops the interface's addresses and routes and
/// releases the tunnel), moves the CE address, refills the nft table (or loads the whole new
/// script), and sends the update (netifd makes the tunnel again with the new local address).
/// About half the time of the task ending, netifd's teardown and a setup (two processes).
///
/// Only for the mapping `want` the task confirmed, on the same tunnel link and BR (the host
/// dependency stays as it is); otherwise [`NotInPlace::Untouched`]. `seen`: the link status
/// the task confirmed it in, if it has one (else netifd is asked: one ubus call more on the way
/// back to IPv4). Done, the port-usage check of the new mapping.
pub fn renumber(
    sys: &mut dyn System,
    iface: &str,
    cfg: &HandlerConfig,
    owner: &str,
    want: &MappingKey,
    seen: Option<&LinkStatus>,
) -> Result<Option<usage::UsageCheck>, NotInPlace> {
    let started = std::time::Instant::now();
    let untouched = |why: &'static str| Err(NotInPlace::Untouched(why));
    let Some(old) = sys
        .load_state(iface)
        .filter(|s| s.owner.as_deref() == Some(owner))
    else {
        return untouched("another setup owns the interface");
    };
    let Some(tunlink) = old.tunlink.clone() else {
        return untouched("no tunnel link");
    };
    let link = match seen {
        Some(l) => l.clone(),
        None => match link_status(sys, &tunlink) {
            Ok(l) => l,
            Err(_) => return untouched("the link's status is unknown"),
        },
    };
    let Some(resolved) = resolve_for_link(cfg, &link)
        .ok()
        .filter(|r| MappingKey::of(&r.mapping) == *want)
    else {
        return untouched("the link no longer maps to it");
    };
    if resolved.mapping.br != old.mapping.as_ref().and_then(|m| m.br) {
        return untouched("the BR changed");
    }
    let Some(dev) = link.l3_device.clone() else {
        return untouched("the link has no device");
    };
    let Ok(mut plan) = plan(sys, iface, cfg, &tunlink, &dev, &resolved, owner) else {
        return untouched("the new mapping has no ruleset");
    };
    // netifd drops the addresses and routes and releases the tunnel; the update below makes
    // them again (an update alone would re-create the tunnel and keep the routes it thinks
    // are there, which went with the old tunnel).
    if notify(sys, msg::link_lost(iface)).is_err() {
        return untouched("netifd refused the link loss");
    }
    let failed = |what: &str, e: SysError| Err(NotInPlace::Failed(format!("{what}: {e}")));
    let state = &plan.state;
    if (old.dev.as_str(), old.ce) != (dev.as_str(), state.ce) {
        let _ = sys.addr_del(&old.dev, old.ce);
    }
    if let Err(e) = sys.save_state(state) {
        return failed("cannot save the state", e);
    }
    if let Err(e) = sys.addr_add(&dev, state.ce) {
        return failed(&format!("adding {}/128 to {dev}", state.ce), e);
    }
    for w in &resolved.warnings {
        sys.log(&format!("mape: {iface}: warning: {w}"));
    }
    let nft_at = std::time::Instant::now();
    let (loaded, how) = load_table(sys, iface, &state.table, &old.nft, &state.nft);
    if let Err(e) = loaded {
        return failed("loading the nft table", e);
    }
    let update_at = std::time::Instant::now();
    if let Err(e) = notify(sys, std::mem::take(&mut plan.update)) {
        return failed("netifd refused the update", e);
    }
    log_up(
        sys,
        iface,
        &plan,
        "in place",
        [started, nft_at, update_at],
        how.note(),
    );
    if how == Loaded::Bridged {
        // IPv4 is back on the bridge; now the buckets of the new shape (an atomic replace).
        let whole_at = std::time::Instant::now();
        if let Err(e) = sys.nft_apply(&state.nft) {
            return failed("loading the whole nft table after the bridge", e);
        }
        let ms = whole_at.elapsed().as_millis();
        let took = if sys.timed() {
            format!(" ({ms} ms)")
        } else {
            String::new()
        };
        sys.log(&format!(
            "mape: {iface}: nft table of the new shape loaded{took}"
        ));
    }
    let m = &resolved.mapping;
    let sets: Vec<_> = m.port_sets().collect();
    Ok(usage::UsageCheck::new(m.ipv4, m.ipv4_prefix_len, &sets))
}

/// How long the proto task waits for the setup that started it to exit before it registers
/// the host dependency anyway (the setup exits right after starting it).
pub const SETUP_EXIT_WAIT: Duration = Duration::from_secs(5);

/// Registers the host dependency of a running interface, from its proto task: netifd brings us
/// back with the tunnel link, so we depend on the route to the BR through it (as OpenWrt's
/// dslite.sh depends on its AFTR), which exists as soon as the link has its default route, and
/// on the link itself when the rule has no BR.
///
/// Not from the setup: netifd takes the interface down as soon as a dependency cannot be met
/// (the link went down while the setup ran), and a teardown that netifd starts while the
/// setup's process is still running is lost (it starts the teardown script in the setup's
/// process slot and never finishes it): the interface stayed in teardown for good, seen in the
/// real-netifd bed with a link flap during a setup. So the task first waits until the setup
/// (the pid in its owner token) has exited; then a link that is down takes us down the normal
/// way (netifd ends this task) and netifd sets us up again when it comes back. A refusal
/// (NOT_FOUND: the link is down) is that, not a failure of ours. Nothing is registered for a
/// task whose setup no longer owns the interface.
pub fn depend(sys: &mut dyn System, iface: &str, owner: &str) {
    if let Some(pid) = owner.split('.').next().and_then(|p| p.parse::<u32>().ok()) {
        if pid != 0 && pid != std::process::id() {
            // Registered anyway if it is still running then.
            let _ = sys.wait_exited(pid, SETUP_EXIT_WAIT);
        }
    }
    let Some(state) = sys.load_state(iface) else {
        return;
    };
    if state.owner.as_deref() != Some(owner) {
        return;
    }
    let Some(link) = state.tunlink.as_deref() else {
        return;
    };
    let host = state
        .mapping
        .as_ref()
        .and_then(|m| m.br)
        .map_or("::".to_string(), |b| b.to_string());
    let _ = notify(sys, msg::host_dependency(iface, &host, link));
}

/// Undoes a failed setup, but only while this setup still owns the interface: a newer setup
/// (of a restarted netifd) may have claimed it, and its table and address are the same names.
fn rollback(sys: &mut dyn System, iface: &str, owner: &str, state: &State) {
    let current = sys.load_state(iface);
    if current.as_ref().and_then(|s| s.owner.as_deref()) != Some(owner) {
        sys.log(&format!(
            "mape: {iface}: another setup owns the interface now: nothing rolled back"
        ));
        return;
    }
    let _ = sys.nft_delete(&state.table);
    let _ = sys.addr_del(&state.dev, state.ce);
    sys.clear_state(iface);
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
        None => (codes::NO_PREFIX, "no usable IPv6 prefix".to_string(), false),
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
    task: &Task,
    owner: Option<&str>,
) -> i32 {
    match notify(
        sys,
        msg::run_command(iface, &watch_command(exe, iface, config, task, owner)),
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
    let started = sys.owner_token();
    teardown_started_at(sys, iface, &started)
}

/// [`teardown`] for a teardown that started when `started` was a fresh owner token (tests run
/// the moment a restarted netifd's teardown comes too late).
pub fn teardown_started_at(sys: &mut dyn System, iface: &str, started: &str) -> i32 {
    if let Err(e) = check_name("interface", iface) {
        sys.log(&format!("mape: {e}"));
        return FAILED;
    }
    // The teardown of a netifd that re-executed itself (`network restart`) can run after the new
    // netifd's setup claimed the interface: that setup's table and address stay.
    let state = sys.load_state(iface);
    if let Some(owner) = state.as_ref().and_then(|s| s.owner.as_deref()) {
        if claimed_after(owner, started) {
            sys.log(&format!(
                "mape: {iface}: a setup that started after this teardown owns the interface: leaving its table and address"
            ));
            return OK;
        }
    }
    let table = table_for(iface);
    if let Err(e) = sys.nft_delete(&table) {
        sys.log(&format!("mape: {iface}: removing nft table {table}: {e}"));
    }
    if let Some(s) = state {
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

/// The watch task's starting point: the parsed config and the running mapping (`None` while
/// waiting for a prefix). `Err`: the config no longer parses (setup reported it).
pub fn watch_start(
    config_json: &str,
    current: Option<CustomerPrefix>,
) -> Result<(HandlerConfig, Option<MappingKey>), String> {
    let cfg = HandlerConfig::parse(config_json).map_err(|e| e.to_string())?;
    let key = match current {
        None => None,
        Some(p) => {
            let source = cfg.rules.to_source(Some(&p)).map_err(|e| e.to_string())?;
            let r = resolve(&source, p).map_err(|e| e.to_string())?;
            Some(MappingKey::of(&r.mapping))
        }
    };
    Ok((cfg, key))
}
