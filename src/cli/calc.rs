//! `mape calc` and `mape rules`.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::Failure;
use clap::Args;
use serde_json::json;

use crate::engine::{CustomerPrefix, IidFormat};
use crate::provision::builtin::{self, IspChoice};
use crate::provision::input::{PsidInput, RuleInput};
use crate::provision::resolve;
use crate::render::calc;

/// Where the rule comes from; shared by every command that maps a prefix.
#[derive(Args, Debug, Clone, Default)]
pub struct RuleFlags {
    /// ISP whose built-in rules to use: auto (find it by the prefix), an ISP of the built-in
    /// table, or none (an explicit rule is required).
    #[arg(long, value_name = "ISP", value_parser = isp_values(true))]
    pub isp: Option<String>,
    /// OpenWrt mapcalc/odhcp6c rule string(s); psid in it is LEFT-aligned (psid=54272 is PSID 212
    /// with psidlen=8).
    #[arg(long, value_name = "STRING")]
    pub rule: Option<String>,
    /// DHCPv6 OPTION_S46_CONT_MAPE (94) as hex, header included.
    #[arg(long, value_name = "HEX")]
    pub dhcpv6_hex: Option<String>,
    /// Rule IPv6 prefix, e.g. 240b:10::/31.
    #[arg(long, value_name = "PREFIX")]
    pub ipv6_prefix: Option<String>,
    /// Rule IPv4 prefix, e.g. 106.72.0.0/15.
    #[arg(long, value_name = "PREFIX")]
    pub ipv4_prefix: Option<String>,
    /// EA-bits length.
    #[arg(long, value_name = "BITS", value_parser = super::number::<u8>)]
    pub ea_len: Option<u8>,
    /// PSID offset (default 6 for rfc7597, 4 for draft03).
    #[arg(long, value_name = "BITS", value_parser = super::number::<u8>)]
    pub psid_offset: Option<u8>,
    /// PSID length (default: EA length - IPv4 suffix length).
    #[arg(long, value_name = "BITS", value_parser = super::number::<u8>)]
    pub psid_len: Option<u8>,
    /// Explicit PSID, as a plain (right-aligned) number.
    #[arg(long, value_name = "N", value_parser = super::number::<u16>)]
    pub psid: Option<u16>,
    /// BR (tunnel remote) IPv6 address.
    #[arg(long, value_name = "ADDR")]
    pub br: Option<Ipv6Addr>,
    /// CE interface-identifier format: rfc7597 (default for explicit rules) or draft03
    /// (built-in ISP rules).
    #[arg(long, value_name = "FORMAT")]
    pub iid: Option<IidFormat>,
}

impl RuleFlags {
    pub fn to_input(&self) -> Result<RuleInput, String> {
        let (ipv6_prefix, ipv6_prefix_len) = match &self.ipv6_prefix {
            None => (None, None),
            Some(s) => {
                let n: ipnet::Ipv6Net = s
                    .parse()
                    .map_err(|_| format!("--ipv6-prefix {s:?}: expected ADDRESS/LENGTH"))?;
                (Some(n.addr()), Some(n.prefix_len()))
            }
        };
        let (ipv4_prefix, ipv4_prefix_len) = match &self.ipv4_prefix {
            None => (None, None),
            Some(s) => {
                let n: ipnet::Ipv4Net = match s.parse() {
                    Ok(n) => n,
                    Err(_) => s
                        .parse::<Ipv4Addr>()
                        .map(ipnet::Ipv4Net::from)
                        .map_err(|_| format!("--ipv4-prefix {s:?}: expected ADDRESS/LENGTH"))?,
                };
                (Some(n.addr()), Some(n.prefix_len()))
            }
        };
        Ok(RuleInput {
            isp: self.isp.clone(),
            rule: self.rule.clone(),
            dhcpv6_hex: self.dhcpv6_hex.clone(),
            ipv6_prefix,
            ipv6_prefix_len,
            ipv4_prefix,
            ipv4_prefix_len,
            ea_len: self.ea_len,
            psid_offset: self.psid_offset,
            psid_len: self.psid_len,
            psid: self.psid.map(PsidInput::Right),
            br: self.br,
            iid: self.iid,
        })
    }
}

#[derive(Args, Debug)]
pub struct CalcArgs {
    /// Customer prefix: a delegated /56 or /60, an RA /64, or a full IPv6 address.
    #[arg(value_name = "PREFIX")]
    pub prefix: String,
    #[command(flatten)]
    pub rule: RuleFlags,
    /// Print one JSON object (schema in the README).
    #[arg(long)]
    pub json: bool,
}

pub fn calc(a: &CalcArgs) -> Result<i32, Failure> {
    let prefix: CustomerPrefix = a
        .prefix
        .parse()
        .map_err(|e: crate::engine::PrefixError| e.to_string())?;
    let source = a
        .rule
        .to_input()?
        .to_source(Some(&prefix))
        .map_err(|e| e.to_string())?;
    let resolved = resolve(&source, prefix).map_err(|e| e.to_string())?;
    if a.json {
        println!("{}", calc::to_json(&resolved));
    } else {
        print!("{}", calc::to_text(&resolved));
    }
    Ok(0)
}

#[derive(Args, Debug)]
pub struct RulesArgs {
    /// Only this ISP's rules.
    #[arg(long, value_name = "ISP", value_parser = isp_values(false))]
    pub isp: Option<String>,
    /// List the ISPs (id, name, interface-ID format, PSID offset, rules) instead of the rules.
    #[arg(long)]
    pub isps: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// The `--isp` values, from the compiled table: `auto`, each ISP (with its name as help), and
/// with `none` for commands that also take an explicit rule.
fn isp_values(with_none: bool) -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    let mut values = vec![PossibleValue::new("auto").help("find the ISP by the prefix")];
    values.extend(
        builtin::ISPS
            .iter()
            .map(|i| PossibleValue::new(i.id).help(i.label)),
    );
    if with_none {
        values.push(PossibleValue::new("none").help("no built-in rules: give the rule"));
    }
    clap::builder::PossibleValuesParser::new(values)
}

pub fn rules(a: &RulesArgs) -> Result<i32, Failure> {
    if a.isps {
        if a.json {
            println!("{}", calc::isps_json());
        } else {
            for i in builtin::ISPS {
                let n = builtin::rules(Some(i)).filter(|r| r.verified()).count();
                println!(
                    "{:<8} {} ({} interface ID, PSID offset {}, {n} rules)",
                    i.id, i.label, i.iid, i.psid_offset
                );
            }
        }
        return Ok(0);
    }
    let isp = match a.isp.as_deref() {
        None => None,
        Some(s) => match IspChoice::parse(s)? {
            IspChoice::Only(i) => Some(i),
            IspChoice::Auto => None,
        },
    };
    let list: Vec<_> = builtin::rules(isp).collect();
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(|r| {
                let rule = r.to_rule();
                json!({
                    "isp": r.isp().id,
                    "ipv6_prefix": rule.ipv6_prefix.to_string(),
                    "ipv4_prefix": rule.ipv4_prefix.to_string(),
                    "ea_len": rule.ea_len,
                    "psid_offset": rule.psid_offset,
                    "psid_len": rule.validate().unwrap_or(0),
                    "br": rule.br.map(|b| b.to_string()),
                    "verified": r.verified(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
    } else {
        println!(
            "{:<8} {:<24} {:<18} {:>3} {:>6} {:>7}  BR",
            "ISP", "IPv6 prefix", "IPv4 prefix", "EA", "offset", "psidlen"
        );
        for r in &list {
            let rule = r.to_rule();
            println!(
                "{:<8} {:<24} {:<18} {:>3} {:>6} {:>7}  {}{}",
                r.isp().id,
                rule.ipv6_prefix.to_string(),
                rule.ipv4_prefix.to_string(),
                rule.ea_len,
                rule.psid_offset,
                rule.validate().unwrap_or(0),
                rule.br.map(|b| b.to_string()).unwrap_or_default(),
                if r.verified() { "" } else { "  (unverified)" }
            );
        }
        println!(
            "{} rules, compiled up to {}",
            list.len(),
            builtin::COMPILED_UP_TO
        );
    }
    Ok(0)
}
