//! Running the system's tools (`ubus`, `nft`, `ip`) for the front ends: no shell is ever
//! involved, so option values cannot be reinterpreted, and a failure is reported with the
//! first line the tool printed on stderr.

use std::io::Write as _;
use std::process::{Command, Stdio};

/// Runs `argv` (feeding `stdin` if given) and returns its stdout; on failure, why: the tool's
/// first stderr line and exit status, or the reason it could not start.
pub fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty command line")?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        Err(format!("{first} ({})", out.status))
    }
}
