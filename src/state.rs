//! The state file: what a front end applied for one interface, so that teardown, `reapply`,
//! `mape up --if-changed`, `mape status` and the rpcd plugin know it later.
//!
//! One type, [`State`], for the netifd handler and `mape up`, with its JSON next to it
//! ([`State::to_json`], [`State::from_json`]), and the mapping inside it as the calculator's
//! JSON ([`MappingRecord`], the `mape calc --json` object, also netifd's `data.mape`).
//!
//! Files live in a directory of their own (`/var/run/mape` for netifd, `/run/mape` for plain
//! Linux, `$MAPE_STATE_DIR`), one `<name>.json` each. [`save`] is the only writer: a temporary
//! file in the same directory, mode 0600, renamed over the old one, in a directory of mode
//! 0700, so a crash at any point leaves either the old or the new file and never half of one.
//! [`load`] refuses a file that is not owned by root (or by the user running mape, for dry
//! runs) or that others may write: its contents end up in `nft -f` and in address deletions.

use std::fmt;
use std::fs;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use serde_json::{json, Map, Value};

use crate::engine::{PortParams, PortSet};
use crate::names::{check_name, is_dev_name, is_table_name};

/// Version of the state file's JSON. Files without a version (mape-rs 0.1) are read for what
/// a teardown needs.
pub const STATE_VERSION: u64 = 2;

/// The rule inside a [`MappingRecord`] (effective PSID offset and length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRecord {
    pub ipv6_prefix: Ipv6Net,
    pub ipv4_prefix: Ipv4Net,
    pub ea_len: u8,
    pub psid_offset: u8,
    pub psid_len: u8,
}

/// A mapping as `mape calc --json` prints it (schema in docs/calc.md); netifd's `data.mape`
/// and the state file hold the same object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRecord {
    /// Built-in ISP id, `None` for an explicit rule.
    pub isp: Option<String>,
    /// The customer prefix as given (network/length; an RA address keeps its host bits).
    pub prefix: String,
    pub rule: RuleRecord,
    /// `draft03` or `rfc7597`.
    pub iid_format: String,
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix_len: u8,
    pub psid: u16,
    /// Inclusive, ascending, non-overlapping.
    pub port_sets: Vec<PortSet>,
    pub port_count: u32,
    pub ce: Ipv6Addr,
    pub br: Option<Ipv6Addr>,
    pub warnings: Vec<String>,
}

impl MappingRecord {
    pub fn to_json(&self) -> Value {
        let sets: Vec<Value> = self
            .port_sets
            .iter()
            .map(|s| json!([s.first, s.last]))
            .collect();
        json!({
            "isp": self.isp,
            "prefix": self.prefix,
            "rule": {
                "ipv6_prefix": self.rule.ipv6_prefix.to_string(),
                "ipv4_prefix": self.rule.ipv4_prefix.to_string(),
                "ea_len": self.rule.ea_len,
                "psid_offset": self.rule.psid_offset,
                "psid_len": self.rule.psid_len,
            },
            "iid_format": self.iid_format,
            "ipv4": self.ipv4.to_string(),
            "ipv4_prefix_len": self.ipv4_prefix_len,
            "psid": self.psid,
            "port_sets": sets,
            "port_count": self.port_count,
            "ce": self.ce.to_string(),
            "br": self.br.map(|b| b.to_string()),
            "warnings": self.warnings,
        })
    }

    /// The object `to_json` writes; `None` if a key is missing or malformed, or the port sets
    /// are not ascending and disjoint.
    pub fn from_json(v: &Value) -> Option<Self> {
        let o = v.as_object()?;
        let rule = o.get("rule")?.as_object()?;
        let psid = u16::try_from(o.get("psid")?.as_u64()?).ok()?;
        let mut port_sets = Vec::new();
        match o.get("port_sets") {
            // netifd's data.mape leaves long lists out (DATA_MAX_SETS): they follow from the
            // PSID offset, length and value.
            None if o.get("port_sets_omitted") == Some(&Value::Bool(true)) => {
                let params =
                    PortParams::new(small(rule, "psid_offset")?, small(rule, "psid_len")?, psid)?;
                port_sets.extend(params.sets());
            }
            sets => {
                for s in sets?.as_array()? {
                    let first = u16::try_from(s.get(0)?.as_u64()?).ok()?;
                    let last = u16::try_from(s.get(1)?.as_u64()?).ok()?;
                    if first > last || port_sets.last().is_some_and(|p: &PortSet| p.last >= first) {
                        return None;
                    }
                    port_sets.push(PortSet { first, last });
                }
            }
        }
        let br = match o.get("br") {
            None | Some(Value::Null) => None,
            Some(b) => Some(b.as_str()?.parse().ok()?),
        };
        let isp = match o.get("isp") {
            None | Some(Value::Null) => None,
            Some(i) => Some(i.as_str()?.to_string()),
        };
        Some(MappingRecord {
            isp,
            prefix: text(o, "prefix")?.to_string(),
            rule: RuleRecord {
                ipv6_prefix: text(rule, "ipv6_prefix")?.parse().ok()?,
                ipv4_prefix: text(rule, "ipv4_prefix")?.parse().ok()?,
                ea_len: small(rule, "ea_len")?,
                psid_offset: small(rule, "psid_offset")?,
                psid_len: small(rule, "psid_len")?,
            },
            iid_format: text(o, "iid_format")?.to_string(),
            ipv4: text(o, "ipv4")?.parse().ok()?,
            ipv4_prefix_len: small(o, "ipv4_prefix_len").filter(|l| *l <= 32)?,
            psid,
            port_sets,
            port_count: u32::try_from(o.get("port_count")?.as_u64()?).ok()?,
            ce: text(o, "ce")?.parse().ok()?,
            br,
            warnings: o
                .get("warnings")
                .and_then(Value::as_array)
                .map(|w| {
                    w.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key)?.as_str()
}

fn small(o: &Map<String, Value>, key: &str) -> Option<u8> {
    u8::try_from(o.get(key)?.as_u64()?).ok()
}

/// Which front end wrote a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frontend {
    /// The netifd protocol handler (`proto mape`, and `proto map` through the compat handler).
    Netifd,
    /// `mape up` on plain Linux.
    Linux,
}

impl Frontend {
    pub fn as_str(self) -> &'static str {
        match self {
            Frontend::Netifd => "netifd",
            Frontend::Linux => "linux",
        }
    }
}

/// What one front end applied for one interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub frontend: Frontend,
    /// The interface (netifd) or `--name` (plain Linux); the file is `<name>.json`.
    pub name: String,
    /// The tunnel device.
    pub ifname: String,
    /// Our nft table (`ip` family).
    pub table: String,
    /// The device holding the CE /128 (the tunnel link's L3 device, or the WAN).
    pub dev: String,
    pub ce: Ipv6Addr,
    /// The customer prefix the mapping came from.
    pub prefix: String,
    /// netifd: the interface carrying the prefix (e.g. `wan6`).
    pub tunlink: Option<String>,
    /// The ruleset loaded with `nft -f` (for `reapply` after `fw4 flush`, and `--if-changed`).
    pub nft: String,
    pub mtu: Option<u32>,
    pub ttl: Option<u8>,
    /// plain Linux: whether `up` owns the IPv4 default route, and its metric.
    pub default_route: bool,
    pub metric: Option<u32>,
    /// `None` only in files of mape-rs 0.1 without one.
    pub mapping: Option<MappingRecord>,
    /// The setup that wrote the file (netifd): a later setup's rollback must not remove what
    /// another one owns.
    pub owner: Option<String>,
}

impl State {
    pub fn to_json(&self) -> Value {
        json!({
            "version": STATE_VERSION,
            "frontend": self.frontend.as_str(),
            "name": self.name,
            "ifname": self.ifname,
            "table": self.table,
            "dev": self.dev,
            "ce": self.ce.to_string(),
            "prefix": self.prefix,
            "tunlink": self.tunlink,
            "nft": self.nft,
            "mtu": self.mtu,
            "ttl": self.ttl,
            "default_route": self.default_route,
            "metric": self.metric,
            "mapping": self.mapping.as_ref().map(MappingRecord::to_json),
            "owner": self.owner,
        })
    }

    /// Reads what [`State::to_json`] writes, and the two formats of mape-rs 0.1 (netifd's
    /// `{ce, dev, table, ifname, tunlink, prefix, nft, mapping}` and `mape up`'s `{name, wan,
    /// ifname, table, prefix, ce, …}`), whose teardown must still work after an upgrade. Every
    /// name is checked as if it came from a configuration.
    pub fn from_json(name: &str, v: &Value) -> Result<Self, String> {
        let o = v.as_object().ok_or("not a JSON object")?;
        let s = |k: &str| o.get(k).and_then(Value::as_str);
        let need = |k: &'static str| s(k).ok_or(format!("missing {k}"));
        let legacy = o.get("version").is_none();
        let frontend = match s("frontend") {
            Some("netifd") => Frontend::Netifd,
            Some("linux") => Frontend::Linux,
            None if legacy && o.contains_key("wan") => Frontend::Linux,
            None if legacy => Frontend::Netifd,
            Some(other) => return Err(format!("frontend {other:?}: unknown")),
            None => return Err("missing frontend".into()),
        };
        let version = o.get("version").and_then(Value::as_u64);
        if !legacy && version != Some(STATE_VERSION) {
            return Err(format!(
                "version {}: unknown (this mape reads {STATE_VERSION})",
                o["version"]
            ));
        }
        let dev = if legacy && frontend == Frontend::Linux {
            need("wan")?
        } else {
            need("dev")?
        };
        check_name("dev", dev).map_err(|e| e.to_string())?;
        if !is_dev_name(dev) {
            return Err(format!("dev {dev:?}: not a device name"));
        }
        let ifname = need("ifname")?;
        if !is_dev_name(ifname) {
            return Err(format!("ifname {ifname:?}: not a device name"));
        }
        let table = need("table")?;
        if !is_table_name(table) {
            return Err(format!("table {table:?}: not a table name"));
        }
        let ce = need("ce")?
            .parse()
            .map_err(|_| format!("ce {:?}: not an IPv6 address", s("ce").unwrap_or("")))?;
        let tunlink = s("tunlink").map(str::to_string);
        if let Some(t) = &tunlink {
            check_name("tunlink", t).map_err(|e| e.to_string())?;
        }
        let mapping = match o.get("mapping") {
            None | Some(Value::Null) => None,
            Some(m) => Some(MappingRecord::from_json(m).ok_or("mapping: malformed")?),
        };
        let num = |k: &str| o.get(k).and_then(Value::as_u64);
        Ok(State {
            frontend,
            name: name.to_string(),
            ifname: ifname.to_string(),
            table: table.to_string(),
            dev: dev.to_string(),
            ce,
            prefix: s("prefix").unwrap_or("").to_string(),
            tunlink,
            nft: s("nft").unwrap_or("").to_string(),
            mtu: num("mtu").and_then(|m| u32::try_from(m).ok()),
            ttl: num("ttl").and_then(|m| u8::try_from(m).ok()),
            default_route: o
                .get("default_route")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            metric: num("metric").and_then(|m| u32::try_from(m).ok()),
            mapping,
            owner: s("owner").map(str::to_string),
        })
    }
}

/// Why a state file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: refused: {why}")]
    Unsafe { path: PathBuf, why: String },
    #[error("{path}: {why}")]
    Malformed { path: PathBuf, why: String },
    #[error("state name {0:?}: not an interface name")]
    BadName(String),
}

impl StateError {
    fn io(path: &Path, source: io::Error) -> Self {
        StateError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn file_for(dir: &Path, name: &str) -> Result<PathBuf, StateError> {
    // A checked name has no `/` and no leading `.`: the path stays inside `dir`.
    check_name("interface", name).map_err(|_| StateError::BadName(name.to_string()))?;
    if name.starts_with('.') {
        return Err(StateError::BadName(name.to_string()));
    }
    Ok(dir.join(format!("{name}.json")))
}

/// Creates `dir` (mode 0700) if needed; an existing directory of ours is tightened to 0700.
fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(StateError::io(dir, e)),
    }
    let meta = fs::metadata(dir).map_err(|e| StateError::io(dir, e))?;
    if meta.mode() & 0o077 != 0 && meta.uid() == effective_uid() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| StateError::io(dir, e))?;
    }
    Ok(())
}

fn effective_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Writes `contents` to `dir/file` atomically (see the module documentation). `before_rename`
/// runs after the temporary file is complete and before it replaces the old one: the tests
/// use it to stop there, as a crash would.
pub fn write_atomic_with(
    dir: &Path,
    file: &str,
    contents: &[u8],
    before_rename: impl FnOnce() -> io::Result<()>,
) -> Result<(), StateError> {
    ensure_dir(dir)?;
    let path = dir.join(file);
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        before_rename()?;
        fs::rename(&tmp, &path)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StateError::io(&path, e)
    })
}

/// [`write_atomic_with`] without the test hook.
pub fn write_atomic(dir: &Path, file: &str, contents: &[u8]) -> Result<(), StateError> {
    write_atomic_with(dir, file, contents, || Ok(()))
}

/// Writes `dir/<name>.json` atomically (`name` a checked interface name).
pub fn write_named(dir: &Path, name: &str, contents: &[u8]) -> Result<(), StateError> {
    let path = file_for(dir, name)?;
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    write_atomic(dir, file, contents)
}

/// Reads `dir/<name>.json` as [`read_checked`] does (`name` a checked interface name).
pub fn read_named(dir: &Path, name: &str) -> Result<Option<String>, StateError> {
    read_checked(&file_for(dir, name)?)
}

/// Saves `state` as `dir/<name>.json`.
pub fn save(dir: &Path, state: &State) -> Result<(), StateError> {
    write_named(dir, &state.name, state.to_json().to_string().as_bytes())
}

/// Reads a file written by [`write_atomic`], refusing one that root (or we) did not write or
/// that others may change. `Ok(None)`: there is none.
pub fn read_checked(path: &Path) -> Result<Option<String>, StateError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::io(path, e)),
    };
    let unsafe_file = |why: String| StateError::Unsafe {
        path: path.to_path_buf(),
        why,
    };
    if !meta.file_type().is_file() {
        return Err(unsafe_file("not a regular file".into()));
    }
    if meta.uid() != 0 && meta.uid() != effective_uid() {
        return Err(unsafe_file(format!(
            "owned by uid {}, not root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_file(format!(
            "mode {:o}: writable by group or others",
            meta.mode() & 0o777
        )));
    }
    fs::read_to_string(path)
        .map(Some)
        .map_err(|e| StateError::io(path, e))
}

/// The state of `name` in `dir`; `Ok(None)` when there is none.
pub fn load(dir: &Path, name: &str) -> Result<Option<State>, StateError> {
    let path = file_for(dir, name)?;
    let Some(text) = read_checked(&path)? else {
        return Ok(None);
    };
    let malformed = |why: String| StateError::Malformed {
        path: path.clone(),
        why,
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| malformed(e.to_string()))?;
    State::from_json(name, &v).map(Some).map_err(malformed)
}

/// Removes the state of `name` in `dir` (absent is fine).
pub fn remove(dir: &Path, name: &str) {
    if let Ok(path) = file_for(dir, name) {
        let _ = fs::remove_file(path);
    }
}

/// Names of the states in `dir`, sorted: regular `<name>.json` files with a valid name
/// (temporary files start with `.` and are never listed).
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            if !e.file_type().ok()?.is_file() {
                return None;
            }
            let name = e.file_name().to_str()?.strip_suffix(".json")?.to_string();
            (!name.starts_with('.') && check_name("interface", &name).is_ok()).then_some(name)
        })
        .collect();
    names.sort();
    names
}

impl fmt::Display for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn record() -> MappingRecord {
        MappingRecord {
            isp: Some("v6plus".into()),
            prefix: "240b:10:3f6c:d400::/56".into(),
            rule: RuleRecord {
                ipv6_prefix: "240b:10::/31".parse().unwrap(),
                ipv4_prefix: "106.72.0.0/15".parse().unwrap(),
                ea_len: 25,
                psid_offset: 4,
                psid_len: 8,
            },
            iid_format: "draft03".into(),
            ipv4: "106.72.63.108".parse().unwrap(),
            ipv4_prefix_len: 32,
            psid: 212,
            port_sets: vec![
                PortSet {
                    first: 7488,
                    last: 7503,
                },
                PortSet {
                    first: 11584,
                    last: 11599,
                },
            ],
            port_count: 32,
            ce: "240b:10:3f6c:d400:6a:483f:6c00:d400".parse().unwrap(),
            br: Some("2404:9200:225:100::64".parse().unwrap()),
            warnings: vec!["a warning".into()],
        }
    }

    pub fn state() -> State {
        State {
            frontend: Frontend::Netifd,
            name: "wanmap".into(),
            ifname: "map-wanmap".into(),
            table: "mape_wanmap".into(),
            dev: "wan".into(),
            ce: "240b:10:3f6c:d400:6a:483f:6c00:d400".parse().unwrap(),
            prefix: "240b:10:3f6c:d400::/56".into(),
            tunlink: Some("wan6".into()),
            nft: "table ip mape_wanmap {}\n".into(),
            mtu: Some(1460),
            ttl: Some(64),
            default_route: true,
            metric: None,
            mapping: Some(record()),
            owner: Some("1234.5678".into()),
        }
    }

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mape-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn json_round_trips() {
        let s = state();
        assert_eq!(State::from_json("wanmap", &s.to_json()).unwrap(), s);
        let mut l = state();
        l.frontend = Frontend::Linux;
        l.tunlink = None;
        l.mapping = None;
        l.owner = None;
        l.metric = Some(100);
        assert_eq!(State::from_json("wanmap", &l.to_json()).unwrap(), l);
        let r = record();
        assert_eq!(MappingRecord::from_json(&r.to_json()).unwrap(), r);
    }

    #[test]
    fn hostile_or_broken_states_are_refused() {
        let mut v = state().to_json();
        v["table"] = json!("mape_x; flush ruleset");
        assert!(State::from_json("wanmap", &v)
            .unwrap_err()
            .contains("table"));
        let mut v = state().to_json();
        v["dev"] = json!("../etc");
        assert!(State::from_json("wanmap", &v).is_err());
        let mut v = state().to_json();
        v["version"] = json!(99);
        assert!(State::from_json("wanmap", &v)
            .unwrap_err()
            .contains("version"));
        let mut v = state().to_json();
        v["mapping"]["port_sets"] = json!([[20, 10]]);
        assert!(State::from_json("wanmap", &v).is_err());
    }

    #[test]
    fn legacy_files_still_tear_down() {
        let netifd = json!({"ce": "2001:db8::1", "dev": "wan", "table": "mape_wanmap",
            "ifname": "map-wanmap", "tunlink": "wan6", "prefix": "2001:db8::/56", "nft": "x"});
        let s = State::from_json("wanmap", &netifd).unwrap();
        assert_eq!((s.frontend, s.dev.as_str()), (Frontend::Netifd, "wan"));
        let linux = json!({"name": "enp1s0", "wan": "enp1s0", "ifname": "map-enp1s0",
            "table": "mape_enp1s0", "prefix": "2001:db8::/56", "ce": "2001:db8::1",
            "br": "2001:db8::2", "ipv4": "192.0.2.1/32", "mtu": 1460, "ttl": 64,
            "default_route": true, "metric": null, "nft_fnv64": "00"});
        let s = State::from_json("enp1s0", &linux).unwrap();
        assert_eq!((s.frontend, s.dev.as_str()), (Frontend::Linux, "enp1s0"));
    }

    #[test]
    fn save_load_list_remove() {
        let dir = tempdir("io");
        let s = state();
        save(&dir, &s).unwrap();
        assert_eq!(load(&dir, "wanmap").unwrap(), Some(s.clone()));
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("wanmap.json")), 0o600);
        assert_eq!(list(&dir), ["wanmap"]);
        remove(&dir, "wanmap");
        assert_eq!(load(&dir, "wanmap").unwrap(), None);
        assert!(matches!(load(&dir, "../x"), Err(StateError::BadName(_))));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_crash_before_the_rename_keeps_the_previous_state() {
        let dir = tempdir("crash");
        let old = state();
        save(&dir, &old).unwrap();
        let mut new = state();
        new.ce = "2001:db8::99".parse().unwrap();
        // The process "dies" after writing the temporary file: the error stands for the end of
        // the process; the temporary file is what a crash would leave (re-created after the
        // writer's cleanup, as a crash would not clean up).
        let body = new.to_json().to_string();
        let tmp = dir.join(".wanmap.json.4242.tmp");
        let r = write_atomic_with(&dir, "wanmap.json", body.as_bytes(), || {
            fs::write(&tmp, &body)?;
            Err(io::Error::other("killed"))
        });
        assert!(r.is_err());
        fs::write(&tmp, &body).unwrap();
        assert_eq!(
            load(&dir, "wanmap").unwrap(),
            Some(old),
            "the old state is intact"
        );
        assert_eq!(list(&dir), ["wanmap"], "the temporary file is not a state");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_others_may_write_are_refused() {
        let dir = tempdir("perm");
        save(&dir, &state()).unwrap();
        let f = dir.join("wanmap.json");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o666)).unwrap();
        let e = load(&dir, "wanmap").unwrap_err().to_string();
        assert!(e.contains("writable by group or others"), "{e}");
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();
        if effective_uid() == 0 {
            std::os::unix::fs::chown(&f, Some(65534), None).unwrap();
            let e = load(&dir, "wanmap").unwrap_err().to_string();
            assert!(e.contains("owned by uid 65534"), "{e}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
