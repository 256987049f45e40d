//! Our ubus client (src/ubus.rs) against the real ubusd, rpcd and ucode's ubus module, built
//! from OpenWrt's sources by tests/openwrt/userland.sh: calls, a message over the 128 KiB that
//! the `ubus` CLI cannot pass as one argument, errors, and subscriptions with the end of one.

mod common;

use std::time::Duration;

use common::{tempdir, userland, wait_for, Ubusd};
use mape::ubus::{status, Event, Ubus};
use serde_json::{json, Value};

const NOTIFIER: &str = r#"
let ubus = require("ubus");
let uloop = require("uloop");
uloop.init();
let conn = ubus.connect(ARGV[0]);
let n = 0;
let obj = conn.publish("test.notifier", {
	echo: { call: function(req) { return req.args; }, args: { any: "" } },
});
let t;
t = uloop.timer(100, function() {
	n++;
	obj.notify("interface.update", { interface: "wan6", n: n }, null, null, null, -1);
	if (n < 3) t.set(100); else uloop.timer(300, function() { uloop.end(); });
});
uloop.run();
"#;

#[test]
fn calls_subscriptions_and_big_messages_against_the_real_ubusd() {
    let Some(p) = userland() else { return };
    let dir = tempdir("ubus-real");
    let mut d = Ubusd::start(&p, &dir);
    let sock = d.socket.to_str().unwrap().to_string();
    d.spawn(&p, &["sbin/rpcd", "-s", &sock]);
    wait_for(
        || String::from_utf8_lossy(&d.cli(&p, &["list", "session"]).stdout).contains("session"),
        "rpcd's session object",
    );
    let mut u = Ubus::connect(Some(&d.socket), Duration::from_secs(5)).unwrap();

    // A call and its reply, checked against the real CLI's view of the same session.
    let s = u
        .call("session", "create", &json!({"timeout": 60}))
        .unwrap();
    let sid = s["ubus_rpc_session"].as_str().unwrap().to_string();
    assert_eq!(s["timeout"], 60);
    let cli = d.cli(
        &p,
        &[
            "call",
            "session",
            "list",
            &json!({"ubus_rpc_session": sid}).to_string(),
        ],
    );
    assert!(cli.status.success());
    let listed: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(listed["ubus_rpc_session"], sid.as_str());

    // 300 KB in one message: over Linux's 128 KiB limit for one argument of the ubus CLI.
    let big = "x".repeat(300_000);
    u.call(
        "session",
        "set",
        &json!({"ubus_rpc_session": sid, "values": {"big": big, "n": 7, "ok": true}}),
    )
    .unwrap();
    let got = u
        .call("session", "get", &json!({"ubus_rpc_session": sid}))
        .unwrap();
    assert_eq!(got["values"]["big"].as_str().map(str::len), Some(300_000));
    assert_eq!(
        (got["values"]["n"].clone(), got["values"]["ok"].clone()),
        (json!(7), json!(true))
    );

    // Errors are typed: an object that does not exist, a method it lacks.
    let e = u
        .call("network.interface.nope", "status", &json!({}))
        .unwrap_err();
    assert_eq!(e.status(), Some(status::NOT_FOUND), "{e}");
    let e = u.call("session", "nope", &json!({})).unwrap_err();
    assert_eq!(e.status(), Some(status::METHOD_NOT_FOUND), "{e}");

    // Subscriptions: a ucode object publishes three notifications, then goes away.
    let script = dir.join("notifier.uc");
    std::fs::write(&script, NOTIFIER).unwrap();
    d.spawn(
        &p,
        &[
            "bin/ucode",
            "-L",
            p.join("lib/ucode").to_str().unwrap(),
            script.to_str().unwrap(),
            &sock,
        ],
    );
    wait_for(
        || u.lookup("test.notifier").is_ok(),
        "the ucode notifier object",
    );
    assert_eq!(
        u.call("test.notifier", "echo", &json!({"any": "thing"}))
            .unwrap(),
        json!({"any": "thing"})
    );
    u.subscribe("test.notifier").unwrap();
    let mut seen = Vec::new();
    loop {
        match u.next_event(Duration::from_secs(5)).unwrap() {
            Some(Event::Notify(kind, data)) => {
                assert_eq!(kind, "interface.update");
                assert_eq!(data["interface"], "wan6");
                seen.push(data["n"].as_i64().unwrap());
            }
            Some(Event::Gone) => break,
            None => panic!("no event within 5 s; saw {seen:?}"),
        }
    }
    assert!(
        !seen.is_empty() && seen.windows(2).all(|w| w[1] == w[0] + 1),
        "{seen:?}"
    );
    // Nothing more, and the connection still works.
    assert_eq!(u.next_event(Duration::from_millis(200)).unwrap(), None);
    assert!(u.lookup("session").is_ok());
}
