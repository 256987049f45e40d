//! `mape status` on the real kernel: a LAN namespace opens real TCP and UDP flows through a CE
//! namespace (the real handler's nft table and state, behind a fake ubus) to a server
//! namespace; `mape status --json` in the CE must count, per port set, per protocol and per LAN
//! host, exactly the source ports the server saw. A 48-port rule crosses the 80% warning and
//! then runs out of ports, which conntrack's insert_failed must show. The watch task's status
//! round is checked too (status file, `notify_proto` with `keep` and `data.mape_status`).
//!
//! Needs root, `ip` (iproute2), `nft` and python3. A missing capability is a failure with a
//! message, not a skip; set MAPE_SKIP_ROOT_TESTS=1 to opt out explicitly.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::ChildStdout;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{root_tests, run, sh, tempdir, Bg, Netns, BIN};

/// `ubus` stand-in: `status` of the link and `dump` from files, every other call logged.
const FAKE_UBUS: &str = r#"#!/bin/sh
[ "$1" = -t ] && shift 2 # the handler bounds every call: ubus -t SECONDS call ...
[ "$1" = call ] || exit 1
case "$2 $3" in
  network.interface.*" status") cat "$FAKE_UBUS_DIR/status.json" ;;
  "network.interface dump") cat "$FAKE_UBUS_DIR/dump.json" 2>/dev/null || echo '{"interface":[]}' ;;
  *) printf '%s %s %s\n' "$2" "$3" "$4" >> "$FAKE_UBUS_DIR/calls.log" ;;
esac
"#;

/// Server: TCP on `tcp_ports`, UDP echo on `udp_ports`; every connection is kept open and
/// logged as `<proto> <local port> <peer address> <peer port>`.
const SERVER: &str = r#"
import socket, sys, threading, time
seen = open(sys.argv[1], "w"); lock = threading.Lock(); held = []
def log(*f):
    with lock:
        seen.write(" ".join(str(x) for x in f) + "\n"); seen.flush()
def tcp(port):
    t = socket.socket(); t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("10.99.0.2", port)); t.listen(512)
    while True:
        c, a = t.accept(); held.append(c); log("tcp", port, a[0], a[1]); c.sendall(b"ok")
def udp(port):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("10.99.0.2", port))
    while True:
        d, a = u.recvfrom(100); log("udp", port, a[0], a[1]); u.sendto(b"ok", a)
for p in sys.argv[2].split(","):
    threading.Thread(target=tcp, args=(int(p),), daemon=True).start()
for p in sys.argv[3].split(","):
    threading.Thread(target=udp, args=(int(p),), daemon=True).start()
print("listening", flush=True)
time.sleep(120)
"#;

/// Client: from `src`, `n_tcp` TCP connections to `tcp_port` and `n_udp` UDP exchanges with
/// `udp_port`, all kept open; prints `ready <tcp ok> <tcp failed> <udp ok>`, then holds them
/// until stdin closes.
const CLIENT: &str = r#"
import socket, sys
src, tcp_port, n_tcp, udp_port, n_udp, timeout = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
held = []; ok = failed = uok = 0
for i in range(n_tcp):
    try:
        s = socket.create_connection(("10.99.0.2", tcp_port), timeout=timeout, source_address=(src, 0))
        s.settimeout(5); ok += s.recv(2) == b"ok"; held.append(s)
    except OSError:
        failed += 1
for i in range(n_udp):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((src, 0)); u.settimeout(5)
    u.sendto(b"x", ("10.99.0.2", udp_port)); uok += u.recvfrom(10)[0] == b"ok"; held.append(u)
print("ready", ok, failed, uok, flush=True)
sys.stdin.read()
"#;

fn read_line(out: &mut BufReader<ChildStdout>, what: &str) -> String {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "{what} exited early");
    line.trim().to_string()
}

/// LAN (192.168.1.2 and .3) — CE (handler setup for `config`) — server (10.99.0.2).
struct Bed {
    lan: Netns,
    ce: Netns,
    srv: Netns,
    dir: PathBuf,
    env: String,
}

impl Bed {
    fn new(tag: &str, config: &str, prefix: (&str, u8), public_v4: &str) -> Bed {
        let lan = Netns::new(&format!("{tag}-lan"));
        let ce = Netns::new(&format!("{tag}-ce"));
        let srv = Netns::new(&format!("{tag}-srv"));
        sh(&format!(
            "ip link add lan0 netns {} type veth peer name lan1 netns {}",
            lan.0, ce.0
        ));
        sh(&format!(
            "ip link add map-wanmap netns {} type veth peer name srv0 netns {}",
            ce.0, srv.0
        ));
        lan.exec(
            "ip addr add 192.168.1.2/24 dev lan0 && ip addr add 192.168.1.3/24 dev lan0 \
             && ip link set lan0 up && ip route add default via 192.168.1.1",
        );
        ce.exec(
            "ip link add wan type veth peer name wanpeer && ip link set wanpeer up && ip link set wan up \
             && ip addr add 192.168.1.1/24 dev lan1 && ip link set lan1 up \
             && ip addr add 10.99.0.1/30 dev map-wanmap && ip link set map-wanmap up \
             && ip route add default via 10.99.0.2 && sysctl -qw net.ipv4.ip_forward=1",
        );
        srv.exec(&format!(
            "ip addr add 10.99.0.2/30 dev srv0 && ip link set srv0 up && ip route add {public_v4}/32 via 10.99.0.1"
        ));

        let dir = tempdir(tag);
        std::fs::write(dir.join("ubus"), FAKE_UBUS).unwrap();
        run(&["chmod", "755", dir.join("ubus").to_str().unwrap()]);
        std::fs::write(
            dir.join("status.json"),
            format!(
                r#"{{"up":true,"l3_device":"wan","ipv6-prefix":[{{"address":"{}","mask":{}}}]}}"#,
                prefix.0, prefix.1
            ),
        )
        .unwrap();
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        std::fs::write(dir.join("client.py"), CLIENT).unwrap();
        let d = dir.display();
        let env = format!("PATH={d}:$PATH FAKE_UBUS_DIR={d} MAPE_STATE_DIR={d}/state");
        ce.exec(&format!("{env} {BIN} netifd mape setup wanmap '{config}'"));
        assert!(
            ce.exec("nft list tables").contains("table ip mape_wanmap"),
            "the handler loaded our table"
        );
        Bed {
            lan,
            ce,
            srv,
            dir,
            env,
        }
    }

    fn server(&self, tcp: &str, udp: &str) -> Bg {
        let d = self.dir.display().to_string();
        let mut c = self.srv.spawn(&[
            "python3",
            &format!("{d}/server.py"),
            &format!("{d}/seen.txt"),
            tcp,
            udp,
        ]);
        let mut out = BufReader::new(c.stdout.take().unwrap());
        assert_eq!(read_line(&mut out, "the server"), "listening");
        Bg(c)
    }

    /// Opens and holds flows from `src`; returns (tcp ok, tcp failed, udp ok) and the holder.
    fn client(
        &self,
        src: &str,
        tcp_port: u16,
        n_tcp: u32,
        udp_port: u16,
        n_udp: u32,
        timeout: f32,
    ) -> ((u32, u32, u32), Bg) {
        let d = self.dir.display().to_string();
        let mut c = self.lan.spawn(&[
            "python3",
            &format!("{d}/client.py"),
            src,
            &tcp_port.to_string(),
            &n_tcp.to_string(),
            &udp_port.to_string(),
            &n_udp.to_string(),
            &timeout.to_string(),
        ]);
        let mut out = BufReader::new(c.stdout.take().unwrap());
        let line = read_line(&mut out, "a client");
        let f: Vec<u32> = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("client said {line:?}"))
            .split(' ')
            .map(|x| x.parse().unwrap())
            .collect();
        ((f[0], f[1], f[2]), Bg(c))
    }

    /// `mape status --json wanmap` in the CE namespace.
    fn status(&self) -> Value {
        let out = self
            .ce
            .exec(&format!("{} {BIN} status --json --top 10 wanmap", self.env));
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        assert_eq!(v["version"], 1);
        assert_eq!(v["interfaces"].as_array().unwrap().len(), 1, "{v}");
        v
    }

    /// What the server saw: (proto, local port, peer port).
    fn seen(&self, public_v4: &str) -> Vec<(String, u16, u16)> {
        let text = std::fs::read_to_string(self.dir.join("seen.txt")).unwrap();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                assert_eq!(f[2], public_v4, "the server saw {l}");
                (
                    f[0].to_string(),
                    f[1].parse().unwrap(),
                    f[3].parse().unwrap(),
                )
            })
            .collect()
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        let _ = self.ce.try_exec(&format!(
            "{} {BIN} netifd mape teardown wanmap '{{}}'",
            self.env
        ));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Per port set: (distinct ports any protocol, tcp ports, udp ports), from what the server saw.
fn expected_sets(sets: &[(u16, u16)], seen: &[(String, u16, u16)]) -> Vec<(u32, u32, u32)> {
    sets.iter()
        .map(|&(lo, hi)| {
            let inside: Vec<&(String, u16, u16)> =
                seen.iter().filter(|s| (lo..=hi).contains(&s.2)).collect();
            let distinct = |p: Option<&str>| {
                inside
                    .iter()
                    .filter(|s| p.map_or(true, |p| s.0 == p))
                    .map(|s| s.2)
                    .collect::<BTreeSet<u16>>()
                    .len() as u32
            };
            (distinct(None), distinct(Some("tcp")), distinct(Some("udp")))
        })
        .collect()
}

fn port_sets(i: &Value) -> Vec<(u16, u16)> {
    i["port_sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["first"].as_u64().unwrap() as u16,
                s["last"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

fn codes(i: &Value) -> Vec<String> {
    i["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["code"].as_str().unwrap().to_string())
        .collect()
}

fn distinct_ports(seen: &[&(String, u16, u16)]) -> u64 {
    seen.iter().map(|s| s.2).collect::<BTreeSet<u16>>().len() as u64
}

#[test]
fn status_counts_real_flows_per_set_protocol_and_host() {
    if !root_tests(&["ip", "nft", "python3"]) {
        return;
    }
    let v4 = "106.72.63.108";
    let bed = Bed::new(
        "v6p",
        r#"{"tunlink":"wan6"}"#,
        ("240b:10:3f6c:d400::", 56),
        v4,
    );
    assert!(
        bed.ce
            .try_exec("test -r /proc/net/nf_conntrack")
            .status
            .success(),
        "/proc/net/nf_conntrack is missing: the kernel needs CONFIG_NF_CONNTRACK_PROCFS"
    );
    // The handler's state now carries the mapping: status needs no ubus.
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(bed.dir.join("state/wanmap.json")).unwrap())
            .unwrap();
    assert_eq!(state["mapping"]["port_count"], 240);

    let _server = bed.server("8080,8090", "8081");
    // Host .2: 30 TCP + 5 UDP; host .3: 10 TCP to another port (so the server tells them apart).
    let (a, _holder_a) = bed.client("192.168.1.2", 8080, 30, 8081, 5, 5.0);
    let (b, _holder_b) = bed.client("192.168.1.3", 8090, 10, 8081, 0, 5.0);
    assert_eq!((a, b), ((30, 0, 5), (10, 0, 0)), "every flow must work");
    std::thread::sleep(Duration::from_millis(300));

    let seen = bed.seen(v4);
    assert_eq!(seen.len(), 45, "{seen:?}");
    let v = bed.status();
    eprintln!("{v:#}");
    let i = &v["interfaces"][0];
    assert_eq!(i["interface"], "wanmap");
    assert_eq!(i["origin"], "state");
    assert_eq!(i["up"], true, "{i}");
    assert_eq!(i["level"], "ok", "{i}");
    assert_eq!(i["isp"], "v6plus");
    assert_eq!(i["ipv4"], v4);
    assert_eq!(i["psid"], 212);
    assert_eq!(i["port_count"], 240);
    assert_eq!(i["tunnel"]["ifname"], "map-wanmap");
    assert_eq!(i["tunnel"]["up"], true);
    assert_eq!(i["nft"]["present"], true);
    // One packet per new flow reaches the NAT chain.
    assert_eq!(i["nft"]["counters"]["snat_tcp"]["packets"], 40);
    assert_eq!(i["nft"]["counters"]["snat_udp"]["packets"], 5);
    assert_eq!(v["conntrack"]["source"], "/proc/net/nf_conntrack");
    assert_eq!(v["conntrack"]["insert_failed"], 0);

    // Per set: exactly the ports the server saw, bucketed by the mapping's sets.
    let sets = port_sets(i);
    assert_eq!(sets.len(), 15);
    let want = expected_sets(&sets, &seen);
    for (k, (s, w)) in i["port_sets"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&want)
        .enumerate()
    {
        assert_eq!(
            (
                s["in_use"].as_u64().unwrap() as u32,
                s["tcp"].as_u64().unwrap() as u32,
                s["udp"].as_u64().unwrap() as u32
            ),
            *w,
            "set {k} {s}"
        );
    }
    let all: Vec<&(String, u16, u16)> = seen.iter().collect();
    let p = &i["ports"];
    assert_eq!(p["in_use"].as_u64().unwrap(), distinct_ports(&all));
    // Flows to different destinations may share a port (the kernel only needs the whole
    // tuple to be unique): count what the server saw.
    let tcp: Vec<&(String, u16, u16)> = seen.iter().filter(|s| s.0 == "tcp").collect();
    assert_eq!(p["tcp"]["ports"].as_u64().unwrap(), distinct_ports(&tcp));
    assert_eq!(p["tcp"]["connections"], 40);
    assert_eq!(p["udp"]["ports"], 5);
    assert_eq!(p["connections"], 45);
    assert_eq!(p["outside_sets"], 0);
    assert_eq!(p["hosts"], 2);
    assert_eq!(
        p["usage_percent"].as_u64().unwrap(),
        distinct_ports(&all) * 100 / 240
    );

    // Per host: host .2 used ports 8080/8081 on the server, host .3 port 8090.
    let of_a: Vec<&(String, u16, u16)> = seen.iter().filter(|s| s.1 != 8090).collect();
    let hosts = i["top_hosts"].as_array().unwrap();
    assert_eq!(hosts[0]["address"], "192.168.1.2");
    assert_eq!(hosts[0]["ports"].as_u64().unwrap(), distinct_ports(&of_a));
    assert_eq!(
        (&hosts[0]["tcp"], &hosts[0]["udp"], &hosts[0]["connections"]),
        (&30.into(), &5.into(), &35.into())
    );
    assert_eq!(hosts[1]["address"], "192.168.1.3");
    assert_eq!(
        (
            &hosts[1]["ports"],
            &hosts[1]["tcp"],
            &hosts[1]["connections"]
        ),
        (&10.into(), &10.into(), &10.into())
    );
    let dest = &i["top_destinations"][0];
    assert_eq!(
        (
            &dest["proto"],
            &dest["address"],
            &dest["port"],
            &dest["connections"]
        ),
        (&"tcp".into(), &"10.99.0.2".into(), &8080.into(), &30.into())
    );

    // The dashboard says the same.
    let text = bed.ce.exec(&format!("{} {BIN} status wanmap", bed.env));
    let line = format!(
        "Ports       {}/240 in use ({}%): tcp {}, udp 5, icmp 0; 45 flows, 2 hosts",
        distinct_ports(&all),
        distinct_ports(&all) * 100 / 240,
        distinct_ports(&tcp)
    );
    assert!(text.contains(&line), "{text}");
    assert!(text.starts_with("wanmap: up (ok), v6plus"), "{text}");

    // The watch task's round: the status file and data.mape_status through notify_proto.
    let d = bed.dir.display();
    let watch = bed.ce.try_exec(&format!(
        "{} {BIN} netifd watch wanmap '{{\"tunlink\":\"wan6\"}}' --current 240b:10:3f6c:d400::/56 --once",
        bed.env
    ));
    assert_eq!(watch.status.code(), Some(0), "{watch:?}");
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{d}/state/status/wanmap.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(file["ports"], i["ports"]);
    assert_eq!(file["version"], 1);
    let calls = std::fs::read_to_string(bed.dir.join("calls.log")).unwrap();
    let push = calls
        .lines()
        .rfind(|l| l.contains("mape_status"))
        .unwrap_or_else(|| panic!("no status push in {calls}"));
    let msg: Value =
        serde_json::from_str(push.trim_start_matches("network.interface notify_proto ")).unwrap();
    assert_eq!(msg["action"], 0);
    assert_eq!(msg["keep"], true);
    assert!(msg.get("ifname").is_none() && msg.get("ipaddr").is_none());
    assert_eq!(msg["data"]["mape_status"]["ports"], i["ports"]);
}

#[test]
fn status_warns_past_80_percent_and_sees_snat_fail() {
    if !root_tests(&["ip", "nft", "python3"]) {
        return;
    }
    // An explicit rule with PSID offset 2 and length 10: 3 sets of 16 ports, 48 in all.
    let v4 = "198.51.100.18";
    let config = r#"{"tunlink":"wan6","peeraddr":"2001:db8:ffff::1","ipaddr":"198.51.100.0","ip4prefixlen":24,"ip6prefix":"2001:db8::","ip6prefixlen":32,"ealen":18,"offset":2}"#;
    let bed = Bed::new("few", config, ("2001:db8:1234:4000::", 56), v4);
    let _server = bed.server("8080", "8081");

    // 40 of 48 ports (83%), all to one destination.
    let (a, _holder_a) = bed.client("192.168.1.2", 8080, 40, 8081, 0, 5.0);
    assert_eq!(a, (40, 0, 0));
    std::thread::sleep(Duration::from_millis(300));
    let seen = bed.seen(v4);
    let v = bed.status();
    let i = &v["interfaces"][0];
    assert_eq!(i["port_count"], 48);
    assert_eq!(i["psid"], 209);
    let sets = port_sets(i);
    assert_eq!(sets, [(19728, 19743), (36112, 36127), (52496, 52511)]);
    let want = expected_sets(&sets, &seen);
    let got: Vec<(u32, u32, u32)> = i["port_sets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["in_use"].as_u64().unwrap() as u32,
                s["tcp"].as_u64().unwrap() as u32,
                s["udp"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    assert_eq!(got, want);
    assert_eq!(i["ports"]["in_use"], 40);
    assert_eq!(i["ports"]["usage_percent"], 83);
    assert_eq!(i["level"], "warning");
    let c = codes(i);
    assert!(c.contains(&"PORTS_HIGH".to_string()), "{c:?}");
    assert!(c.contains(&"DESTINATION_HIGH".to_string()), "{c:?}");
    let text = bed.ce.exec(&format!("{} {BIN} status wanmap", bed.env));
    assert!(
        text.contains("warning     PORTS_HIGH: 40 of 48 ports in use (83%)"),
        "{text}"
    );

    // 12 more to the same destination: at most 8 fit; the rest find no free port.
    let (b, _holder_b) = bed.client("192.168.1.3", 8080, 12, 8081, 0, 1.5);
    assert_eq!(b.0 + b.1, 12);
    assert!(
        b.1 >= 4,
        "48 ports hold at most 48 flows to one destination: {b:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = bed.seen(v4);
    assert_eq!(seen.len() as u32, 40 + b.0);
    let v = bed.status();
    let i = &v["interfaces"][0];
    let all: Vec<&(String, u16, u16)> = seen.iter().collect();
    assert_eq!(i["ports"]["in_use"].as_u64().unwrap(), distinct_ports(&all));
    assert_eq!(
        i["ports"]["tcp"]["connections"].as_u64().unwrap() as u32,
        40 + b.0
    );
    assert_eq!(
        i["top_destinations"][0]["connections"].as_u64().unwrap() as u32,
        40 + b.0
    );
    let failed = v["conntrack"]["insert_failed"].as_u64().unwrap();
    assert!(
        failed >= u64::from(b.1),
        "every dropped SYN is a failed insert: {failed} < {}",
        b.1
    );
    let text = bed.ce.exec(&format!("{} {BIN} status wanmap", bed.env));
    eprintln!("{text}");
    assert!(text.contains(&format!("insert_failed {failed}")), "{text}");
}
