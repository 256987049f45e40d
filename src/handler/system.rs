//! The two [`System`]s: the real one (ubus and nft command-line tools, rtnetlink for the
//! address, a state file per interface) and the dry run that records what would be done.

use std::net::Ipv6Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::netlink::NetlinkError;
use super::{netlink, System};
use crate::command::{self, CommandError};
use crate::state::{self, State, StateError};

/// A failure of the system layer, typed so the handler can tell a configuration problem from
/// a transient one (see [`SysError::is_transient`]).
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A tool (`ubus`, `nft`) could not start, failed, or timed out.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// The kernel refused an address change, or the device is missing.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// `ubus call` answered with something that is not JSON.
    #[error("{what}: bad reply: {why}")]
    BadReply { what: String, why: String },
    /// The ubus object does not exist (e.g. the tunnel link is not configured).
    #[error("{0}: not found")]
    NotFound(String),
    /// The state file could not be written or was refused.
    #[error(transparent)]
    State(#[from] StateError),
    /// A failure injected by [`DryRun::fail_on`] (tests).
    #[error("{0}: injected failure")]
    Injected(&'static str),
}

impl SysError {
    /// A failure that may go away by itself (a timeout, a busy daemon): never a reason to
    /// block restarts.
    pub fn is_transient(&self) -> bool {
        !matches!(self, SysError::NotFound(_))
    }
}

/// The ubus CLI's exit status for UBUS_STATUS_NOT_FOUND (libubus `enum ubus_msg_status`).
const UBUS_STATUS_NOT_FOUND: i32 = 4;

/// How long one `ubus call` may take: netifd answers in milliseconds unless it is restarting,
/// and a setup of a netifd that is gone must not hang (its ubus calls used to time out after
/// the CLI's default 30 s).
pub const UBUS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `nft -f` may take (a few hundred rules).
pub const NFT_TIMEOUT: Duration = Duration::from_secs(30);

/// The router: `ubus` and `nft` from PATH (both are OpenWrt base packages), netlink for the
/// CE address, state in `$MAPE_STATE_DIR` (default `/var/run/mape`).
pub struct RealSystem {
    state_dir: PathBuf,
}

impl RealSystem {
    pub fn new() -> Self {
        RealSystem {
            state_dir: state_dir(),
        }
    }

    /// `<state dir>/status`: a subdirectory, so `state_ifaces` never sees it.
    fn status_dir(&self) -> PathBuf {
        self.state_dir.join("status")
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
        let secs = UBUS_TIMEOUT.as_secs().to_string();
        let argv = [
            "ubus",
            "-t",
            &secs,
            "call",
            object,
            method,
            &args.to_string(),
        ];
        // ubus's own -t ends the call; ours is a backstop should the socket itself hang.
        let out = match command::run_with(&argv, None, UBUS_TIMEOUT + Duration::from_secs(5)) {
            Ok(out) => out,
            Err(e) if e.exit_code() == Some(UBUS_STATUS_NOT_FOUND) => {
                return Err(SysError::NotFound(format!("ubus {object}")))
            }
            Err(e) => return Err(e.into()),
        };
        if out.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out).map_err(|e| SysError::BadReply {
            what: format!("ubus {object} {method}"),
            why: e.to_string(),
        })
    }

    fn nft_apply(&mut self, script: &str) -> Result<(), SysError> {
        command::run_with(&["nft", "-f", "-"], Some(script), NFT_TIMEOUT)?;
        Ok(())
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

    fn save_status(&mut self, iface: &str, status: &Value) -> Result<(), SysError> {
        crate::names::check_name("interface", iface)
            .map_err(|_| StateError::BadName(iface.to_string()))?;
        Ok(state::write_atomic(
            &self.status_dir(),
            &format!("{iface}.json"),
            status.to_string().as_bytes(),
        )?)
    }

    fn state_ifaces(&mut self) -> Vec<String> {
        state::list(&self.state_dir)
    }

    fn log(&mut self, line: &str) {
        // netifd logs our stderr with the interface name.
        eprintln!("{line}");
    }
}

/// Records every action instead of doing it. `ubus call network.interface.<x> status` and
/// `network.interface dump` are answered from the given JSON.
pub struct DryRun {
    /// Status of the tunnel link, answered for any `network.interface.<name> status`.
    pub link_status: Option<Value>,
    /// Reply to `network.interface dump`.
    pub dump: Option<Value>,
    pub link_mtu: Option<u32>,
    /// Saved states by interface.
    pub state: std::collections::BTreeMap<String, State>,
    /// Saved `mape status` payloads by interface.
    pub status: std::collections::BTreeMap<String, Value>,
    pub calls: Vec<Value>,
    pub nft: Vec<String>,
    pub log: Vec<String>,
}

impl DryRun {
    pub fn new(link_status: Option<Value>) -> Self {
        DryRun {
            link_status,
            dump: None,
            link_mtu: None,
            state: Default::default(),
            status: Default::default(),
            calls: Vec::new(),
            nft: Vec::new(),
            log: Vec::new(),
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
        let reply = if method == "status" && object.starts_with("network.interface.") {
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
        self.nft.push(script.to_string());
        Ok(())
    }

    fn addr_add(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        self.calls.push(json!({ "object": "kernel", "method": "addr_add",
                                "args": { "dev": dev, "address": format!("{addr}/128"), "flags": ["nodad"] } }));
        Ok(())
    }

    fn addr_del(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        self.calls
            .push(json!({ "object": "kernel", "method": "addr_del",
                                "args": { "dev": dev, "address": format!("{addr}/128") } }));
        Ok(())
    }

    fn link_mtu(&mut self, _dev: &str) -> Option<u32> {
        self.link_mtu
    }

    fn save_state(&mut self, state: &State) -> Result<(), SysError> {
        self.state.insert(state.name.clone(), state.clone());
        Ok(())
    }

    fn load_state(&mut self, iface: &str) -> Option<State> {
        self.state.get(iface).cloned()
    }

    fn clear_state(&mut self, iface: &str) {
        self.state.remove(iface);
    }

    fn state_ifaces(&mut self) -> Vec<String> {
        self.state.keys().cloned().collect()
    }

    fn save_status(&mut self, iface: &str, status: &Value) -> Result<(), SysError> {
        self.status.insert(iface.to_string(), status.clone());
        Ok(())
    }

    fn log(&mut self, line: &str) {
        self.log.push(line.to_string());
    }
}
