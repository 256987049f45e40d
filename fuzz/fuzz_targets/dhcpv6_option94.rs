//! DHCPv6 OPTION_S46_CONT_MAPE (94), as bytes and as hex text (`--dhcpv6-hex`, odhcp6c): never
//! panic; a container that parses emits the same bytes' meaning back, and its rules are valid.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mape::engine::{CustomerPrefix, Mapping};
use mape::provision::dhcpv6::S46ContMape;

fuzz_target!(|data: &[u8]| {
    if let Ok(c) = S46ContMape::parse(data) {
        let bytes = c.emit();
        assert_eq!(S46ContMape::parse(&bytes).as_ref(), Ok(&c));
        if let Ok(rules) = c.to_rules() {
            for rule in rules {
                assert!(rule.validate().is_ok(), "{rule:?}");
                let len = rule.ipv6_prefix.prefix_len() + rule.ea_len;
                let p = CustomerPrefix::new(rule.ipv6_prefix.addr(), len).unwrap();
                let m = Mapping::compute(&rule, p).expect("a valid rule maps its own prefix");
                let _ = m.port_sets().count();
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = S46ContMape::parse_hex(text) {
            let _ = c.to_rules();
        }
    }
});
