//! Real-kernel tests in network namespaces on the machine's own kernel (nftables NAT, veth,
//! rtnetlink; no ip6tnl needed here — the tunnel itself is tested in the VM bed, tests/e2e).
//!
//! Needs root, `ip` (iproute2), `nft`, `tcpdump` and python3, which `./test.sh` installs. A
//! missing capability is a failure with a message, not a skip; set MAPE_SKIP_ROOT_TESTS=1 to
//! opt out explicitly when running `cargo test` as an ordinary user.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mape::engine::{CustomerPrefix, Mapping};
use mape::provision::builtin::IspChoice;
use mape::provision::{resolve, RuleSource};
use serde_json::Value;

mod common;
use common::{root_tests, run, sh, tempdir, Netns, BIN};

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
    assert_eq!(
        listed.matches("snat ip to numgen inc mod 15 map").count(),
        3,
        "{listed}"
    );
    assert!(
        listed.contains("type nat hook postrouting priority srcnat - 1"),
        "{listed}"
    );
    assert!(
        listed.contains("tcp option maxseg size set rt mtu"),
        "{listed}"
    );
    for c in [
        "snat_tcp",
        "snat_udp",
        "snat_icmp",
        "snat_other",
        "mss_clamp",
    ] {
        assert!(listed.contains(&format!("counter {c} {{")), "{c}");
    }
    // Every port set of the mapping is in each map, as the kernel read it back.
    for set in v6plus_mapping().port_sets() {
        assert_eq!(
            listed
                .matches(&format!("106.72.63.108 . {}-{}", set.first, set.last))
                .count(),
            3,
            "{set}"
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

/// A `ubus` stand-in: answers `status` from a file, records every other call. It is only the
/// messenger: the address, nft table and state are real.
fn fake_ubus(dir: &Path) {
    let script = r#"#!/bin/sh
[ "$1" = -t ] && shift 2 # the handler bounds every call: ubus -t SECONDS call ...
[ "$1" = call ] || exit 1
case "$2 $3" in
  "network.interface.wan6 status") cat "$FAKE_UBUS_DIR/status.json" ;;
  "network.interface dump") echo '{"interface":[]}' ;;
  *) printf '%s %s %s\n' "$2" "$3" "$4" >> "$FAKE_UBUS_DIR/calls.log" ;;
esac
"#;
    let path = dir.join("ubus");
    std::fs::write(&path, script).unwrap();
    run(&["chmod", "755", path.to_str().unwrap()]);
}

#[test]
fn real_handler_adds_address_and_table_and_teardown_removes_them() {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return;
    }
    let ns = Netns::new("handler");
    ns.exec("ip link add wan type veth peer name wanpeer && ip link set wanpeer up && ip link set wan up");
    let dir = tempdir("handler");
    fake_ubus(&dir);
    std::fs::write(dir.join("status.json"), V6PLUS_STATUS).unwrap();
    let d = dir.display();
    let env = format!("PATH={d}:$PATH FAKE_UBUS_DIR={d} MAPE_STATE_DIR={d}/state");
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
    let calls = std::fs::read_to_string(dir.join("calls.log")).unwrap();
    let update = calls
        .lines()
        .find(|l| l.contains("\"action\":0"))
        .expect("an update was sent");
    assert!(update.contains(&format!("\"local\":\"{ce}\"")), "{update}");
    assert!(
        calls
            .lines()
            .any(|l| l.contains("\"action\":1") && l.contains("watch")),
        "{calls}"
    );

    // `fw4 flush` (firewall stop) deletes every table; fw4's include runs `reapply` on start.
    ns.exec("nft flush ruleset");
    ns.exec(&format!("{env} {BIN} netifd reapply"));
    let restored = ns.exec("nft list table ip mape_wanmap");
    assert_eq!(
        restored.matches("numgen inc mod 15 map").count(),
        3,
        "{restored}"
    );

    // Setting up twice (netifd re-runs setup) is the same as once.
    ns.exec(&setup);
    assert_eq!(ns.exec("nft list tables").matches("mape_wanmap").count(), 1);
    assert_eq!(ns.exec("ip -6 addr show dev wan").matches(ce).count(), 1);

    ns.exec(&teardown);
    assert!(!ns.exec("ip -6 addr show dev wan").contains(ce));
    assert_eq!(ns.exec("nft list tables").trim(), "");
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
    ns.exec(&teardown);
    ns.exec(&setup);
    let addrs = ns.exec("ip -6 addr show dev wan");
    assert!(!addrs.contains(ce), "{addrs}");
    assert!(
        addrs.contains("240b:10:1111:2200:6a:4811:1100:2200/128"),
        "{addrs}"
    );
    ns.exec(&teardown);
}

/// `ubus call network restart` re-executes netifd while a setup of the old netifd waits for
/// its update (notify_proto) to be answered, and the new netifd's setup of the same interface
/// brings it up with the same table and CE address. The old setup's call then times out: its
/// rollback must leave the live table and address alone, and the call must not take ubus's
/// default 30 s. The `ubus` stand-in honours `-t` like the real one (it never answers the stale
/// update: it waits the timeout it was given, 30 s without one, and fails as ubus does).
#[test]
fn a_stale_setup_whose_update_times_out_leaves_the_live_table_and_address() {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return;
    }
    let ns = Netns::new("stale");
    ns.exec("ip link add wan type veth peer name wanpeer && ip link set wanpeer up && ip link set wan up");
    let dir = tempdir("stale");
    let script = r#"#!/bin/sh
t=30
[ "$1" = -t ] && { t=$2; shift 2; }
[ "$1" = call ] || exit 1
case "$2 $3" in
  "network.interface.wan6 status") cat "$FAKE_UBUS_DIR/status.json" ;;
  *) printf '%s %s %s\n' "$2" "$3" "$4" >> "$FAKE_UBUS_DIR/calls-$FAKE_UBUS_TAG.log"
     case "$4" in *'"action":0'*)
       [ -n "$FAKE_UBUS_HANG" ] || exit 0
       touch "$FAKE_UBUS_DIR/hanging"; sleep "$t"; echo "Command failed: Request timed out" >&2; exit 7 ;;
     esac ;;
esac
"#;
    std::fs::write(dir.join("ubus"), script).unwrap();
    run(&["chmod", "755", dir.join("ubus").to_str().unwrap()]);
    std::fs::write(dir.join("status.json"), V6PLUS_STATUS).unwrap();
    let d = dir.display();
    let setup = |tag: &str, hang: bool| {
        format!(
            "PATH={d}:$PATH FAKE_UBUS_DIR={d} FAKE_UBUS_TAG={tag} {} MAPE_STATE_DIR={d}/state \
             {BIN} netifd mape setup wanmap '{{\"tunlink\":\"wan6\"}}'",
            if hang { "FAKE_UBUS_HANG=1" } else { "" }
        )
    };
    let started = std::time::Instant::now();
    let mut stale = ns.spawn(&["sh", "-c", &setup("stale", true)]);
    let mut waited = 0;
    while !dir.join("hanging").exists() {
        if waited == 600 {
            let _ = stale.kill();
            panic!("the stale setup never sent its update");
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += 1;
    }
    ns.exec(&setup("live", false)); // the restarted netifd's setup
    let out = stale.wait_with_output().unwrap();
    let secs = started.elapsed().as_secs();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the stale setup must fail: {log}"
    );
    assert!(
        secs < 20,
        "the stale setup took {secs} s: its ubus calls are not bounded"
    );
    let ce = "240b:10:3f6c:d400:6a:483f:6c00:d400";
    assert!(
        ns.exec("nft list tables").contains("table ip mape_wanmap"),
        "the stale setup's rollback deleted the live table: {log}"
    );
    assert!(
        ns.exec("ip -6 addr show dev wan").contains(ce),
        "the stale setup's rollback deleted the live CE address: {log}"
    );
    // The state names the live setup, whose watch task is the one that keeps running.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("state/wanmap.json")).unwrap())
            .unwrap();
    let live_calls = std::fs::read_to_string(dir.join("calls-live.log")).unwrap();
    let owner = state["owner"].as_str().unwrap();
    assert!(
        live_calls.contains(&format!("\"--owner\",\"{owner}\"")),
        "{owner} {live_calls}"
    );
    let stale_calls = std::fs::read_to_string(dir.join("calls-stale.log")).unwrap();
    assert!(!stale_calls.contains(owner), "{stale_calls}");
    // The stale setup's watch task (had it started one) would end at its first look.
    let watch = ns.try_exec(&format!(
        "MAPE_STATE_DIR={d}/state {BIN} netifd watch wanmap '{{\"tunlink\":\"wan6\"}}' --owner stale --current none"
    ));
    assert_eq!(watch.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&watch.stderr).contains("another setup owns the interface"),
        "{watch:?}"
    );
}

#[test]
fn bad_config_leaves_the_system_as_it_was() {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return;
    }
    let ns = Netns::new("badcfg");
    ns.exec("ip link add wan type veth peer name wanpeer && ip link set wanpeer up && ip link set wan up");
    let dir = tempdir("badcfg");
    fake_ubus(&dir);
    std::fs::write(dir.join("status.json"), V6PLUS_STATUS).unwrap();
    let before = ns.exec("ip -6 addr show dev wan; nft list ruleset");
    let d = dir.display();
    let out = ns.try_exec(&format!(
        "PATH={d}:$PATH FAKE_UBUS_DIR={d} MAPE_STATE_DIR={d}/state {BIN} netifd mape setup wanmap '{{\"tunlink\":\"wan6\",\"ports_exclude\":\"80\"}}'"
    ));
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(ns.exec("ip -6 addr show dev wan; nft list ruleset"), before);
    let calls = std::fs::read_to_string(dir.join("calls.log")).unwrap();
    assert!(
        calls.contains("INVALID_OPTION") && calls.contains("\"action\":4"),
        "{calls}"
    );
}

/// Real traffic through the generated ruleset: a LAN host opens many TCP connections, sends
/// UDP and pings a server behind an interface named like the tunnel. Every source port and
/// echo identifier the server sees must be one of ours, and the flows must spread over all
/// port sets (stock OpenWrt uses only the first).
#[test]
fn snat_uses_every_port_set_and_only_ours() {
    if !root_tests(&["ip", "nft", "tcpdump", "python3", "ping"]) {
        return;
    }
    let lan = Netns::new("lan");
    let ce = Netns::new("ce");
    let srv = Netns::new("srv");
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
    srv.exec("ip addr add 10.99.0.2/30 dev srv0 && ip link set srv0 up && ip route add 106.72.63.108/32 via 10.99.0.1");

    let report = dry_run("wanmap", r#"{"tunlink":"wan6"}"#, V6PLUS_STATUS);
    let dir = tempdir("snat");
    std::fs::write(dir.join("rules.nft"), report["nft"].as_str().unwrap()).unwrap();
    ce.exec(&format!("nft -f {}/rules.nft", dir.display()));

    let server = r#"
import socket, threading, sys, time
seen = open(sys.argv[1], "w")
t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("10.99.0.2", 8080)); t.listen(256)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("10.99.0.2", 8081))
def tcp():
    while True:
        c, a = t.accept(); seen.write("tcp %s %d\n" % a); seen.flush(); c.sendall(b"ok")
def udp():
    while True:
        d, a = u.recvfrom(100); seen.write("udp %s %d\n" % a); seen.flush(); u.sendto(b"ok", a)
threading.Thread(target=tcp, daemon=True).start(); threading.Thread(target=udp, daemon=True).start()
time.sleep(30)
"#;
    std::fs::write(dir.join("server.py"), server).unwrap();
    let client = r#"
import socket, sys
n = int(sys.argv[1]); held = []; got = 0
for i in range(n):
    s = socket.create_connection(("10.99.0.2", 8080), timeout=5); held.append(s)
    got += s.recv(2) == b"ok"
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.settimeout(5)
    u.sendto(b"x", ("10.99.0.2", 8081)); got += u.recvfrom(10)[0] == b"ok"; held.append(u)
print(got)
"#;
    std::fs::write(dir.join("client.py"), client).unwrap();
    let d = dir.display();
    let mut server = Command::new("ip")
        .args([
            "netns",
            "exec",
            &srv.0,
            "python3",
            &format!("{d}/server.py"),
            &format!("{d}/seen.txt"),
        ])
        .spawn()
        .unwrap();
    let mut capture = Command::new("ip")
        .args([
            "netns",
            "exec",
            &srv.0,
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
    let n = 45;
    let answered = lan.exec(&format!("python3 {d}/client.py {n}"));
    lan.exec(
        "ping -c 4 -i 0.2 -W 2 10.99.0.2 >/dev/null; ping -c 4 -i 0.2 -W 2 10.99.0.2 >/dev/null",
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &capture.id().to_string()])
        .status();
    let _ = capture.wait();
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        answered.trim(),
        (2 * n).to_string(),
        "every TCP and UDP exchange must complete"
    );

    let m = v6plus_mapping();
    let seen = std::fs::read_to_string(dir.join("seen.txt")).unwrap();
    let mut sets_used = std::collections::BTreeSet::new();
    let mut count = 0;
    for line in seen.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f[1], "106.72.63.108", "server saw {line}");
        let port: u16 = f[2].parse().unwrap();
        assert!(
            m.owns_port(port),
            "stray port {port} ({line}): not in PSID {}'s sets",
            m.ports.psid()
        );
        sets_used.insert(m.port_sets().position(|s| s.contains(port)).unwrap());
        count += 1;
    }
    assert_eq!(count, 2 * n, "{seen}");
    assert_eq!(
        sets_used.len(),
        15,
        "flows must spread over all 15 port sets, used {sets_used:?}"
    );

    let ids = sh(&format!("tcpdump -n -r {d}/icmp.pcap 2>/dev/null | grep -o 'echo request, id [0-9]*' | cut -d' ' -f4"));
    let ids: Vec<u16> = ids.lines().map(|l| l.parse().unwrap()).collect();
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
    let counters = ce.exec("nft list counter ip mape_wanmap snat_icmp");
    assert!(!counters.contains("packets 0 "), "{counters}");
}
