//! Acceptance vectors of the mapping engine (issue 2).
//!
//! Every expected value comes from outside the code under test:
//! - RFC 7597 Appendix A, Examples 1, 4 and 5 (values as quoted in `mapping-math.md` §7.1), with
//!   the full port lists generated from the RFC 7597 §5.1 formula and their first and last
//!   ranges checked against the RFC text;
//! - the draft-03 ("legacy") variant of Example 1 (`mapping-math.md` §7.2);
//! - the OpenWrt `mapcalc` reference vectors (`mapping-math.md` §5.4);
//! - the Japanese ISP vectors T1–T16, read from `data/mape-rules-jp.json` at test time.
//!
//! Each vector goes through the library (`provision::resolve` and friends) and through the
//! binary (`mape calc … --json`), comparing the JSON keys documented in issue 2.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::Command;

use ipnet::Ipv6Net;
use serde_json::Value;

use mape::engine::{CustomerPrefix, IidFormat, Mapping, Rule};
use mape::provision::builtin::{self, IspChoice};
use mape::provision::dhcpv6::S46ContMape;
use mape::provision::rulestr::{self, RuleStringError};
use mape::provision::{resolve, Resolved, RuleSource};

const DATA: &str = include_str!("../data/mape-rules-jp.json");

// ---------------------------------------------------------------------------------------------
// Helpers

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn prefix(s: &str) -> CustomerPrefix {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// RFC 7597 §5.1: `port = A·2^(16−a) + PSID·2^m + j` for A = 1 … 2^a − 1 (A = 0 only when
/// a = 0) and j = 0 … 2^m − 1, as (first, last) ranges. Written from the RFC formula, not from
/// the engine.
fn rfc_port_ranges(a: u32, k: u32, psid: u32) -> Vec<(u16, u16)> {
    let m = 16 - a - k;
    let first_a = if a == 0 { 0 } else { 1 };
    (first_a..(1u32 << a))
        .map(|big_a| {
            let start = big_a * (1 << (16 - a)) + psid * (1 << m);
            let end = start + (1 << m) - 1;
            (start as u16, end as u16)
        })
        .collect()
}

fn parse_range(s: &str) -> (u16, u16) {
    let (a, b) = s.split_once('-').unwrap_or_else(|| panic!("range {s}"));
    (a.parse().unwrap(), b.parse().unwrap())
}

/// Everything a vector states about one mapping.
#[derive(Debug, Clone)]
struct Expect {
    name: String,
    isp: Option<String>,
    rule6: String,
    rule4: String,
    ea_len: u8,
    /// `None` where the source says "n/a" (no port sharing).
    offset: Option<u8>,
    psid_len: u8,
    iid: IidFormat,
    ipv4: Ipv4Addr,
    ipv4_len: u8,
    psid: u16,
    ports: Vec<(u16, u16)>,
    port_count: u32,
    ce: Ipv6Addr,
    br: Option<Ipv6Addr>,
}

impl Expect {
    fn check_mapping(&self, m: &Mapping) {
        let n = &self.name;
        assert_eq!(m.rule.ipv6_prefix.to_string(), self.rule6, "{n}: rule IPv6");
        assert_eq!(m.rule.ipv4_prefix.to_string(), self.rule4, "{n}: rule IPv4");
        assert_eq!(m.rule.ea_len, self.ea_len, "{n}: ea_len");
        if let Some(offset) = self.offset {
            assert_eq!(m.ports.offset(), offset, "{n}: psid offset");
            assert_eq!(m.rule.psid_offset, offset, "{n}: rule psid offset");
        }
        assert_eq!(m.ports.psid_len(), self.psid_len, "{n}: psid_len");
        assert_eq!(m.rule.iid, self.iid, "{n}: iid format");
        assert_eq!(m.ipv4, self.ipv4, "{n}: IPv4");
        assert_eq!(m.ipv4_prefix_len, self.ipv4_len, "{n}: IPv4 prefix length");
        assert_eq!(m.ports.psid(), self.psid, "{n}: PSID");
        let sets: Vec<(u16, u16)> = m.port_sets().map(|s| (s.first, s.last)).collect();
        assert_eq!(sets, self.ports, "{n}: port sets");
        assert_eq!(m.port_count(), self.port_count, "{n}: port count");
        let total: u32 = self
            .ports
            .iter()
            .map(|(a, b)| u32::from(*b) - u32::from(*a) + 1)
            .sum();
        assert_eq!(total, self.port_count, "{n}: vector's own port count");
        for &(first, last) in &self.ports {
            assert!(m.owns_port(first) && m.owns_port(last), "{n}: owns {first}");
        }
        assert_eq!(m.ce.addr(), self.ce, "{n}: CE address");
        assert_eq!(m.br, self.br, "{n}: BR");
    }

    fn check_resolved(&self, r: &Resolved) {
        assert_eq!(
            r.isp.map(|i| i.id.to_string()),
            self.isp,
            "{}: isp",
            self.name
        );
        self.check_mapping(&r.mapping);
    }

    /// The JSON keys of issue 2: isp, rule{ipv6_prefix, ipv4_prefix, ea_len, psid_offset,
    /// psid_len}, iid_format, ipv4, ipv4_prefix_len, psid, port_sets, port_count, ce, br.
    fn check_json(&self, j: &Value) {
        let n = &self.name;
        match &self.isp {
            Some(isp) => assert_eq!(j["isp"], isp.as_str(), "{n}: json isp"),
            None => assert!(j["isp"].is_null(), "{n}: json isp {}", j["isp"]),
        }
        let rule = &j["rule"];
        assert_eq!(rule["ipv6_prefix"], self.rule6.as_str(), "{n}: json rule");
        assert_eq!(rule["ipv4_prefix"], self.rule4.as_str(), "{n}: json rule");
        assert_eq!(rule["ea_len"], self.ea_len, "{n}: json ea_len");
        if let Some(offset) = self.offset {
            assert_eq!(rule["psid_offset"], offset, "{n}: json psid_offset");
        } else {
            assert!(rule["psid_offset"].is_u64(), "{n}: json psid_offset");
        }
        assert_eq!(rule["psid_len"], self.psid_len, "{n}: json psid_len");
        assert_eq!(j["iid_format"], self.iid.as_str(), "{n}: json iid_format");
        assert_eq!(j["ipv4"], self.ipv4.to_string(), "{n}: json ipv4");
        assert_eq!(
            j["ipv4_prefix_len"], self.ipv4_len,
            "{n}: json ipv4_prefix_len"
        );
        assert_eq!(j["psid"], self.psid, "{n}: json psid");
        let sets: Vec<(u16, u16)> = j["port_sets"]
            .as_array()
            .unwrap_or_else(|| panic!("{n}: json port_sets {}", j["port_sets"]))
            .iter()
            .map(|p| {
                let pair = p.as_array().expect("port set pair");
                assert_eq!(pair.len(), 2, "{n}: port set {p}");
                (
                    pair[0].as_u64().unwrap() as u16,
                    pair[1].as_u64().unwrap() as u16,
                )
            })
            .collect();
        assert_eq!(sets, self.ports, "{n}: json port_sets");
        assert_eq!(j["port_count"], self.port_count, "{n}: json port_count");
        let ce: Ipv6Addr = j["ce"].as_str().expect("json ce").parse().unwrap();
        assert_eq!(ce, self.ce, "{n}: json ce");
        match self.br {
            Some(br) => {
                let got: Ipv6Addr = j["br"].as_str().expect("json br").parse().unwrap();
                assert_eq!(got, br, "{n}: json br");
            }
            None => assert!(j["br"].is_null(), "{n}: json br {}", j["br"]),
        }
    }
}

/// Runs `mape calc <args> --json` and returns the parsed JSON; fails on a non-zero exit.
fn calc_json(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_mape"))
        .arg("calc")
        .args(args)
        .arg("--json")
        .output()
        .expect("run mape");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "mape calc {args:?}: {:?} {stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "mape calc {args:?}: stderr {stderr}");
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("mape calc {args:?}: not JSON ({e}): {:?}", out.stdout))
}

// ---------------------------------------------------------------------------------------------
// RFC 7597 Appendix A

const A_PREFIX: &str = "2001:db8:0012:3400::/56";
const A_BR: &str = "2001:db8:ffff::1";
/// mapping-math.md §4.7: Example 1 as OPTION_S46_CONT_MAPE.
const A1_DHCPV6: &str = "005e002d 00590015 011018c0000200282001 0db800 005d0004 06000000 005a0010 20010db8ffff0000 0000000000000001";

fn example1_rule(iid: IidFormat) -> Rule {
    let mut r = Rule::new(
        "2001:db8::/40".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
        16,
        iid,
    );
    r.psid_offset = 6; // "PSID offset: 6 (default)"
    r.br = Some(v6(A_BR));
    r
}

fn example1_expect() -> Expect {
    Expect {
        name: "RFC 7597 A Example 1".into(),
        isp: None,
        rule6: "2001:db8::/40".into(),
        rule4: "192.0.2.0/24".into(),
        ea_len: 16,
        offset: Some(6),
        psid_len: 8,
        iid: IidFormat::Rfc7597,
        ipv4: v4("192.0.2.18"),
        ipv4_len: 32,
        psid: 0x34,
        ports: rfc_port_ranges(6, 8, 0x34),
        port_count: 252,
        ce: v6("2001:db8:0012:3400:0000:c000:0212:0034"),
        br: Some(v6(A_BR)),
    }
}

fn example4_expect() -> Expect {
    Expect {
        name: "RFC 7597 A Example 4".into(),
        isp: None,
        rule6: "2001:db8:12:3400::/56".into(),
        rule4: "192.0.2.18/32".into(),
        ea_len: 0,
        offset: None, // "PSID offset: n/a"
        psid_len: 0,
        iid: IidFormat::Rfc7597,
        ipv4: v4("192.0.2.18"),
        ipv4_len: 32,
        psid: 0, // "PSID: null"; the IID carries 0
        ports: vec![(0, 65535)],
        port_count: 65536,
        ce: v6("2001:db8:0012:3400:0000:c000:0212:0000"),
        br: None,
    }
}

fn example5_expect() -> Expect {
    Expect {
        name: "RFC 7597 A Example 5".into(),
        isp: None,
        rule6: "2001:db8:12:3400::/56".into(),
        rule4: "192.0.2.18/32".into(),
        ea_len: 0,
        offset: Some(6),
        psid_len: 8,
        iid: IidFormat::Rfc7597,
        ipv4: v4("192.0.2.18"),
        ipv4_len: 32,
        psid: 0x34,
        ports: rfc_port_ranges(6, 8, 0x34),
        port_count: 252,
        ce: v6("2001:db8:0012:3400:0000:c000:0212:0034"),
        br: None,
    }
}

fn example45_rule(psid: Option<(u8, u16)>) -> Rule {
    let mut r = Rule::new(
        "2001:db8:0012:3400::/56".parse().unwrap(),
        "192.0.2.18/32".parse().unwrap(),
        0,
        IidFormat::Rfc7597,
    );
    if let Some((k, p)) = psid {
        r.psid_len = Some(k);
        r.psid = Some(p);
    }
    r
}

#[test]
fn rfc_port_formula_matches_the_rfc_text() {
    // "Available ports (63 ranges): 1232-1235, 2256-2259, ...... , 63696-63699, 64720-64723"
    let sets = rfc_port_ranges(6, 8, 0x34);
    assert_eq!(sets.len(), 63);
    assert_eq!(sets[0], (1232, 1235));
    assert_eq!(sets[1], (2256, 2259));
    assert_eq!(sets[61], (63696, 63699));
    assert_eq!(sets[62], (64720, 64723));
    // mapping-math.md §3: offset 4 starts at 4096 + 16·PSID and ends at 61440 + 16·PSID.
    let v6plus = rfc_port_ranges(4, 8, 212);
    assert_eq!(v6plus.len(), 15);
    assert_eq!(v6plus[0].0, 4096 + 16 * 212);
    assert_eq!(v6plus[14].0, 61440 + 16 * 212);
}

#[test]
fn rfc7597_example_1() {
    let e = example1_expect();
    let rule = example1_rule(IidFormat::Rfc7597);
    // "PSID length: (16 - (32 - 24) = 8"
    assert_eq!(rule.validate(), Ok(8));
    let m = Mapping::compute(&rule, prefix(A_PREFIX)).unwrap();
    e.check_mapping(&m);
    // Example 2 (BR side): destination port 1232 → PSID 0x34.
    assert_eq!(m.ports.psid_of_port(1232), Some(0x34));
    assert!(m.owns_port(1232) && !m.owns_port(1236) && !m.owns_port(80));

    let r = resolve(&RuleSource::Explicit(vec![rule]), prefix(A_PREFIX)).unwrap();
    e.check_resolved(&r);
    assert!(r.warnings.is_empty(), "{:?}", r.warnings);

    // The same rule as odhcp6c writes it.
    let s = "fmr,type=map-e,ealen=16,prefix4len=24,prefix6len=40,ipv4prefix=192.0.2.0,ipv6prefix=2001:db8::,offset=6,br=2001:db8:ffff::1,";
    let rules = rulestr::parse_rules(s, IidFormat::Rfc7597, None).unwrap();
    let r = resolve(&RuleSource::Explicit(rules), prefix(A_PREFIX)).unwrap();
    e.check_resolved(&r);
    assert_eq!(r.fmrs.len(), 1);

    // The same rule from DHCPv6 option 94 (mapping-math.md §4.7).
    let rules = S46ContMape::parse_hex(A1_DHCPV6)
        .unwrap()
        .to_rules()
        .unwrap();
    let r = resolve(&RuleSource::Explicit(rules), prefix(A_PREFIX)).unwrap();
    e.check_resolved(&r);
    assert_eq!(r.fmrs.len(), 1, "F flag set in the S46_RULE");
}

#[test]
fn rfc7597_example_1_other_prefix_forms() {
    // A /64 of the /56 (subnet 00) and a full address inside it map the same way.
    let e = example1_expect();
    let rule = example1_rule(IidFormat::Rfc7597);
    for p in ["2001:db8:12:3400::/64", "2001:db8:12:3400::1"] {
        let m = Mapping::compute(&rule, prefix(p)).unwrap();
        e.check_mapping(&m);
    }
}

#[test]
fn rfc7597_example_1_draft03_variant() {
    // mapping-math.md §7.2: legacy IID for the A1 inputs.
    let mut e = example1_expect();
    e.name = "A1 draft03".into();
    e.iid = IidFormat::Draft03;
    e.ce = v6("2001:db8:12:3400:c0:2:1200:3400");
    let m = Mapping::compute(&example1_rule(IidFormat::Draft03), prefix(A_PREFIX)).unwrap();
    e.check_mapping(&m);
}

#[test]
fn rfc7597_example_4() {
    let e = example4_expect();
    let rule = example45_rule(None);
    assert_eq!(
        rule.validate(),
        Ok(0),
        "PSID length: 0 (sharing ratio is 1)"
    );
    let m = Mapping::compute(&rule, prefix(A_PREFIX)).unwrap();
    e.check_mapping(&m);
    assert!(!m.ports.is_shared());
    assert_eq!(m.ports.psid_of_port(1232), None);
    assert!(m.owns_port(0) && m.owns_port(80) && m.owns_port(65535));
    let r = resolve(&RuleSource::Explicit(vec![rule]), prefix(A_PREFIX)).unwrap();
    e.check_resolved(&r);
}

#[test]
fn rfc7597_example_5() {
    let e = example5_expect();
    let rule = example45_rule(Some((8, 0x34)));
    assert_eq!(rule.validate(), Ok(8));
    let m = Mapping::compute(&rule, prefix(A_PREFIX)).unwrap();
    e.check_mapping(&m);
    // The same through an odhcp6c rule string: psid left-aligned (0x34 << 8).
    let s = "type=map-e,ealen=0,prefix4len=32,prefix6len=56,ipv4prefix=192.0.2.18,ipv6prefix=2001:db8:12:3400::,offset=6,psidlen=8,psid=0x3400,";
    let rules = rulestr::parse_rules(s, IidFormat::Rfc7597, None).unwrap();
    e.check_resolved(&resolve(&RuleSource::Explicit(rules), prefix(A_PREFIX)).unwrap());
}

#[test]
fn rfc7597_examples_through_the_binary() {
    let e1 = example1_expect();
    let j = calc_json(&[
        A_PREFIX,
        "--ipv6-prefix",
        "2001:db8::/40",
        "--ipv4-prefix",
        "192.0.2.0/24",
        "--ea-len",
        "16",
        "--br",
        A_BR,
    ]);
    e1.check_json(&j);
    e1.check_json(&calc_json(&[A_PREFIX, "--dhcpv6-hex", A1_DHCPV6]));
    e1.check_json(&calc_json(&[
        A_PREFIX,
        "--isp",
        "none",
        "--rule",
        "type=map-e,ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=192.0.2.0,prefix4len=24,ealen=16,offset=6,br=2001:db8:ffff::1",
    ]));

    let mut legacy = example1_expect();
    legacy.name = "A1 draft03 (binary)".into();
    legacy.iid = IidFormat::Draft03;
    legacy.ce = v6("2001:db8:12:3400:c0:2:1200:3400");
    legacy.check_json(&calc_json(&[
        A_PREFIX,
        "--ipv6-prefix",
        "2001:db8::/40",
        "--ipv4-prefix",
        "192.0.2.0/24",
        "--ea-len",
        "16",
        "--psid-offset",
        "6",
        "--br",
        A_BR,
        "--iid",
        "draft03",
    ]));

    let ex4 = [
        A_PREFIX,
        "--ipv6-prefix",
        "2001:db8:12:3400::/56",
        "--ipv4-prefix",
        "192.0.2.18/32",
        "--ea-len",
        "0",
    ];
    example4_expect().check_json(&calc_json(&ex4));
    let mut ex5 = ex4.to_vec();
    ex5.extend(["--psid-len", "8", "--psid", "52"]);
    example5_expect().check_json(&calc_json(&ex5));
}

// ---------------------------------------------------------------------------------------------
// Japanese ISP vectors T1–T16 from the data file

fn data() -> Value {
    serde_json::from_str(DATA).expect("data/mape-rules-jp.json")
}

fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: missing string {key}", v["id"]))
}

fn u64_field(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: missing number {key}", v["id"]))
}

fn data_vectors() -> Vec<Value> {
    let vectors = data()["test_vectors"]["vectors"]
        .as_array()
        .expect("test_vectors.vectors")
        .clone();
    let ids: Vec<&str> = vectors.iter().map(|v| str_field(v, "id")).collect();
    let want: Vec<String> = (1..=16).map(|i| format!("T{i}")).collect();
    assert_eq!(ids, want, "the data file holds T1–T16 in order");
    vectors
}

fn vector_expect(v: &Value) -> Expect {
    Expect {
        name: str_field(v, "id").to_string(),
        isp: Some(str_field(v, "isp").to_string()),
        rule6: str_field(v, "rule_ipv6_prefix").to_string(),
        rule4: str_field(v, "rule_ipv4_prefix").to_string(),
        ea_len: u64_field(v, "ea_len") as u8,
        offset: Some(u64_field(v, "psid_offset") as u8),
        psid_len: u64_field(v, "psid_len") as u8,
        iid: IidFormat::Draft03,
        ipv4: v4(str_field(v, "ipv4")),
        ipv4_len: 32,
        psid: u64_field(v, "psid") as u16,
        ports: v["port_ranges"]
            .as_array()
            .expect("port_ranges")
            .iter()
            .map(|r| parse_range(r.as_str().unwrap()))
            .collect(),
        port_count: u64_field(v, "ports_total") as u32,
        ce: v6(str_field(v, "ce_ipv6")),
        br: Some(v6(str_field(v, "br"))),
    }
}

/// Whether the vector's CE lies outside the /64 (or shorter prefix) the user gave: the case the
/// calculators warn about (T6 in mapping-math.md §7.3).
fn ce_outside_input(v: &Value) -> bool {
    let input = prefix(str_field(v, "input"));
    let net = Ipv6Net::new(input.addr(), input.len().min(64)).unwrap();
    !net.contains(&v6(str_field(v, "ce_ipv6")))
}

#[test]
fn isp_vectors_auto_detected() {
    for v in data_vectors() {
        let e = vector_expect(&v);
        let input = prefix(str_field(&v, "input"));
        let r = resolve(&RuleSource::Builtin(IspChoice::Auto), input)
            .unwrap_or_else(|err| panic!("{}: {err}", e.name));
        e.check_resolved(&r);

        // The vector's own port list agrees with RFC 7597 §5.1 for its a, k and PSID.
        let a = u32::from(e.offset.unwrap());
        assert_eq!(
            e.ports,
            rfc_port_ranges(a, u32::from(e.psid_len), u32::from(e.psid)),
            "{}: data port list vs RFC formula",
            e.name
        );

        let outside = ce_outside_input(&v);
        assert_eq!(
            outside,
            e.name == "T6",
            "{}: only T6 leaves the /64",
            e.name
        );
        assert_eq!(r.mapping.ce_outside_prefix(), outside, "{}", e.name);
        // A CE address outside the given /64 (subnet 0 of the /56) is MAP-E as designed, the
        // NTT home-gateway topology: no warning.
        assert!(r.warnings.is_empty(), "{}: {:?}", e.name, r.warnings);

        // The same rule with the RFC 7597 IID gives the data file's "not used" form.
        let mut rfc_rule = r.mapping.rule.clone();
        rfc_rule.iid = IidFormat::Rfc7597;
        let m = Mapping::compute(&rfc_rule, input).unwrap();
        assert_eq!(
            m.ce.addr(),
            v6(str_field(&v, "ce_ipv6_rfc7597_form_not_used")),
            "{}: RFC 7597 form",
            e.name
        );
    }
}

#[test]
fn isp_vectors_with_the_isp_named() {
    for v in data_vectors() {
        let e = vector_expect(&v);
        let isp = builtin::isp_by_id(str_field(&v, "isp")).expect("isp of the vector");
        let r = resolve(
            &RuleSource::Builtin(IspChoice::Only(isp)),
            prefix(str_field(&v, "input")),
        )
        .unwrap_or_else(|err| panic!("{}: {err}", e.name));
        e.check_resolved(&r);
    }
}

#[test]
fn isp_vectors_as_rule_strings() {
    // The vector's rule written by hand as a mapcalc rule string, legacy IID.
    for v in data_vectors() {
        let mut e = vector_expect(&v);
        e.isp = None;
        let (v6p, v6len) = e.rule6.split_once('/').unwrap();
        let (v4p, v4len) = e.rule4.split_once('/').unwrap();
        let s = format!(
            "type=map-e,ipv6prefix={v6p},prefix6len={v6len},ipv4prefix={v4p},prefix4len={v4len},ealen={},psidlen={},offset={},br={}",
            e.ea_len,
            e.psid_len,
            e.offset.unwrap(),
            str_field(&v, "br")
        );
        let input = prefix(str_field(&v, "input"));
        let rules = rulestr::parse_rules(&s, IidFormat::Draft03, Some(&input)).unwrap();
        let r = resolve(&RuleSource::Explicit(rules), input).unwrap();
        e.check_resolved(&r);
    }
}

#[test]
fn isp_vectors_through_the_binary() {
    for v in data_vectors() {
        let e = vector_expect(&v);
        let j = calc_json(&[str_field(&v, "input")]);
        e.check_json(&j);
        let warnings = j["warnings"].as_array().expect("warnings array");
        assert!(warnings.is_empty(), "{}: {warnings:?}", e.name);
    }
}

// ---------------------------------------------------------------------------------------------
// OpenWrt mapcalc reference vectors (mapping-math.md §5.4)

const MC_PD: &str = "240b:10:3251:6400::/56";
const MC_RULE: &str = "type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,psidlen=8,offset=4,br=2404:9200:225:100::64";

fn mapcalc_expect(iid: IidFormat) -> Expect {
    Expect {
        name: format!("mapcalc {iid}"),
        isp: None,
        rule6: "240b:10::/31".into(),
        rule4: "106.72.0.0/15".into(),
        ea_len: 25,
        offset: Some(4),
        psid_len: 8,
        iid,
        ipv4: v4("106.72.50.81"),
        ipv4_len: 32,
        psid: 0x64,
        ports: rfc_port_ranges(4, 8, 0x64),
        port_count: 240,
        ce: match iid {
            IidFormat::Draft03 => v6("240b:10:3251:6400:6a:4832:5100:6400"),
            IidFormat::Rfc7597 => v6("240b:10:3251:6400:0:6a48:3251:64"),
        },
        br: Some(v6("2404:9200:225:100::64")),
    }
}

fn mapcalc_resolve(rule: &str, iid: IidFormat) -> Result<Resolved, String> {
    let pd = prefix(MC_PD);
    let rules = rulestr::parse_rules(rule, iid, Some(&pd)).map_err(|e| e.to_string())?;
    resolve(&RuleSource::Explicit(rules), pd).map_err(|e| e.to_string())
}

#[test]
fn mapcalc_vectors() {
    // The printed port sets: "5696-5711 9792-9807 13888-13903 … 63040-63055 (15 × 16)".
    let sets = rfc_port_ranges(4, 8, 0x64);
    assert_eq!(&sets[..3], &[(5696, 5711), (9792, 9807), (13888, 13903)]);
    assert_eq!(sets[14], (63040, 63055));

    for iid in [IidFormat::Draft03, IidFormat::Rfc7597] {
        let e = mapcalc_expect(iid);
        e.check_resolved(&mapcalc_resolve(MC_RULE, iid).unwrap());
        // explicit psid=25600 (left-aligned 100): the same as derived.
        let r = mapcalc_resolve(&format!("{MC_RULE},psid=25600"), iid).unwrap();
        e.check_resolved(&r);
        assert_eq!(r.mapping.rule.psid, Some(100));
        // ealen taken from the PD length, as mapcalc does.
        let r = mapcalc_resolve(&MC_RULE.replace(",ealen=25", ""), iid).unwrap();
        e.check_resolved(&r);
    }
}

#[test]
fn mapcalc_rule_without_offset_in_rfc_mode() {
    // "same rule without offset/psidlen, RFC mode: offset 6 → 63 sets of 4 ports (1424-1427 …)"
    let s = MC_RULE.replace(",psidlen=8,offset=4", "");
    let r = mapcalc_resolve(&s, IidFormat::Rfc7597).unwrap();
    let m = &r.mapping;
    assert_eq!((m.ports.offset(), m.ports.psid_len()), (6, 8));
    let sets: Vec<(u16, u16)> = m.port_sets().map(|s| (s.first, s.last)).collect();
    assert_eq!(sets.len(), 63);
    assert_eq!(sets[0], (1424, 1427));
    assert_eq!(sets, rfc_port_ranges(6, 8, 0x64));
    // The legacy default offset is 4, so the same string in draft03 mode is right for v6plus.
    mapcalc_expect(IidFormat::Draft03)
        .check_resolved(&mapcalc_resolve(&s, IidFormat::Draft03).unwrap());
}

#[test]
fn mapcalc_right_aligned_psid_is_refused_with_a_hint() {
    // mapcalc silently computes garbage for psid=100 (IID PSID 0, sets 4102-4117 …); we refuse
    // and say how PSID 100 is written.
    let err =
        rulestr::parse_rule(&format!("{MC_RULE},psid=100"), IidFormat::Draft03, None).unwrap_err();
    assert!(
        matches!(
            err,
            RuleStringError::PsidNotLeftAligned {
                psid: 100,
                psid_len: 8,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("psid=100") && msg.contains("psid=25600"),
        "{msg}"
    );
}

#[test]
fn mapcalc_bmr_with_other_rules() {
    // An unrelated non-FMR rule beside the BMR: mapcalc exits 1 (a bug); we map with the BMR.
    let other = "type=map-e,ipv6prefix=2001:db8::,prefix6len=40,ipv4prefix=192.0.2.0,prefix4len=24,ealen=16,offset=6";
    let r = mapcalc_resolve(&format!("{MC_RULE} {other}"), IidFormat::Draft03).unwrap();
    mapcalc_expect(IidFormat::Draft03).check_resolved(&r);
    assert!(r.fmrs.is_empty());
    // The BMR plus an FMR: the FMR is kept for the tunnel (RULE_2_FMR=1).
    let r = mapcalc_resolve(&format!("{MC_RULE} fmr,{other}"), IidFormat::Draft03).unwrap();
    mapcalc_expect(IidFormat::Draft03).check_resolved(&r);
    assert_eq!(r.fmrs.len(), 1);
    assert_eq!(r.fmrs[0].ipv6_prefix.to_string(), "2001:db8::/40");
    assert!(r.fmrs[0].fmr);
}

#[test]
fn mapcalc_fixed_address() {
    let s = "type=map-e,ipv6prefix=240b:10:3251:6400::,prefix6len=56,ipv4prefix=192.0.2.1,prefix4len=32,ealen=0";
    let r = mapcalc_resolve(s, IidFormat::Draft03).unwrap();
    let m = &r.mapping;
    assert_eq!(m.ce.addr(), v6("240b:10:3251:6400:c0:2:100:0"));
    assert_eq!((m.ipv4, m.ipv4_prefix_len), (v4("192.0.2.1"), 32));
    assert!(!m.ports.is_shared());
    assert_eq!(m.port_count(), 65536);
}

#[test]
fn mapcalc_undefined_shift_is_refused() {
    // `offset=16,psidlen=2` makes mapcalc shift by a negative count; we refuse the offset.
    let s = MC_RULE.replace("psidlen=8,offset=4", "offset=16,psidlen=2");
    let err = rulestr::parse_rule(&s, IidFormat::Draft03, None).unwrap_err();
    assert_eq!(
        err,
        RuleStringError::BadValue {
            key: "offset",
            value: "16".into()
        }
    );
}

#[test]
fn mapcalc_vectors_through_the_binary() {
    for (iid, flag) in [
        (IidFormat::Draft03, "draft03"),
        (IidFormat::Rfc7597, "rfc7597"),
    ] {
        let j = calc_json(&[MC_PD, "--rule", MC_RULE, "--iid", flag]);
        mapcalc_expect(iid).check_json(&j);
    }
    let j = calc_json(&[
        MC_PD,
        "--rule",
        "type=map-e,ipv6prefix=240b:10:3251:6400::,prefix6len=56,ipv4prefix=192.0.2.1,prefix4len=32,ealen=0",
        "--iid",
        "legacy",
    ]);
    assert_eq!(j["ce"], "240b:10:3251:6400:c0:2:100:0");
    assert_eq!(j["port_count"], 65536);
}
