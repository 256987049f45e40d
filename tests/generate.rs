//! `mape generate` golden tests, and `generate`/`up --dry-run`/`down` against real `ip -j`
//! output in a network namespace (the real tunnel is tested in the VM: tests/e2e/linux-up.sh).
//!
//! Goldens live in tests/golden/<case>/: the files `generate --out` wrote, plus `stdout`. The
//! test regenerates each case and compares byte for byte. After an intended change, run
//! `MAPE_UPDATE_GOLDEN=1 cargo test --test generate` and review the diff by hand: the networkd
//! keys must stay what systemd.netdev(5)/systemd.network(5) document.
#![cfg(feature = "linux")]

mod common;
use common::sh;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_mape");

/// A fresh scratch directory under the target dir (removed first, kept after for inspection).
fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("generate-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mape(cwd: &Path, env: &[(&str, &Path)], args: &[&str]) -> Output {
    let mut c = Command::new(BIN);
    // No .network file of the machine running the tests may name the drop-in.
    c.args(args)
        .current_dir(cwd)
        .env("MAPE_NETWORKD_DIR", cwd.join("no-networkd-dir"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// Every file under `dir`, by relative path.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Compares (or with MAPE_UPDATE_GOLDEN=1 rewrites) tests/golden/<case>.
fn check_golden(case: &str, got: BTreeMap<String, Vec<u8>>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(case);
    if std::env::var_os("MAPE_UPDATE_GOLDEN").is_some() {
        let _ = std::fs::remove_dir_all(&dir);
        for (rel, bytes) in &got {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        return;
    }
    let want = tree(&dir);
    assert!(
        !want.is_empty(),
        "no golden files in {} (run with MAPE_UPDATE_GOLDEN=1 once, then review them)",
        dir.display()
    );
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{case}: file list differs");
    for (rel, bytes) in &got {
        if bytes != &want[rel] {
            let g = String::from_utf8_lossy(bytes);
            let w = String::from_utf8_lossy(&want[rel]);
            let line = g
                .lines()
                .zip(w.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(g.lines().count().min(w.lines().count()));
            panic!(
                "{case}/{rel} differs from the golden at line {}:\n  got:  {:?}\n  want: {:?}\n(MAPE_UPDATE_GOLDEN=1 to regenerate, then review)",
                line + 1,
                g.lines().nth(line),
                w.lines().nth(line)
            );
        }
    }
}

/// Runs `generate` in a scratch dir; the golden is what it wrote under `out/` plus stdout.
fn golden_case(
    case: &str,
    wan_network_file: Option<&str>,
    args: &[&str],
) -> BTreeMap<String, Vec<u8>> {
    let dir = scratch(case);
    let netdir = dir.join("etc-systemd-network");
    std::fs::create_dir_all(&netdir).unwrap();
    if let Some(text) = wan_network_file {
        std::fs::write(netdir.join("10-wan.network"), text).unwrap();
        // A file for another device must not be picked.
        std::fs::write(
            netdir.join("05-lan.network"),
            "[Match]\nName=enp2s0\n\n[Network]\nAddress=192.168.1.1/24\n",
        )
        .unwrap();
    }
    let out = mape(&dir, &[("MAPE_NETWORKD_DIR", &netdir)], args);
    assert!(
        out.status.success(),
        "{case}: {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got = tree(&dir.join("out"));
    got.insert("stdout".into(), out.stdout);
    got
}

#[test]
fn golden_v6plus_all_formats() {
    let got = golden_case(
        "v6plus-all",
        Some("[Match]\nName=enp1s0\n\n[Network]\nDHCP=ipv6\nIPForward=yes\n"),
        &[
            "generate",
            "--wan",
            "enp1s0",
            "--prefix",
            "240b:10:3f6c:d400::/56",
            "--format",
            "all",
            "--out",
            "out",
        ],
    );
    // The nft file is the OpenWrt handler's ruleset (one renderer): spot-check its shape.
    let nft = String::from_utf8_lossy(&got["mape_enp1s0.nft"]).into_owned();
    assert!(nft.contains("table ip mape_enp1s0 {"));
    assert!(nft.contains(
        "oifname \"map-enp1s0\" meta l4proto icmp counter name \"snat_icmp\" numgen inc mod 15 vmap { 0 : goto set_0,"
    ));
    // Each destination walks the sets: its position in dynamic sets, one per position.
    assert!(nft.contains("ip daddr . tcp dport != @tcp_any numgen inc mod 15 vmap"));
    assert!(!nft.contains("jhash"));
    check_golden("v6plus-all", got);
}

#[test]
fn golden_ocn_iptables_with_exclusions() {
    // OCN: 63 sets of 16 ports; two ranges excluded for port forwards; another metric.
    let got = golden_case(
        "ocn-iptables",
        None,
        &[
            "generate",
            "--wan",
            "eth1",
            "--name",
            "ocn",
            "--prefix",
            "2400:4050:1234:5600::/56",
            "--ports-exclude",
            "6496-6498 6511",
            "--format",
            "iptables",
            "--out",
            "out",
        ],
    );
    check_golden("ocn-iptables", got);
}

#[test]
fn golden_explicit_rule_ipv4_prefix_networkd() {
    // An explicit RFC 7597 rule with fewer EA bits than IPv4 suffix bits: the CE gets a /28, no
    // port sharing; no .network file matches the WAN, so the drop-in is named <wan>.network.d.
    let got = golden_case(
        "rfc-prefix-networkd",
        None,
        &[
            "generate",
            "--wan",
            "wan0",
            "--prefix",
            "2001:db8:0:a00::/56",
            "--ipv6-prefix",
            "2001:db8::/52",
            "--ipv4-prefix",
            "192.0.2.0/24",
            "--ea-len",
            "4",
            "--br",
            "2001:db8:ffff::1",
            "--ttl",
            "32",
            "--mtu",
            "1400",
            "--no-default-route",
            "--format",
            "all",
            "--out",
            "out",
        ],
    );
    check_golden("rfc-prefix-networkd", got);
}

#[test]
fn single_format_without_out_prints_the_bare_file() {
    let dir = scratch("stdout");
    let args = [
        "generate",
        "--wan",
        "enp1s0",
        "--prefix",
        "240b:10:3f6c:d400::/56",
    ];
    let nft = mape(&dir, &[], &[&args[..], &["--format", "nft"]].concat());
    assert!(nft.status.success());
    let golden = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/v6plus-all/mape_enp1s0.nft"),
    )
    .unwrap();
    // Same ruleset; only the re-run line differs (no --out, another --format).
    let strip = |b: &[u8]| -> String {
        String::from_utf8_lossy(b)
            .lines()
            .filter(|l| !l.starts_with("# Re-run"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&nft.stdout), strip(&golden));
    let all = mape(&dir, &[], &[&args[..], &["--format", "all"]].concat());
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(
        text.contains("# ==> enp1s0.network.d/mape.conf <=="),
        "{text}"
    );
    assert!(text.contains("# ==> mape_enp1s0.iptables <=="));
}

/// Failures of the system (not of the input) exit 1, as wireguard-tools does: no prefix to be
/// found on the WAN, a file that cannot be written.
#[test]
fn runtime_failures_are_one_line_and_exit_1() {
    let dir = scratch("runtime");
    std::fs::write(dir.join("not-a-dir"), "").unwrap();
    for args in [
        &["generate", "--wan", "mape-absent0", "--format", "nft"][..],
        &[
            "generate",
            "--wan",
            "enp1s0",
            "--prefix",
            "240b:10:3f6c:d400::/56",
            "--out",
            "not-a-dir/sub",
        ],
    ] {
        let out = mape(&dir, &[], args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("mape: "), "{args:?}: {err}");
    }
}

#[test]
fn bad_input_is_one_line_and_exit_2() {
    let dir = scratch("errors");
    for args in [
        &["generate", "--wan", "enp1s0", "--prefix", "2400:4050::/20"][..],
        &[
            "generate",
            "--wan",
            "../etc",
            "--prefix",
            "240b:10:3f6c:d400::/56",
        ],
        &[
            "generate",
            "--wan",
            "enp1s0",
            "--prefix",
            "240b:10:3f6c:d400::/56",
            "--ports-exclude",
            "80",
        ],
        &[
            "generate", "--wan", "enp1s0", "--prefix", "x", "--format", "nft",
        ],
        &["down"],
    ] {
        let out = mape(&dir, &[], args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("mape: "), "{args:?}: {err}");
    }
}

// --- against the real `ip`, in a network namespace (root) -----------------------------------

struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("mape-gen-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&format!(
            "ip netns add {name} && ip -n {name} link set lo up"
        ));
        Netns(name)
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, BIN])
            .args(args)
            .env("MAPE_STATE_DIR", scratch(&format!("state-{}", self.0)))
            .output()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn detects_the_prefix_from_real_ip_output() {
    if !common::root_tests(&["ip"]) {
        return;
    }
    let ns = Netns::new("detect");
    let n = &ns.0;
    sh(&format!(
        "ip -n {n} link add wan0 type veth peer name lan0 && ip -n {n} link set wan0 up && \
         ip -n {n} link set lan0 up && \
         ip -n {n} -6 addr add 240b:11:aaaa:bb00::2/64 dev wan0 nodad && \
         ip -n {n} -6 addr add 240b:10:3f6c:d401::1/64 dev lan0 nodad"
    ));
    // Only the WAN's SLAAC-style /64 and a LAN /64: the WAN wins.
    let out = ns.run(&["generate", "--wan", "wan0", "--format", "nft"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(
            "prefix 240b:11:aaaa:bb00::/64 (detected on wan0 from a global address on the WAN)"
        ),
        "{text}"
    );
    // A delegated prefix (the unreachable route a PD client installs) wins over both.
    sh(&format!(
        "ip -n {n} -6 route add unreachable 240b:10:3f6c:d400::/56"
    ));
    let out = ns.run(&["generate", "--wan", "wan0", "--format", "nft"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(
            "prefix 240b:10:3f6c:d400::/56 (detected on wan0 from the delegated-prefix route)"
        ),
        "{text}"
    );
    // up --dry-run reads the namespace and prints what it would run, changing nothing.
    let out = ns.run(&["up", "--wan", "wan0", "--dry-run"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "ip -6 addr add 240b:10:3f6c:d400:6a:483f:6c00:d400/128 dev wan0 nodad noprefixroute",
        "ip -6 tunnel add map-wan0 mode ipip6 local 240b:10:3f6c:d400:6a:483f:6c00:d400 remote 2404:9200:225:100::64 dev wan0 encaplimit none hoplimit 64",
        "ip link set dev map-wan0 mtu 1460 up",
        "ip -4 addr add 106.72.63.108/32 dev map-wan0",
        "nft -f - <<'EOF'",
        "ip -4 route replace default dev map-wan0",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    assert!(sh(&format!("ip -n {n} link show"))
        .find("map-wan0")
        .is_none());
    // down on a clean system: nothing to do, success.
    let out = ns.run(&["down", "--wan", "wan0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to remove"));
}

/// The systemd units in contrib/linux pass `systemd-analyze verify` (with the binary path
/// pointed at the test build, which verify requires to exist).
#[test]
fn contrib_units_verify() {
    let dir = scratch("units");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/linux");
    let mut units = Vec::new();
    for (file, instance) in [
        ("mape@.service", "mape@enp1s0.service"),
        ("mape-check@.service", "mape-check@enp1s0.service"),
        ("mape-check@.timer", "mape-check@enp1s0.timer"),
    ] {
        let text = std::fs::read_to_string(src.join(file)).unwrap();
        std::fs::write(
            dir.join(instance),
            text.replace("/usr/local/sbin/mape", BIN),
        )
        .unwrap();
        units.push(dir.join(instance));
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .current_dir(&dir)
        .output()
        .expect("systemd-analyze (package systemd) is needed to check contrib/linux");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.trim().is_empty(), "{err}");
    // The dispatcher hook is plain sh.
    let hook = Command::new("sh")
        .arg("-n")
        .arg(src.join("50-mape"))
        .status()
        .unwrap();
    assert!(hook.success());
}
