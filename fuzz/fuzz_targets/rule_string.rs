//! OpenWrt mapcalc/odhcp6c rule strings (`--rule`, UCI `rule`): never panic; whatever parses is
//! a valid rule that maps its own prefix and survives emit → parse unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mape::engine::{CustomerPrefix, IidFormat, Mapping};
use mape::provision::rulestr;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let pd: CustomerPrefix = "240b:10:3251:6400::/56".parse().unwrap();
    for iid in [IidFormat::Rfc7597, IidFormat::Draft03] {
        for prefix in [None, Some(&pd)] {
            let Ok(rules) = rulestr::parse_rules(s, iid, prefix) else {
                continue;
            };
            for rule in rules {
                assert!(rule.validate().is_ok(), "{rule:?}");
                let text = rulestr::emit_rule(&rule);
                let again = rulestr::parse_rule(&text, iid, None);
                assert_eq!(again.as_ref(), Ok(&rule), "{text}");
                // The rule's own prefix, r + ea bits long, is inside it and maps.
                let len = rule.ipv6_prefix.prefix_len() + rule.ea_len;
                let p = CustomerPrefix::new(rule.ipv6_prefix.addr(), len).unwrap();
                let m = Mapping::compute(&rule, p).expect("a valid rule maps its own prefix");
                let total: u32 = m.port_sets().map(|s| s.len()).sum();
                assert_eq!(total, m.port_count());
            }
        }
    }
});
