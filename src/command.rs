//! The one command runner of the front ends (`ubus`, `nft`, `ip`, `conntrack`): no shell is
//! ever involved, so option values cannot be reinterpreted; a deadline bounds every run; and a
//! failure is a typed [`CommandError`] (could not start, exit status with the first stderr
//! line, or timeout), so callers can tell a missing tool from a refusal from a hang.
//!
//! One thread moves the bytes: `poll(2)` on the child's stdin (non-blocking), stdout and stderr
//! until all three are closed or the deadline passes. No thread is spawned (a thread costs the
//! router binary ~20 KB of std and libc: docs/sizes.md).

use std::io::{self, Write as _};
use std::os::fd::{AsFd as _, AsRawFd as _};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

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
    let (status, stdout, stderr, fed) = match exchange(&mut child, stdin, Instant::now() + timeout)
    {
        Ok(Some(done)) => done,
        Ok(None) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CommandError::Timeout {
                program: name,
                after: timeout,
            });
        }
        Err(source) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(CommandError::Io {
                program: name,
                source,
            });
        }
    };
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

/// What a finished run gave: exit status, stdout, stderr, and how feeding stdin went.
type Exchange = (std::process::ExitStatus, Vec<u8>, Vec<u8>, io::Result<()>);

/// Feeds `input` to the child's stdin while reading its stdout and stderr, so that a child
/// that writes a lot before reading all of its input (or never reads it) cannot deadlock us;
/// then waits for it to exit. `None` when `deadline` passed first.
fn exchange(
    child: &mut Child,
    input: Option<&str>,
    deadline: Instant,
) -> io::Result<Option<Exchange>> {
    let mut sink: Option<ChildStdin> = child.stdin.take();
    let mut out: Option<ChildStdout> = child.stdout.take();
    let mut err: Option<ChildStderr> = child.stderr.take();
    let mut input = input.unwrap_or_default().as_bytes();
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    let mut fed = Ok(());
    if let Some(p) = &sink {
        fcntl(p.as_raw_fd(), FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(io::Error::from)?;
    }
    let mut buf = [0u8; 16384];
    loop {
        if input.is_empty() {
            sink = None; // closes it: the child sees the end of its input
        }
        if sink.is_none() && out.is_none() && err.is_none() {
            break;
        }
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(None);
        };
        // Round up, so that a deadline less than 1 ms away does not spin.
        let wait =
            PollTimeout::try_from(left + Duration::from_micros(999)).unwrap_or(PollTimeout::MAX);
        let ready = {
            let mut which = Vec::with_capacity(3);
            let mut fds = Vec::with_capacity(3);
            if let Some(p) = &sink {
                which.push(0);
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLOUT));
            }
            for (i, p) in [
                (1, out.as_ref().map(|p| p.as_fd())),
                (2, err.as_ref().map(|p| p.as_fd())),
            ] {
                if let Some(fd) = p {
                    which.push(i);
                    fds.push(PollFd::new(fd, PollFlags::POLLIN));
                }
            }
            match poll(&mut fds, wait) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
            let mut ready = [false; 3];
            for (i, f) in which.into_iter().zip(&fds) {
                // Readable, writable, or the other end closed (read/write then says so).
                ready[i] = f.revents().is_some_and(|r| !r.is_empty());
            }
            ready
        };
        if ready[0] {
            if let Some(p) = sink.as_mut() {
                match p.write(input) {
                    Ok(n) => input = &input[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // Broken pipe: the child stopped reading; the caller decides.
                        fed = Err(e);
                        input = &[];
                    }
                }
            }
        }
        if ready[1] {
            pump(&mut out, &mut stdout, &mut buf);
        }
        if ready[2] {
            pump(&mut err, &mut stderr, &mut buf);
        }
    }
    Ok(wait_until(child, deadline)?.map(|status| (status, stdout, stderr, fed)))
}

/// Moves what is readable from `pipe` into `to`; closes the pipe at its end (or on an error).
fn pump<R: io::Read>(pipe: &mut Option<R>, to: &mut Vec<u8>, buf: &mut [u8]) {
    if let Some(p) = pipe.as_mut() {
        match p.read(buf) {
            Ok(0) => *pipe = None,
            Ok(n) => to.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => *pipe = None,
        }
    }
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
    fn the_deadline_holds_while_a_grandchild_keeps_the_output_open() {
        let t = Instant::now();
        let e = run_with(
            &["sh", "-c", "sleep 10 &"],
            None,
            Duration::from_millis(300),
        )
        .unwrap_err();
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
