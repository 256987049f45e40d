//! The two [`System`]s: the real one (ubus and nft command-line tools, rtnetlink for the
//! address, a state file per interface) and the dry run that records what would be done.

use std::fmt;
use std::net::Ipv6Addr;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::{netlink, System};

#[derive(Debug)]
pub struct SysError(pub String);

impl fmt::Display for SysError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Seconds any one `ubus` call may take (`ubus -t`). netifd answers in milliseconds; a call it
/// does not answer (it was restarted, or is gone) must not hold a setup for ubus's default
/// 30 s, during which the restarted netifd's setup of the same interface has long finished.
pub const UBUS_TIMEOUT_SECS: u32 = 5;

/// The router: `ubus` and `nft` from PATH (both are OpenWrt base packages), netlink for the
/// CE address, state in `$MAPE_STATE_DIR` (default `/var/run/mape`).
pub struct RealSystem {
    state_dir: PathBuf,
}

impl RealSystem {
    pub fn new() -> Self {
        let dir = std::env::var_os("MAPE_STATE_DIR")
            .map_or_else(|| PathBuf::from("/var/run/mape"), PathBuf::from);
        RealSystem { state_dir: dir }
    }

    fn state_path(&self, iface: &str) -> PathBuf {
        // `iface` was checked by check_name: no `/` or `..` can reach the path.
        self.state_dir.join(format!("{iface}.json"))
    }

    /// `<state dir>/status/<iface>.json`: a subdirectory, so `state_ifaces` never sees it.
    fn status_path(&self, iface: &str) -> PathBuf {
        self.state_dir.join("status").join(format!("{iface}.json"))
    }
}

impl Default for RealSystem {
    fn default() -> Self {
        Self::new()
    }
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> Result<String, SysError> {
    let argv: Vec<&str> = std::iter::once(cmd).chain(args.iter().copied()).collect();
    crate::command::run(&argv, stdin).map_err(|why| SysError(format!("{cmd} failed: {why}")))
}

impl System for RealSystem {
    fn ubus_call(&mut self, object: &str, method: &str, args: &Value) -> Result<Value, SysError> {
        let timeout = UBUS_TIMEOUT_SECS.to_string();
        let out = run(
            "ubus",
            &["-t", &timeout, "call", object, method, &args.to_string()],
            None,
        )?;
        if out.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&out)
            .map_err(|e| SysError(format!("ubus {object} {method}: bad reply: {e}")))
    }

    fn nft_apply(&mut self, script: &str) -> Result<(), SysError> {
        run("nft", &["-f", "-"], Some(script)).map(|_| ())
    }

    fn addr_add(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        netlink::address(dev, addr, true).map_err(|e| SysError(e.to_string()))
    }

    fn addr_del(&mut self, dev: &str, addr: Ipv6Addr) -> Result<(), SysError> {
        netlink::address(dev, addr, false).map_err(|e| SysError(e.to_string()))
    }

    fn link_mtu(&mut self, dev: &str) -> Option<u32> {
        std::fs::read_to_string(format!("/sys/class/net/{dev}/mtu"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn save_state(&mut self, iface: &str, state: &Value) -> Result<(), SysError> {
        std::fs::create_dir_all(&self.state_dir)
            .map_err(|e| SysError(format!("{}: {e}", self.state_dir.display())))?;
        let path = self.state_path(iface);
        std::fs::write(&path, state.to_string())
            .map_err(|e| SysError(format!("{}: {e}", path.display())))
    }

    fn load_state(&mut self, iface: &str) -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(self.state_path(iface)).ok()?).ok()
    }

    fn clear_state(&mut self, iface: &str) {
        let _ = std::fs::remove_file(self.state_path(iface));
        let _ = std::fs::remove_file(self.status_path(iface));
    }

    fn save_status(&mut self, iface: &str, status: &Value) -> Result<(), SysError> {
        if crate::provision::netifd::check_name("interface", iface).is_err() {
            return Err(SysError(format!("status: bad interface name {iface:?}")));
        }
        let path = self.status_path(iface);
        let dir = self.state_dir.join("status");
        std::fs::create_dir_all(&dir).map_err(|e| SysError(format!("{}: {e}", dir.display())))?;
        // Write then rename: a reader (LuCI) never sees half a file.
        let tmp = dir.join(format!(".{iface}.json.tmp"));
        std::fs::write(&tmp, status.to_string())
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| SysError(format!("{}: {e}", path.display())))
    }

    fn state_ifaces(&mut self) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.state_dir) else {
            return Vec::new();
        };
        let mut names: Vec<String> = dir
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")
                    .map(str::to_string)
            })
            .filter(|n| crate::provision::netifd::check_name("interface", n).is_ok())
            .collect();
        names.sort();
        names
    }

    fn owner_token(&mut self) -> String {
        // The process id is unique among running setups, the clock among past ones.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}.{nanos}", std::process::id())
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
    pub state: std::collections::BTreeMap<String, Value>,
    /// Saved `mape status` payloads by interface.
    pub status: std::collections::BTreeMap<String, Value>,
    pub calls: Vec<Value>,
    pub nft: Vec<String>,
    pub log: Vec<String>,
    /// Owner tokens handed out so far (`0.1`, `0.2`, ...: repeatable output).
    pub owners: u32,
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
            owners: 0,
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
                .ok_or_else(|| SysError(format!("ubus {object} status: Not found")))?
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

    fn save_state(&mut self, iface: &str, state: &Value) -> Result<(), SysError> {
        self.state.insert(iface.to_string(), state.clone());
        Ok(())
    }

    fn load_state(&mut self, iface: &str) -> Option<Value> {
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

    fn owner_token(&mut self) -> String {
        self.owners += 1;
        format!("0.{}", self.owners)
    }

    fn log(&mut self, line: &str) {
        self.log.push(line.to_string());
    }
}
