//! The one command runner of the front ends (`ubus`, `nft`, `ip`, `conntrack`): no shell is
//! ever involved, so option values cannot be reinterpreted; a deadline bounds every run; and a
//! failure is a typed [`CommandError`] (could not start, exit status with the first stderr
//! line, or timeout), so callers can tell a missing tool from a refusal from a hang.

use std::io::{self, Write as _};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may take unless the caller says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started (not installed, not executable).
    #[error("{program}: cannot run: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// It ran and failed: its exit status (or signal) and the first non-empty stderr line.
    #[error("{program} failed: {stderr} ({status})")]
    Exit {
        program: String,
        status: String,
        /// The exit code, `None` when a signal ended it.
        code: Option<i32>,
        stderr: String,
    },
    /// It did not finish in time and was killed.
    #[error("{program}: no answer within {} s", .after.as_secs())]
    Timeout { program: String, after: Duration },
    /// Talking to it failed (a pipe broke before it read its input).
    #[error("{program}: {source}")]
    Io {
        program: String,
        #[source]
        source: io::Error,
    },
}

impl CommandError {
    /// The program's exit code, if it ran and exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            CommandError::Exit { code, .. } => *code,
            _ => None,
        }
    }
}

/// Runs `argv`, feeding `stdin` if given, with [`DEFAULT_TIMEOUT`]; returns its stdout.
pub fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, CommandError> {
    run_with(argv, stdin, DEFAULT_TIMEOUT)
}

/// Runs `argv` and kills it if it has not finished after `timeout`.
pub fn run_with(
    argv: &[&str],
    stdin: Option<&str>,
    timeout: Duration,
) -> Result<String, CommandError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(CommandError::Spawn {
            program: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command line"),
        });
    };
    let name = program.to_string();
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
        .map_err(|source| CommandError::Spawn {
            program: name.clone(),
            source,
        })?;
    // Threads move the bytes, so a child that writes a lot before reading all of its input
    // (or never reads it) cannot deadlock us: the deadline below always holds.
    let feeder = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.as_bytes().to_vec();
            Some(thread::spawn(move || pipe.write_all(&input)))
        }
        _ => None,
    };
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = match wait_until(&mut child, Instant::now() + timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CommandError::Timeout {
                program: name,
                after: timeout,
            });
        }
        Err(source) => {
            return Err(CommandError::Io {
                program: name,
                source,
            })
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let fed = feeder.map_or(Ok(()), |f| f.join().unwrap_or(Ok(())));
    if status.success() {
        // A successful program that stopped reading early (EPIPE) is still a success.
        if let Err(e) = fed {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(CommandError::Io {
                    program: name,
                    source: e,
                });
            }
        }
        return Ok(String::from_utf8_lossy(&stdout).into_owned());
    }
    let text = String::from_utf8_lossy(&stderr);
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string();
    Err(CommandError::Exit {
        program: name,
        status: status.to_string(),
        code: status.code(),
        stderr: first,
    })
}

fn drain<R: io::Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        buf
    })
}

fn wait_until(
    child: &mut Child,
    deadline: Instant,
) -> io::Result<Option<std::process::ExitStatus>> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(None);
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_input_and_errors_are_typed() {
        assert_eq!(run(&["cat"], Some("hello")).unwrap(), "hello");
        let e = run(
            &["sh", "-c", "echo first >&2; echo second >&2; exit 3"],
            None,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), Some(3));
        assert!(e.to_string().contains("first"), "{e}");
        assert!(!e.to_string().contains("second"), "{e}");
        let e = run(&["/nonexistent/tool"], None).unwrap_err();
        assert!(matches!(e, CommandError::Spawn { .. }), "{e}");
        assert!(matches!(run(&[], None), Err(CommandError::Spawn { .. })));
    }

    #[test]
    fn a_hanging_command_is_killed_at_the_deadline() {
        let t = Instant::now();
        let e = run_with(&["sleep", "10"], None, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(e, CommandError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn large_input_and_output_do_not_deadlock() {
        let big = "x".repeat(1 << 20);
        assert_eq!(run(&["cat"], Some(&big)).unwrap().len(), big.len());
        // A child that never reads its input: the feeder gets EPIPE, the deadline holds.
        let e = run_with(&["sh", "-c", "exit 1"], Some(&big), Duration::from_secs(5));
        assert_eq!(e.unwrap_err().exit_code(), Some(1));
    }
}
