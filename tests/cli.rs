//! The `mape` binary on bad input (issue 2): exactly one line on stderr, `mape: ` followed by
//! the field and the value at fault, exit status 2, nothing on stdout, no panic. Plus the
//! counts of `mape rules --json` against the data file.

use std::collections::BTreeMap;
use std::process::{Command, Output};

use serde_json::Value;

const DATA: &str = include_str!("../data/mape-rules-jp.json");
const A1_PREFIX: &str = "2001:db8:12:3400::/56";
const V6PLUS_PD: &str = "240b:10:3251:6400::/56";
const V6PLUS_RULE: &str = "type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,psidlen=8,offset=4,br=2404:9200:225:100::64";
const A1_RULE: &str =
    "type=map-e,ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=192.0.2.0,prefix4len=24,ealen=16";

fn mape(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mape"))
        .args(args)
        .output()
        .expect("run mape")
}

/// Runs a command that must be refused and returns its one stderr line (without `mape: `).
fn refused(args: &[&str]) -> String {
    let out = mape(args);
    let stderr = String::from_utf8(out.stderr).expect("stderr is UTF-8");
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(
        stderr.ends_with('\n') && stderr.matches('\n').count() == 1,
        "{args:?}: not exactly one line: {stderr:?}"
    );
    let line = stderr.trim_end_matches('\n');
    line.strip_prefix("mape: ")
        .unwrap_or_else(|| panic!("{args:?}: no `mape: ` prefix: {line:?}"))
        .to_string()
}

/// Asserts that the message names every one of `needles`.
fn names(msg: &str, needles: &[&str]) {
    for n in needles {
        assert!(msg.contains(n), "{msg:?} does not name {n:?}");
    }
}

fn isp_ids() -> Vec<String> {
    let data: Value = serde_json::from_str(DATA).unwrap();
    data["isps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn explicit_a1(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec![
        "calc",
        A1_PREFIX,
        "--ipv6-prefix",
        "2001:db8::/40",
        "--ipv4-prefix",
        "192.0.2.0/24",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn bad_prefix() {
    for bad in ["240b::zz/56", "240b:10::/129", "240b:10::/x", "1.2.3.4", ""] {
        let msg = refused(&["calc", bad]);
        names(&msg, &["prefix", &format!("{bad:?}")]);
    }
}

#[test]
fn a_newline_in_a_value_stays_on_one_line() {
    let msg = refused(&["calc", "240b::1\n2"]);
    names(&msg, &["prefix"]);
}

#[test]
fn unknown_isp() {
    let msg = refused(&["calc", V6PLUS_PD, "--isp", "plala"]);
    names(&msg, &["isp", "plala"]);
    for id in isp_ids() {
        names(&msg, &[&id]);
    }
    let msg = refused(&["rules", "--isp", "plala"]);
    names(&msg, &["isp", "plala"]);
    for id in isp_ids() {
        names(&msg, &[&id]);
    }
}

#[test]
fn prefix_of_no_isp() {
    // A documentation prefix belongs to none of the ISPs: the message names the prefix and
    // every supported ISP.
    let msg = refused(&["calc", "2001:db8:1234:5600::/56"]);
    names(&msg, &["prefix", "2001:db8:1234:5600::/56"]);
    let ids = isp_ids();
    assert_eq!(ids.len(), 4);
    for id in &ids {
        names(&msg, &[id]);
    }
    // A prefix of another ISP than the one named.
    let msg = refused(&["calc", V6PLUS_PD, "--isp", "ocn"]);
    names(&msg, &["prefix", V6PLUS_PD, "ocn"]);
    // An unverified NURO rule is not auto-detected.
    let msg = refused(&["calc", "240d:f:4000::/56"]);
    names(&msg, &["prefix", "240d:f:4000::/56"]);
}

#[test]
fn prefix_too_short_for_the_rule() {
    let msg = refused(&["calc", "240b:10::/48"]);
    names(&msg, &["prefix", "240b:10::/48", "/56"]);
}

#[test]
fn ealen_49() {
    let msg = refused(&explicit_a1(&["--ea-len", "49"]));
    names(&msg, &["ealen", "49"]);
    let msg = refused(&[
        "calc",
        A1_PREFIX,
        "--rule",
        &A1_RULE.replace("ealen=16", "ealen=49"),
    ]);
    names(&msg, &["ealen", "49"]);
}

#[test]
fn offset_16() {
    let msg = refused(&explicit_a1(&["--ea-len", "16", "--psid-offset", "16"]));
    names(&msg, &["offset", "16"]);
    let msg = refused(&["calc", A1_PREFIX, "--rule", &format!("{A1_RULE},offset=16")]);
    names(&msg, &["offset", "16"]);
}

#[test]
fn psidlen_contradicting_ealen() {
    // ealen 16 with an IPv4 /24 gives PSID length 8.
    let msg = refused(&explicit_a1(&["--ea-len", "16", "--psid-len", "6"]));
    names(&msg, &["psidlen", "6", "ealen 16"]);
    let msg = refused(&["calc", A1_PREFIX, "--rule", &format!("{A1_RULE},psidlen=6")]);
    names(&msg, &["psidlen", "6", "ealen 16"]);
}

#[test]
fn psid_too_large_for_its_length() {
    let msg = refused(&explicit_a1(&["--ea-len", "16", "--psid", "300"]));
    names(&msg, &["psid", "300"]);
}

#[test]
fn rule_prefix_with_host_bits() {
    let msg = refused(&[
        "calc",
        A1_PREFIX,
        "--ipv6-prefix",
        "2001:db8::1/40",
        "--ipv4-prefix",
        "192.0.2.0/24",
        "--ea-len",
        "16",
    ]);
    names(&msg, &["2001:db8::1/40", "2001:db8::/40"]);
}

#[test]
fn psid_not_left_aligned_in_rule() {
    // PSID 212 with psidlen 8 is written psid=54272 in a rule string.
    let msg = refused(&[
        "calc",
        V6PLUS_PD,
        "--rule",
        &format!("{V6PLUS_RULE},psid=212"),
    ]);
    names(&msg, &["psid", "212", "54272"]);
}

#[test]
fn truncated_dhcpv6_hex() {
    // OPTION_S46_CONT_MAPE claiming 48 bytes with 2 present.
    let msg = refused(&["calc", A1_PREFIX, "--dhcpv6-hex", "005e0030 0059"]);
    names(&msg, &["dhcpv6", "94", "48"]);
    let msg = refused(&["calc", A1_PREFIX, "--dhcpv6-hex", "005e00zz"]);
    names(&msg, &["dhcpv6", "005e00zz"]);
}

#[test]
fn conflicting_sources() {
    let msg = refused(&[
        "calc",
        A1_PREFIX,
        "--rule",
        A1_RULE,
        "--ipv6-prefix",
        "2001:db8::/40",
    ]);
    names(&msg, &["conflict", "rule"]);
    let msg = refused(&[
        "calc",
        A1_PREFIX,
        "--rule",
        A1_RULE,
        "--dhcpv6-hex",
        "005e0000",
    ]);
    names(&msg, &["conflict", "rule", "dhcpv6"]);
}

#[test]
fn isp_none_without_a_rule() {
    let msg = refused(&["calc", A1_PREFIX, "--isp", "none"]);
    names(&msg, &["isp", "none", "rule"]);
}

#[test]
fn named_isp_with_an_explicit_rule() {
    let msg = refused(&["calc", V6PLUS_PD, "--isp", "v6plus", "--rule", V6PLUS_RULE]);
    names(&msg, &["isp", "v6plus"]);
}

#[test]
fn rfc_iid_with_builtin_rules() {
    let msg = refused(&["calc", V6PLUS_PD, "--iid", "rfc7597"]);
    names(&msg, &["isp", "draft03", "rfc7597"]);
}

#[test]
fn clap_errors_are_one_line_too() {
    let msg = refused(&["calc", A1_PREFIX, "--ea-len", "300"]);
    names(&msg, &["--ea-len", "300"]);
    let msg = refused(&["calc", V6PLUS_PD, "--iid", "rfc9999"]);
    names(&msg, &["--iid", "rfc9999"]);
    let msg = refused(&["bogus"]);
    names(&msg, &["bogus"]);
}

#[test]
fn rules_json_counts() {
    let out = mape(&["rules", "--json"]);
    assert!(out.status.success(), "{:?}", out);
    let list: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let list = list.as_array().expect("array");

    let mut counts: BTreeMap<(String, bool), usize> = BTreeMap::new();
    for r in list {
        let key = (
            r["isp"].as_str().unwrap().to_string(),
            r["verified"].as_bool().unwrap(),
        );
        *counts.entry(key).or_default() += 1;
    }
    // mapping-math.md §6.1: v6plus 4, OCN 472, BIGLOBE 258, NURO 4 verified + 14 unverified.
    let want: BTreeMap<(String, bool), usize> = [
        (("v6plus", true), 4),
        (("ocn", true), 472),
        (("biglobe", true), 258),
        (("nuro", true), 4),
        (("nuro", false), 14),
    ]
    .into_iter()
    .map(|((isp, v), n)| ((isp.to_string(), v), n))
    .collect();
    assert_eq!(counts, want);

    // Entry for entry, the same rules as the data file, in its order.
    let data: Value = serde_json::from_str(DATA).unwrap();
    let mut expected = Vec::new();
    for isp in data["isps"].as_array().unwrap() {
        let verified = isp["rules"].as_array().unwrap().iter().map(|r| (r, true));
        let unverified = isp["unverified_rules"]["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| (r, false));
        for (r, v) in verified.chain(unverified) {
            expected.push((isp, r, v));
        }
    }
    assert_eq!(list.len(), expected.len());
    for (got, (isp, r, verified)) in list.iter().zip(expected) {
        assert_eq!(got["isp"], isp["id"], "{got}");
        assert_eq!(got["ipv6_prefix"], r["ipv6_prefix"], "{got}");
        assert_eq!(got["ipv4_prefix"], r["ipv4_prefix"], "{got}");
        assert_eq!(got["ea_len"], r["ea_len"], "{got}");
        assert_eq!(got["psid_offset"], isp["psid_offset"], "{got}");
        assert_eq!(got["psid_len"], isp["psid_len"], "{got}");
        assert_eq!(got["br"], r["br"], "{got}");
        assert_eq!(got["verified"], verified, "{got}");
    }

    // One ISP only.
    let out = mape(&["rules", "--isp", "nuro", "--json"]);
    assert!(out.status.success());
    let nuro: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nuro.as_array().unwrap().len(), 18);
}

/// `mape rules | head -1`: a closed stdout ends the command quietly (SIGPIPE, as for other
/// command-line tools), never with a panic message or a trap.
#[test]
fn closed_stdout_ends_quietly() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mape"))
        .args(["rules"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("ISP"), "{first}");
    // The reader (and with it our end of the pipe) is dropped here, with hundreds of lines unread.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "stderr: {stderr}");
    assert!(
        out.status.success() || out.status.signal() == Some(13),
        "expected exit 0 or SIGPIPE, got {:?}",
        out.status
    );
}

/// Adding an ISP is one edit of data/mape-rules-jp.json: every ISP there (id, label, IID
/// format) reaches the CLI's help and `mape rules --isps --json` (which the LuCI page reads
/// through the rpcd plugin) without another edit.
#[test]
fn every_isp_of_the_data_reaches_help_and_the_isp_list() {
    let data: Value = serde_json::from_str(DATA).unwrap();
    let help = String::from_utf8(mape(&["calc", "--help"]).stdout).unwrap();
    let out = mape(&["rules", "--isps", "--json"]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let isps = data["isps"].as_array().unwrap();
    assert_eq!(list.as_array().unwrap().len(), isps.len());
    for (isp, listed) in isps.iter().zip(list.as_array().unwrap()) {
        let id = isp["id"].as_str().unwrap();
        let label = isp["label"].as_str().unwrap();
        assert!(help.contains(&format!("- {id}:")), "--help lacks {id}");
        assert!(help.contains(label), "--help lacks {label}");
        assert_eq!(listed["id"], isp["id"]);
        assert_eq!(listed["label"], isp["label"]);
        assert_eq!(listed["iid_format"], isp["iid_format"]);
        assert_eq!(listed["psid_offset"], isp["psid_offset"]);
    }
}

/// Behind an NTT home gateway the router gets a /60 (or /64) of the /56 other than subnet 0,
/// and the CE address lies in subnet 0: that is MAP-E as designed, so no warning, and the text
/// says where the address is with the real lengths.
#[test]
fn home_gateway_prefixes_give_no_warning() {
    for prefix in ["240b:10:3f6c:d410::/60", "240b:10:3f6c:d4ab::/64"] {
        let out = mape(&["calc", prefix]);
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            !text.contains("warning") && err.is_empty(),
            "{prefix}: {text}{err}"
        );
        let len = prefix.rsplit('/').next().unwrap();
        assert!(
            text.contains(&format!(
                "in subnet 0 of the /56 240b:10:3f6c:d400::/56, outside the given /{len}"
            )),
            "{text}"
        );
        let j = mape(&["calc", prefix, "--json"]);
        let v: Value = serde_json::from_slice(&j.stdout).unwrap();
        assert_eq!(v["warnings"], serde_json::json!([]));
    }
    // Subnet 0 itself: nothing to say.
    let text = String::from_utf8(mape(&["calc", "240b:10:3f6c:d400::/60"]).stdout).unwrap();
    assert!(!text.contains("subnet 0 of"), "{text}");
}

/// No argument vector makes mape panic or die of a signal: odd words, missing words, empty and
/// non-UTF-8 strings, for every subcommand. Each failure is one line with exit status 1 or 2.
#[test]
fn no_argument_vector_kills_mape() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt as _;
    use std::os::unix::process::ExitStatusExt as _;
    let bad = OsString::from_vec(vec![0xff, 0xfe, b'x']);
    let mut vectors: Vec<Vec<OsString>> = Vec::new();
    let words: &[&[&str]] = &[
        &[],
        &[""],
        &["--"],
        &["-"],
        &["netifd"],
        &["netifd", ""],
        &["netifd", "mape"],
        &["netifd", "", ""],
        &["netifd", "setup"],
        &["netifd", "mape", "setup"],
        &["netifd", "setup", "wanmap"],
        &["netifd", "setup", "../x", "{}", "--dry-run"],
        &["netifd", "setup", "wanmap", "not json", "--dry-run"],
        &["netifd", "setup", "wanmap", "[]", "--dry-run"],
        &["netifd", "teardown"],
        &["netifd", "watch"],
        &["netifd", "watch", "wanmap", "{}", "--current", "x"],
        &["netifd", "watch", "wanmap", "{", "--once"],
        &["netifd", "frobnicate"],
        &["netifd", "mape", "frobnicate", "a", "b", "c", "d", "e"],
        &["netifd", "dump", "--tunlink-status"],
        &["calc"],
        &["calc", ""],
        &["calc", "::/0"],
        &["calc", "240b:10:3f6c:d400::/129"],
        &["calc", "240b:10:3f6c:d400::/56", "--rule", ""],
        &["calc", "240b:10:3f6c:d400::/56", "--dhcpv6-hex", "zz"],
        &["calc", "240b:10:3f6c:d400::/56", "--ea-len", "999"],
        &["rules", "--isp"],
        &["status", "--top", "-1"],
        &["status", "--top", "99999999999999999999"],
        &["generate"],
        &["up", "--wan"],
        &["down", "--name", "../../etc"],
        &["help", "nope"],
        &["--version", "--help"],
    ];
    for w in words {
        vectors.push(w.iter().map(OsString::from).collect());
    }
    vectors.push(vec![bad.clone()]);
    vectors.push(vec!["netifd".into(), bad.clone()]);
    vectors.push(vec!["calc".into(), bad]);
    for v in vectors {
        let out = Command::new(env!("CARGO_BIN_EXE_mape"))
            .args(&v)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.signal().is_none(),
            "{v:?}: killed by a signal: {err}"
        );
        assert!(!err.contains("panicked"), "{v:?}: {err}");
        let code = out.status.code().unwrap();
        assert!([0, 1, 2, 3].contains(&code), "{v:?}: exit {code}");
        if code == 1 || code == 2 {
            // One `mape:` line (clap's own usage errors too), unless it is help text.
            let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
            assert!(
                lines.len() == 1 && lines[0].starts_with("mape: ")
                    || lines.iter().any(|l| l.starts_with("Usage:")),
                "{v:?}: {err}"
            );
        }
    }
}
