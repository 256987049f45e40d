//! The two [`System`]s: the real one (ubus and nft command-line tools, rtnetlink for the
//! address, a state file per interface) and the dry run that records what would be done.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::System;
use crate::command::{self, CommandError};
use crate::netlink::{self, NetlinkError};
use crate::render::nft;
use crate::state::{self, State, StateError};
use crate::ubus::{self, Ubus, UbusError};
use nix::libc;

/// A failure of the system layer, typed so the handler can tell a configuration problem from
/// a transient one.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A tool (`nft`) could not start, failed, or timed out.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// ubus: no ubusd, a timeout, or a refusal (other than "not found").
    #[error(transparent)]
    Ubus(UbusError),
    /// The kernel refused an address change, or the device is missing.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// `ubus call` answered with something we cannot read.
    #[error("{what}: bad reply: {why}")]
    BadReply { what: String, why: String },
    /// The ubus object does not exist (e.g. the tunnel link is not configured).
    #[error("{0}: not found")]
    NotFound(String),
    /// The state file could not be written or was refused.
    #[error(transparent)]
    State(#[from] StateError),
    /// A failure injected by [`DryRun::fail_on`] (tests).
    #[error("{0:?}: injected failure")]
    Injected(Step),
}

impl From<UbusError> for SysError {
    fn from(e: UbusError) -> Self {
        match e.status() {
            Some(ubus::status::NOT_FOUND) => SysError::NotFound(e.to_string()),
            _ => SysError::Ubus(e),
        }
    }
}

/// How long one ubus call may take: netifd answers in milliseconds unless it is restarting,
/// and a setup of a netifd that is gone must not hang.
pub const UBUS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `nft -f` may take (a few hundred rules).
pub const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// The router: ubusd's socket (our own client, [`crate::ubus`]), `nft` from PATH, netlink for
/// the CE address, state in `$MAPE_STATE_DIR` (default `/var/run/mape`).
pub struct RealSystem {
    state_dir: PathBuf,
    ubus: Option<Ubus>,
}

impl RealSystem {
    pub fn new() -> Self {
        RealSystem {
            state_dir: state_dir(),
            ubus: None,
        }
    }

    /// `<state dir>/status`: a subdirectory, so `state_ifaces` never sees it.
    fn status_dir(&self) -> PathBuf {
        self.state_dir.join("status")
    }

    /// `<state dir>/failures`: transient setup failures in a row, per interface.
    fn failures_dir(&self) -> PathBuf {
        self.state_dir.join("failures")
    }
}

/// The netifd handler's state directory: `$MAPE_STATE_DIR`, default `/var/run/mape`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("MAPE_STATE_DIR").map_or_else(|| PathBuf::from("/var/run/mape"), PathBuf::from)
}

impl Default for RealSystem {
    fn default() -> Self {
        Self::new()
    }
}

impl System for RealSystem {
    fn ubus_call(&mut self, object: &str, method: &str, args: &Value) -> Result<Value, SysError> {
        let mut conn = match self.ubus.take() {
            Some(c) => c,
            None => Ubus::connect(None, UBUS_TIMEOUT)?,
        };
        let reply = conn.call(object, method, args);
        match &reply {
            // A broken connection is dropped; the next call connects anew.
            Err(UbusError::Io(_) | UbusError::Timeout(_) | UbusError::Protocol(_)) => {}
            _ => self.ubus = Some(conn),
        }
        Ok(reply?)
    }

    fn nft_apply(&mut self, script: &str) -> Result<(), SysError> {
        command::run_with(&["nft", "-f", "-"], Some(script), NFT_TIMEOUT)?;
        Ok(())
    }

    fn nft_refill(&mut self, update: &str) -> Result<(), SysError> {
        // Without nft when it is a list of our fill rules (every built-in ISP): see
        // netlink::refill.
        let Some(refill) = nft::read_update(update) else {
            return self.nft_apply(update);
        };
        let proto = |p: nft::Proto| {
            let n = match p {
                nft::Proto::Tcp => libc::IPPROTO_TCP,
                nft::Proto::Udp => libc::IPPROTO_UDP,
                nft::Proto::Icmp => libc::IPPROTO_ICMP,
            };
            n as u8
        };
        let chains: Vec<(&str, Vec<netlink::Snat>)> = refill
            .chains
            .iter()
            .map(|(c, rules)| {
                let snat = rules.iter().map(|r| netlink::Snat {
                    l4proto: r.proto.map(proto),
                    addrs: r.addrs,
                    ports: r.ports.map(|p| (p.first, p.last)),
                });
                (*c, snat.collect())
            })
            .collect();
        Ok(netlink::refill(refill.table, &chains)?)
    }

    fn nft_delete(&mut self, table: &str) -> Result<(), SysError> {
        // Without nft: see the netlink module.
        Ok(netlink::delete_table(table)?)
    }

    fn addr_add(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        Ok(netlink::address(dev, addr, true)?)
    }

    fn addr_del(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        Ok(netlink::address(dev, addr, false)?)
    }

    fn link_mtu(&mut self, dev: &str) -> Option<u32> {
        if !crate::names::is_dev_name(dev) {
            return None;
        }
        std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn save_state(&mut self, s: &State) -> Result<(), SysError> {
        Ok(state::save(&self.state_dir, s)?)
    }

    fn load_state(&mut self, iface: &str) -> Option<State> {
        match state::load(&self.state_dir, iface) {
            Ok(s) => s,
            Err(e) => {
                self.log(&format!("mape: {iface}: ignoring the state file: {e}"));
                None
            }
        }
    }

    fn clear_state(&mut self, iface: &str) {
        state::remove(&self.state_dir, iface);
        state::remove(&self.status_dir(), iface);
    }

    fn state_ifaces(&mut self) -> Vec<String> {
        state::list(&self.state_dir)
    }

    fn owner_token(&mut self) -> String {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        format!("{}.{}", std::process::id(), t.as_nanos())
    }

    fn failures(&mut self, iface: &str) -> u32 {
        state::read_named(&self.failures_dir(), iface)
            .ok()
            .flatten()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0)
    }

    fn set_failures(&mut self, iface: &str, n: u32) {
        let dir = self.failures_dir();
        if n == 0 {
            state::remove(&dir, iface);
        } else {
            let _ = state::write_named(&dir, iface, n.to_string().as_bytes());
        }
    }

    fn wait_exited(&mut self, pid: u32, limit: Duration) -> bool {
        // A zombie still takes signal 0: the process is gone once netifd has reaped it.
        let Ok(pid) = i32::try_from(pid) else {
            return true;
        };
        let until = std::time::Instant::now() + limit;
        loop {
            if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
                == Err(nix::errno::Errno::ESRCH)
            {
                return true;
            }
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log(&mut self, line: &str) {
        // netifd logs our stderr with the interface name.
        eprintln!("{line}");
    }
}

/// Code a [`DryRun`] runs at a given moment (see [`DryRun::before_update`]).
pub type Hook = Box<dyn FnOnce(&mut DryRun)>;

/// A step of the system layer a [`DryRun`] can be told to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `network.interface.<tunlink> status`.
    LinkStatus,
    SaveState,
    AddrAdd,
    NftApply,
    /// `notify_proto` with this action (0 update, 1 proto task, 3 error, 6 host dependency).
    Notify(i64),
}

/// Records every action instead of doing it, and keeps a small model of what the actions
/// would leave on the system (CE addresses, nft tables) so tests can check that a failed setup
/// leaves nothing behind. `ubus call network.interface.<x> status` and `network.interface
/// dump` are answered from the given JSON. [`DryRun::fail_on`] makes one step fail.
///
/// The model is kept in plain vectors (a few entries; sets and maps of four more types would
/// cost the router binary ~15 KB: docs/sizes.md).
pub struct DryRun {
    /// Status of the tunnel link, answered for any `network.interface.<name> status`.
    pub link_status: Option<Value>,
    /// Reply to `network.interface dump`.
    pub dump: Option<Value>,
    pub link_mtu: Option<u32>,
    /// Saved states, one per interface name.
    pub state: Vec<State>,
    pub calls: Vec<Value>,
    pub nft: Vec<String>,
    pub log: Vec<String>,
    /// What the recorded actions would have left: CE addresses (dev, address) and our tables,
    /// each once.
    pub addresses: Vec<(String, Ipv6Addr)>,
    pub tables: Vec<String>,
    /// Transient setup failures in a row, per interface (none listed: 0).
    pub failures: Vec<(String, u32)>,
    /// Runs when the next update (`notify_proto` action 0) arrives, before it is answered:
    /// tests put another setup there, as a restarted netifd would run one meanwhile.
    pub before_update: Option<Hook>,
    fail: Option<Step>,
    owner: u32,
}

impl DryRun {
    pub fn new(link_status: Option<Value>) -> Self {
        DryRun {
            link_status,
            dump: None,
            link_mtu: None,
            state: Vec::new(),
            calls: Vec::new(),
            nft: Vec::new(),
            log: Vec::new(),
            addresses: Vec::new(),
            tables: Vec::new(),
            failures: Vec::new(),
            before_update: None,
            fail: None,
            owner: 0,
        }
    }

    /// An owner token as a run starting now would take (tests).
    pub fn owner_token_for_tests(&mut self) -> String {
        System::owner_token(self)
    }

    /// Takes the failure set with [`DryRun::fail_on`] away (to put it back later).
    pub fn take_fail(&mut self) -> Option<Step> {
        self.fail.take()
    }

    /// Makes `step` fail from now on (`None`: nothing fails).
    pub fn fail_on(&mut self, step: Option<Step>) {
        self.fail = step;
    }

    fn check(&self, step: Step) -> Result<(), SysError> {
        if self.fail == Some(step) {
            Err(SysError::Injected(step))
        } else {
            Ok(())
        }
    }

    /// The whole record as one JSON object.
    pub fn report(&self, iface: &str, ifname: &str) -> Value {
        json!({
            "interface": iface,
            "ifname": ifname,
            "calls": self.calls,
            "nft": self.nft.join("\n"),
            "log": self.log,
        })
    }
}

impl System for DryRun {
    fn ubus_call(&mut self, object: &str, method: &str, args: &Value) -> Result<Value, SysError> {
        if method == "notify_proto" {
            if args["action"] == 0 {
                if let Some(hook) = self.before_update.take() {
                    hook(self);
                }
            }
            self.check(Step::Notify(args["action"].as_i64().unwrap_or(-1)))?;
        }
        let reply = if method == "status" && object.starts_with("network.interface.") {
            self.check(Step::LinkStatus)?;
            self.link_status
                .clone()
                .ok_or_else(|| SysError::NotFound(format!("ubus {object}")))?
        } else if object == "network.interface" && method == "dump" {
            // Without an explicit dump, the given link status stands for one interface `wan6`.
            self.dump.clone().unwrap_or_else(|| {
                let mut one = self.link_status.clone().unwrap_or_else(|| json!({}));
                if let Some(o) = one.as_object_mut() {
                    o.insert("interface".into(), json!("wan6"));
                }
                json!({ "interface": [one] })
            })
        } else {
            Value::Null
        };
        if method != "status" && method != "dump" {
            self.calls
                .push(json!({ "object": object, "method": method, "args": args }));
        }
        Ok(reply)
    }

    fn nft_apply(&mut self, script: &str) -> Result<(), SysError> {
        self.check(Step::NftApply)?;
        // A refill (`flush chain ip T C`, then rules) fails as a whole without its table.
        if let Some(t) = script.lines().find_map(|l| {
            l.strip_prefix("flush chain ip ")
                .and_then(|r| r.split_whitespace().next())
        }) {
            if !self.tables.iter().any(|x| x == t) {
                return Err(SysError::Injected(Step::NftApply));
            }
        }
        self.nft.push(script.to_string());
        // Our scripts start with `add table ip T`, `delete table ip T`, then (to load) the
        // table's body: the table exists afterwards exactly when the body is there.
        if let Some(t) = script.lines().find_map(|l| l.strip_prefix("add table ip ")) {
            self.tables.retain(|x| x != t);
            if script.contains(&format!("table ip {t} {{")) {
                self.tables.push(t.to_string());
            }
        }
        Ok(())
    }

    fn addr_add(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        self.check(Step::AddrAdd)?;
        self.calls.push(json!({ "object": "kernel", "method": "addr_add",
                                "args": { "dev": dev, "address": format!("{addr}/128"), "flags": ["nodad"] } }));
        if !self.addresses.iter().any(|(d, a)| d == dev && *a == addr) {
            self.addresses.push((dev.to_string(), addr));
        }
        Ok(())
    }

    fn addr_del(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        self.calls
            .push(json!({ "object": "kernel", "method": "addr_del",
                                "args": { "dev": dev, "address": format!("{addr}/128") } }));
        self.addresses.retain(|(d, a)| d != dev || *a != addr);
        Ok(())
    }

    fn link_mtu(&mut self, _dev: &str) -> Option<u32> {
        self.link_mtu
    }

    fn save_state(&mut self, state: &State) -> Result<(), SysError> {
        self.check(Step::SaveState)?;
        self.clear_state(&state.name);
        self.state.push(state.clone());
        Ok(())
    }

    fn load_state(&mut self, iface: &str) -> Option<State> {
        self.state.iter().find(|s| s.name == iface).cloned()
    }

    fn clear_state(&mut self, iface: &str) {
        self.state.retain(|s| s.name != iface);
    }

    fn state_ifaces(&mut self) -> Vec<String> {
        let mut names: Vec<String> = self.state.iter().map(|s| s.name.clone()).collect();
        names.sort();
        names
    }

    fn owner_token(&mut self) -> String {
        self.owner += 1;
        format!("0.{}", self.owner)
    }

    fn failures(&mut self, iface: &str) -> u32 {
        self.failures
            .iter()
            .find(|(i, _)| i == iface)
            .map_or(0, |(_, n)| *n)
    }

    fn set_failures(&mut self, iface: &str, n: u32) {
        self.failures.retain(|(i, _)| i != iface);
        if n != 0 {
            self.failures.push((iface.to_string(), n));
        }
    }

    fn wait_exited(&mut self, pid: u32, limit: Duration) -> bool {
        self.calls
            .push(json!({ "object": "process", "method": "wait_exited",
                                "args": { "pid": pid, "limit_ms": limit.as_millis() as u64 } }));
        true
    }

    fn timed(&self) -> bool {
        false
    }

    fn log(&mut self, line: &str) {
        self.log.push(line.to_string());
    }
}
