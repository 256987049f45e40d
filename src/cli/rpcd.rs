//! `mape rpcd list` / `mape rpcd call <method>`: the rpcd exec plugin behind the ubus object
//! `mape` (installed as `/usr/libexec/rpcd/mape`, a one-line `exec /usr/sbin/mape rpcd "$@"`).
//!
//! rpcd's exec-plugin protocol (rpcd's plugin.c):
//! - at start-up rpcd runs `<plugin> list` and reads one JSON object from stdout: each key is a
//!   method, its value an object mapping each argument to a sample of its type (a string for
//!   strings, a number for integers, where 8, 16 and 64 select those widths and any other
//!   number 32 bits, `true` for booleans, `{}`/`[]` for tables and arrays). rpcd registers the
//!   plugin's file name (`mape`) as a ubus object with those methods.
//! - on `ubus call mape <method> <args>` rpcd runs `<plugin> call <method>`, writes the
//!   arguments as one JSON object to stdin and closes it, and replies with the first JSON value
//!   the plugin prints, which must be an object (anything else becomes an error status; the
//!   exit status and stderr are ignored). Calls through uhttpd/LuCI carry an extra
//!   `ubus_rpc_session` argument.
//!
//! Methods (errors are `{"error": "<one line>"}`, exit status 2 for bad arguments, else 1):
//! - `status {"interface"?: string, "top"?: int}`: the object `mape status --json [IFACE]`
//!   prints, sampled when asked (handler state files, nft, conntrack, ubus).
//! - `config {"interface": string}`: `{"values": {...}}`, the interface's section of
//!   /etc/config/network as committed: rpcd's `uci get` asked without a session, so without
//!   the changes a LuCI session has staged. LuCI's protocol switch deletes the options of the
//!   former protocol from the staged configuration; mape.js reads them back from here to keep
//!   the settings of an OpenWrt `map` interface switched to `mape`.

use std::io::Read as _;

use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::Failure;
use crate::names::check_name;
use crate::status::report as render;
use crate::ubus::Ubus;

#[derive(Args, Debug)]
pub struct RpcdArgs {
    #[command(subcommand)]
    pub action: RpcdAction,
}

#[derive(Subcommand, Debug)]
pub enum RpcdAction {
    /// Print the methods and their argument types as one JSON object (rpcd runs this once).
    List,
    /// Run METHOD with its JSON arguments read from stdin; print the reply as one JSON object.
    Call {
        #[arg(value_name = "METHOD")]
        method: String,
    },
}

/// `status`'s arguments when none are given.
const DEFAULT_TOP: usize = 5;
/// Largest `top` accepted (the lists are cut to this many hosts and destinations).
const MAX_TOP: u64 = 1000;
/// Largest argument object read from stdin; rpcd's arguments are a few dozen bytes.
const MAX_INPUT: u64 = 64 * 1024;

/// What `list` prints: the methods and a sample of each argument's type.
pub fn methods() -> Value {
    json!({
        "status": { "interface": "string", "top": 32 },
        "config": { "interface": "string" },
        "isps": {},
    })
}

/// The arguments of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusQuery {
    pub interface: Option<String>,
    pub top: usize,
}

/// A failed call: the reply's text and the exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    pub message: String,
    pub exit: i32,
}

impl CallError {
    fn usage(message: String) -> Self {
        CallError {
            message,
            exit: super::EXIT_USAGE,
        }
    }

    /// The reply rpcd passes on: `{"error": "<message>"}`.
    pub fn to_json(&self) -> Value {
        json!({ "error": self.message })
    }
}

/// The argument object of `method` (empty input counts as `{}`), without the
/// `ubus_rpc_session` uhttpd adds to every call (the session was checked before we were run).
/// Any other key must be one of `known`.
fn parse_object(
    method: &str,
    input: &str,
    known: &[&str],
) -> Result<Map<String, Value>, CallError> {
    let mut args: Map<String, Value> = if input.trim().is_empty() {
        Map::new()
    } else {
        match serde_json::from_str::<Value>(input) {
            Ok(Value::Object(m)) => m,
            Ok(other) => {
                return Err(CallError::usage(format!(
                    "{method}: the arguments must be a JSON object, not {}",
                    kind(&other)
                )))
            }
            Err(e) => {
                return Err(CallError::usage(format!(
                    "{method}: the arguments are not JSON: {e}"
                )))
            }
        }
    };
    args.remove("ubus_rpc_session");
    if let Some(other) = args.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(CallError::usage(format!(
            "{method}: unknown argument {other:?} (known: {})",
            known.join(", ")
        )));
    }
    Ok(args)
}

/// The `interface` argument: absent/null is `None`, else a name the handler accepts.
fn interface_arg(method: &str, args: &Map<String, Value>) -> Result<Option<String>, CallError> {
    match args.get("interface") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if check_name("interface", s).is_ok() => Ok(Some(s.clone())),
        Some(v) => Err(CallError::usage(format!(
            "{method}: argument \"interface\" must be an interface name (letters, digits, _ - ., at most 32), not {v}"
        ))),
    }
}

/// Parses `status`'s argument object.
pub fn parse_status_args(input: &str) -> Result<StatusQuery, CallError> {
    let args = parse_object("status", input, &["interface", "top"])?;
    let top = match args.get("top") {
        None => DEFAULT_TOP,
        Some(v) => match v.as_u64().filter(|n| *n <= MAX_TOP) {
            Some(n) => n as usize,
            None => {
                return Err(CallError::usage(format!(
                    "status: argument \"top\" must be a whole number from 0 to {MAX_TOP}, not {v}"
                )))
            }
        },
    };
    Ok(StatusQuery {
        interface: interface_arg("status", &args)?,
        top,
    })
}

/// Parses `config`'s argument object: the interface is required.
pub fn parse_config_args(input: &str) -> Result<String, CallError> {
    let args = parse_object("config", input, &["interface"])?;
    interface_arg("config", &args)?
        .ok_or_else(|| CallError::usage("config: argument \"interface\" is missing".into()))
}

/// The committed section `network.<iface>` (see the module documentation), from rpcd's
/// `uci get` through the ubus client, without a session.
fn committed_section(iface: &str) -> Result<Value, CallError> {
    let runtime = |message: String| CallError { message, exit: 1 };
    let args = json!({ "config": "network", "section": iface });
    let mut ubus = Ubus::connect(None, std::time::Duration::from_secs(10))
        .map_err(|e| runtime(format!("config: {e}")))?;
    let reply = match ubus.call("uci", "get", &args) {
        // rpcd answers a lookup of a missing section with status 0 and no data
        Ok(Value::Null) => Err(None),
        Ok(v) => Ok(v),
        Err(e) => Err(Some(e)),
    }
    .map_err(|e| {
        runtime(match e {
            None => format!("config {iface:?}: no such interface in /etc/config/network"),
            Some(e) => format!("config {iface:?}: no such interface in /etc/config/network ({e})"),
        })
    })?;
    match reply.get("values") {
        Some(v @ Value::Object(m))
            if m.get(".type").and_then(Value::as_str) == Some("interface") =>
        {
            Ok(json!({ "values": v }))
        }
        _ => Err(runtime(format!(
            "config {iface:?}: network.{iface} is not an interface section"
        ))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads the argument object rpcd writes to stdin (nothing when stdin is a terminal, so that
/// `mape rpcd call status` by hand does not wait).
fn read_args() -> Result<String, CallError> {
    use std::io::IsTerminal as _;
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(String::new());
    }
    let mut text = String::new();
    stdin
        .lock()
        .take(MAX_INPUT + 1)
        .read_to_string(&mut text)
        .map_err(|e| CallError::usage(format!("rpcd: cannot read the arguments on stdin: {e}")))?;
    if text.len() as u64 > MAX_INPUT {
        return Err(CallError::usage(format!(
            "rpcd: the arguments on stdin exceed {MAX_INPUT} bytes"
        )));
    }
    Ok(text)
}

fn call(method: &str) -> Result<Value, CallError> {
    match method {
        "status" => {
            let q = parse_status_args(&read_args()?)?;
            let report =
                super::status::report(q.interface.as_deref(), q.top).map_err(|f| CallError {
                    exit: if matches!(f, Failure::Usage(_)) { 2 } else { 1 },
                    message: match f {
                        Failure::Usage(m) | Failure::Runtime(m) => m,
                    },
                })?;
            Ok(render::to_json(&report))
        }
        "config" => committed_section(&parse_config_args(&read_args()?)?),
        "isps" => {
            parse_object("isps", &read_args()?, &[])?;
            // The built-in ISPs from the compiled table (the LuCI page's ISP list): adding an
            // ISP to data/mape-rules-jp.json is all it takes.
            Ok(json!({ "isps": crate::render::calc::isps_json() }))
        }
        other => Err(CallError::usage(format!(
            "rpcd: unknown method {other:?} (known: status, config, isps)"
        ))),
    }
}

pub fn run(a: &RpcdArgs) -> Result<i32, Failure> {
    match &a.action {
        RpcdAction::List => {
            println!("{}", methods());
            Ok(0)
        }
        RpcdAction::Call { method } => match call(method) {
            Ok(reply) => {
                println!("{reply}");
                Ok(0)
            }
            Err(e) => {
                // rpcd reads stdout only; the same line on stderr is for people.
                println!("{}", e.to_json());
                eprintln!("mape: {}", e.message);
                Ok(e.exit)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_names_status_with_typed_arguments() {
        // rpcd takes a string sample as a string argument and a number other than 8/16/64
        // as a 32-bit integer (plugin.c, rpc_plugin_parse_signature).
        let m = methods();
        let status = m["status"].as_object().unwrap();
        assert_eq!(m.as_object().unwrap().len(), 3);
        assert_eq!(m["isps"], json!({}));
        assert!(status["interface"].is_string());
        assert_eq!(status["top"], 32);
        assert_eq!(status.len(), 2);
        let config = m["config"].as_object().unwrap();
        assert!(config["interface"].is_string());
        assert_eq!(config.len(), 1);
    }

    #[test]
    fn status_arguments() {
        let all = StatusQuery {
            interface: None,
            top: DEFAULT_TOP,
        };
        assert_eq!(parse_status_args("").unwrap(), all);
        assert_eq!(parse_status_args(" {} \n").unwrap(), all);
        assert_eq!(parse_status_args(r#"{"interface":null}"#).unwrap(), all);
        let q = parse_status_args(
            r#"{"interface":"wanmap","top":0,"ubus_rpc_session":"0123456789abcdef0123456789abcdef"}"#,
        )
        .unwrap();
        assert_eq!(q.interface.as_deref(), Some("wanmap"));
        assert_eq!(q.top, 0);
        assert_eq!(parse_status_args(r#"{"top":1000}"#).unwrap().top, 1000);
    }

    #[test]
    fn bad_status_arguments_name_the_field_and_value() {
        for (input, want) in [
            (r#"{"iface":"wanmap"}"#, "unknown argument \"iface\""),
            (
                r#"{"interface":5}"#,
                "\"interface\" must be an interface name",
            ),
            (r#"{"interface":""}"#, "at most 32), not \"\""),
            (r#"{"interface":"a b"}"#, "not \"a b\""),
            (
                r#"{"interface":"abcdefghijklmnopqrstuvwxyz0123456"}"#,
                "not \"abcdefghijklmnopqrstuvwxyz0123456\"",
            ),
            (
                r#"{"top":-1}"#,
                "\"top\" must be a whole number from 0 to 1000, not -1",
            ),
            (r#"{"top":1001}"#, "not 1001"),
            (r#"{"top":"5"}"#, "not \"5\""),
            (r#"{"top":2.5}"#, "not 2.5"),
            ("[1]", "must be a JSON object, not an array"),
            ("\"wanmap\"", "not a string"),
            ("{", "not JSON"),
        ] {
            let e = parse_status_args(input).unwrap_err();
            assert!(e.message.contains(want), "{input}: {}", e.message);
            assert_eq!(e.exit, super::super::EXIT_USAGE, "{input}");
            assert!(!e.message.contains('\n'), "{input}: one line");
            assert_eq!(e.to_json()["error"], e.message.as_str());
        }
    }

    #[test]
    fn config_arguments() {
        let q = parse_config_args(r#"{"interface":"wanmap","ubus_rpc_session":"x"}"#).unwrap();
        assert_eq!(q, "wanmap");
        for (input, want) in [
            ("{}", "config: argument \"interface\" is missing"),
            (r#"{"interface":null}"#, "is missing"),
            (r#"{"interface":"wan map"}"#, "not \"wan map\""),
            (
                r#"{"top":1}"#,
                "unknown argument \"top\" (known: interface)",
            ),
        ] {
            let e = parse_config_args(input).unwrap_err();
            assert!(e.message.contains(want), "{input}: {}", e.message);
            assert_eq!(e.exit, super::super::EXIT_USAGE);
        }
    }

    #[test]
    fn unknown_method_is_a_json_error() {
        let e = call("restart").unwrap_err();
        assert_eq!(e.exit, super::super::EXIT_USAGE);
        assert!(
            e.message.contains("unknown method \"restart\""),
            "{}",
            e.message
        );
    }
}
