//! The customer prefix argument (`mape calc PREFIX`, netifd's delegated prefix): never panic;
//! what parses prints and parses back the same, and resolves against the built-in ISP rules
//! (auto-detection and each ISP by name) without panicking, to a consistent mapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mape::engine::CustomerPrefix;
use mape::provision::builtin::{self, IspChoice};
use mape::provision::{resolve, RuleSource};

fn check(p: CustomerPrefix) {
    let mut choices = vec![IspChoice::Auto];
    choices.extend(
        builtin::isp_ids()
            .into_iter()
            .map(|id| IspChoice::parse(id).unwrap()),
    );
    for choice in choices {
        if let Ok(r) = resolve(&RuleSource::Builtin(choice), p) {
            let m = &r.mapping;
            assert!(m.rule.ipv6_prefix.contains(&p.addr()));
            assert!(m.rule.ipv4_prefix.contains(&m.ipv4));
            let total: u32 = m.port_sets().map(|s| s.len()).sum();
            assert_eq!(total, m.port_count());
            assert!(r.isp.is_some());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Raw form: 16 address bytes and a length byte reach the rule lookup directly.
    if data.len() == 17 {
        let addr: [u8; 16] = data[..16].try_into().unwrap();
        if let Some(p) = CustomerPrefix::new(addr.into(), data[16]) {
            check(p);
        }
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = s.parse::<CustomerPrefix>() else {
        return;
    };
    let again: CustomerPrefix = p.to_string().parse().expect("a printed prefix parses");
    assert_eq!((again.network(), again.len()), (p.network(), p.len()));
    check(p);
});
