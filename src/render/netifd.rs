//! netifd protocol-handler messages: the `dump` declaration and the `notify_proto` payloads
//! (action 0 update, 1 proto task, 3 error, 4 block restart, 6 host dependency).

use serde_json::{json, Value};

use crate::provision::netifd::{HandlerConfig, OPTIONS};
use crate::provision::Resolved;
use crate::render::calc;

/// netifd error codes the handler reports (`proto_notify_error`), shown in the interface status
/// and translated by LuCI (files/www/…/protocol/mape.js registers a text for each of `ALL`;
/// tests/luci checks that against this list). The first three are OpenWrt `map`'s own.
pub mod codes {
    pub const INVALID_MAP_RULE: &str = "INVALID_MAP_RULE";
    pub const NO_MATCHING_PD: &str = "NO_MATCHING_PD";
    pub const UNSUPPORTED_TYPE: &str = "UNSUPPORTED_TYPE";
    pub const NO_MATCHING_RULE: &str = "NO_MATCHING_RULE";
    pub const NO_PREFIX: &str = "NO_PREFIX";
    pub const INVALID_OPTION: &str = "INVALID_OPTION";
    pub const ADDR_FAILED: &str = "ADDR_FAILED";
    pub const NFT_FAILED: &str = "NFT_FAILED";
    pub const UPDATE_FAILED: &str = "UPDATE_FAILED";
    pub const ALL: &[&str] = &[
        INVALID_MAP_RULE,
        NO_MATCHING_PD,
        UNSUPPORTED_TYPE,
        NO_MATCHING_RULE,
        NO_PREFIX,
        INVALID_OPTION,
        ADDR_FAILED,
        NFT_FAILED,
        UPDATE_FAILED,
    ];
}

/// What `./mape.sh '' dump` prints: the handler's name, options and flags.
pub fn dump(proto: &str) -> Value {
    let config: Vec<Value> = OPTIONS.iter().map(|(name, ty)| json!([name, ty])).collect();
    json!({
        "name": proto,
        "config": config,
        // The L3 device is the tunnel netifd creates from our update, not a configured device.
        "no-device": true,
        "no-device-config": false,
        // We run a proto task: it waits for a prefix, and afterwards watches for prefix changes.
        "no-proto-task": false,
        "available": true,
        "renew-handler": false,
        "restart-handler": false,
        "lasterror": false,
        "teardown-on-l3-link-down": false,
    })
}

/// Inputs of the setup report besides the mapping itself.
#[derive(Debug, Clone)]
pub struct UpdateParams<'a> {
    pub iface: &'a str,
    pub ifname: &'a str,
    pub tunlink: &'a str,
    pub mtu: u32,
    pub config: &'a HandlerConfig,
    pub resolved: &'a Resolved,
}

/// notify_proto action 0: bring the interface up with the tunnel, address, route and data.
pub fn update(p: &UpdateParams) -> Value {
    let m = &p.resolved.mapping;
    let fmrs: Vec<Value> = p
        .resolved
        .fmrs
        .iter()
        .map(|r| {
            json!({
                "prefix6": r.ipv6_prefix.to_string(),
                "prefix4": r.ipv4_prefix.to_string(),
                "ealen": r.ea_len,
                "offset": r.psid_offset,
            })
        })
        .collect();
    let mut data = serde_json::Map::new();
    if let Some(zone) = &p.config.zone {
        data.insert("zone".into(), json!(zone));
    }
    data.insert("mape".into(), data_mape(p.resolved));
    let mut msg = json!({
        "action": 0,
        "interface": p.iface,
        "ifname": p.ifname,
        "link-up": true,
        "address-external": false,
        "tunnel": {
            "mode": "ipip6",
            "local": m.ce.to_string(),
            "remote": m.br.map(|b| b.to_string()),
            "link": p.tunlink,
            "mtu": p.mtu,
            "ttl": p.config.ttl,
            // Always sent: netifd only disables the encapsulation limit when `data` exists.
            "data": { "encaplimit": p.config.encaplimit.as_netifd(), "fmrs": fmrs },
        },
        "ipaddr": [{ "ipaddr": m.ipv4.to_string(), "mask": m.ipv4_prefix_len.to_string() }],
        "data": Value::Object(data),
    });
    if p.config.defaultroute {
        msg["routes"] = json!([{ "target": "0.0.0.0", "netmask": "0" }]);
    }
    msg
}

/// At most this many port sets go into `data.mape`. netifd keeps the data, ubus carries it in
/// every `network.interface dump` (LuCI asks every few seconds), and ubusd refuses messages
/// over 1 MiB: a rule with PSID offset 15 has 32767 sets. Above the limit `port_sets` is left
/// out (`port_sets_omitted: true`): it follows from `rule.psid_offset`, `rule.psid_len` and
/// `psid`, and [`crate::state::MappingRecord::from_json`] derives it.
pub const DATA_MAX_SETS: usize = 256;

/// `data.mape`: the calculator's JSON, port sets bounded by [`DATA_MAX_SETS`].
pub fn data_mape(r: &Resolved) -> Value {
    let mut v = calc::to_json(r);
    if r.mapping.ports.set_count() as usize > DATA_MAX_SETS {
        if let Some(o) = v.as_object_mut() {
            o.remove("port_sets");
            o.insert("port_sets_omitted".into(), json!(true));
        }
    }
    v
}

/// notify_proto action 0 with `link-up` false: the link is lost (netifd takes the interface
/// down to setting up, drops its addresses and routes and releases its device; the next update
/// brings it up again, as for a PPP session that reconnects).
pub fn link_lost(iface: &str) -> Value {
    json!({ "action": 0, "interface": iface, "link-up": false })
}

/// notify_proto action 3: an error code (plus data) shown in the interface status and LuCI.
pub fn error(iface: &str, code: &str, data: &[String]) -> Value {
    let mut list = vec![Value::from(code)];
    list.extend(data.iter().map(|d| Value::from(d.as_str())));
    json!({ "action": 3, "interface": iface, "error": list })
}

/// notify_proto action 4: do not restart automatically (permanent configuration errors only).
pub fn block_restart(iface: &str) -> Value {
    json!({ "action": 4, "interface": iface })
}

/// notify_proto action 6: depend on another interface (netifd re-runs setup when it comes up).
pub fn host_dependency(iface: &str, host: &str, ifname: &str) -> Value {
    json!({ "action": 6, "interface": iface, "host": host, "ifname": ifname })
}

/// notify_proto action 1: start the proto task netifd supervises.
pub fn run_command(iface: &str, command: &[String]) -> Value {
    json!({ "action": 1, "interface": iface, "command": command, "env": [] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dump_declares_types() {
        let d = dump("mape");
        let cfg = d["config"].as_array().unwrap();
        assert!(cfg.contains(&json!(["legacymap", 7])));
        assert!(cfg.contains(&json!(["mtu", 5])));
        assert!(cfg.contains(&json!(["isp", 3])));
        assert_eq!(d["no-device"], json!(true));
    }

    #[test]
    fn dump_leaves_dhcpv6_signatures_undeclared() {
        // A declared option that changes reloads the interface, and netifd removes a dynamic
        // interface it reloads while it is up: a renumbering would lose it until dhcpv6.script
        // runs again (see OPTIONS). The rule itself stays declared.
        let d = dump("map");
        let names: Vec<&str> = d["config"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|o| o[0].as_str())
            .collect();
        assert!(!names.contains(&"_prefsig") && !names.contains(&"_addrsig"));
        assert!(names.contains(&"rule") && names.contains(&"tunlink"));
    }
}
