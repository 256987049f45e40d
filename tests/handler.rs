//! The netifd handler fed netifd-shaped config JSON and ubus status JSON, checked field by
//! field (through the dry-run system, which records instead of acting).

use mape::handler::{self, DryRun};
use serde_json::{json, Value};

const EXE: &str = "/usr/sbin/mape";

fn status(prefixes: &[(&str, u8)], addresses: &[(&str, u8)]) -> Value {
    let p: Vec<Value> = prefixes
        .iter()
        .map(|(a, m)| json!({"address": a, "mask": m}))
        .collect();
    let a: Vec<Value> = addresses
        .iter()
        .map(|(a, m)| json!({"address": a, "mask": m}))
        .collect();
    json!({"up": true, "l3_device": "wan", "ipv6-prefix": p, "ipv6-address": a})
}

fn setup(config: Value, status: Option<Value>) -> (i32, DryRun) {
    let mut sys = DryRun::new(status);
    let code = handler::setup(&mut sys, EXE, "wanmap", &config.to_string());
    (code, sys)
}

fn notify(sys: &DryRun, action: i64) -> Vec<&Value> {
    sys.calls
        .iter()
        .filter(|c| c["method"] == "notify_proto" && c["args"]["action"] == action)
        .map(|c| &c["args"])
        .collect()
}

fn kernel<'a>(sys: &'a DryRun, method: &str) -> Vec<&'a Value> {
    sys.calls
        .iter()
        .filter(|c| c["object"] == "kernel" && c["method"] == method)
        .map(|c| &c["args"])
        .collect()
}

#[test]
fn v6plus_pd56_isp_auto() {
    let (code, sys) = setup(
        json!({"proto": "mape", "tunlink": "wan6"}),
        Some(status(&[("240b:10:3f6c:d400::", 56)], &[])),
    );
    assert_eq!(code, 0, "{:?}", sys.log);
    // Host dependency on the route to the BR over the tunnel link (as dslite.sh does with its
    // peer): a dependency on `::` would need a default route on the link.
    let dep = notify(&sys, 6);
    assert_eq!(dep.len(), 1);
    assert_eq!(dep[0]["ifname"], "wan6");
    assert_eq!(dep[0]["host"], "2404:9200:225:100::64");
    // CE /128 on the link device before the update.
    let add = kernel(&sys, "addr_add");
    assert_eq!(add[0]["dev"], "wan");
    assert_eq!(add[0]["address"], "240b:10:3f6c:d400:6a:483f:6c00:d400/128");
    let pos_add = sys
        .calls
        .iter()
        .position(|c| c["method"] == "addr_add")
        .unwrap();
    let pos_up = sys
        .calls
        .iter()
        .position(|c| c["args"]["action"] == 0)
        .unwrap();
    assert!(pos_add < pos_up);

    let up = notify(&sys, 0)[0];
    assert_eq!(up["interface"], "wanmap");
    assert_eq!(up["ifname"], "map-wanmap");
    assert_eq!(up["link-up"], true);
    let t = &up["tunnel"];
    assert_eq!(t["mode"], "ipip6");
    assert_eq!(t["local"], "240b:10:3f6c:d400:6a:483f:6c00:d400");
    assert_eq!(t["remote"], "2404:9200:225:100::64");
    assert_eq!(t["link"], "wan6");
    assert_eq!(t["mtu"], 1460);
    assert_eq!(t["ttl"], 64);
    assert_eq!(t["data"]["encaplimit"], "ignore");
    assert_eq!(t["data"]["fmrs"], json!([]));
    assert_eq!(
        up["ipaddr"],
        json!([{"ipaddr": "106.72.63.108", "mask": "32"}])
    );
    assert_eq!(up["routes"], json!([{"target": "0.0.0.0", "netmask": "0"}]));
    assert_eq!(up["data"]["zone"], "wan");
    let m = &up["data"]["mape"];
    assert_eq!(m["isp"], "v6plus");
    assert_eq!(m["ipv4"], "106.72.63.108");
    assert_eq!(m["psid"], 212);
    assert_eq!(m["port_count"], 240);
    assert_eq!(m["port_sets"][0], json!([7488, 7503]));
    assert_eq!(m["ce"], "240b:10:3f6c:d400:6a:483f:6c00:d400");
    assert_eq!(m["br"], "2404:9200:225:100::64");

    // The proto task watching the prefix.
    let task = notify(&sys, 1)[0];
    let cmd: Vec<&str> = task["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&cmd[..4], [EXE, "netifd", "watch", "wanmap"]);
    assert_eq!(cmd[cmd.len() - 1], "240b:10:3f6c:d400::/56");

    // The nft table: one transaction, all 15 sets per protocol.
    assert_eq!(sys.nft.len(), 1);
    let nft = &sys.nft[0];
    assert!(nft.contains("table ip mape_wanmap {"));
    assert_eq!(nft.matches("numgen inc mod 15 map").count(), 3);
    // No errors reported.
    assert!(notify(&sys, 3).is_empty());
}

#[test]
fn ra_64_only_line_maps_like_its_56() {
    // FLET'S without Hikari Denwa: no PD, one RA /64 address with a non-zero subnet byte.
    let (code, sys) = setup(
        json!({"tunlink": "wan6"}),
        Some(status(
            &[],
            &[
                ("240b:10:3f6c:d4ab:1234:5678:9abc:def0", 64),
                ("fe80::1", 64),
            ],
        )),
    );
    assert_eq!(code, 0, "{:?}", sys.log);
    let up = notify(&sys, 0)[0];
    assert_eq!(up["tunnel"]["local"], "240b:10:3f6c:d400:6a:483f:6c00:d400");
    assert_eq!(up["data"]["mape"]["prefix"], "240b:10:3f6c:d4ab::/64");
    // The warning that the CE lies outside the /64 reaches the log.
    assert!(
        sys.log
            .iter()
            .any(|l| l.contains("not inside the given /64")),
        "{:?}",
        sys.log
    );
}

#[test]
fn pd_60_from_a_home_gateway() {
    let (code, sys) = setup(
        json!({"tunlink": "wan6"}),
        Some(status(&[("2400:4050:1234:5670::", 60)], &[])),
    );
    assert_eq!(code, 0, "{:?}", sys.log);
    let up = notify(&sys, 0)[0];
    assert_eq!(up["data"]["mape"]["isp"], "ocn");
    assert_eq!(up["ipaddr"][0]["ipaddr"], "153.240.72.209");
    assert_eq!(up["data"]["mape"]["psid"], 22);
    assert_eq!(up["data"]["mape"]["port_count"], 1008);
    // The subnet bits 56..63 are zero in the CE address even though the /60 has them set.
    assert_eq!(
        up["tunnel"]["local"],
        "2400:4050:1234:5600:99:f048:d100:1600"
    );
    assert_eq!(up["tunnel"]["remote"], "2001:380:a120::9");
}

#[test]
fn no_prefix_yet_waits_without_blocking() {
    let (code, sys) = setup(json!({"tunlink": "wan6"}), Some(status(&[], &[])));
    assert_eq!(code, 0);
    assert_eq!(notify(&sys, 3)[0]["error"][0], "NO_PREFIX");
    assert!(notify(&sys, 4).is_empty(), "must not block restarts");
    assert!(notify(&sys, 0).is_empty());
    assert!(sys.nft.is_empty());
    assert!(kernel(&sys, "addr_add").is_empty());
    let task = notify(&sys, 1)[0];
    assert_eq!(task["command"].as_array().unwrap().last().unwrap(), "none");
    // A link that is down counts as no prefix too.
    let mut down = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    down["up"] = json!(false);
    let (_, sys) = setup(json!({"tunlink": "wan6"}), Some(down));
    assert_eq!(notify(&sys, 3)[0]["error"][0], "NO_PREFIX");
}

#[test]
fn unknown_isp_prefix_waits_for_another_prefix() {
    let (code, sys) = setup(
        json!({"tunlink": "wan6"}),
        Some(status(&[("2409:10:1234:5600::", 56)], &[])),
    );
    assert_eq!(code, 0);
    let err = notify(&sys, 3)[0];
    assert_eq!(err["error"][0], "NO_MATCHING_RULE");
    let text = err["error"][1].as_str().unwrap();
    assert!(
        text.contains("2409:10:1234:5600::/56") && text.contains("v6plus, ocn, biglobe, nuro"),
        "{text}"
    );
    assert!(notify(&sys, 4).is_empty());
    assert!(notify(&sys, 0).is_empty());
    assert_eq!(notify(&sys, 1).len(), 1);
}

#[test]
fn explicit_rule_like_proto_map() {
    let config = json!({
        "tunlink": "wan6", "maptype": "map-e", "isp": "none", "peeraddr": "2001:db8:ffff::1",
        "ipaddr": "192.0.2.0", "ip4prefixlen": 24, "ip6prefix": "2001:db8::", "ip6prefixlen": 40,
        "ealen": 16, "psidlen": 8, "offset": 6, "mtu": 1440, "ttl": 32, "zone": "-", "encaplimit": "8"
    });
    let (code, sys) = setup(config, Some(status(&[("2001:db8:12:3400::", 56)], &[])));
    assert_eq!(code, 0, "{:?}", sys.log);
    let up = notify(&sys, 0)[0];
    assert_eq!(up["tunnel"]["local"], "2001:db8:12:3400:0:c000:212:34");
    assert_eq!(up["tunnel"]["remote"], "2001:db8:ffff::1");
    assert_eq!(up["tunnel"]["mtu"], 1440);
    assert_eq!(up["tunnel"]["ttl"], 32);
    assert_eq!(up["tunnel"]["data"]["encaplimit"], "8");
    assert_eq!(up["ipaddr"][0]["ipaddr"], "192.0.2.18");
    assert!(up["data"].get("zone").is_none());
    assert_eq!(up["data"]["mape"]["isp"], Value::Null);
    assert_eq!(up["data"]["mape"]["port_count"], 252);
    assert!(sys.nft[0].contains("numgen inc mod 63 map { 0 : 192.0.2.18 . 1232-1235,"));
}

#[test]
fn odhcp6c_mape_rule_string_with_fmr() {
    // What dhcpv6.script passes as `rule` ($MAPE): a standards-based ISP, RFC 7597 IID.
    let rule = "fmr,type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1,";
    let (code, sys) = setup(
        json!({"tunlink": "wan6", "rule": rule}),
        Some(status(&[("2001:db8:12:3400::", 56)], &[])),
    );
    assert_eq!(code, 0, "{:?}", sys.log);
    let up = notify(&sys, 0)[0];
    assert_eq!(up["tunnel"]["local"], "2001:db8:12:3400:0:c000:212:34");
    assert_eq!(
        up["tunnel"]["data"]["fmrs"],
        json!([{"prefix6": "2001:db8::/40", "prefix4": "192.0.2.0/24", "ealen": 16, "offset": 6}])
    );
    assert_eq!(up["data"]["mape"]["iid_format"], "rfc7597");
}

#[test]
fn bad_values_block_restart_and_touch_nothing() {
    let st = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    let cases = [
        (
            json!({"tunlink": "wan6", "ealen": 49, "ip6prefix": "240b:10::", "ip6prefixlen": 31, "ipaddr": "106.72.0.0"}),
            "INVALID_OPTION",
            "ealen",
        ),
        (
            json!({"tunlink": "wan6", "maptype": "map-t"}),
            "UNSUPPORTED_TYPE",
            "maptype",
        ),
        (
            json!({"tunlink": "wan6", "isp": "bogus"}),
            "INVALID_MAP_RULE",
            "isp",
        ),
        (
            json!({"tunlink": "wan6", "isp": "none"}),
            "INVALID_MAP_RULE",
            "isp none",
        ),
        (
            json!({"tunlink": "wan6", "rule": "type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,offset=12"}),
            "INVALID_MAP_RULE",
            "offset",
        ),
        (
            json!({"tunlink": "wan6", "ports_exclude": "80"}),
            "INVALID_OPTION",
            "ports_exclude",
        ),
        (
            json!({"tunlink": "wan6", "mtu": 100}),
            "INVALID_OPTION",
            "mtu",
        ),
        (
            json!({"tunlink": "wan6", "encaplimit": "lots"}),
            "INVALID_OPTION",
            "encaplimit",
        ),
    ];
    for (config, code, needle) in cases {
        let (rc, sys) = setup(config.clone(), Some(st.clone()));
        assert_ne!(rc, 0, "{config}");
        let err = notify(&sys, 3);
        assert_eq!(err[0]["error"][0], code, "{config}: {:?}", sys.log);
        assert!(
            err[0]["error"][1].as_str().unwrap().contains(needle),
            "{config}: {}",
            err[0]["error"][1]
        );
        assert_eq!(
            notify(&sys, 4).len(),
            1,
            "{config}: permanent errors block restart"
        );
        assert!(
            notify(&sys, 0).is_empty() && sys.nft.is_empty() && kernel(&sys, "addr_add").is_empty(),
            "{config}"
        );
    }
}

#[test]
fn hostile_strings_never_reach_nft_or_a_shell() {
    let st = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    for (key, value) in [
        ("tunlink", "wan6\"; flush ruleset; \""),
        ("zone", "wan'$(reboot)'"),
        ("zone", "wan\n}\ntable ip x {"),
        ("isp", "v6plus`id`"),
        ("rule", "type=map-e;reboot"),
        ("peeraddr", "2001:db8::1\"; drop"),
        ("ports_exclude", "7488;flush"),
    ] {
        let (rc, sys) = setup(json!({"tunlink": "wan6", key: value}), Some(st.clone()));
        assert_ne!(rc, 0, "{key}={value:?}");
        assert!(sys.nft.is_empty(), "{key}");
        assert!(notify(&sys, 0).is_empty(), "{key}");
        assert!(
            notify(&sys, 1).is_empty(),
            "{key}: no proto task with a hostile config"
        );
    }
    // A hostile interface name is refused before anything is sent.
    let mut sys = DryRun::new(Some(st));
    assert_ne!(handler::setup(&mut sys, EXE, "wan;reboot", "{}"), 0);
    assert!(sys.calls.is_empty() && sys.nft.is_empty());
}

#[test]
fn teardown_removes_what_setup_added_and_is_idempotent() {
    let (_, mut sys) = setup(
        json!({"tunlink": "wan6"}),
        Some(status(&[("240b:10:3f6c:d400::", 56)], &[])),
    );
    sys.calls.clear();
    sys.nft.clear();
    assert_eq!(handler::teardown(&mut sys, "wanmap"), 0);
    let del = kernel(&sys, "addr_del");
    assert_eq!(del[0]["address"], "240b:10:3f6c:d400:6a:483f:6c00:d400/128");
    assert_eq!(del[0]["dev"], "wan");
    assert_eq!(
        sys.nft,
        ["add table ip mape_wanmap\ndelete table ip mape_wanmap\n"]
    );
    // Second teardown: no state left, only the (harmless) table delete again.
    sys.calls.clear();
    assert_eq!(handler::teardown(&mut sys, "wanmap"), 0);
    assert!(kernel(&sys, "addr_del").is_empty());
}

#[test]
fn watch_detects_a_prefix_change() {
    let config = json!({"tunlink": "wan6"}).to_string();
    let old: mape::engine::CustomerPrefix = "240b:10:3f6c:d400::/56".parse().unwrap();
    let mut same = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert_eq!(
        handler::watch_once(&mut same, "wanmap", &config, Some(old)),
        handler::WatchVerdict::Same
    );
    let mut changed = DryRun::new(Some(status(&[("240b:10:1111:2200::", 56)], &[])));
    match handler::watch_once(&mut changed, "wanmap", &config, Some(old)) {
        handler::WatchVerdict::Changed(why) => {
            assert!(why.contains("240b:10:1111:2200::/56"), "{why}")
        }
        v => panic!("{v:?}"),
    }
    // Waiting for a prefix: one arrives.
    let mut arrived = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert!(matches!(
        handler::watch_once(&mut arrived, "wanmap", &config, None),
        handler::WatchVerdict::Changed(_)
    ));
    // Still nothing usable: keep waiting.
    let mut nothing = DryRun::new(Some(status(&[("2409:10::", 56)], &[])));
    assert_eq!(
        handler::watch_once(&mut nothing, "wanmap", &config, None),
        handler::WatchVerdict::Same
    );
}

#[test]
fn long_interface_names_are_shortened() {
    let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert_eq!(
        handler::setup(
            &mut sys,
            EXE,
            "wan6_mape_long",
            &json!({"tunlink": "wan6"}).to_string()
        ),
        0
    );
    let up = notify(&sys, 0)[0];
    let ifname = up["ifname"].as_str().unwrap();
    assert!(ifname.len() <= 15 && ifname.starts_with("map-"), "{ifname}");
    assert!(sys.nft[0].contains(&format!("oifname \"{ifname}\"")));
}

#[test]
fn without_tunlink_the_interface_with_a_mapping_prefix_is_used() {
    let (code, sys) = setup(json!({}), Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert_eq!(code, 0, "{:?}", sys.log);
    assert_eq!(notify(&sys, 6)[0]["ifname"], "wan6");
    assert_eq!(notify(&sys, 0)[0]["tunnel"]["link"], "wan6");
}

#[test]
fn dhcpv6_script_dynamic_interface_through_the_map_compat_name() {
    // Exactly what odhcp6c's dhcpv6.script passes to `ubus call network add_dynamic` when the
    // ISP sends option 94 (the compat package answers as proto `map`).
    let config = json!({
        "name": "wan6_4", "ifname": "@wan6", "proto": "map", "type": "map-e",
        "_prefsig": " 2001:db8:12:3400::/56",
        "rule": "type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1,",
        "tunlink": "wan6", "zone": "wan"
    });
    let mut sys = DryRun::new(Some(status(&[("2001:db8:12:3400::", 56)], &[])));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wan6_4", &config.to_string()),
        0,
        "{:?}",
        sys.log
    );
    let up = notify(&sys, 0)[0];
    assert_eq!(up["ifname"], "map-wan6_4");
    assert_eq!(up["tunnel"]["local"], "2001:db8:12:3400:0:c000:212:34");
    assert_eq!(up["tunnel"]["remote"], "2001:db8:ffff::1");
    assert_eq!(up["ipaddr"][0]["ipaddr"], "192.0.2.18");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mape"))
        .args(["netifd", "map", "dump"])
        .output()
        .unwrap();
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dump["name"], "map");
}

#[test]
fn dry_run_teardown_knows_what_the_dry_run_setup_added_with_state_dir() {
    let dir = std::env::temp_dir().join(format!("mape-dry-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = env!("CARGO_BIN_EXE_mape");
    let status = r#"{"up":true,"l3_device":"wan","ipv6-prefix":[{"address":"240b:10:3f6c:d400::","mask":56}]}"#;
    let run = |action: &str| {
        let out = std::process::Command::new(bin)
            .args([
                "netifd",
                action,
                "wanmap",
                r#"{"tunlink":"wan6"}"#,
                "--dry-run",
                "--tunlink-status",
                status,
            ])
            .arg("--state-dir")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    run("setup");
    assert!(dir.join("wanmap.json").exists());
    let down = run("teardown");
    let del: Vec<&Value> = down["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["method"] == "addr_del")
        .collect();
    assert_eq!(
        del[0]["args"]["address"],
        "240b:10:3f6c:d400:6a:483f:6c00:d400/128"
    );
    assert!(!dir.join("wanmap.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn setup_over_a_live_setup_with_another_prefix_removes_the_old_address() {
    let (_, mut sys) = setup(
        json!({"tunlink": "wan6"}),
        Some(status(&[("240b:10:3f6c:d400::", 56)], &[])),
    );
    sys.calls.clear();
    sys.link_status = Some(status(&[("240b:10:1111:2200::", 56)], &[]));
    assert_eq!(
        handler::setup(
            &mut sys,
            EXE,
            "wanmap",
            &json!({"tunlink": "wan6"}).to_string()
        ),
        0
    );
    let del = kernel(&sys, "addr_del");
    assert_eq!(del.len(), 1);
    assert_eq!(del[0]["address"], "240b:10:3f6c:d400:6a:483f:6c00:d400/128");
    assert_eq!(
        kernel(&sys, "addr_add")[0]["address"],
        "240b:10:1111:2200:6a:4811:1100:2200/128"
    );
    // Same prefix again: nothing to remove.
    sys.calls.clear();
    assert_eq!(
        handler::setup(
            &mut sys,
            EXE,
            "wanmap",
            &json!({"tunlink": "wan6"}).to_string()
        ),
        0
    );
    assert!(kernel(&sys, "addr_del").is_empty());
}

/// A router for several handler processes at once: one kernel (addresses, nft tables) and one
/// state directory, shared by every `Shared` system; netifd answers from `link`. `on_update`
/// runs when this system's setup sends its update (notify_proto action 0), and that call then
/// fails as a ubus timeout does.
#[derive(Default)]
struct Router {
    state: std::collections::BTreeMap<String, Value>,
    addrs: std::collections::BTreeSet<(String, std::net::Ipv6Addr)>,
    tables: std::collections::BTreeSet<String>,
    tokens: u32,
}

struct Shared<'a> {
    router: std::rc::Rc<std::cell::RefCell<Router>>,
    link: Value,
    on_update: Option<Box<dyn FnMut() + 'a>>,
    calls: Vec<Value>,
    log: Vec<String>,
}

impl<'a> Shared<'a> {
    fn new(router: &std::rc::Rc<std::cell::RefCell<Router>>, link: Value) -> Self {
        Shared {
            router: router.clone(),
            link,
            on_update: None,
            calls: Vec::new(),
            log: Vec::new(),
        }
    }
}

impl handler::System for Shared<'_> {
    fn ubus_call(
        &mut self,
        object: &str,
        method: &str,
        args: &Value,
    ) -> Result<Value, handler::SysError> {
        if method == "status" {
            return Ok(self.link.clone());
        }
        self.calls
            .push(json!({"object": object, "method": method, "args": args}));
        if method == "notify_proto" && args["action"] == 0 {
            if let Some(mut f) = self.on_update.take() {
                f();
                return Err(handler::SysError(
                    "ubus failed: Command failed: Request timed out (exit status: 7)".into(),
                ));
            }
        }
        Ok(Value::Null)
    }
    fn nft_apply(&mut self, script: &str) -> Result<(), handler::SysError> {
        let name = script
            .split_whitespace()
            .skip_while(|w| *w != "ip")
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut r = self.router.borrow_mut();
        if script.contains(&format!("table ip {name} {{")) {
            r.tables.insert(name);
        } else {
            r.tables.remove(&name);
        }
        Ok(())
    }
    fn addr_add(&mut self, dev: &str, addr: std::net::Ipv6Addr) -> Result<(), handler::SysError> {
        self.router.borrow_mut().addrs.insert((dev.into(), addr));
        Ok(())
    }
    fn addr_del(&mut self, dev: &str, addr: std::net::Ipv6Addr) -> Result<(), handler::SysError> {
        self.router.borrow_mut().addrs.remove(&(dev.into(), addr));
        Ok(())
    }
    fn link_mtu(&mut self, _dev: &str) -> Option<u32> {
        None
    }
    fn save_state(&mut self, iface: &str, state: &Value) -> Result<(), handler::SysError> {
        self.router
            .borrow_mut()
            .state
            .insert(iface.into(), state.clone());
        Ok(())
    }
    fn load_state(&mut self, iface: &str) -> Option<Value> {
        self.router.borrow().state.get(iface).cloned()
    }
    fn clear_state(&mut self, iface: &str) {
        self.router.borrow_mut().state.remove(iface);
    }
    fn state_ifaces(&mut self) -> Vec<String> {
        self.router.borrow().state.keys().cloned().collect()
    }
    fn owner_token(&mut self) -> String {
        let mut r = self.router.borrow_mut();
        r.tokens += 1;
        format!("0.{}", r.tokens)
    }
    fn log(&mut self, line: &str) {
        self.log.push(line.into());
    }
}

fn watch_owner(calls: &[Value]) -> String {
    let task = calls
        .iter()
        .find(|c| c["args"]["action"] == 1)
        .expect("a watch task");
    let cmd: Vec<&str> = task["args"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let at = cmd.iter().position(|w| *w == "--owner").unwrap();
    cmd[at + 1].to_string()
}

/// `ubus call network restart`: netifd re-executes itself while a setup of the old netifd is
/// still waiting for its update to be answered. The new netifd's setup of the same interface
/// brings it up (same table, same CE address); then the old setup's call times out. Its
/// rollback must leave the live table and address alone, and its watch task must end.
#[test]
fn a_stale_setup_whose_update_times_out_leaves_the_live_setup_alone() {
    let router = std::rc::Rc::new(std::cell::RefCell::new(Router::default()));
    let link = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    let config = json!({"tunlink": "wan6"}).to_string();
    let ce: std::net::Ipv6Addr = "240b:10:3f6c:d400:6a:483f:6c00:d400".parse().unwrap();
    let mut live_calls = Vec::new();
    let mut stale = Shared::new(&router, link.clone());
    stale.on_update = Some(Box::new(|| {
        let mut live = Shared::new(&router, link.clone());
        assert_eq!(handler::setup(&mut live, EXE, "wanmap", &config), 0);
        live_calls = live.calls;
    }));
    assert_eq!(
        handler::setup(&mut stale, EXE, "wanmap", &config),
        1,
        "the stale setup fails"
    );
    let stale_log = stale.log.join("\n");
    drop(stale);

    let r = router.borrow();
    assert!(
        r.tables.contains("mape_wanmap"),
        "the live table is gone: {stale_log}"
    );
    assert!(
        r.addrs.contains(&("wan".to_string(), ce)),
        "the live CE address is gone: {stale_log}"
    );
    assert!(
        stale_log.contains("another setup owns the interface"),
        "{stale_log}"
    );
    // The state is the live setup's, and only its watch task keeps running.
    let live_owner = watch_owner(&live_calls);
    assert_eq!(r.state["wanmap"]["owner"], live_owner.as_str());
    assert_eq!(r.state["wanmap"]["ce"], ce.to_string());
    drop(r);
    let mut sys = Shared::new(&router, link.clone());
    assert!(handler::owns(&mut sys, "wanmap", &live_owner));
    assert!(!handler::owns(&mut sys, "wanmap", "0.1"));
}

/// Without a newer owner, a setup whose update fails removes everything it added.
#[test]
fn a_setup_whose_update_fails_removes_what_it_added() {
    let router = std::rc::Rc::new(std::cell::RefCell::new(Router::default()));
    let link = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    let mut sys = Shared::new(&router, link);
    sys.on_update = Some(Box::new(|| {}));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        1
    );
    let r = router.borrow();
    assert!(r.tables.is_empty(), "{:?}", r.tables);
    assert!(r.addrs.is_empty(), "{:?}", r.addrs);
    assert!(r.state.is_empty(), "{:?}", r.state);
}

/// A setup that has to wait for a prefix still claims the interface, so that its watch task
/// can tell when a newer setup took over.
#[test]
fn a_waiting_setup_claims_the_interface_for_its_watch_task() {
    let router = std::rc::Rc::new(std::cell::RefCell::new(Router::default()));
    let mut first = Shared::new(&router, status(&[], &[]));
    assert_eq!(
        handler::setup(&mut first, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    let waiting = watch_owner(&first.calls);
    assert!(handler::owns(&mut first, "wanmap", &waiting));
    let mut second = Shared::new(&router, status(&[("240b:10:3f6c:d400::", 56)], &[]));
    assert_eq!(
        handler::setup(&mut second, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    assert!(!handler::owns(&mut second, "wanmap", &waiting));
    let live = watch_owner(&second.calls);
    assert!(handler::owns(&mut second, "wanmap", &live));
    // A teardown leaves no owner: every watch task of the interface ends.
    assert_eq!(handler::teardown(&mut second, "wanmap"), 0);
    assert!(router.borrow().state.is_empty());
}

/// `network restart` again: the old netifd's teardown runs late, after the new netifd's setup
/// brought the interface up. It must not remove that setup's table and address.
#[test]
fn a_teardown_older_than_the_live_setup_leaves_it_alone() {
    let router = std::rc::Rc::new(std::cell::RefCell::new(Router::default()));
    let link = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    // The live setup claims the interface at time 5 ...
    router.borrow_mut().tokens = 4;
    let mut live = Shared::new(&router, link.clone());
    assert_eq!(
        handler::setup(&mut live, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    assert_eq!(router.borrow().state["wanmap"]["owner"], "0.5");
    // ... the old netifd's teardown started at time 1 and only now looks at the interface.
    router.borrow_mut().tokens = 0;
    let mut old = Shared::new(&router, link.clone());
    assert_eq!(handler::teardown(&mut old, "wanmap"), 0);
    let r = router.borrow();
    assert!(r.tables.contains("mape_wanmap"), "{:?}", old.log);
    assert_eq!(r.addrs.len(), 1);
    assert!(r.state.contains_key("wanmap"));
    drop(r);
    // An ordinary teardown (started after the setup) removes everything.
    router.borrow_mut().tokens = 10;
    assert_eq!(handler::teardown(&mut live, "wanmap"), 0);
    let r = router.borrow();
    assert!(r.tables.is_empty() && r.addrs.is_empty() && r.state.is_empty());
}

/// A DHCPv6 server renumbers in place: netifd lists the withdrawn prefix first, with its
/// lifetime over (`"valid": -1`), and the new one after it. Setup maps the new one, and the watch
/// task sees no change while that stays (it flipped between the two before).
#[test]
fn a_withdrawn_prefix_is_not_used() {
    let link = json!({"up": true, "l3_device": "wan", "ipv6-prefix": [
        {"address": "240b:10:3f6c:d400::", "mask": 56, "preferred": 0, "valid": -1},
        {"address": "240b:10:1111:2200::", "mask": 56, "preferred": 3599, "valid": 7199}]});
    let (code, sys) = setup(json!({"tunlink": "wan6"}), Some(link.clone()));
    assert_eq!(code, 0, "{:?}", sys.log);
    assert_eq!(
        kernel(&sys, "addr_add")[0]["address"],
        "240b:10:1111:2200:6a:4811:1100:2200/128"
    );
    let config = json!({"tunlink": "wan6"}).to_string();
    let new = "240b:10:1111:2200::/56".parse().unwrap();
    let mut watch = DryRun::new(Some(link));
    assert_eq!(
        handler::watch_once(&mut watch, "wanmap", &config, Some(new)),
        handler::WatchVerdict::Same
    );
    // Only withdrawn prefixes: none to map, as with no prefix at all.
    let gone = json!({"up": true, "l3_device": "wan", "ipv6-prefix": [
        {"address": "240b:10:3f6c:d400::", "mask": 56, "preferred": 0, "valid": 0}]});
    let (code, sys) = setup(json!({"tunlink": "wan6"}), Some(gone));
    assert_eq!(code, 0);
    assert!(kernel(&sys, "addr_add").is_empty());
    assert_eq!(notify(&sys, 3)[0]["error"][0], "NO_PREFIX");
}
