//! The guests' stand-in for ubusd and netifd (examples/fake_ubusd.rs) against our ubus client
//! (src/ubus.rs) and against the real `ubus` CLI built from OpenWrt's sources (so that it speaks
//! libubus's protocol, not just ours): answers from the status files, records every other call
//! as the line tests/arch/standin.sh reads, refuses what ubusd refuses.

mod common;

#[allow(dead_code)]
#[path = "../examples/fake_ubusd.rs"]
mod fake_ubusd;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use mape::ubus::{status, Ubus};
use serde_json::{json, Value};

const WAN6: &str = r#"{"up":true,"proto":"static","l3_device":"wan",
 "ipv6-prefix":[{"address":"2001:db8:12:3400::","mask":56,"preferred":3600,"valid":7200,"assigned":{}}],
 "route":[],"data":{}}"#;

/// A stand-in serving `dir` on `dir/ubus.sock`, in a thread of this process.
fn start(tag: &str) -> (PathBuf, PathBuf) {
    let dir = common::tempdir(tag);
    std::fs::create_dir_all(dir.join("status")).unwrap();
    std::fs::write(dir.join("status/wan6.json"), WAN6).unwrap();
    let sock = dir.join("ubus.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).unwrap();
    let netifd = Arc::new(fake_ubusd::Netifd::new(&dir));
    std::thread::spawn(move || fake_ubusd::serve(listener, netifd));
    (dir, sock)
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// What tests/e2e/fake-ubus wrote for the same call (printf of the handler's JSON argument).
fn old_line(object: &str, method: &str, args: &Value) -> String {
    format!(r#"{{"object":"{object}","method":"{method}","args":{args}}}"#)
}

fn notify_payload() -> Value {
    json!({"action": 0, "interface": "wanmap", "ifname": "map-wanmap", "link-up": true,
        "ipaddr": [{"ipaddr": "192.0.2.18", "mask": "32"}],
        "routes": [{"target": "0.0.0.0", "netmask": "0"}],
        "tunnel": {"mode": "ipip6", "local": "2001:db8:12:3400:0:c000:212:34",
            "remote": "2001:db8:ffff::1", "link": "wan6", "ttl": 64, "mtu": 1460,
            "data": {"encaplimit": "ignore"}}})
}

#[test]
fn answers_and_records_for_our_client() {
    let (dir, sock) = start("fake-ubusd-ours");
    // One connection for every call, as the handler's RealSystem uses it.
    let mut u = Ubus::connect(Some(&sock), Duration::from_secs(5)).unwrap();
    let wan6: Value = serde_json::from_str(WAN6).unwrap();
    assert_eq!(
        u.call("network.interface.wan6", "status", &json!({}))
            .unwrap(),
        wan6
    );
    let mut entry = json!({"interface": "wan6"});
    entry
        .as_object_mut()
        .unwrap()
        .extend(wan6.as_object().unwrap().clone());
    assert_eq!(
        u.call("network.interface", "dump", &json!({})).unwrap(),
        json!({ "interface": [entry] })
    );
    let payload = notify_payload();
    assert_eq!(
        u.call("network.interface", "notify_proto", &payload)
            .unwrap(),
        Value::Null
    );
    let down = json!({"action": 4, "interface": "wanmap", "host": "2001:db8:ffff::1"});
    u.call("network.interface", "notify_proto", &down).unwrap();
    // Recorded before the answer, in the old fake-ubus's format, byte for byte.
    assert_eq!(
        calls(&dir),
        [
            old_line("network.interface", "notify_proto", &payload),
            old_line("network.interface", "notify_proto", &down)
        ]
    );
    // No status file, no object: "Not found" from the LOOKUP, nothing recorded.
    let e = u
        .call("network.interface.wan", "status", &json!({}))
        .unwrap_err();
    assert_eq!(e.status(), Some(status::NOT_FOUND), "{e}");
    let e = u.call("system", "board", &json!({})).unwrap_err();
    assert_eq!(e.status(), Some(status::NOT_FOUND), "{e}");
    assert_eq!(calls(&dir).len(), 2);
    // A status file that is not JSON is an error, not a panic or an empty answer.
    std::fs::write(dir.join("status/wan6.json"), "{").unwrap();
    let e = u
        .call("network.interface.wan6", "status", &json!({}))
        .unwrap_err();
    assert_eq!(e.status(), Some(status::UNKNOWN_ERROR), "{e}");
    // A new connection still works (the server serves each in a thread).
    let mut u2 = Ubus::connect(Some(&sock), Duration::from_secs(5)).unwrap();
    u2.lookup("network.interface").unwrap();
}

#[test]
fn answers_and_records_for_the_real_ubus_cli() {
    let Some(prefix) = common::userland() else {
        return;
    };
    let (dir, sock) = start("fake-ubusd-cli");
    let ubus = |args: &[&str]| {
        Command::new(prefix.join("bin/ubus"))
            .env("LD_LIBRARY_PATH", prefix.join("lib"))
            .arg("-s")
            .arg(&sock)
            .args(["-t", "5"])
            .args(args)
            .output()
            .unwrap()
    };
    let out = ubus(&["call", "network.interface.wan6", "status"]);
    assert!(out.status.success(), "{out:?}");
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got, serde_json::from_str::<Value>(WAN6).unwrap());

    let payload = notify_payload();
    let out = ubus(&[
        "call",
        "network.interface",
        "notify_proto",
        &payload.to_string(),
    ]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert_eq!(
        calls(&dir),
        [old_line("network.interface", "notify_proto", &payload)]
    );

    // `ubus list` is a LOOKUP without a path; `ubus list PATTERN*` one with a wildcard.
    let out = ubus(&["list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "network.interface\nnetwork.interface.wan6\n",
        "{out:?}"
    );
    let out = ubus(&["list", "network.interface.*"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "network.interface.wan6\n"
    );

    // The CLI's own "Not found" (its exit status is the ubus status).
    let out = ubus(&["call", "network.interface.wan", "status"]);
    assert_eq!(out.status.code(), Some(status::NOT_FOUND as i32), "{out:?}");
    assert_eq!(calls(&dir).len(), 1);
}
