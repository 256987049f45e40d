//! Real-kernel tests in network namespaces on the machine's own kernel (nftables NAT, veth,
//! rtnetlink; no ip6tnl needed here — the tunnel itself is tested in the VM bed, tests/e2e).
//!
//! Needs root, `ip` (iproute2), `nft`, `tcpdump` and python3, which `./test.sh` installs. A
//! missing capability is a failure with a message, not a skip; set MAPE_SKIP_ROOT_TESTS=1 to
//! opt out explicitly when running `cargo test` as an ordinary user.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mape::engine::{
    round_robin, Backend, CustomerPrefix, Mapping, PortSet, Slots, SnatPlan, Spread, Walk,
};
use mape::provision::builtin::IspChoice;
use mape::provision::{resolve, RuleSource};
use serde_json::{json, Value};

mod common;
use common::{root_tests, run, sh, tempdir, FakeNetifd, Netns, BIN};

fn dry_run(iface: &str, config: &str, status: &str) -> Value {
    let out = run(&[
        BIN,
        "netifd",
        "setup",
        iface,
        config,
        "--dry-run",
        "--tunlink-status",
        status,
    ]);
    serde_json::from_slice(&out.stdout).unwrap()
}

const V6PLUS_STATUS: &str =
    r#"{"up":true,"l3_device":"wan","ipv6-prefix":[{"address":"240b:10:3f6c:d400::","mask":56}]}"#;

fn v6plus_mapping() -> Mapping {
    let p: CustomerPrefix = "240b:10:3f6c:d400::/56".parse().unwrap();
    resolve(&RuleSource::Builtin(IspChoice::Auto), p)
        .unwrap()
        .mapping
}

#[test]
fn nft_script_loads_lists_back_and_replaces_atomically() {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return;
    }
    let ns = Netns::new("nft");
    let report = dry_run("wanmap", r#"{"tunlink":"wan6"}"#, V6PLUS_STATUS);
    let script = report["nft"].as_str().unwrap();
    let dir = tempdir("nft");
    let file = dir.join("rules.nft");
    std::fs::write(&file, script).unwrap();
    let f = file.display();
    // Twice: the second run replaces the table, it does not add a second one or duplicate rules.
    ns.exec(&format!("nft -f {f} && nft -f {f}"));
    let tables = ns.exec("nft list tables");
    assert_eq!(tables.trim(), "table ip mape_wanmap", "{tables}");
    let listed = ns.exec("nft list table ip mape_wanmap");
    assert!(
        listed.contains("type nat hook postrouting priority srcnat - 1"),
        "{listed}"
    );
    assert!(
        listed.contains("tcp option maxseg size set rt mtu"),
        "{listed}"
    );
    for c in mape::render::nft::COUNTERS {
        assert!(listed.contains(&format!("counter {c} {{")), "{c}");
    }
    // The walk per destination: its dynamic sets as the kernel lists them, and the entry.
    assert!(
        listed.contains("set tcp_at14 {\n\t\ttype ipv4_addr . inet_service\n\t\tsize 256\n\t\tflags dynamic,timeout\n\t\ttimeout 2m\n\t}"),
        "{listed}"
    );
    assert_eq!(listed.matches("goto udp_walk\n").count(), 1, "{listed}");
    assert!(
        listed.contains(
            "ip daddr . tcp dport != @tcp_any numgen inc mod 15 vmap { 0 : goto tcp_step0, "
        ),
        "{listed}"
    );
    // The kernel's listing reads back as the plan the script was made from: every port set.
    let m = v6plus_mapping();
    let plan = SnatPlan::new(&m, &[]).unwrap();
    let back = mape::render::nft::read_table(&listed);
    assert_eq!(back.snat, Some(plan), "{listed}");
    assert_eq!(back.ifname.as_deref(), Some("map-wanmap"));
    assert_eq!(back.counters.len(), 5);
    for (i, set) in m.port_sets().enumerate() {
        assert!(
            listed.contains(&format!("chain set_{i} {{")),
            "{set}: {listed}"
        );
    }
    // The teardown script deletes it, and works when the table is already gone.
    let del = dir.join("del.nft");
    std::fs::write(&del, mape::render::nft::delete_script("mape_wanmap")).unwrap();
    ns.exec(&format!(
        "nft -f {} && nft -f {}",
        del.display(),
        del.display()
    ));
    assert_eq!(ns.exec("nft list tables").trim(), "");
}

/// A namespace with a veth `wan`, a temporary directory whose `status.json` (the tunnel link's
/// status netifd answers) is `status`, and the netifd recorder on a real ubusd; `None` when the
/// root tests are opted out or the userland is missing (a clear line was printed).
fn handler_bed(tag: &str, status: &str) -> Option<(Netns, std::path::PathBuf, FakeNetifd)> {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return None;
    }
    let ns = Netns::new(tag);
    ns.exec("ip link add wan type veth peer name wanpeer && ip link set wanpeer up && ip link set wan up");
    let dir = tempdir(tag);
    std::fs::write(dir.join("status.json"), status).unwrap();
    let netifd = FakeNetifd::start(&dir)?;
    Some((ns, dir, netifd))
}

#[test]
fn real_handler_adds_address_and_table_and_teardown_removes_them() {
    let Some((ns, dir, netifd)) = handler_bed("handler", V6PLUS_STATUS) else {
        return;
    };
    let d = dir.display();
    let env = format!("{} MAPE_STATE_DIR={d}/state", netifd.env());
    let setup = format!("{env} {BIN} netifd mape setup wanmap '{{\"tunlink\":\"wan6\"}}'");
    let teardown = format!("{env} {BIN} netifd mape teardown wanmap '{{\"tunlink\":\"wan6\"}}'");

    ns.exec(&setup);
    let ce = "240b:10:3f6c:d400:6a:483f:6c00:d400";
    let addrs = ns.exec("ip -6 addr show dev wan");
    assert!(addrs.contains(&format!("{ce}/128")), "{addrs}");
    let ce_line = addrs.lines().find(|l| l.contains(ce)).unwrap();
    assert!(
        ce_line.contains("nodad") && !ce_line.contains("tentative"),
        "the CE address must be usable at once: {addrs}"
    );
    assert!(ns.exec("nft list tables").contains("table ip mape_wanmap"));
    let calls = netifd.calls();
    let update = calls
        .iter()
        .find(|c| c["action"] == 0)
        .expect("an update was sent");
    assert_eq!(update["tunnel"]["local"], ce, "{update}");
    assert!(
        calls
            .iter()
            .any(|c| c["action"] == 1 && c["command"][2] == "watch"),
        "{calls:?}"
    );

    // `fw4 flush` (firewall stop) deletes every table; fw4's include runs `reapply` on start.
    ns.exec("nft flush ruleset");
    ns.exec(&format!("{env} {BIN} netifd reapply"));
    let restored = ns.exec("nft list table ip mape_wanmap");
    assert_eq!(
        restored.matches("numgen inc mod 15 vmap").count(),
        3,
        "{restored}"
    );
    assert_eq!(
        restored.matches("\tchain tcp_step").count(),
        15,
        "{restored}"
    );

    // Setting up twice (netifd re-runs setup) is the same as once.
    ns.exec(&setup);
    assert_eq!(ns.exec("nft list tables").matches("mape_wanmap").count(), 1);
    assert_eq!(ns.exec("ip -6 addr show dev wan").matches(ce).count(), 1);

    // The teardown deletes our table over netlink (no nft): only `ip mape_wanmap`, not fw4's
    // table nor a table of the same name in another family.
    ns.exec("nft add table inet fw4 && nft add table inet mape_wanmap");
    ns.exec(&teardown);
    assert!(!ns.exec("ip -6 addr show dev wan").contains(ce));
    assert_eq!(
        ns.exec("nft list tables").trim(),
        "table inet fw4\ntable inet mape_wanmap"
    );
    ns.exec("nft delete table inet fw4 && nft delete table inet mape_wanmap");
    assert!(!dir.join("state/wanmap.json").exists());
    // Teardown again: nothing left to remove, still success.
    ns.exec(&teardown);

    // A prefix change: new /56, setup derives a new CE; the old one is not left behind.
    ns.exec(&setup);
    std::fs::write(
        dir.join("status.json"),
        r#"{"up":true,"l3_device":"wan","ipv6-prefix":[{"address":"240b:10:1111:2200::","mask":56}]}"#,
    )
    .unwrap();
    let watch = format!("{env} {BIN} netifd watch wanmap '{{\"tunlink\":\"wan6\"}}' --current 240b:10:3f6c:d400::/56 --once");
    let verdict = ns.try_exec(&watch);
    assert_eq!(
        verdict.status.code(),
        Some(3),
        "the watch task must see the change"
    );
    // The task of the running setup (its owner token) follows the new mapping in place: the
    // link loss and the update go to netifd, the CE address moves, and the table is refilled.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/wanmap.json")).unwrap())
            .unwrap();
    let owner = state["owner"].as_str().unwrap().to_string();
    let before = netifd.calls().len();
    // The refill goes over netlink, not nft.
    let (out, nft_runs) = with_nft_noted(&ns, &dir, &format!("{watch} --owner {owner}"));
    assert!(nft_runs.is_empty(), "nft ran: {nft_runs:?}");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && log.contains("(in place ") && log.contains(" refilled, update"),
        "{log}"
    );
    let notified: Vec<Value> = netifd.calls()[before..]
        .iter()
        .filter(|c| c["action"] == 0)
        .map(|c| c["link-up"].clone())
        .collect();
    assert_eq!(
        notified,
        [json!(false), json!(true)],
        "link loss, then the update"
    );
    let addrs = ns.exec("ip -6 addr show dev wan");
    assert!(!addrs.contains(ce), "{addrs}");
    assert!(
        addrs.contains("240b:10:1111:2200:6a:4811:1100:2200/128"),
        "{addrs}"
    );
    // The refilled table is the one the new mapping's whole script makes (`reapply` loads the
    // saved script, which names the new prefix, after deleting it).
    let refilled = ns.exec("nft list table ip mape_wanmap");
    assert!(
        refilled.contains("snat ip to 106.72.17.17:") || refilled.contains("snat to 106.72.17.17:"),
        "{refilled}"
    );
    ns.exec(&format!(
        "nft delete table ip mape_wanmap && {env} {BIN} netifd reapply"
    ));
    assert_eq!(refilled, ns.exec("nft list table ip mape_wanmap"));
    ns.exec(&teardown);
    assert!(!ns.exec("nft list tables").contains("mape_wanmap"));
}

/// Runs `cmd` in `ns` with an `nft` first in PATH that notes each run (then runs the real one):
/// its output, and the arguments of each nft run.
fn with_nft_noted(ns: &Netns, dir: &Path, cmd: &str) -> (std::process::Output, Vec<String>) {
    let shim = dir.join("shim");
    std::fs::create_dir_all(&shim).unwrap();
    let ran = dir.join("nft-ran");
    let _ = std::fs::remove_file(&ran);
    std::fs::write(
        shim.join("nft"),
        format!(
            "#!/bin/sh\necho \"$*\" >> {}\nPATH={}\nexec nft \"$@\"\n",
            ran.display(),
            std::env::var("PATH").unwrap()
        ),
    )
    .unwrap();
    ns.exec(&format!("chmod +x {}/nft", shim.display()));
    let out = ns.try_exec(&format!("PATH={}:$PATH {cmd}", shim.display()));
    let runs = std::fs::read_to_string(&ran).unwrap_or_default();
    (out, runs.lines().map(String::from).collect())
}

/// What [`renumber_in_place`] saw: the task's log, the arguments of each nft run, the table
/// before and after, and the table the new state's whole script makes (`reapply`).
struct Renumbered {
    log: String,
    nft_runs: Vec<String>,
    before: String,
    after: String,
    whole: String,
}

/// Sets `wanmap` up with `rules` on prefix `from` (a /56), then has its task follow `to` in
/// place on the real kernel (`watch --once --owner`, nft runs noted); `None` when the root tests
/// are opted out.
fn renumber_in_place(tag: &str, rules: &str, from: &str, to: &str) -> Option<Renumbered> {
    let status = |p: &str| {
        format!(r#"{{"up":true,"l3_device":"wan","ipv6-prefix":[{{"address":"{p}","mask":56}}]}}"#)
    };
    let (ns, dir, netifd) = handler_bed(tag, &status(from))?;
    let config = json!({"tunlink": "wan6", "rule": rules}).to_string();
    let d = dir.display();
    let env = format!("{} MAPE_STATE_DIR={d}/state", netifd.env());
    ns.exec(&format!("{env} {BIN} netifd mape setup wanmap '{config}'"));
    let before = ns.exec("nft list table ip mape_wanmap");
    std::fs::write(dir.join("status.json"), status(to)).unwrap();
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/wanmap.json")).unwrap())
            .unwrap();
    let owner = state["owner"].as_str().unwrap();
    let watch = format!(
        "{env} {BIN} netifd watch wanmap '{config}' --current {from}/56 --once --owner {owner}"
    );
    let (out, nft_runs) = with_nft_noted(&ns, &dir, &watch);
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{log}");
    let after = ns.exec("nft list table ip mape_wanmap");
    ns.exec(&format!(
        "nft delete table ip mape_wanmap && {env} {BIN} netifd reapply"
    ));
    let whole = ns.exec("nft list table ip mape_wanmap");
    ns.exec(&format!(
        "{env} {BIN} netifd mape teardown wanmap '{config}'"
    ));
    assert!(!ns.exec("nft list tables").contains("mape_wanmap"));
    Some(Renumbered {
        log,
        nft_runs,
        before,
        after,
        whole,
    })
}

/// A renumbering in place into another rule with the same BR (RFC 7597 Example 1's 63 port
/// sets, then a v6plus-shaped rule's 15), on the real kernel: the bridge refill goes over
/// netlink into the running 63-set table, and nft runs once, after the update, for the whole
/// new table, which is then the one the new mapping's script makes.
#[test]
fn a_renumbering_into_another_shape_is_bridged_then_loaded_whole() {
    let rules = "type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1 \
                 type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=198.51.100.0,ipv6prefix=2001:db8:8800::,offset=4,br=2001:db8:ffff::1";
    let Some(r) = renumber_in_place(
        "bridge",
        rules,
        "2001:db8:12:3400::",
        "2001:db8:8812:3400::",
    ) else {
        return;
    };
    assert!(r.before.contains("chain set_62 {"), "{}", r.before);
    assert!(
        r.log.contains(" bridged, update") && r.log.contains("nft table of the new shape loaded"),
        "{}",
        r.log
    );
    assert_eq!(r.nft_runs, ["-f -"], "{}", r.log);
    assert!(
        r.after.contains("chain set_14 {") && !r.after.contains("chain set_15 {"),
        "{}",
        r.after
    );
    assert!(!r.after.contains("192.0.2."), "{}", r.after);
    assert_eq!(r.after, r.whole);
}

/// A line with 255 port sets (PSID offset 8: one port each) refills 255 chains in place: one
/// batch of 1020 requests, larger than a socket's default send buffer, still over netlink (no
/// nft), and the table lists as the new mapping's whole script.
#[test]
fn a_refill_of_255_port_sets_is_one_batch_over_netlink() {
    let rule = "type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=8,br=2001:db8:ffff::1";
    let Some(r) = renumber_in_place("big", rule, "2001:db8:12:3400::", "2001:db8:13:3600::") else {
        return;
    };
    assert!(r.before.contains("chain set_254 {"), "{}", r.before);
    assert!(r.log.contains(" refilled, update"), "{}", r.log);
    assert!(r.nft_runs.is_empty(), "nft ran: {:?} {}", r.nft_runs, r.log);
    assert!(r.after.contains("snat to 192.0.2.19:") || r.after.contains("snat ip to 192.0.2.19:"));
    assert_eq!(r.after, r.whole);
}

/// `ubus call network restart` re-executes netifd while a setup of the old netifd waits for
/// its update (notify_proto) to be answered, and the new netifd's setup of the same interface
/// brings it up with the same table and CE address. The old setup's call then times out: its
/// rollback must leave the live table and address alone, and the call must not take ubus's
/// default 30 s. The netifd recorder (real ubusd) never answers the stale update.
#[test]
fn a_stale_setup_whose_update_times_out_leaves_the_live_table_and_address() {
    let Some((ns, dir, netifd)) = handler_bed("stale", V6PLUS_STATUS) else {
        return;
    };
    let d = dir.display();
    let setup = format!(
        "{} MAPE_STATE_DIR={d}/state {BIN} netifd mape setup wanmap '{{\"tunlink\":\"wan6\"}}'",
        netifd.env()
    );
    std::fs::write(dir.join("hang-update"), "").unwrap();
    let started = std::time::Instant::now();
    let stale = ns.spawn(&["sh", "-c", &setup]);
    let mut waited = 0;
    while !dir.join("hanging").exists() {
        assert!(waited < 600, "the stale setup never sent its update");
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    ns.exec(&setup); // the restarted netifd's setup
    let out = stale.wait_with_output().unwrap();
    let secs = started.elapsed().as_secs();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        secs < 20,
        "the stale setup took {secs} s: its ubus calls are not bounded"
    );
    assert!(log.contains("UPDATE_FAILED"), "{log}");
    assert!(log.contains("another setup owns the interface"), "{log}");
    let ce = "240b:10:3f6c:d400:6a:483f:6c00:d400";
    assert!(
        ns.exec("nft list tables").contains("table ip mape_wanmap"),
        "the stale setup's rollback deleted the live table: {log}"
    );
    assert!(
        ns.exec("ip -6 addr show dev wan").contains(ce),
        "the stale setup's rollback deleted the live CE address: {log}"
    );
    // The state names the live setup, whose watch task is the one that runs with its token;
    // the stale one only asked for a retry (no token).
    let state = mape::state::load(&dir.join("state"), "wanmap")
        .unwrap()
        .unwrap();
    let owner = state.owner.unwrap();
    let tasks: Vec<Value> = netifd
        .calls()
        .into_iter()
        .filter(|c| c["action"] == 1)
        .collect();
    let with_owner: Vec<&Value> = tasks
        .iter()
        .filter(|c| {
            c["command"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "--owner")
        })
        .collect();
    assert_eq!(with_owner.len(), 1, "{tasks:?}");
    assert!(
        with_owner[0]["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == &owner),
        "{tasks:?}"
    );
    // The stale setup's watch task, had it one, ends once another setup owns the interface.
    let watch = ns.try_exec(&format!(
        "{} MAPE_STATE_DIR={d}/state {BIN} netifd watch wanmap '{{\"tunlink\":\"wan6\"}}' --owner 1.1 --current 240b:10:3f6c:d400::/56",
        netifd.env()
    ));
    assert_eq!(watch.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&watch.stderr).contains("another setup owns the interface"),
        "{watch:?}"
    );
}

#[test]
fn bad_config_leaves_the_system_as_it_was() {
    let Some((ns, dir, netifd)) = handler_bed("badcfg", V6PLUS_STATUS) else {
        return;
    };
    let before = ns.exec("ip -6 addr show dev wan; nft list ruleset");
    let d = dir.display();
    let out = ns.try_exec(&format!(
        "{} MAPE_STATE_DIR={d}/state {BIN} netifd mape setup wanmap '{{\"tunlink\":\"wan6\",\"ports_exclude\":\"80\"}}'",
        netifd.env()
    ));
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(ns.exec("ip -6 addr show dev wan; nft list ruleset"), before);
    let calls = netifd.calls();
    assert!(
        calls.iter().any(|c| c["error"][0] == "INVALID_OPTION")
            && calls.iter().any(|c| c["action"] == 4),
        "{calls:?}"
    );
}

/// The kernel's `jhash()` (lib/jhash.h) as nft's `jhash` expression runs it over a register
/// area of `key.len()` bytes, then `mod` by `reciprocal_scale`: the bucket a destination gets.
fn nft_jhash_bucket(key: &[u8], seed: u32, modulus: u32) -> u32 {
    let mut a = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(seed);
    let (mut b, mut c) = (a, a);
    assert!(key.len() <= 12, "one block is enough here");
    let word = |k: &[u8]| {
        k.iter()
            .enumerate()
            .fold(0u32, |w, (i, x)| w | u32::from(*x) << (8 * i))
    };
    let k = |i: usize| key.get(i..(i + 4).min(key.len())).unwrap_or(&[]);
    a = a.wrapping_add(word(k(0)));
    b = b.wrapping_add(word(k(4)));
    c = c.wrapping_add(word(k(8)));
    // __jhash_final
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(14));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(11));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(25));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(16));
    a ^= c;
    a = a.wrapping_sub(c.rotate_left(4));
    b ^= a;
    b = b.wrapping_sub(a.rotate_left(14));
    c ^= b;
    c = c.wrapping_sub(b.rotate_left(24));
    ((u64::from(c) * u64::from(modulus)) >> 32) as u32
}

/// The TCP bucket of `addr:port` in our ruleset: `jhash ip daddr . tcp dport mod 64 seed …`
/// hashes 8 bytes (the address, then the port in a zero-padded 4-byte register).
fn tcp_bucket(addr: [u8; 4], port: u16) -> u32 {
    let p = port.to_be_bytes();
    let key = [addr[0], addr[1], addr[2], addr[3], p[0], p[1], 0, 0];
    nft_jhash_bucket(&key, 0x6d61_7065, u32::from(mape::engine::BUCKETS))
}

/// Namespaces LAN (192.168.1.2) -> CE -> server (10.99.0.2, and every address of 10.99.1.0/24
/// for other destinations); the CE's way out is a veth named like the tunnel.
struct Bed {
    lan: Netns,
    ce: Netns,
    srv: Netns,
}

/// A new bed; `tag` keeps the namespaces of tests that run at once apart.
fn bed(tag: &str) -> Bed {
    let (lan, ce, srv) = (
        Netns::new(&format!("lan{tag}")),
        Netns::new(&format!("ce{tag}")),
        Netns::new(&format!("srv{tag}")),
    );
    sh(&format!(
        "ip link add lan0 netns {} type veth peer name lan1 netns {}",
        lan.0, ce.0
    ));
    sh(&format!(
        "ip link add map-wanmap netns {} type veth peer name srv0 netns {}",
        ce.0, srv.0
    ));
    lan.exec("ip addr add 192.168.1.2/24 dev lan0 && ip link set lan0 up && ip route add default via 192.168.1.1");
    ce.exec(
        "ip addr add 192.168.1.1/24 dev lan1 && ip link set lan1 up && ip addr add 10.99.0.1/30 dev map-wanmap \
         && ip link set map-wanmap up && ip route add default via 10.99.0.2 && sysctl -qw net.ipv4.ip_forward=1",
    );
    srv.exec("ip addr add 10.99.0.2/30 dev srv0 && ip link set srv0 up && ip route add 106.72.63.108/32 via 10.99.0.1 \
              && ip route add local 10.99.1.0/24 dev lo");
    Bed { lan, ce, srv }
}

const SERVER: &str = r#"
import socket, threading, sys, time
seen = open(sys.argv[1], "w")
def listener(addr, port):
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind((addr, port)); t.listen(512); return t
t = listener("10.99.0.2", 8080)
o = listener("0.0.0.0", 9000)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("10.99.0.2", 8081))
held = []
def tcp():
    while True:
        c, a = t.accept(); seen.write("tcp %s %d\n" % a); seen.flush(); c.sendall(b"ok"); held.append(c)
def other():
    # Close only after the client did, so the server never holds TIME_WAIT (a SYN that meets
    # TIME_WAIT is answered with an ACK, and its retransmission would be one more flow).
    while True:
        c, a = o.accept(); c.recv(1); c.close()
def udp():
    while True:
        d, a = u.recvfrom(100); seen.write("udp %s %d\n" % a); seen.flush(); u.sendto(b"ok", a)
for f in (tcp, other, udp): threading.Thread(target=f, daemon=True).start()
time.sleep(60)
"#;

/// Steps, one per line: `hold A P` (TCP connection kept open, the server answers "ok"),
/// `short A P` (connect, close), `udp A P` (a datagram answered "ok"), `send A P` (a datagram,
/// no answer). Prints how many holds and udps were answered.
const CLIENT: &str = r#"
import socket, sys
held = []; got = 0
for line in open(sys.argv[1]):
    kind, addr, port = line.split(); port = int(port)
    if kind == "hold":
        s = socket.create_connection((addr, port), timeout=5); held.append(s); got += s.recv(2) == b"ok"
    elif kind == "short":
        s = socket.create_connection((addr, port), timeout=5); s.close()
    else:
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5); u.sendto(b"x", (addr, port)); held.append(u)
        if kind == "udp":
            got += u.recvfrom(10)[0] == b"ok"
print(got)
"#;

/// Loads `script` afresh (every round-robin counter back at 0), runs the client's `steps`
/// against a new server, and returns what the server saw: (protocol, address, source port).
fn exchange(b: &Bed, dir: &Path, script: &str, steps: &[String]) -> Vec<(String, String, u16)> {
    let d = dir.display();
    std::fs::write(dir.join("rules.nft"), script).unwrap();
    b.ce.exec(&format!("nft -f {d}/rules.nft"));
    b.ce.exec("conntrack -F 2>/dev/null || true");
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    std::fs::write(dir.join("client.py"), CLIENT).unwrap();
    std::fs::write(dir.join("steps"), steps.join("\n") + "\n").unwrap();
    let _ = std::fs::remove_file(dir.join("seen.txt"));
    let mut server = Command::new("ip")
        .args(["netns", "exec", &b.srv.0, "python3"])
        .arg(dir.join("server.py"))
        .arg(dir.join("seen.txt"))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    let answered = b.lan.exec(&format!("python3 {d}/client.py {d}/steps"));
    std::thread::sleep(Duration::from_millis(300));
    let _ = server.kill();
    let _ = server.wait();
    let want = steps
        .iter()
        .filter(|s| s.starts_with("hold ") || s.starts_with("udp "))
        .count();
    assert_eq!(answered.trim(), want.to_string(), "every exchange answered");
    std::fs::read_to_string(dir.join("seen.txt"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

/// How many of `ports` fall in each of `ranges`; panics on a port outside them.
fn per_range(ranges: &[PortSet], ports: impl Iterator<Item = u16>) -> Vec<u32> {
    let mut n = vec![0u32; ranges.len()];
    for p in ports {
        let i = ranges
            .iter()
            .position(|r| r.contains(p))
            .unwrap_or_else(|| panic!("stray port {p}: not in the SNAT ranges {ranges:?}"));
        n[i] += 1;
    }
    n
}

/// Pings the server from the LAN host (`rounds` × 4 echo requests, each round a new ICMP flow)
/// and returns the echo identifiers the server saw.
fn echo_ids(b: &Bed, dir: &Path, rounds: usize) -> Vec<u16> {
    let d = dir.display();
    let mut capture = Command::new("ip")
        .args([
            "netns",
            "exec",
            &b.srv.0,
            "tcpdump",
            "-i",
            "srv0",
            "-n",
            "-l",
            "--immediate-mode",
            "-w",
            &format!("{d}/icmp.pcap"),
            "icmp[icmptype] == icmp-echo",
        ])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    for _ in 0..rounds {
        b.lan.exec("ping -c 4 -i 0.2 -W 2 10.99.0.2 >/dev/null");
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &capture.id().to_string()])
        .status();
    let _ = capture.wait();
    let ids = sh(&format!("tcpdump -n -r {d}/icmp.pcap 2>/dev/null | grep -o 'echo request, id [0-9]*' | cut -d' ' -f4"));
    ids.lines().map(|l| l.parse().unwrap()).collect()
}

/// Real traffic through the generated ruleset (with `ports_exclude`): a LAN host holds TCP
/// connections to one server and exchanges UDP with it, while it also connects to other
/// destinations in between. The server must see only our address and ports (never an excluded
/// one), and the flows to the one destination must take every port range exactly in turn: each
/// destination walks the ranges on its own. That holds also for flows to destinations that
/// shared its bucket in the 64-bucket ruleset before (the hash is modelled here), which a
/// shared counter would have unbalanced (the control). ICMP echo identifiers are mapped into
/// the sets too.
#[test]
fn snat_uses_every_port_set_and_only_ours() {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return;
    }
    let b = bed("");
    let report = dry_run(
        "wanmap",
        r#"{"tunlink":"wan6","ports_exclude":"7488-7495"}"#,
        V6PLUS_STATUS,
    );
    let script = report["nft"].as_str().unwrap().to_string();
    let dir = tempdir("snat");
    let m = v6plus_mapping();
    let excluded = PortSet {
        first: 7488,
        last: 7495,
    };
    let Ok(SnatPlan::Shared { ranges, .. }) = SnatPlan::new(&m, &[excluded]) else {
        panic!("a shared plan")
    };
    assert_eq!(ranges.len(), 15, "15 sets, the first one half");
    // Round-robin slots in proportion to the ports: the half set 1, every whole set 2.
    let slots = round_robin(&ranges);
    let n = slots.len();
    // nft walks per destination; the control below models the 64 buckets mape-rs used before
    // (and still uses for lines of more than 512 slots).
    let plan = SnatPlan::new(&m, &[excluded]).unwrap();
    let spread = plan.spread(Backend::Nft).unwrap();
    assert_eq!(spread.walk, Walk::PerDestination);
    assert_eq!(spread.slots, Slots::Ranges(slots.clone()));
    let weights: Vec<u32> = (0..ranges.len())
        .map(|r| slots.iter().filter(|s| **s == r).count() as u32)
        .collect();
    assert_eq!(n, 29);

    let target = tcp_bucket([10, 99, 0, 2], 8080);
    let (others, colliders): (Vec<u8>, Vec<u8>) =
        (1..=250u8).partition(|x| tcp_bucket([10, 99, 1, *x], 9000) != target);
    assert!(
        colliders.len() >= 2,
        "addresses that share the bucket: {colliders:?}"
    );

    // 1. Isolation: one round of every slot, other TCP and UDP destinations in between.
    let mut steps = Vec::new();
    for k in 0..n {
        for j in 0..2 {
            let x = others[(2 * k + j) % others.len()];
            steps.push(format!("short 10.99.1.{x} 9000"));
        }
        steps.push("hold 10.99.0.2 8080".into());
        steps.push(format!("send 10.99.1.{} 53", others[k % others.len()]));
        steps.push("udp 10.99.0.2 8081".into());
    }
    let seen = exchange(&b, &dir, &script, &steps);
    for (proto, addr, port) in &seen {
        assert_eq!(addr, "106.72.63.108", "{proto} {port}");
        assert!(m.owns_port(*port), "stray {proto} port {port}");
        assert!(!excluded.contains(*port), "excluded {proto} port {port}");
    }
    for proto in ["tcp", "udp"] {
        let got = per_range(&ranges, seen.iter().filter(|s| s.0 == proto).map(|s| s.2));
        assert_eq!(
            got, weights,
            "{proto}: every slot exactly once in turn despite the other destinations"
        );
    }

    // 2. Flows to destinations that shared this one's bucket in the 64-bucket ruleset (0, 1 or
    // 2 before each held connection) do not move its walk either. Control: a shared counter
    // would have given these flows other sets (the model of the bucket ruleset).
    let mut steps = Vec::new();
    // (Several such destinations in turn: each short connection keeps its port for a while in
    // the CE's conntrack, and one destination alone would run out of the small range's ports.)
    let (mut counter, mut shared_counter) = (0usize, vec![0u32; ranges.len()]);
    for k in 0..n {
        for _ in 0..k % 3 {
            let x = colliders[counter % colliders.len()];
            steps.push(format!("short 10.99.1.{x} 9000"));
            counter += 1;
        }
        steps.push("hold 10.99.0.2 8080".into());
        shared_counter[slots[counter % n]] += 1;
        counter += 1;
    }
    assert_ne!(shared_counter, weights, "the control must be unbalanced");
    let seen = exchange(&b, &dir, &script, &steps);
    let held: Vec<u16> = seen.iter().map(|s| s.2).collect();
    let obs: Vec<usize> = held
        .iter()
        .map(|p| ranges.iter().position(|r| r.contains(*p)).unwrap())
        .collect();
    assert_eq!(
        per_range(&ranges, held.iter().copied()),
        weights,
        "every slot exactly once in turn despite the destinations that shared a bucket\n{obs:?}"
    );

    // 3. ICMP: echo identifiers mapped into our sets.
    let ids = echo_ids(&b, &dir, 2);
    assert!(
        ids.len() >= 8,
        "expected 8 echo requests at the server, saw {}",
        ids.len()
    );
    for id in ids {
        assert!(
            m.owns_port(id),
            "stray echo identifier {id}: not in PSID {}'s sets",
            m.ports.psid()
        );
    }
    let counters = b.ce.exec("nft list counter ip mape_wanmap snat_icmp");
    assert!(!counters.contains("packets 0 "), "{counters}");
}

/// The largest legal rule (PSID offset 15: 32767 port sets of one port) on the real kernel: the
/// handler's script stays within [`mape::render::nft::MAX_SCRIPT`], replaces a table of the
/// per-set shape atomically and loads within a bound (the per-bucket shape it replaces wrote
/// 104 MB and took 25 s and 4 GB in nft); the kernel's listing reads back as the plan; real TCP,
/// UDP and ICMP flows take the map's ports in turn, all of them ours. Negative control: a port
/// outside the plan makes the read-back differ.
#[test]
fn the_largest_legal_rule_loads_fast_and_maps_into_its_ports() {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return;
    }
    const RULE: &str = "type=map-e,ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=192.0.2.0,prefix4len=24,ealen=9,offset=15,br=2001:db8:ffff::1";
    const STATUS: &str = r#"{"up":true,"l3_device":"wan","ipv6-prefix":[{"address":"2001:db8:12:3400::","mask":56}]}"#;
    let config = serde_json::json!({"tunlink": "wan6", "rule": RULE}).to_string();
    let report = dry_run("wanmap", &config, STATUS);
    let script = report["nft"].as_str().unwrap().to_string();
    assert!(
        script.len() <= mape::render::nft::MAX_SCRIPT,
        "{} bytes",
        script.len()
    );
    let mut rule = mape::engine::Rule::new(
        "2001:db8::/40".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
        9,
        mape::engine::IidFormat::Rfc7597,
    );
    rule.psid_offset = 15;
    let m = Mapping::compute(&rule, "2001:db8:12:3400::/56".parse().unwrap()).unwrap();
    let plan = SnatPlan::new(&m, &[]).unwrap();
    let Some(Spread {
        slots: Slots::Ports(ports),
        ..
    }) = plan.spread(Backend::Nft)
    else {
        panic!("a single-port map")
    };
    assert_eq!(ports.len(), 32767);

    let b = bed("big");
    b.srv.exec("ip route add 192.0.2.18/32 via 10.99.0.1");
    let dir = tempdir("largest");
    let d = dir.display();
    // Replace a table of the per-set shape (v6plus), as after a rule change, and time the load.
    let v6plus = dry_run("wanmap", r#"{"tunlink":"wan6"}"#, V6PLUS_STATUS);
    std::fs::write(dir.join("v6plus.nft"), v6plus["nft"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("rules.nft"), &script).unwrap();
    b.ce.exec(&format!("nft -f {d}/v6plus.nft"));
    let t0 = std::time::Instant::now();
    b.ce.exec(&format!("nft -f {d}/rules.nft"));
    let load = t0.elapsed();
    assert!(
        load < Duration::from_secs(5),
        "nft -f took {load:?} (0.13 s measured on a busy 2-core machine)"
    );
    let listed = b.ce.exec("nft list table ip mape_wanmap");
    assert!(!listed.contains("chain set_"), "one shape only");
    let back = mape::render::nft::read_table(&listed);
    assert_eq!(back.snat.as_ref(), Some(&plan));
    assert_eq!(back.ifname.as_deref(), Some("map-wanmap"));
    assert_eq!(back.counters.len(), 5);
    let stray = listed.replacen(" : 2,", " : 3,", 1);
    assert_ne!(
        mape::render::nft::read_table(&stray).snat.as_ref(),
        Some(&plan),
        "control: a port outside the plan must show"
    );

    // Real flows: the counter is fresh, so the server sees the map's first ports in order.
    let mut steps = Vec::new();
    for _ in 0..6 {
        steps.push("hold 10.99.0.2 8080".to_string());
        steps.push("udp 10.99.0.2 8081".to_string());
    }
    let seen = exchange(&b, &dir, &script, &steps);
    let got: Vec<u16> = seen.iter().map(|s| s.2).collect();
    assert_eq!(got, ports[..12], "{seen:?}");
    for (proto, addr, port) in &seen {
        assert_eq!(addr, "192.0.2.18", "{proto} {port}");
        assert!(m.owns_port(*port), "stray {proto} port {port}");
    }
    // ICMP shares the counter: the echo identifier of the next flow is the map's next port.
    let ids = echo_ids(&b, &dir, 1);
    assert!(ids.len() >= 4, "echo requests at the server: {ids:?}");
    assert!(ids.iter().all(|id| *id == ports[12]), "{ids:?}");
}
