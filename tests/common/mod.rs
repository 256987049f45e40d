//! Helpers shared by the integration tests that need root: network namespaces, commands,
//! scratch directories. Each test binary uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The `mape` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_mape");

/// Whether a root test may run: true as root with `tools` installed; false only when the user
/// opted out with MAPE_SKIP_ROOT_TESTS=1. Anything else missing is a failure, not a skip, so
/// CI can never pass by skipping.
pub fn root_tests(tools: &[&str]) -> bool {
    if std::env::var_os("MAPE_SKIP_ROOT_TESTS").is_some() {
        eprintln!("MAPE_SKIP_ROOT_TESTS set: skipping a root test");
        return false;
    }
    let uid = Command::new("id").arg("-u").output().expect("id -u");
    assert_eq!(
        String::from_utf8_lossy(&uid.stdout).trim(),
        "0",
        "this test needs root (network namespaces, nft); run ./test.sh as root or set MAPE_SKIP_ROOT_TESTS=1"
    );
    for tool in tools {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap();
        assert!(
            found.status.success(),
            "{tool} is missing: run ./test.sh, which installs it"
        );
    }
    true
}

/// Runs a command that must succeed.
pub fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a shell script that must succeed; its stdout.
pub fn sh(script: &str) -> String {
    String::from_utf8_lossy(&run(&["sh", "-c", script]).stdout).into_owned()
}

/// A network namespace, deleted on drop (even when the test fails).
pub struct Netns(pub String);

impl Netns {
    pub fn new(tag: &str) -> Self {
        let name = format!("mape-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Netns(name)
    }

    /// Runs a shell script inside that must succeed; its stdout.
    pub fn exec(&self, script: &str) -> String {
        sh(&format!(
            "ip netns exec {} sh -c '{}'",
            self.0,
            script.replace('\'', "'\\''")
        ))
    }

    /// Runs a shell script inside; whatever happens.
    pub fn try_exec(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.0, "sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Starts a process inside with piped stdio.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A background process, killed on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh scratch directory for one test.
pub fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("mape-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// netifd's ubus objects for the namespace tests: the real ubusd (built by
/// tests/openwrt/userland.sh) and a recorder in the real ucode (tests/common/netifd-recorder.uc)
/// standing in for netifd, which runs for real only in the VM bed. `dir/status.json` answers
/// `network.interface.wan6 status`, `dir/dump.json` `network.interface dump`, and every
/// `notify_proto` is appended to `dir/calls.log` as `network.interface notify_proto <JSON>`.
/// `None` (one SKIP line) when the OpenWrt sources are absent outside CI.
pub struct FakeNetifd {
    pub ubusd: Ubusd,
    pub dir: PathBuf,
}

impl FakeNetifd {
    pub fn start(dir: &std::path::Path) -> Option<Self> {
        let prefix = userland()?;
        let mut ubusd = Ubusd::start(&prefix, dir);
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/common/netifd-recorder.uc");
        let sock = ubusd.socket.to_str().unwrap().to_string();
        let lib = prefix.join("lib/ucode");
        ubusd.spawn(
            &prefix,
            &[
                "bin/ucode",
                "-L",
                lib.to_str().unwrap(),
                script.to_str().unwrap(),
                &sock,
                dir.to_str().unwrap(),
            ],
        );
        wait_for(
            || dir.join("recorder.ready").exists(),
            "the netifd recorder",
        );
        Some(FakeNetifd {
            ubusd,
            dir: dir.to_path_buf(),
        })
    }

    /// The environment the handler needs to find this ubusd.
    pub fn env(&self) -> String {
        format!("MAPE_UBUS_SOCKET={}", self.ubusd.socket.display())
    }

    /// The recorded `notify_proto` calls, as JSON.
    pub fn calls(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| {
                serde_json::from_str(l.trim_start_matches("network.interface notify_proto "))
                    .unwrap()
            })
            .collect()
    }
}

/// The real OpenWrt userland (ubusd, rpcd, netifd, ucode, ...) built by
/// tests/openwrt/userland.sh, or `None` with one "SKIP:" line when its sources are absent
/// outside CI (the script fails in CI, and so does this).
pub fn userland() -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/openwrt/userland.sh");
    let out = Command::new(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/openwrt/userland.sh");
    match out.status.code() {
        Some(0) => Some(PathBuf::from(
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
        )),
        Some(77) => None,
        _ => panic!("tests/openwrt/userland.sh failed (see above)"),
    }
}

/// A real ubusd on a socket of its own, killed on drop.
pub struct Ubusd {
    pub socket: PathBuf,
    children: Vec<Child>,
}

impl Ubusd {
    pub fn start(prefix: &std::path::Path, dir: &std::path::Path) -> Self {
        let socket = dir.join("ubus.sock");
        let _ = std::fs::remove_file(&socket);
        let child = Command::new(prefix.join("sbin/ubusd"))
            .arg("-s")
            .arg(&socket)
            .spawn()
            .expect("start ubusd");
        let u = Ubusd {
            socket,
            children: vec![child],
        };
        wait_for(|| u.socket.exists(), "ubusd's socket");
        u
    }

    /// Starts another program of the userland against this ubusd (killed on drop).
    pub fn spawn(&mut self, prefix: &std::path::Path, argv: &[&str]) {
        let child = Command::new(prefix.join(argv[0]))
            .args(&argv[1..])
            .env("LD_LIBRARY_PATH", prefix.join("lib"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
        self.children.push(child);
    }

    /// The real `ubus` CLI against this ubusd.
    pub fn cli(&self, prefix: &std::path::Path, args: &[&str]) -> Output {
        Command::new(prefix.join("bin/ubus"))
            .arg("-s")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Ubusd {
    fn drop(&mut self) {
        for c in self.children.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Polls `cond` for up to 10 s.
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
