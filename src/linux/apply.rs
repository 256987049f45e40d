//! `mape up` and `mape down` on a plain Linux router, with iproute2 and nft.
//!
//! `up` brings the system to the [`Plan`], changing only what differs, so running it twice is
//! running it once (the networkd-dispatcher hook runs it on every address change):
//! 1. the CE address as a /128 on the WAN, `nodad` (from our own prefix it cannot be a duplicate,
//!    and ip6tnl drops every packet while its local address is tentative);
//! 2. the ip6tnl `map-<name>`: `mode ipip6 local CE remote BR dev WAN encaplimit none`, MTU, up.
//!    A tunnel of that name with other parameters (an old prefix) is replaced;
//! 3. the IPv4 address on the tunnel (stale ones removed);
//! 4. the nft table (the OpenWrt handler's ruleset, one atomic `nft -f`), before the route so no
//!    IPv4 packet leaves un-NATed;
//! 5. the IPv4 default route into the tunnel, last: it is what makes traffic flow.
//!
//! If a step fails, the steps before it that created something are undone in reverse order
//! (a replaced nft table gets its old rules back). The state file (`/run/mape/<name>.json`)
//! records what was applied, for `down`, for `up --if-changed`, and to remove the previous CE
//! address after a prefix change.
//!
//! `down` removes the tunnel (its IPv4 address and routes go with it), the nft table and the CE
//! address, whatever of them exists; without a state file it takes the CE address and WAN from
//! the tunnel itself.

use std::net::{Ipv4Addr, Ipv6Addr};

use serde_json::Value;

use super::host::{show, Host, HostError};
use crate::engine::CustomerPrefix;
use crate::render::nft;
use crate::state::{Frontend, MappingRecord, State};

/// Everything `up` applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The key of the state file; `ifname` and `table` derive from it.
    pub name: String,
    pub wan: String,
    pub ifname: String,
    pub table: String,
    pub prefix: CustomerPrefix,
    pub ce: Ipv6Addr,
    pub br: Ipv6Addr,
    pub ipv4: Ipv4Addr,
    pub ipv4_len: u8,
    pub mtu: u32,
    pub ttl: u8,
    pub default_route: bool,
    pub metric: Option<u32>,
    /// The script for `nft -f -` ([`crate::render::nft::ruleset`]).
    pub nft: String,
    /// The calculator's record of the mapping, for the state file (`mape status`).
    pub mapping: Option<MappingRecord>,
}

impl Plan {
    /// What the state file holds after a successful `up` (the whole ruleset too: a change of
    /// `ports_exclude` changes it, and `--if-changed` must then apply).
    pub fn state(&self) -> State {
        State {
            frontend: Frontend::Linux,
            name: self.name.clone(),
            ifname: self.ifname.clone(),
            table: self.table.clone(),
            dev: self.wan.clone(),
            ce: self.ce,
            prefix: self.prefix.to_string(),
            tunlink: None,
            nft: self.nft.clone(),
            mtu: Some(self.mtu),
            ttl: Some(self.ttl),
            default_route: self.default_route,
            metric: self.metric,
            mapping: self.mapping.clone(),
            owner: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error("{step}: {err}{}", rollback_note(.rollback_failed))]
    Step {
        step: &'static str,
        err: HostError,
        /// Undo commands that failed in turn (empty: everything was rolled back).
        rollback_failed: Vec<String>,
    },
    #[error("an IPv4 default route via {dev} with metric {metric} exists already: give --metric N (another metric) or --no-default-route")]
    DefaultRouteTaken { dev: String, metric: u32 },
    #[error("down: {}", .0.join("; "))]
    Down(Vec<String>),
}

fn rollback_note(failed: &[String]) -> String {
    if failed.is_empty() {
        " (rolled back)".to_string()
    } else {
        format!(
            " (rollback incomplete: {}; run mape down)",
            failed.join("; ")
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpOutcome {
    /// Changes were made (or printed, in a dry run). `old_prefix`: the prefix of the previous
    /// `up`, if it was another one.
    Applied { old_prefix: Option<String> },
    /// `--if-changed` and the system already matches the plan.
    Unchanged,
}

/// One change that can be undone: the command and its stdin.
struct Undo {
    argv: Vec<String>,
    stdin: Option<String>,
}

struct Run<'h> {
    host: &'h mut dyn Host,
    undo: Vec<Undo>,
}

impl Run<'_> {
    /// Makes a change; on failure undoes the earlier ones and returns the error.
    fn change(
        &mut self,
        step: &'static str,
        argv: &[&str],
        stdin: Option<&str>,
    ) -> Result<(), ApplyError> {
        match self.host.change(argv, stdin) {
            Ok(()) => Ok(()),
            Err(err) => Err(ApplyError::Step {
                step,
                err,
                rollback_failed: self.rollback(),
            }),
        }
    }

    fn undo_with(&mut self, argv: &[&str], stdin: Option<String>) {
        self.undo.push(Undo {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            stdin,
        });
    }

    fn rollback(&mut self) -> Vec<String> {
        let mut failed = Vec::new();
        while let Some(u) = self.undo.pop() {
            let argv: Vec<&str> = u.argv.iter().map(String::as_str).collect();
            if let Err(e) = self.host.change(&argv, u.stdin.as_deref()) {
                self.host.log(&format!("mape: rollback: {e}"));
                failed.push(show(&argv));
            }
        }
        failed
    }
}

/// The tunnel's `ip -j -d link show` object, if a link of that name exists.
fn link_info(host: &mut dyn Host, ifname: &str) -> Option<Value> {
    let out = host
        .query(&["ip", "-j", "-d", "link", "show", "dev", ifname])
        .ok()?;
    match serde_json::from_str::<Value>(&out).ok()? {
        Value::Array(mut v) if !v.is_empty() => Some(v.swap_remove(0)),
        _ => None,
    }
}

fn v6(v: Option<&Value>) -> Option<Ipv6Addr> {
    v?.as_str()?.parse().ok()
}

/// Whether an existing link is exactly the tunnel the plan wants.
fn tunnel_matches(link: &Value, p: &Plan) -> bool {
    let info = &link["linkinfo"];
    let data = &info["info_data"];
    info["info_kind"] == "ip6tnl"
        && data["proto"] == "ipip6"
        && v6(data.get("local")) == Some(p.ce)
        && v6(data.get("remote")) == Some(p.br)
        && data["link"].as_str() == Some(p.wan.as_str())
        && data["ttl"].as_u64() == Some(u64::from(p.ttl))
        && data["ip6_tnl_f_ign_encap_limit"] == true
}

/// The addresses (`local`, `prefixlen`) of a device, of one family.
fn addrs(host: &mut dyn Host, family: &str, dev: &str) -> Vec<(String, u64)> {
    let Ok(out) = host.query(&["ip", "-j", family, "addr", "show", "dev", dev]) else {
        return Vec::new(); // no such device: no addresses
    };
    let Ok(Value::Array(links)) = serde_json::from_str::<Value>(&out) else {
        return Vec::new();
    };
    links
        .iter()
        .filter_map(|l| l.get("addr_info")?.as_array())
        .flatten()
        .filter_map(|a| {
            Some((
                a.get("local")?.as_str()?.to_string(),
                a.get("prefixlen")?.as_u64()?,
            ))
        })
        .collect()
}

fn has_v6(host: &mut dyn Host, dev: &str, addr: Ipv6Addr) -> bool {
    addrs(host, "-6", dev)
        .iter()
        .any(|(a, len)| *len == 128 && a.parse::<Ipv6Addr>().ok() == Some(addr))
}

/// IPv4 default routes in the main table: (device, metric).
fn default_routes(host: &mut dyn Host) -> Vec<(String, u32)> {
    let Ok(out) = host.query(&["ip", "-j", "-4", "route", "show", "default"]) else {
        return Vec::new();
    };
    let Ok(Value::Array(routes)) = serde_json::from_str::<Value>(&out) else {
        return Vec::new();
    };
    routes
        .iter()
        .filter_map(|r| {
            let dev = r.get("dev")?.as_str()?.to_string();
            let metric = r.get("metric").and_then(Value::as_u64).unwrap_or(0) as u32;
            Some((dev, metric))
        })
        .collect()
}

fn nft_table(host: &mut dyn Host, table: &str) -> Option<String> {
    host.query(&["nft", "list", "table", "ip", table]).ok()
}

/// Brings the system to `p` (see the module documentation).
pub fn up(host: &mut dyn Host, p: &Plan, if_changed: bool) -> Result<UpOutcome, ApplyError> {
    let prev = host.load_state(&p.name);
    let want = p.state();
    let link = link_info(host, &p.ifname);
    let tunnel_ok = link.as_ref().is_some_and(|l| tunnel_matches(l, p));
    let ce_there = has_v6(host, &p.wan, p.ce);
    // The table too: a restart of nftables.service (`flush ruleset`) removes it behind our back.
    if if_changed
        && prev.as_ref() == Some(&want)
        && tunnel_ok
        && ce_there
        && nft_table(host, &p.table).is_some()
    {
        return Ok(UpOutcome::Unchanged);
    }
    let metric = p.metric.unwrap_or(0);
    let routes = default_routes(host);
    if p.default_route {
        // `ip route replace` would silently take over another uplink's default route.
        if let Some((dev, m)) = routes.iter().find(|(d, m)| *d != p.ifname && *m == metric) {
            return Err(ApplyError::DefaultRouteTaken {
                dev: dev.clone(),
                metric: *m,
            });
        }
    }

    let ce = format!("{}/128", p.ce);
    let mut run = Run {
        host,
        undo: Vec::new(),
    };

    // 1. The CE address.
    if !ce_there {
        run.change(
            "adding the CE address",
            &[
                "ip",
                "-6",
                "addr",
                "add",
                &ce,
                "dev",
                &p.wan,
                "nodad",
                "noprefixroute",
            ],
            None,
        )?;
        run.undo_with(&["ip", "-6", "addr", "del", &ce, "dev", &p.wan], None);
    }

    // 2. The tunnel.
    if link.is_some() && !tunnel_ok {
        // Ours by name, but for another prefix or BR: ip6tnl parameters are replaced by
        // re-creating (the old one cannot be restored on failure; it was wrong anyway).
        run.change(
            "removing the outdated tunnel",
            &["ip", "link", "del", "dev", &p.ifname],
            None,
        )?;
    }
    let created = !tunnel_ok;
    if created {
        let br = p.br.to_string();
        let local = p.ce.to_string();
        let ttl = p.ttl.to_string();
        run.change(
            "creating the tunnel",
            &[
                "ip",
                "-6",
                "tunnel",
                "add",
                &p.ifname,
                "mode",
                "ipip6",
                "local",
                &local,
                "remote",
                &br,
                "dev",
                &p.wan,
                "encaplimit",
                "none",
                "hoplimit",
                &ttl,
            ],
            None,
        )?;
        run.undo_with(&["ip", "link", "del", "dev", &p.ifname], None);
    }
    let mtu = p.mtu.to_string();
    run.change(
        "setting the tunnel up",
        &["ip", "link", "set", "dev", &p.ifname, "mtu", &mtu, "up"],
        None,
    )?;

    // 3. The IPv4 address.
    let v4 = format!("{}/{}", p.ipv4, p.ipv4_len);
    let present = if created {
        Vec::new()
    } else {
        addrs(run.host, "-4", &p.ifname)
    };
    let mut have = false;
    for (a, len) in &present {
        if *a == p.ipv4.to_string() && *len == u64::from(p.ipv4_len) {
            have = true;
        } else {
            let stale = format!("{a}/{len}");
            run.change(
                "removing an old IPv4 address",
                &["ip", "-4", "addr", "del", &stale, "dev", &p.ifname],
                None,
            )?;
        }
    }
    if !have {
        run.change(
            "adding the IPv4 address",
            &["ip", "-4", "addr", "add", &v4, "dev", &p.ifname],
            None,
        )?;
        if !created {
            run.undo_with(&["ip", "-4", "addr", "del", &v4, "dev", &p.ifname], None);
        }
    }

    // 4. The nft table.
    let old_rules = nft_table(run.host, &p.table);
    run.change("loading the nft table", &["nft", "-f", "-"], Some(&p.nft))?;
    let restore = match old_rules {
        None => nft::delete_script(&p.table),
        Some(old) => format!("{}{old}", nft::delete_script(&p.table)),
    };
    run.undo_with(&["nft", "-f", "-"], Some(restore));

    // 5. The default route.
    let metric_s = metric.to_string();
    let ours = routes.iter().any(|(d, _)| *d == p.ifname);
    if p.default_route {
        // Ours with another metric (an earlier `--metric`): replace would keep it beside. (A
        // re-created tunnel took its routes with it.)
        let stale = routes
            .iter()
            .filter(|(d, m)| !created && *d == p.ifname && *m != metric);
        for (_, m) in stale {
            let old = m.to_string();
            run.change(
                "removing the old default route",
                &[
                    "ip", "-4", "route", "del", "default", "dev", &p.ifname, "metric", &old,
                ],
                None,
            )?;
        }
        let mut argv = vec!["ip", "-4", "route", "replace", "default", "dev", &p.ifname];
        if p.metric.is_some() {
            argv.extend(["metric", metric_s.as_str()]);
        }
        run.change("adding the default route", &argv, None)?;
    } else if ours && !created {
        run.change(
            "removing the default route",
            &["ip", "-4", "route", "del", "default", "dev", &p.ifname],
            None,
        )?;
    }

    if let Err(e) = run.host.save_state(&want) {
        run.host.log(&format!("mape: warning: {e}"));
    }

    // After a prefix change the previous CE address is dead weight on the WAN.
    let mut old_prefix = None;
    if let Some(prev) = prev {
        let (old_ce, old_wan) = (prev.ce, prev.dev.as_str());
        if (old_ce != p.ce || old_wan != p.wan) && has_v6(run.host, old_wan, old_ce) {
            let a = format!("{old_ce}/128");
            if let Err(e) = run
                .host
                .change(&["ip", "-6", "addr", "del", &a, "dev", old_wan], None)
            {
                run.host.log(&format!("mape: warning: {e}"));
            }
        }
        if prev.prefix != p.prefix.to_string() {
            old_prefix = Some(prev.prefix.clone());
        }
    }
    Ok(UpOutcome::Applied { old_prefix })
}

/// What `down` removed (for the message).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Removed {
    pub items: Vec<String>,
}

/// Removes the tunnel, the nft table and the CE address of `name` (see the module docs).
pub fn down(
    host: &mut dyn Host,
    name: &str,
    ifname: &str,
    table: &str,
) -> Result<Removed, ApplyError> {
    let prev = host.load_state(name);
    let mut ce = prev.as_ref().map(|s| s.ce);
    let mut wan = prev.as_ref().map(|s| s.dev.clone());
    let mut removed = Removed::default();
    let mut errors = Vec::new();

    if let Some(link) = link_info(host, ifname) {
        let data = &link["linkinfo"]["info_data"];
        if ce.is_none() {
            ce = v6(data.get("local"));
            wan = data["link"].as_str().map(str::to_string);
        }
        match host.change(&["ip", "link", "del", "dev", ifname], None) {
            Ok(()) => removed.items.push(format!("tunnel {ifname}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if nft_table(host, table).is_some() {
        match host.change(&["nft", "-f", "-"], Some(&nft::delete_script(table))) {
            Ok(()) => removed.items.push(format!("nft table ip {table}")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if let (Some(ce), Some(wan)) = (ce, wan) {
        if has_v6(host, &wan, ce) {
            let a = format!("{ce}/128");
            match host.change(&["ip", "-6", "addr", "del", &a, "dev", &wan], None) {
                Ok(()) => removed.items.push(format!("CE address {a} on {wan}")),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    if !errors.is_empty() {
        // Keep the state: a second `down` still knows the CE address.
        return Err(ApplyError::Down(errors));
    }
    if prev.is_some() {
        host.clear_state(name);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    /// A fake system: a tiny model of links, addresses, routes and nft tables that the `ip` and
    /// `nft` commands used here act on, with a command that can be made to fail.
    #[derive(Default)]
    struct Fake {
        /// ifname -> `ip -j -d link show` object.
        links: BTreeMap<String, Value>,
        /// (dev, "addr/len")
        addrs: Vec<(String, String)>,
        /// IPv4 default routes: (dev, metric)
        routes: Vec<(String, u32)>,
        tables: BTreeMap<String, String>,
        state: Option<State>,
        log: Vec<String>,
        fail_on: Option<&'static str>,
    }

    impl Fake {
        fn addr_json(&self, dev: &str, v6: bool) -> String {
            if !self.links.contains_key(dev) && dev != "wan0" {
                return String::new();
            }
            let infos: Vec<Value> = self
                .addrs
                .iter()
                .filter(|(d, a)| d == dev && a.contains(':') == v6)
                .map(|(_, a)| {
                    let (addr, len) = a.split_once('/').unwrap();
                    json!({"local": addr, "prefixlen": len.parse::<u64>().unwrap()})
                })
                .collect();
            json!([{ "ifname": dev, "addr_info": infos }]).to_string()
        }
    }

    impl Host for Fake {
        fn query(&mut self, argv: &[&str]) -> Result<String, HostError> {
            let err = || HostError::Command {
                cmd: show(argv),
                why: "no".into(),
            };
            match argv {
                ["ip", "-j", "-d", "link", "show", "dev", d] => self
                    .links
                    .get(*d)
                    .map(|l| json!([l]).to_string())
                    .ok_or_else(err),
                ["ip", "-j", fam, "addr", "show", "dev", d] => {
                    let s = self.addr_json(d, *fam == "-6");
                    if s.is_empty() {
                        Err(err())
                    } else {
                        Ok(s)
                    }
                }
                ["ip", "-j", "-4", "route", "show", "default"] => Ok(json!(self
                    .routes
                    .iter()
                    .map(|(d, m)| json!({"dst": "default", "dev": d, "metric": m}))
                    .collect::<Vec<_>>())
                .to_string()),
                ["nft", "list", "table", "ip", t] => self.tables.get(*t).cloned().ok_or_else(err),
                _ => panic!("unexpected query {argv:?}"),
            }
        }

        fn change(&mut self, argv: &[&str], stdin: Option<&str>) -> Result<(), HostError> {
            let line = show(argv);
            self.log.push(line.clone());
            if self.fail_on.is_some_and(|f| line.contains(f)) {
                return Err(HostError::Command {
                    cmd: line,
                    why: "injected".into(),
                });
            }
            match argv {
                ["ip", "-6", "addr", "add", a, "dev", d, ..]
                | ["ip", "-4", "addr", "add", a, "dev", d] => {
                    self.addrs.push((d.to_string(), a.to_string()))
                }
                ["ip", _, "addr", "del", a, "dev", d] => {
                    self.addrs.retain(|(dd, aa)| !(dd == d && aa == a))
                }
                ["ip", "-6", "tunnel", "add", name, "mode", "ipip6", "local", l, "remote", r, "dev", w, "encaplimit", "none", "hoplimit", t] =>
                {
                    self.links.insert(
                        name.to_string(),
                        json!({"ifname": name, "linkinfo": {"info_kind": "ip6tnl", "info_data": {
                            "proto": "ipip6", "local": l, "remote": r, "link": w,
                            "ttl": t.parse::<u64>().unwrap(), "ip6_tnl_f_ign_encap_limit": true}}}),
                    );
                }
                ["ip", "link", "set", "dev", _, "mtu", _, "up"] => {}
                ["ip", "link", "del", "dev", name] => {
                    self.links.remove(*name);
                    self.addrs.retain(|(d, _)| d != name);
                    self.routes.retain(|(d, _)| d != name);
                }
                ["ip", "-4", "route", "replace", "default", "dev", d, rest @ ..] => {
                    let m = rest.get(1).map_or(0, |m| m.parse().unwrap());
                    self.routes.retain(|(_, mm)| *mm != m);
                    self.routes.push((d.to_string(), m));
                }
                ["ip", "-4", "route", "del", "default", "dev", d] => {
                    self.routes.retain(|(dd, _)| dd != d)
                }
                ["ip", "-4", "route", "del", "default", "dev", d, "metric", m] => {
                    let m: u32 = m.parse().unwrap();
                    self.routes.retain(|(dd, mm)| !(dd == d && *mm == m))
                }
                ["nft", "-f", "-"] => {
                    let s = stdin.unwrap();
                    let t = s
                        .lines()
                        .find_map(|l| l.strip_prefix("add table ip "))
                        .unwrap()
                        .to_string();
                    if s.contains(&format!("table ip {t} {{")) {
                        self.tables.insert(t, s.to_string());
                    } else {
                        self.tables.remove(&t);
                    }
                }
                _ => panic!("unexpected change {argv:?}"),
            }
            Ok(())
        }

        fn load_state(&mut self, _name: &str) -> Option<State> {
            self.state.clone()
        }

        fn save_state(&mut self, state: &State) -> Result<(), HostError> {
            self.state = Some(state.clone());
            Ok(())
        }

        fn clear_state(&mut self, _name: &str) {
            self.state = None;
        }

        fn log(&mut self, _line: &str) {}
    }

    fn plan(prefix: &str) -> Plan {
        let p: CustomerPrefix = prefix.parse().unwrap();
        let r = crate::provision::resolve(
            &crate::provision::RuleSource::Builtin(crate::provision::builtin::IspChoice::Auto),
            p,
        )
        .unwrap();
        let m = &r.mapping;
        Plan {
            name: "wan0".into(),
            wan: "wan0".into(),
            ifname: "map-wan0".into(),
            table: "mape_wan0".into(),
            prefix: p,
            ce: m.ce.addr(),
            br: m.br.unwrap(),
            ipv4: m.ipv4,
            ipv4_len: m.ipv4_prefix_len,
            mtu: 1460,
            ttl: 64,
            default_route: true,
            metric: None,
            nft: nft::ruleset(&nft::NftParams {
                table: "mape_wan0",
                ifname: "map-wan0",
                mapping: m,
                exclude: &[],
                origin: "test",
            })
            .unwrap(),
            mapping: Some(crate::render::calc::record(&r)),
        }
    }

    fn fake() -> Fake {
        Fake {
            addrs: vec![("wan0".into(), "240b:10:3f6c:d400::1/64".into())],
            ..Fake::default()
        }
    }

    #[test]
    fn up_twice_is_up_once_and_down_leaves_nothing() {
        let mut f = fake();
        let p = plan("240b:10:3f6c:d400::/56");
        assert!(matches!(
            up(&mut f, &p, false),
            Ok(UpOutcome::Applied { .. })
        ));
        assert!(f.links.contains_key("map-wan0"));
        assert!(f
            .addrs
            .contains(&("map-wan0".into(), "106.72.63.108/32".into())));
        assert_eq!(f.routes, [("map-wan0".to_string(), 0)]);
        assert!(f.tables.contains_key("mape_wan0"));
        let after_one = (f.links.clone(), f.addrs.clone(), f.routes.clone());

        f.log.clear();
        assert!(up(&mut f, &p, false).is_ok());
        assert_eq!(
            (f.links.clone(), f.addrs.clone(), f.routes.clone()),
            after_one
        );
        // The second run only refreshes: no address, tunnel or route is created again.
        assert!(
            f.log.iter().all(|l| !l.contains(" add ")),
            "second up re-created something: {:?}",
            f.log
        );
        assert_eq!(up(&mut f, &p, true), Ok(UpOutcome::Unchanged));
        // A flushed ruleset is a change.
        f.tables.clear();
        assert!(matches!(
            up(&mut f, &p, true),
            Ok(UpOutcome::Applied { .. })
        ));
        assert!(f.tables.contains_key("mape_wan0"));

        let removed = down(&mut f, "wan0", "map-wan0", "mape_wan0").unwrap();
        assert_eq!(removed.items.len(), 3, "{removed:?}");
        assert!(f.links.is_empty() && f.tables.is_empty() && f.routes.is_empty());
        assert_eq!(f.addrs, fake().addrs);
        assert!(f.state.is_none());
        // And down again finds nothing to do.
        assert_eq!(
            down(&mut f, "wan0", "map-wan0", "mape_wan0").unwrap(),
            Removed::default()
        );
    }

    #[test]
    fn failure_rolls_back_in_reverse() {
        for step in [
            "tunnel add",
            "link set",
            "-4 addr add",
            "nft -f",
            "route replace",
        ] {
            let mut f = fake();
            f.fail_on = Some(step);
            let err = up(&mut f, &plan("240b:10:3f6c:d400::/56"), false).unwrap_err();
            assert!(
                matches!(&err, ApplyError::Step { rollback_failed, .. } if rollback_failed.is_empty()),
                "{step}: {err}"
            );
            assert!(f.links.is_empty(), "{step}: tunnel left");
            assert!(f.tables.is_empty(), "{step}: nft table left");
            assert_eq!(f.addrs, fake().addrs, "{step}: address left");
            assert!(f.state.is_none());
        }
    }

    #[test]
    fn failed_reload_restores_the_previous_rules() {
        let mut f = fake();
        let p = plan("240b:10:3f6c:d400::/56");
        up(&mut f, &p, false).unwrap();
        let before = f.tables["mape_wan0"].clone();
        f.fail_on = Some("route replace");
        assert!(up(&mut f, &p, false).is_err());
        // The tunnel existed before, so it stays; the table is back to the old rules.
        assert!(f.links.contains_key("map-wan0"));
        assert!(f.tables["mape_wan0"].contains(&before));
    }

    #[test]
    fn prefix_change_replaces_tunnel_and_old_ce() {
        let mut f = fake();
        let old = plan("240b:10:3f6c:d400::/56");
        up(&mut f, &old, false).unwrap();
        let mut new = plan("240b:10:1234:5600::/56");
        new.metric = Some(50); // and another metric at the same time
        assert_eq!(
            up(&mut f, &new, true),
            Ok(UpOutcome::Applied {
                old_prefix: Some("240b:10:3f6c:d400::/56".into())
            })
        );
        let local = f.links["map-wan0"]["linkinfo"]["info_data"]["local"].clone();
        assert_eq!(local, json!(new.ce.to_string()));
        let wan: Vec<_> = f.addrs.iter().filter(|(d, _)| d == "wan0").collect();
        assert_eq!(wan.len(), 2, "{wan:?}"); // the /64 and the new CE only
        assert!(f
            .addrs
            .contains(&("map-wan0".into(), format!("{}/32", new.ipv4))));
        assert_eq!(f.routes, [("map-wan0".into(), 50)]);
    }

    #[test]
    fn another_default_route_is_not_taken_over() {
        let mut f = fake();
        f.routes.push(("ppp0".into(), 0));
        let mut p = plan("240b:10:3f6c:d400::/56");
        assert!(matches!(
            up(&mut f, &p, false),
            Err(ApplyError::DefaultRouteTaken { .. })
        ));
        assert!(f.log.is_empty());
        p.metric = Some(100);
        up(&mut f, &p, false).unwrap();
        assert!(f.routes.contains(&("map-wan0".into(), 100)));
        assert!(f.routes.contains(&("ppp0".into(), 0)));
        // Another metric later moves our route rather than adding a second one.
        p.metric = Some(200);
        up(&mut f, &p, false).unwrap();
        assert_eq!(f.routes, [("ppp0".into(), 0), ("map-wan0".into(), 200)]);
    }

    #[test]
    fn down_without_state_reads_the_tunnel() {
        let mut f = fake();
        let p = plan("240b:10:3f6c:d400::/56");
        up(&mut f, &p, false).unwrap();
        f.state = None;
        let removed = down(&mut f, "wan0", "map-wan0", "mape_wan0").unwrap();
        assert_eq!(removed.items.len(), 3);
        assert_eq!(f.addrs, fake().addrs);
    }
}
