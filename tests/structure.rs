//! Imports point one way (docs/architecture.md):
//!
//! ```text
//! engine (pure: std + ipnet)  <-  names, state  <-  provision  <-  render  <-  front ends
//!                                                                             (cli, handler,
//!                                                   status  <--------------    linux, rpcd)
//! ```
//!
//! This test reads every source file and fails when a module names a module it must not: the
//! engine anything but std/ipnet (the `thiserror` derive expands to std's `Display`/`Error`
//! impls and is allowed, as the project's error convention), render a front end or status,
//! status render or a front end. Paths are matched as `crate::<module>` and `use <crate>`.

use std::path::{Path, PathBuf};

/// Top-level modules of the library, and what each may name (besides itself).
const RULES: &[(&str, &[&str])] = &[
    ("engine", &[]),
    ("names", &[]),
    ("command", &[]),
    ("ubus", &[]),
    ("netlink", &[]),
    ("state", &["engine", "names"]),
    ("provision", &["engine", "names"]),
    ("render", &["engine", "names", "provision", "state"]),
    (
        "status",
        &[
            "engine",
            "names",
            "state",
            "provision",
            "command",
            "ubus",
            "netlink",
        ],
    ),
];

/// External crates each restricted module may use.
const EXTERNAL: &[(&str, &[&str])] = &[
    ("engine", &["std", "core", "ipnet", "thiserror"]),
    ("names", &["std", "core"]),
    // nix: poll(2) and O_NONBLOCK on the child's pipes (no thread per pipe)
    ("command", &["std", "core", "thiserror", "nix"]),
    ("ubus", &["std", "core", "thiserror", "serde_json"]),
    // libc: nix's re-export (`nix::libc`), the target's constants
    ("netlink", &["std", "core", "thiserror", "nix", "libc"]),
];

const FRONT_ENDS: &[&str] = &["cli", "handler", "linux", "status", "render"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The files of a top-level module (`src/<m>.rs` or `src/<m>/**.rs`).
fn module_files(src: &Path, m: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let file = src.join(format!("{m}.rs"));
    if file.exists() {
        files.push(file);
    }
    let dir = src.join(m);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    }
    assert!(!files.is_empty(), "no module {m}");
    files
}

/// Code without comments (a doc comment may mention any module).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::x` paths, `super::super::x` is not used in this crate.
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + 7..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        out.push(name);
        rest = after;
    }
    out
}

/// External crates named by `use x::` or a path `x::` at the start of an expression.
fn external_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("::") {
        let before = &code[..i];
        let name: String = before
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        let start = i - name.len();
        let prev = code[..start].chars().next_back().unwrap_or(' ');
        if name.is_empty() || prev == ':' || prev.is_ascii_alphanumeric() || prev == '_' {
            continue;
        }
        if !["crate", "self", "super"].contains(&name.as_str()) {
            out.push(name);
        }
    }
    out
}

#[test]
fn imports_point_one_way() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for (m, allowed) in RULES {
        for f in module_files(&src, m) {
            let code = code_of(&std::fs::read_to_string(&f).unwrap());
            for r in crate_refs(&code) {
                if r != *m && !allowed.contains(&r.as_str()) {
                    problems.push(format!("{} names crate::{r}", f.display()));
                }
            }
            if let Some((_, ext)) = EXTERNAL.iter().find(|(n, _)| n == m) {
                for r in external_refs(&code) {
                    if is_crate_name(&r) && !ext.contains(&r.as_str()) {
                        problems.push(format!("{} uses the crate {r}", f.display()));
                    }
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "imports against the layering:\n{}",
        problems.join("\n")
    );
}

/// The external crates of Cargo.toml (and std/core), which a restricted module must not name
/// unless allowed.
fn is_crate_name(name: &str) -> bool {
    [
        "clap",
        "serde_json",
        "serde",
        "ipnet",
        "thiserror",
        "nix",
        "libc",
        "std",
        "core",
    ]
    .contains(&name)
}

/// The check itself can fail: a render file naming status, an engine file using serde_json.
#[test]
fn the_check_sees_forbidden_imports() {
    assert_eq!(crate_refs("use crate::status::Report;"), ["status"]);
    assert!(crate_refs("// use crate::status").len() == 1);
    assert!(crate_refs(&code_of("// use crate::status")).is_empty());
    assert_eq!(
        external_refs("let v = serde_json::json!({});"),
        ["serde_json"]
    );
    assert_eq!(external_refs("use ipnet::Ipv6Net;"), ["ipnet"]);
    assert_eq!(external_refs("a::b::c"), ["a"]);
    for m in FRONT_ENDS {
        assert!(!RULES
            .iter()
            .find(|(n, _)| *n == "render")
            .unwrap()
            .1
            .contains(m));
    }
}
