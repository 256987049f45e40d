//! What `up`/`down`/detection need from the system, behind a trait so the logic is testable
//! without root: [`RealHost`] runs the commands, [`DryRunHost`] reads the system but only
//! prints what it would change.

use std::path::PathBuf;

use crate::state::{self, State};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// A command failed: the command line and the first line of its stderr (or why it could
    /// not start).
    #[error("`{cmd}` failed: {why}")]
    Command { cmd: String, why: String },
    #[error("state file {0}")]
    State(String),
}

pub trait Host {
    /// Runs a command that only reads (`ip -j …`, `nft list …`); a dry run runs it too.
    fn query(&mut self, argv: &[&str]) -> Result<String, HostError>;
    /// Runs a command that changes the system; `stdin` is fed to it (an `nft -f -` script).
    fn change(&mut self, argv: &[&str], stdin: Option<&str>) -> Result<(), HostError>;
    /// The saved state of `name`; an unreadable or refused one is reported and taken as none.
    fn load_state(&mut self, name: &str) -> Option<State>;
    fn save_state(&mut self, state: &State) -> Result<(), HostError>;
    fn clear_state(&mut self, name: &str);
    /// A progress or warning line for the user (stderr).
    fn log(&mut self, line: &str);
}

/// The command line as a shell would show it (for messages and the dry run).
pub fn show(argv: &[&str]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                a.to_string()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn run(argv: &[&str], stdin: Option<&str>) -> Result<String, HostError> {
    crate::command::run(argv, stdin).map_err(|why| HostError::Command {
        cmd: show(argv),
        why: why.to_string(),
    })
}

/// State files: `$MAPE_STATE_DIR/<name>.json`, default `/run/mape` (gone after a reboot, like
/// the tunnel they describe).
pub fn state_dir() -> PathBuf {
    std::env::var_os("MAPE_STATE_DIR").map_or_else(|| PathBuf::from("/run/mape"), PathBuf::from)
}

/// The running system.
pub struct RealHost {
    pub state_dir: PathBuf,
}

impl RealHost {
    pub fn new(state_dir: PathBuf) -> Self {
        RealHost { state_dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        // `name` passed check_name: no `/` or `..` reaches the path.
        self.state_dir.join(format!("{name}.json"))
    }
}

impl Host for RealHost {
    fn query(&mut self, argv: &[&str]) -> Result<String, HostError> {
        run(argv, None)
    }

    fn change(&mut self, argv: &[&str], stdin: Option<&str>) -> Result<(), HostError> {
        run(argv, stdin).map(|_| ())
    }

    fn load_state(&mut self, name: &str) -> Option<State> {
        match state::load(&self.state_dir, name) {
            Ok(s) => s,
            Err(e) => {
                self.log(&format!("mape: warning: ignoring the state file: {e}"));
                None
            }
        }
    }

    fn save_state(&mut self, s: &State) -> Result<(), HostError> {
        state::save(&self.state_dir, s).map_err(|e| HostError::State(e.to_string()))
    }

    fn clear_state(&mut self, name: &str) {
        state::remove(&self.state_dir, name);
    }

    fn log(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

/// Reads the real system, prints each change as a shell command instead of making it.
pub struct DryRunHost {
    pub real: RealHost,
    /// The commands, in order, as a script a user can read (and run).
    pub script: Vec<String>,
}

impl DryRunHost {
    pub fn new(real: RealHost) -> Self {
        DryRunHost {
            real,
            script: Vec::new(),
        }
    }
}

impl Host for DryRunHost {
    fn query(&mut self, argv: &[&str]) -> Result<String, HostError> {
        self.real.query(argv)
    }

    fn change(&mut self, argv: &[&str], stdin: Option<&str>) -> Result<(), HostError> {
        let mut line = show(argv);
        if let Some(input) = stdin {
            line.push_str(" <<'EOF'\n");
            line.push_str(input);
            if !input.ends_with('\n') {
                line.push('\n');
            }
            line.push_str("EOF");
        }
        self.script.push(line);
        Ok(())
    }

    fn load_state(&mut self, name: &str) -> Option<State> {
        self.real.load_state(name)
    }

    fn save_state(&mut self, state: &State) -> Result<(), HostError> {
        let path = self.real.path(&state.name);
        self.script.push(format!(
            "# then save the state to {}: {}",
            path.display(),
            state.to_json()
        ));
        Ok(())
    }

    fn clear_state(&mut self, name: &str) {
        let path = self.real.path(name);
        self.script
            .push(format!("# then remove the state file {}", path.display()));
    }

    fn log(&mut self, line: &str) {
        eprintln!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_commands_quoted_only_when_needed() {
        assert_eq!(
            show(&["ip", "-6", "addr", "add", "2001:db8::1/128", "dev", "wan0"]),
            "ip -6 addr add 2001:db8::1/128 dev wan0"
        );
        assert_eq!(show(&["echo", "a b", "it's"]), "echo 'a b' 'it'\\''s'");
    }
}
