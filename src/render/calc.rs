//! The calculator's output: a human summary like the web calculators, and the JSON object
//! documented in the README (keys `isp`, `rule`, `iid_format`, `ipv4`, `ipv4_prefix_len`,
//! `psid`, `port_sets`, `port_count`, `ce`, `br`, plus `prefix` and `warnings`).

use std::fmt::Write as _;

use serde_json::Value;

use crate::provision::Resolved;
use crate::state::{MappingRecord, RuleRecord};

/// The tunnel MTU we recommend (see [`crate::engine::TUNNEL_MTU`]).
pub use crate::engine::TUNNEL_MTU as DEFAULT_MTU;

/// The mapping as the calculator's JSON describes it (also `data.mape` and the state file).
pub fn record(r: &Resolved) -> MappingRecord {
    let m = &r.mapping;
    MappingRecord {
        isp: r.isp.map(|i| i.id.to_string()),
        prefix: m.prefix.to_string(),
        rule: RuleRecord {
            ipv6_prefix: m.rule.ipv6_prefix,
            ipv4_prefix: m.rule.ipv4_prefix,
            ea_len: m.rule.ea_len,
            psid_offset: m.ports.offset(),
            psid_len: m.ports.psid_len(),
        },
        iid_format: m.rule.iid.as_str().to_string(),
        ipv4: m.ipv4,
        ipv4_prefix_len: m.ipv4_prefix_len,
        psid: m.ports.psid(),
        port_sets: m.port_sets().collect(),
        port_count: m.port_count(),
        ce: m.ce.addr(),
        br: m.br,
        warnings: r.warnings.clone(),
    }
}

/// `mape rules --isps --json`: the built-in ISPs, for scripts and LuCI (through the rpcd
/// plugin): `[{"id", "label", "name", "iid_format", "psid_offset", "rules"}]`.
pub fn isps_json() -> Value {
    use crate::provision::builtin;
    builtin::ISPS
        .iter()
        .map(|i| {
            serde_json::json!({
                "id": i.id,
                "label": i.label,
                "name": i.name,
                "iid_format": i.iid.as_str(),
                "psid_offset": i.psid_offset,
                "rules": builtin::rules(Some(i)).filter(|r| r.verified()).count(),
            })
        })
        .collect()
}

/// `mape calc --json` (schema in docs/calc.md); read back with [`MappingRecord::from_json`].
pub fn to_json(r: &Resolved) -> Value {
    record(r).to_json()
}

pub fn to_text(r: &Resolved) -> String {
    let m = &r.mapping;
    let mut s = String::new();
    let isp = r.isp.map_or("(explicit rule)".to_string(), |i| {
        format!("{} - {}", i.id, i.name)
    });
    let _ = writeln!(s, "ISP         {isp}");
    let _ = writeln!(s, "Prefix      {}", m.prefix);
    let psid_len = m.ports.psid_len();
    let _ = writeln!(
        s,
        "Rule        {} -> {}, EA bits {}, PSID offset {}, PSID length {}",
        m.rule.ipv6_prefix,
        m.rule.ipv4_prefix,
        m.rule.ea_len,
        m.ports.offset(),
        psid_len
    );
    if m.ipv4_prefix_len == 32 {
        let _ = writeln!(s, "IPv4        {}", m.ipv4);
    } else {
        let _ = writeln!(
            s,
            "IPv4        {}/{} (a prefix, not shared)",
            m.ipv4, m.ipv4_prefix_len
        );
    }
    if m.ports.is_shared() {
        let _ = writeln!(s, "PSID        {} (0x{:x})", m.ports.psid(), m.ports.psid());
        let _ = writeln!(
            s,
            "Ports       {} in {} sets of {}",
            m.port_count(),
            m.ports.set_count(),
            m.ports.set_size()
        );
        let sets: Vec<String> = m.port_sets().map(|p| p.to_string()).collect();
        for line in sets.chunks(6) {
            let _ = writeln!(s, "            {}", line.join(" "));
        }
    } else {
        let _ = writeln!(s, "PSID        none (no port sharing)");
        let _ = writeln!(s, "Ports       all 65536");
    }
    let _ = writeln!(s, "CE IPv6     {} ({} interface ID)", m.ce, m.rule.iid);
    if m.ce_outside_prefix() {
        // Not a problem (docs/hgw.md): say where the address lives, with the real lengths.
        let eu = m.end_user_prefix();
        let _ = writeln!(
            s,
            "            in subnet 0 of the /{} {eu}, outside the given /{}: as behind an NTT home gateway, reached on the WAN link",
            eu.prefix_len(),
            m.prefix.len()
        );
    }
    match m.br {
        Some(br) => {
            let _ = writeln!(s, "BR          {br}");
        }
        None => {
            let _ = writeln!(s, "BR          (none given)");
        }
    }
    let _ = writeln!(
        s,
        "MTU         {DEFAULT_MTU} on the tunnel (1500-byte IPv6 link - 40), TCP MSS clamped to {}",
        DEFAULT_MTU - 40
    );
    for w in &r.warnings {
        let _ = writeln!(s, "warning:    {w}");
    }
    s
}
