//! The netifd handler fed netifd-shaped config JSON and ubus status JSON, checked field by
//! field (through the dry-run system, which records instead of acting).

use mape::handler::{self, DryRun, Step, Verdict, Wake, Watcher};
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
    // No host dependency from the setup itself: its proto task registers it (see
    // host_dependency_from_the_task_after_the_setup_exited).
    assert!(notify(&sys, 6).is_empty());
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
    assert_eq!(
        &cmd[cmd.len() - 4..],
        ["--current", "240b:10:3f6c:d400::/56", "--owner", "0.1"]
    );

    // The nft table: one transaction, a chain per set, a walk over all 15 per destination (a
    // chain per position and protocol).
    assert_eq!(sys.nft.len(), 1);
    let nft = &sys.nft[0];
    assert!(nft.contains("table ip mape_wanmap {"));
    assert!(nft.contains("chain set_14 {") && !nft.contains("chain set_15 {"));
    assert_eq!(nft.matches("\tchain tcp_step").count(), 15);
    assert_eq!(nft.matches("\tchain udp_step").count(), 15);
    // ICMP, and where the TCP and UDP walks start new destinations.
    assert_eq!(nft.matches("numgen inc mod 15 vmap").count(), 3);
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
    // The CE address lies outside the /64 (subnet 0 of the /56): normal, no warning.
    assert!(
        !sys.log.iter().any(|l| l.contains("warning")),
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
    assert!(sys.nft[0]
        .contains("chain set_0 {\n\t\tmeta l4proto tcp snat ip to 192.0.2.18:1232-1235\n"));
    assert!(sys.nft[0].contains("numgen inc mod 63 vmap { 0 : goto set_0,"));
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

/// The watch task's verdict through its public pieces: what setup saw, then the link as
/// netifd reports it later.
fn watch_verdicts(config: &str, current: Option<&str>, looks: &[Option<Value>]) -> Vec<Verdict> {
    let current = current.map(|p| p.parse().unwrap());
    let (cfg, key) = handler::watch_start(config, current).unwrap();
    let mut w = Watcher::new(key);
    looks
        .iter()
        .map(|st| {
            let mut sys = DryRun::new(st.clone());
            if st.is_none() {
                sys.fail_on(Some(Step::LinkStatus));
            }
            w.feed(&handler::watch::look(&mut sys, "wanmap", &cfg, None))
        })
        .collect()
}

#[test]
fn watch_restarts_only_when_the_mapping_changes() {
    let config = json!({"tunlink": "wan6"}).to_string();
    let pd56 = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    let other = status(&[("240b:10:1111:2200::", 56)], &[]);
    // The home gateway's RA /64 and the delegated /60 of the same /56: same mapping.
    let ra64 = status(&[], &[("240b:10:3f6c:d400:1:2:3:4", 64)]);
    let pd60 = status(&[("240b:10:3f6c:d410::", 60)], &[]);
    let v = watch_verdicts(
        &config,
        Some("240b:10:3f6c:d400::/64"),
        &[
            Some(ra64.clone()),
            Some(pd60),
            Some(ra64),
            Some(pd56.clone()),
        ],
    );
    assert_eq!(
        v,
        [Verdict::Keep, Verdict::Keep, Verdict::Keep, Verdict::Keep]
    );
    // Another /56: another IPv4 and PSID, restart once confirmed by a second look.
    let v = watch_verdicts(
        &config,
        Some("240b:10:3f6c:d400::/56"),
        &[Some(other.clone()), Some(other)],
    );
    assert_eq!(v[0], Verdict::Confirm);
    match &v[1] {
        Verdict::Restart(why) => assert!(why.contains("240b:10:1111:2200::/56"), "{why}"),
        v => panic!("{v:?}"),
    }
    // Waiting for a prefix: one arrives; nothing usable: keep waiting.
    let v = watch_verdicts(&config, None, &[Some(pd56.clone()), Some(pd56)]);
    assert!(matches!(v[1], Verdict::Restart(_)), "{v:?}");
    let v = watch_verdicts(&config, None, &[Some(status(&[("2409:10::", 56)], &[]))]);
    assert_eq!(v, [Verdict::Keep]);
}

#[test]
fn watch_never_restarts_on_a_failed_status_or_a_link_that_is_not_up() {
    let config = json!({"tunlink": "wan6"}).to_string();
    let other = status(&[("240b:10:1111:2200::", 56)], &[]);
    let mut pending = other.clone();
    pending["pending"] = json!(true);
    let mut down = other.clone();
    down["up"] = json!(false);
    let empty = status(&[], &[]);
    // A ubus timeout (None: the status call fails), netifd busy (pending), the link down, no
    // prefix: each is "unknown", and breaks a pending confirmation.
    let v = watch_verdicts(
        &config,
        Some("240b:10:3f6c:d400::/56"),
        &[
            None,
            Some(pending),
            Some(down),
            Some(empty),
            None,
            Some(other.clone()),
            None,
            Some(other),
        ],
    );
    assert_eq!(
        v[..7],
        [
            Verdict::Keep,
            Verdict::Keep,
            Verdict::Keep,
            Verdict::Keep,
            Verdict::Keep,
            Verdict::Confirm,
            Verdict::Keep
        ]
    );
    assert_eq!(
        v[7],
        Verdict::Confirm,
        "the odd answer reset the confirmation"
    );
}

/// A scripted stand-in for netifd's notifications.
struct Script(std::collections::VecDeque<Wake>);

/// What [`Script`] panics with when the task asks for more events than scripted.
struct WantedMore;

impl handler::watch::Events for Script {
    fn next(&mut self, _wait: std::time::Duration) -> Wake {
        self.0
            .pop_front()
            .unwrap_or_else(|| std::panic::panic_any(WantedMore))
    }
    fn subscribed(&self) -> bool {
        true
    }
}

#[test]
fn the_watch_task_follows_notifications_and_confirms_by_asking() {
    let config = json!({"tunlink": "wan6"}).to_string();
    let (cfg, key) =
        handler::watch_start(&config, Some("240b:10:3f6c:d400::/56".parse().unwrap())).unwrap();
    let mut w = Watcher::new(key);
    let new = status(&[("240b:10:1111:2200::", 56)], &[]);
    let mut link = new.clone();
    link["interface"] = json!("wan6");
    // An update of another interface, a timeout (poll), then the renumbering notification;
    // the confirmation asks netifd (the dry run answers with the new status).
    let mut ev = Script([Wake::Other, Wake::Timeout, Wake::Link(link), Wake::Timeout].into());
    let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    // The poll sees the old prefix; after the notification the status call sees the new one.
    let why = {
        let mut calls = 0;
        let mut wrapped = Hooked {
            sys: &mut sys,
            before: Box::new(|sys: &mut DryRun, what: &str| {
                if what == "status" {
                    calls += 1;
                    if calls > 1 {
                        sys.link_status = Some(new.clone());
                    }
                }
            }),
        };
        handler::watch::run(
            &mut wrapped,
            &mut ev,
            &mut w,
            handler::watch::TaskParams {
                iface: "wanmap",
                cfg: &cfg,
                retry_after: None,
                usage: None,
                owner: None,
            },
        )
    };
    assert!(why.contains("240b:10:1111:2200::/56"), "{why}");
    assert!(ev.0.is_empty(), "every scripted event was used");
}

/// A dry run with `before` called ahead of every action, with the dry run and the action's name
/// (the ubus method, e.g. `status`; `nft`, `addr_add`, `save_state`): tests change what netifd
/// answers, or make a step fail, from some point on.
struct Hooked<'a> {
    sys: &'a mut DryRun,
    before: Before<'a>,
}

type Before<'a> = Box<dyn FnMut(&mut DryRun, &str) + 'a>;

impl handler::System for Hooked<'_> {
    fn ubus_call(&mut self, o: &str, m: &str, a: &Value) -> Result<Value, handler::SysError> {
        (self.before)(self.sys, m);
        self.sys.ubus_call(o, m, a)
    }
    fn nft_apply(&mut self, s: &str) -> Result<(), handler::SysError> {
        (self.before)(self.sys, "nft");
        self.sys.nft_apply(s)
    }
    fn addr_add(&mut self, d: &str, a: std::net::Ipv6Addr) -> Result<(), handler::SysError> {
        (self.before)(self.sys, "addr_add");
        self.sys.addr_add(d, a)
    }
    fn addr_del(&mut self, d: &str, a: std::net::Ipv6Addr) -> Result<(), handler::SysError> {
        self.sys.addr_del(d, a)
    }
    fn link_mtu(&mut self, d: &str) -> Option<u32> {
        self.sys.link_mtu(d)
    }
    fn save_state(&mut self, s: &mape::state::State) -> Result<(), handler::SysError> {
        (self.before)(self.sys, "save_state");
        self.sys.save_state(s)
    }
    fn load_state(&mut self, i: &str) -> Option<mape::state::State> {
        self.sys.load_state(i)
    }
    fn clear_state(&mut self, i: &str) {
        self.sys.clear_state(i)
    }
    fn state_ifaces(&mut self) -> Vec<String> {
        self.sys.state_ifaces()
    }
    fn owner_token(&mut self) -> String {
        self.sys.owner_token()
    }
    fn failures(&mut self, i: &str) -> u32 {
        self.sys.failures(i)
    }
    fn set_failures(&mut self, i: &str, n: u32) {
        self.sys.set_failures(i, n)
    }
    fn wait_exited(&mut self, pid: u32, limit: std::time::Duration) -> bool {
        self.sys.wait_exited(pid, limit)
    }
    fn log(&mut self, l: &str) {
        self.sys.log(l)
    }
}

/// Runs the proto task of the setup with token `owner` (prefix 240b:10:3f6c:d400::/56) over
/// scripted notifications; why it ended, or `None` if it was still running when the script
/// ran out (it asked for another event).
fn run_task(
    sys: &mut dyn handler::System,
    config: &str,
    events: Vec<Wake>,
    owner: &str,
) -> Option<String> {
    run_task_on(sys, config, "240b:10:3f6c:d400::/56", events, owner)
}

/// [`run_task`] of a setup on prefix `current`.
fn run_task_on(
    sys: &mut dyn handler::System,
    config: &str,
    current: &str,
    events: Vec<Wake>,
    owner: &str,
) -> Option<String> {
    let (cfg, key) = handler::watch_start(config, Some(current.parse().unwrap())).unwrap();
    let mut events = Script(events.into());
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler::watch::run(
            sys,
            &mut events,
            &mut Watcher::new(key),
            handler::watch::TaskParams {
                iface: "wanmap",
                cfg: &cfg,
                retry_after: None,
                usage: None,
                owner: Some(owner),
            },
        )
    }));
    match ran {
        Ok(why) => Some(why),
        Err(p) if p.is::<WantedMore>() => None,
        Err(p) => std::panic::resume_unwind(p),
    }
}

/// Sets `wanmap` up on 240b:10:3f6c:d400::/56 (v6plus), then runs its task while netifd
/// answers with prefix `to` and sends no notification at all: the task's first look and its
/// confirmation (after a short wait) decide. The system and why the task ended (`None`: it runs
/// on).
fn task_after_setup_sees(to: &str) -> (DryRun, Option<String>) {
    let config = r#"{"tunlink":"wan6"}"#;
    let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert_eq!(handler::setup(&mut sys, EXE, "wanmap", config), 0);
    let owner = sys.state[0].owner.clone().unwrap();
    sys.link_status = Some(status(&[(to, 56)], &[]));
    let why = run_task(&mut sys, config, vec![Wake::Timeout], &owner);
    (sys, why)
}

/// A running task looks at the link once when it starts: a renumbering between its setup's look
/// and its subscription is not left to the poll (the task follows it in place).
#[test]
fn a_running_task_looks_once_at_start() {
    let (sys, why) = task_after_setup_sees("240b:10:1111:2200::");
    assert_eq!(why, None, "the task runs on");
    assert_eq!(sys.state[0].prefix, "240b:10:1111:2200::/56");
    assert!(
        sys.log
            .iter()
            .any(|l| l.contains("240b:10:1111:2200::/56 now maps to")),
        "{:?}",
        sys.log
    );
}

/// The notify_proto calls of the dry run since call `from`, each as (action, link-up).
fn notifies(sys: &DryRun, from: usize) -> Vec<(i64, Option<bool>)> {
    sys.calls[from..]
        .iter()
        .filter(|c| c["method"] == "notify_proto")
        .map(|c| {
            (
                c["args"]["action"].as_i64().unwrap(),
                c["args"]["link-up"].as_bool(),
            )
        })
        .collect()
}

/// A renumbering of a running interface is followed by its proto task, in place: netifd is told
/// the link is lost, the CE address moves, the table is refilled, and the update brings the
/// interface up on the new mapping (a tunnel with the new local address); the task runs on
/// with the new mapping, and a teardown later removes everything.
#[test]
fn a_renumbering_is_followed_in_place() {
    let config = r#"{"tunlink":"wan6"}"#;
    let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert_eq!(handler::setup(&mut sys, EXE, "wanmap", config), 0);
    let before = sys.state[0].clone();
    let owner = before.owner.clone().unwrap();
    let from = sys.calls.len();
    let new = status(&[("240b:10:1111:2200::", 56)], &[]);
    let mut link = new.clone();
    link["interface"] = json!("wan6");
    sys.link_status = Some(new.clone());
    // The notification, the confirming look; then the same prefix again: nothing more to do.
    let same = link.clone();
    let why = run_task(
        &mut sys,
        config,
        vec![Wake::Link(link), Wake::Timeout, Wake::Link(same)],
        &owner,
    );
    assert_eq!(why, None, "the task runs on: {:?}", sys.log);
    let after = sys.state[0].clone();
    assert_eq!(
        after.owner.as_deref(),
        Some(owner.as_str()),
        "the same owner"
    );
    assert_eq!(after.prefix, "240b:10:1111:2200::/56");
    assert_ne!(after.ce, before.ce);
    assert_eq!(
        sys.addresses,
        [("wan".to_string(), after.ce)],
        "only the new CE address"
    );
    assert_eq!(sys.tables, ["mape_wanmap"]);
    // netifd: the task's host dependency, the link loss, then the update; nothing else (no
    // restart, no new task)
    assert_eq!(
        notifies(&sys, from),
        [(6, None), (0, Some(false)), (0, Some(true))]
    );
    let update = sys.calls[from..]
        .iter()
        .rfind(|c| c["method"] == "notify_proto")
        .unwrap();
    assert_eq!(
        update["args"]["tunnel"]["local"],
        json!(after.ce.to_string())
    );
    // the order: link lost, old address gone, new one added, table refilled, update
    let steps: Vec<String> = sys.calls[from..]
        .iter()
        .filter(|c| c["method"] != "wait_exited" && c["args"]["action"] != 6)
        .map(|c| format!("{} {}", c["method"].as_str().unwrap(), c["args"]["link-up"]))
        .collect();
    assert_eq!(
        steps,
        [
            "notify_proto false",
            "addr_del null",
            "addr_add null",
            "notify_proto true"
        ],
        "{steps:?}"
    );
    let refill = sys.nft.last().unwrap();
    assert!(
        refill.contains("flush chain ip mape_wanmap set_0") && !refill.contains("vmap"),
        "{refill}"
    );
    assert!(refill.contains(&format!(
        "snat ip to {}",
        after.mapping.as_ref().unwrap().ipv4
    )));
    assert!(after.nft.contains("vmap") && after.nft.contains("240b:10:1111:2200::/56"));
    assert!(
        sys.log
            .iter()
            .any(|l| l.contains("up: ") && l.contains("240b:10:1111:2200::/56")),
        "{:?}",
        sys.log
    );

    assert_eq!(handler::teardown(&mut sys, "wanmap"), 0);
    assert!(sys.tables.is_empty() && sys.addresses.is_empty() && sys.state.is_empty());
}

/// A renumbering in place into another rule with the same BR (option 94 with RFC 7597 Example 1
/// and a v6plus-shaped rule: 63 port sets, then 15): after the link loss, a bridge refills the
/// old table's 63 chains with the new mapping's 15 port sets; after the update, the new script
/// is loaded whole. Without the old table (the bridge fails), it is loaded whole before the
/// update.
#[test]
fn a_renumbering_in_place_into_another_shape_loads_the_table_whole() {
    let rules = "type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1 \
                 type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=198.51.100.0,ipv6prefix=2001:db8:8800::,offset=4,br=2001:db8:ffff::1";
    let config = json!({"tunlink": "wan6", "rule": rules}).to_string();
    for table_gone in [false, true] {
        let mut sys = DryRun::new(Some(status(&[("2001:db8:12:3400::", 56)], &[])));
        assert_eq!(handler::setup(&mut sys, EXE, "wanmap", &config), 0);
        assert!(sys.state[0].nft.contains("chain set_62 {"));
        if table_gone {
            sys.tables.clear();
        }
        let owner = sys.state[0].owner.clone().unwrap();
        let (from, scripts) = (sys.calls.len(), sys.nft.len());
        let mut link = status(&[("2001:db8:8812:3400::", 56)], &[]);
        sys.link_status = Some(link.clone());
        link["interface"] = json!("wan6");
        let order = std::cell::RefCell::new(Vec::new());
        let mut hooked = Hooked {
            sys: &mut sys,
            before: Box::new(|_, m| {
                if ["nft", "notify_proto", "status"].contains(&m) {
                    order.borrow_mut().push(m.to_string())
                }
            }),
        };
        let why = run_task_on(
            &mut hooked,
            &config,
            "2001:db8:12:3400::/56",
            vec![Wake::Link(link.clone()), Wake::Timeout, Wake::Link(link)],
            &owner,
        );
        drop(hooked);
        assert_eq!(why, None, "the task runs on: {:?}", sys.log);
        let after = &sys.state[0];
        assert_eq!(after.prefix, "2001:db8:8812:3400::/56");
        assert!(after.nft.contains("chain set_14 {") && !after.nft.contains("chain set_15 {"));
        assert_eq!(
            notifies(&sys, from)[1..],
            [(0, Some(false)), (0, Some(true))]
        );
        assert_eq!(sys.tables, ["mape_wanmap"]);
        let order = order.into_inner();
        let nft = &sys.nft[scripts..];
        if table_gone {
            // the bridge fails as a whole; the old table deleted (nothing), the new one loaded,
            // all before the update
            assert_eq!(nft.len(), 2, "{nft:?}");
            assert_eq!(nft[0], mape::render::nft::delete_script("mape_wanmap"));
            assert_eq!(nft[1], after.nft);
            // the confirming look, the link loss, the failed bridge, the delete, the whole
            // table, the update
            let want = [
                "status",
                "notify_proto",
                "nft",
                "nft",
                "nft",
                "notify_proto",
            ];
            assert!(order.windows(6).any(|w| w == want), "{order:?}");
            continue;
        }
        assert_eq!(nft.len(), 2, "{nft:?}");
        let bridge = &nft[0];
        assert_eq!(
            bridge.matches("flush chain ip mape_wanmap set_").count(),
            63,
            "{bridge}"
        );
        assert!(bridge.contains(
            "flush chain ip mape_wanmap set_62\nadd rule ip mape_wanmap set_62 meta l4proto tcp snat ip to 198.51.100.18:"
        ));
        assert!(!bridge.contains("192.0.2.") && !bridge.contains("vmap"));
        assert_eq!(nft[1], after.nft);
        // the confirming look (no status call of the renumbering's own), the link loss, the
        // bridge, the update, then the whole table
        let want = ["status", "notify_proto", "nft", "notify_proto", "nft"];
        assert!(order.windows(5).any(|w| w == want), "{order:?}");
        assert!(
            sys.log
                .iter()
                .any(|l| l.contains("(in place ") && l.contains(" bridged, update"))
                && sys
                    .log
                    .last()
                    .unwrap()
                    .contains("nft table of the new shape loaded"),
            "{:?}",
            sys.log
        );
    }
}

/// A step of the renumbering in place fails: before netifd took the interface down (the status
/// call, the link loss) nothing changed; after it, the state names what is there. Either way the
/// task ends (netifd tears the interface down and sets it up again) and the teardown leaves
/// nothing behind.
#[test]
fn a_failed_renumbering_in_place_ends_the_task_and_leaves_nothing() {
    let config = r#"{"tunlink":"wan6"}"#;
    for (step, untouched) in [
        (Step::Notify(0), true),
        (Step::SaveState, false),
        (Step::AddrAdd, false),
        (Step::NftApply, false),
    ] {
        let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
        assert_eq!(handler::setup(&mut sys, EXE, "wanmap", config), 0);
        let owner = sys.state[0].owner.clone().unwrap();
        let old_ce = sys.state[0].ce;
        let new = status(&[("240b:10:1111:2200::", 56)], &[]);
        let mut link = new.clone();
        link["interface"] = json!("wan6");
        sys.link_status = Some(new);
        // The notification and the confirming look work; the step fails in the renumbering
        // (which uses the confirming look's link status: no status call of its own).
        let why = {
            let mut failing = Hooked {
                sys: &mut sys,
                before: Box::new(|sys: &mut DryRun, _: &str| {
                    if sys.log.iter().any(|l| l.ends_with("renumbering in place")) {
                        sys.fail_on(Some(step));
                    }
                }),
            };
            run_task(
                &mut failing,
                config,
                vec![Wake::Link(link), Wake::Timeout],
                &owner,
            )
            .expect("the task ended")
        };
        sys.fail_on(None);
        assert!(why.contains("now maps to"), "{step:?}: {why}");
        // Untouched: the old CE address is still there (after the link loss it goes first).
        assert_eq!(
            sys.addresses.iter().any(|(_, a)| *a == old_ce),
            untouched,
            "{step:?}: {:?}",
            sys.addresses
        );
        assert!(
            sys.log.iter().any(|l| l.contains(if untouched {
                "not in place"
            } else {
                "renumbering in place failed"
            })),
            "{step:?}: {:?}",
            sys.log
        );
        // netifd ends nothing else: no update was sent after a failure
        assert!(!sys
            .log
            .iter()
            .any(|l| l.contains("up: ") && l.contains("1111")));
        assert_eq!(handler::teardown(&mut sys, "wanmap"), 0);
        assert!(
            sys.tables.is_empty() && sys.addresses.is_empty() && sys.state.is_empty(),
            "{step:?}: {:?} {:?} {:?}",
            sys.tables,
            sys.addresses,
            sys.state
        );
    }
}

/// A new mapping under another rule (OCN: another BR, and 63 port sets where v6plus has 15): not
/// in place (the host dependency is on the old BR) and no note: the task ends, the teardown
/// removes the table and the setup loads a new one.
#[test]
fn another_shape_is_not_refilled() {
    let (mut sys, why) = task_after_setup_sees("2400:4050:a0:c400::");
    let why = why.expect("the task ended");
    assert!(why.contains("now maps to"), "{why}");
    assert!(
        sys.log
            .iter()
            .any(|l| l.contains("not in place (the BR changed)")),
        "{:?}",
        sys.log
    );
    assert_eq!(handler::teardown(&mut sys, "wanmap"), 0);
    assert!(sys.tables.is_empty());
}

#[test]
fn each_failure_at_each_step_leaves_nothing_and_reports_its_code() {
    let st = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    for (step, code) in [
        (Step::SaveState, "ADDR_FAILED"),
        (Step::AddrAdd, "ADDR_FAILED"),
        (Step::NftApply, "NFT_FAILED"),
        (Step::Notify(0), "UPDATE_FAILED"),
    ] {
        let mut sys = DryRun::new(Some(st.clone()));
        sys.fail_on(Some(step));
        let rc = handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#);
        // The interface stays in setup with a retry task: netifd keeps it (a dynamic one too).
        assert_eq!(rc, 0, "{step:?}: {:?}", sys.log);
        assert!(
            sys.addresses.is_empty(),
            "{step:?}: address left: {:?}",
            sys.addresses
        );
        assert!(
            sys.tables.is_empty(),
            "{step:?}: table left: {:?}",
            sys.tables
        );
        assert!(sys.state.is_empty(), "{step:?}: state left");
        assert_eq!(notify(&sys, 3)[0]["error"][0], code, "{step:?}");
        assert!(
            notify(&sys, 4).is_empty(),
            "{step:?}: a transient failure must not block restarts"
        );
        assert!(notify(&sys, 0).is_empty(), "{step:?}: no update");
        let task = notify(&sys, 1);
        let argv: Vec<&str> = task[0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(&argv[1..4], ["netifd", "watch", "wanmap"]);
        assert_eq!(&argv[argv.len() - 2..], ["--retry-after", "5"], "{step:?}");
        // The next failure in a row waits longer; a success resets the back-off.
        let rc = handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#);
        assert_eq!(rc, 0);
        let task = notify(&sys, 1);
        assert_eq!(
            task[1]["command"].as_array().unwrap().last().unwrap(),
            "10",
            "{step:?}"
        );
        sys.fail_on(None);
        assert_eq!(
            handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
            0
        );
        assert!(sys.failures.is_empty());
        assert_eq!(sys.tables.len(), 1);
    }
    // A status call that fails: waiting, nothing touched, no block.
    let mut sys = DryRun::new(Some(st));
    sys.fail_on(Some(Step::LinkStatus));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    assert_eq!(notify(&sys, 3)[0]["error"][0], "NO_PREFIX");
    assert!(notify(&sys, 4).is_empty() && sys.addresses.is_empty() && sys.tables.is_empty());
    assert_eq!(handler::retry_delay(1).as_secs(), 5);
    assert_eq!(handler::retry_delay(20), handler::RETRY_MAX);
}

#[test]
fn a_stale_setup_whose_update_fails_leaves_the_live_setup_alone() {
    // After `network restart`, the setup of the previous netifd still runs. The new netifd's
    // setup completes while the old one waits for its update, which then fails: the old one
    // must not remove the live table and CE address.
    let st = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    let mut sys = DryRun::new(Some(st));
    sys.fail_on(Some(Step::Notify(0)));
    sys.before_update = Some(Box::new(|sys: &mut DryRun| {
        let fail = sys.take_fail();
        assert_eq!(
            handler::setup(sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
            0
        );
        sys.fail_on(fail);
    }));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    assert_eq!(sys.tables.len(), 1, "the live table stays");
    assert_eq!(sys.addresses.len(), 1, "the live CE address stays");
    let live = sys.state.iter().find(|s| s.name == "wanmap").unwrap();
    assert_eq!(live.owner.as_deref(), Some("0.2"));
    assert!(
        sys.log
            .iter()
            .any(|l| l.contains("another setup owns the interface")),
        "{:?}",
        sys.log
    );
}

#[test]
fn nft_failures_do_not_block_restarts() {
    let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    sys.fail_on(Some(Step::NftApply));
    handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#);
    assert_eq!(notify(&sys, 3)[0]["error"][0], "NFT_FAILED");
    assert!(notify(&sys, 4).is_empty());
}

#[test]
fn the_largest_legal_rule_gives_a_bounded_update() {
    // PSID offset 15: 32767 port sets of one port. data.mape leaves the list out (it follows
    // from the offset, length and PSID), and the state file's record derives it back.
    let rule = "type=map-e,ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=192.0.2.0,prefix4len=24,ealen=9,offset=15,br=2001:db8:ffff::1";
    let (code, sys) = setup(
        json!({"tunlink": "wan6", "rule": rule}),
        Some(status(&[("2001:db8:12:3400::", 56)], &[])),
    );
    assert_eq!(code, 0, "{:?}", sys.log);
    let up = notify(&sys, 0)[0];
    let mape = &up["data"]["mape"];
    assert_eq!(mape["port_sets_omitted"], true);
    assert!(mape.get("port_sets").is_none());
    assert!(up.to_string().len() < 4096, "{}", up.to_string().len());
    let rec = mape::state::MappingRecord::from_json(mape).unwrap();
    assert_eq!(rec.port_sets.len(), 32767);
    // The nft script is bounded too: one map of single ports, no chain per set
    // (tests/netns.rs loads it into the real kernel).
    let nft = &sys.nft[0];
    assert!(
        nft.len() <= mape::render::nft::MAX_SCRIPT,
        "{} bytes",
        nft.len()
    );
    assert!(!nft.contains("chain set_"));
    assert!(nft.contains("numgen inc mod 32767 map { 0 : 2, 1 : 4, "));
    assert_eq!(
        rec.port_sets.iter().map(|s| s.len()).sum::<u32>(),
        rec.port_count
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
    let (code, mut sys) = setup(json!({}), Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert_eq!(code, 0, "{:?}", sys.log);
    assert_eq!(notify(&sys, 0)[0]["tunnel"]["link"], "wan6");
    // The task's host dependency is on the link found.
    let owner = {
        use handler::System as _;
        sys.load_state("wanmap").unwrap().owner.unwrap()
    };
    handler::depend(&mut sys, "wanmap", &owner);
    assert_eq!(notify(&sys, 6)[0]["ifname"], "wan6");
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

#[test]
fn a_late_teardown_of_a_restarted_netifd_leaves_the_newer_setup_alone() {
    // network restart: the old netifd's teardown runs after the new netifd's setup.
    let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    // The teardown takes its token before the setup (it started first), runs after it.
    let early = sys.owner_token_for_tests();
    assert_eq!(
        handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    assert_eq!(handler::teardown_started_at(&mut sys, "wanmap", &early), 0);
    assert_eq!(
        (sys.tables.len(), sys.addresses.len()),
        (1, 1),
        "the live setup stays"
    );
    assert!(sys.state.iter().any(|s| s.name == "wanmap"));
    // A teardown that starts after the setup removes everything.
    assert_eq!(handler::teardown(&mut sys, "wanmap"), 0);
    assert!(sys.tables.is_empty() && sys.addresses.is_empty() && sys.state.is_empty());
}

#[test]
fn a_leftover_watch_task_ends_once_another_setup_owns_the_interface() {
    let mut sys = DryRun::new(Some(status(&[("240b:10:3f6c:d400::", 56)], &[])));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    let first = sys
        .state
        .iter()
        .find(|s| s.name == "wanmap")
        .unwrap()
        .owner
        .clone()
        .unwrap();
    let task = notify(&sys, 1)[0]["command"].clone();
    assert!(
        task.as_array().unwrap().iter().any(|a| a == &json!(first)),
        "{task}"
    );
    // A newer setup claims the interface; the first one's task sees it and ends.
    assert_eq!(
        handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    assert!(!handler::owns(&mut sys, "wanmap", &first));
    let why = run_task(&mut sys, r#"{"tunlink":"wan6"}"#, Vec::new(), &first).expect("ended");
    assert!(why.contains("another setup owns"), "{why}");
}

#[test]
fn netifd_s_expired_prefix_is_not_used() {
    // netifd lists a prefix the DHCPv6 server withdrew in place with "valid": -1, first.
    let st = json!({"up": true, "l3_device": "wan", "ipv6-prefix": [
        {"address": "240b:10:3f6c:d400::", "mask": 56, "preferred": -1, "valid": -1},
        {"address": "240b:10:1111:2200::", "mask": 56, "preferred": 3600, "valid": 7200}]});
    let (code, sys) = setup(json!({"tunlink": "wan6"}), Some(st));
    assert_eq!(code, 0, "{:?}", sys.log);
    assert_eq!(
        notify(&sys, 0)[0]["data"]["mape"]["prefix"],
        "240b:10:1111:2200::/56"
    );
}

#[test]
fn a_dhcpv6_interface_goes_with_its_binding() {
    // dhcpv6.script's map interface (it sets _prefsig) whose tunnel link is down and not setting
    // up (ifdown, link lost): the binding that provisioned it ended, and the script never removes
    // one, so the handler asks netifd to remove it rather than wait with the old rule.
    let dynamic = json!({"proto": "map", "tunlink": "wan6", "_prefsig": " 2001:db8:12:3400::/56",
        "rule": "type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1"});
    let down = json!({"up": false, "pending": false, "l3_device": "wan"});
    let pending = json!({"up": false, "pending": true, "l3_device": "wan"});
    let removes = |sys: &DryRun| {
        sys.calls
            .iter()
            .filter(|c| c["object"] == "network.interface.wan6_4" && c["method"] == "remove")
            .count()
    };
    let mut sys = DryRun::new(Some(down.clone()));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wan6_4", &dynamic.to_string()),
        0
    );
    assert_eq!(removes(&sys), 1, "{:?}", sys.calls);
    assert_eq!(notify(&sys, 3)[0]["error"][0], "NO_PREFIX");
    assert!(notify(&sys, 4).is_empty(), "not blocked: netifd removes it");
    assert!(sys.tables.is_empty() && sys.addresses.is_empty() && sys.state.is_empty());
    // Setting up again (odhcp6c's `bound` takes wan6 down and up): it waits, as before.
    let mut sys = DryRun::new(Some(pending.clone()));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wan6_4", &dynamic.to_string()),
        0
    );
    assert_eq!(removes(&sys), 0);
    // A configured interface waits for its link in both cases.
    let mut sys = DryRun::new(Some(down.clone()));
    let configured = json!({"proto": "map", "tunlink": "wan6", "rule": dynamic["rule"]});
    assert_eq!(
        handler::setup(&mut sys, EXE, "wan6_4", &configured.to_string()),
        0
    );
    assert_eq!(removes(&sys), 0);
    // The watch task of the dynamic one ends when the link goes (setup then removes it);
    // the configured one's keeps waiting.
    let (cfg, key) = handler::watch_start(&dynamic.to_string(), None).unwrap();
    let mut sys = DryRun::new(Some(down.clone()));
    let look = handler::watch::look(&mut sys, "wan6_4", &cfg, Some(&down));
    assert!(matches!(
        Watcher::new(key.clone()).feed(&look),
        Verdict::Restart(_)
    ));
    let look = handler::watch::look(&mut sys, "wan6_4", &cfg, Some(&pending));
    assert_eq!(Watcher::new(key).feed(&look), Verdict::Keep);
    let (cfg, key) = handler::watch_start(&configured.to_string(), None).unwrap();
    let look = handler::watch::look(&mut sys, "wan6_4", &cfg, Some(&down));
    assert_eq!(Watcher::new(key).feed(&look), Verdict::Keep);
}

/// The host dependency (the route to the BR through the tunnel link, as dslite.sh does) comes
/// from the proto task, after the setup that started it has exited: netifd takes the interface
/// down as soon as the dependency cannot be met, and a teardown it starts while the setup's
/// process still runs is lost (the interface then stays in teardown for good; seen in the
/// real-netifd bed with a link flap during a setup). A leftover task of an older setup
/// registers nothing.
#[test]
fn host_dependency_from_the_task_after_the_setup_exited() {
    use handler::System as _;
    let st = status(&[("240b:10:3f6c:d400::", 56)], &[]);
    let mut sys = DryRun::new(Some(st));
    assert_eq!(
        handler::setup(&mut sys, EXE, "wanmap", r#"{"tunlink":"wan6"}"#),
        0
    );
    let task = notify(&sys, 1)[0]["command"].clone();
    let argv: Vec<String> = serde_json::from_value(task).unwrap();
    let owner = argv[argv.iter().position(|a| a == "--owner").unwrap() + 1].clone();
    // The real owner token names the setup's pid; this one is a real pid too (ours: the task
    // must not wait for itself) and one of another process that has exited.
    let child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    let mut child = child;
    child.wait().unwrap();
    for (token, waits) in [
        (owner.clone(), None),
        (
            format!("{pid}.{}", owner.split('.').nth(1).unwrap()),
            Some(pid),
        ),
    ] {
        let mut s = sys.load_state("wanmap").unwrap();
        s.owner = Some(token.clone());
        sys.save_state(&s).unwrap();
        sys.calls.clear();
        handler::depend(&mut sys, "wanmap", &token);
        let waited: Vec<_> = sys
            .calls
            .iter()
            .filter(|c| c["method"] == "wait_exited")
            .map(|c| c["args"]["pid"].as_u64().unwrap() as u32)
            .collect();
        assert_eq!(waited, waits.into_iter().collect::<Vec<_>>(), "{token}");
        let dep = notify(&sys, 6);
        assert_eq!(dep.len(), 1, "{token}: {:?}", sys.calls);
        assert_eq!(dep[0]["ifname"], "wan6");
        assert_eq!(dep[0]["host"], "2404:9200:225:100::64");
        let pos_wait = sys.calls.iter().position(|c| c["method"] == "wait_exited");
        let pos_dep = sys.calls.iter().position(|c| c["args"]["action"] == 6);
        assert!(
            pos_wait < pos_dep,
            "{token}: registered before the setup exited"
        );
    }
    // A task whose setup no longer owns the interface registers nothing.
    sys.calls.clear();
    handler::depend(&mut sys, "wanmap", "1.1");
    assert!(notify(&sys, 6).is_empty());
    // The real wait: an exited and reaped process is gone at once, a live one is waited for.
    let mut real = handler::RealSystem::new();
    let t0 = std::time::Instant::now();
    assert!(real.wait_exited(pid, std::time::Duration::from_secs(2)));
    let mut sleeper = std::process::Command::new("sleep")
        .arg("5")
        .spawn()
        .unwrap();
    assert!(!real.wait_exited(sleeper.id(), std::time::Duration::from_millis(100)));
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    assert!(real.wait_exited(sleeper.id(), std::time::Duration::from_secs(2)));
    assert!(t0.elapsed() < std::time::Duration::from_secs(2));
}
