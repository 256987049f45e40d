//! The `mape` command line. Thin: parse arguments, call provision/engine/render, print.
//!
//! Every error reaches the user as one line on stderr (`mape: <field> <value>: <problem>`);
//! the exit status says which kind, as wireguard-tools does: 2 for bad input (arguments, rule
//! values, a prefix given by hand: what clap also exits with), 1 for a failure at run time (a
//! command or the kernel refused, no prefix found on the system, not root). Nothing panics on
//! any input or argument vector.

mod calc;
#[cfg(feature = "linux")]
mod linux;
mod netifd;
mod rpcd;
mod status;

/// A router build (without the `linux` feature) has no plain-Linux front end: its
/// `generate`/`up`/`down` take any arguments and refuse with one line.
#[cfg(not(feature = "linux"))]
mod linux {
    use super::Failure;

    #[derive(clap::Args, Debug)]
    pub struct NoLinuxArgs {
        #[arg(num_args = 0.., allow_hyphen_values = true, trailing_var_arg = true, hide = true)]
        args: Vec<std::ffi::OsString>,
    }
    pub type GenerateArgs = NoLinuxArgs;
    pub type UpArgs = NoLinuxArgs;
    pub type DownArgs = NoLinuxArgs;

    pub fn refuse(_: &NoLinuxArgs) -> Result<i32, Failure> {
        Err(Failure::Usage(
            "this build of mape has no plain-Linux front end (generate, up, down): it is the \
             OpenWrt build; use proto mape, or install mape with `cargo install` on a Linux host"
                .into(),
        ))
    }
    pub use refuse as down;
    pub use refuse as generate;
    pub use refuse as up;
}

use std::ffi::OsString;

use clap::{Parser, Subcommand};

/// Exit status for bad input (as clap uses for usage errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit status for a failure at run time.
pub const EXIT_FAILURE: i32 = 1;

/// Why a command failed; the text is the one line the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Bad input: exit status 2.
    Usage(String),
    /// The system refused or lacks something: exit status 1.
    Runtime(String),
}

impl From<String> for Failure {
    fn from(s: String) -> Self {
        Failure::Usage(s)
    }
}

impl From<&str> for Failure {
    fn from(s: &str) -> Self {
        Failure::Usage(s.to_string())
    }
}

/// The value parser of every number option: std's `FromStr` (clap's own range parsers, one per
/// integer type, cost about 6 KB of the router binary: docs/sizes.md). A bad value gets clap's
/// usual one line (`invalid value 'x' for '--ea-len <BITS>': invalid digit found in string`).
pub(crate) fn number<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

/// A failure at run time (exit status 1).
pub(crate) fn runtime(msg: impl std::fmt::Display) -> Failure {
    Failure::Runtime(msg.to_string())
}

#[derive(Parser, Debug)]
#[command(
    name = "mape",
    version,
    about = "MAP-E (RFC 7597) for Linux routers",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Compute IPv4 address, PSID, port sets, CE address and BR for a prefix.
    Calc(calc::CalcArgs),
    /// List the built-in ISP rules.
    Rules(calc::RulesArgs),
    /// The OpenWrt netifd protocol handler (`proto mape`), also for dry runs by hand.
    Netifd(netifd::NetifdArgs),
    /// Write systemd-networkd, nft and iptables files for a plain Linux router, for review.
    #[cfg_attr(not(feature = "linux"), command(hide = true))]
    Generate(linux::GenerateArgs),
    /// Bring MAP-E up on a plain Linux router (iproute2 + nft); idempotent.
    #[cfg_attr(not(feature = "linux"), command(hide = true))]
    Up(linux::UpArgs),
    /// Remove what `up` set up (tunnel, nft table, CE address); idempotent.
    #[cfg_attr(not(feature = "linux"), command(hide = true))]
    Down(linux::DownArgs),
    /// Show each MAP-E interface: mapping, tunnel, ports in use per set and host, SNAT failures.
    Status(status::StatusArgs),
    /// The rpcd exec plugin (`/usr/libexec/rpcd/mape`): `list`, or `call status` with JSON
    /// arguments on stdin.
    Rpcd(rpcd::RpcdArgs),
}

/// The clap definition of the command line (for the man pages, tests/manpage.rs).
pub fn command() -> clap::Command {
    use clap::CommandFactory as _;
    Cli::command()
}

/// Runs the command line and returns the process exit status.
pub fn run<I: IntoIterator<Item = OsString>>(args: I) -> i32 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return clap_error(e),
    };
    if matches!(
        cli.cmd,
        Cmd::Calc(_) | Cmd::Rules(_) | Cmd::Generate(_) | Cmd::Status(_) | Cmd::Rpcd(_)
    ) {
        quiet_on_closed_stdout();
    }
    let result = match cli.cmd {
        Cmd::Calc(a) => calc::calc(&a),
        Cmd::Rules(a) => calc::rules(&a),
        Cmd::Netifd(a) => netifd::run(&a),
        Cmd::Generate(a) => linux::generate(&a),
        Cmd::Up(a) => linux::up(&a),
        Cmd::Down(a) => linux::down(&a),
        Cmd::Status(a) => status::run(&a),
        Cmd::Rpcd(a) => rpcd::run(&a),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => fail(&msg),
        Err(Failure::Runtime(msg)) => {
            print_error(&msg);
            EXIT_FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so with stdout closed early (`mape rules | head`) every print fails and
/// panics, which the size-optimised release builds (panic=immediate-abort) turn into SIGTRAP.
/// Commands that only print end quietly on SIGPIPE instead, like other command-line tools. Not
/// for commands that feed a child's stdin (`nft -f -`): they must see the error and roll back.
fn quiet_on_closed_stdout() {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installs the default disposition, no handler code runs; done before any thread
    // or child process exists.
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
}

/// Prints one error line and returns the usage exit status.
pub fn fail(msg: &str) -> i32 {
    print_error(msg);
    EXIT_USAGE
}

/// `mape: <msg>` on stderr, as one line whatever the message holds (a value may contain a
/// newline).
fn print_error(msg: &str) {
    let one_line: String = msg
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    eprintln!("mape: {one_line}");
}

fn clap_error(e: clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                EXIT_USAGE
            } else {
                0
            }
        }
        _ => {
            // clap's first line names the problem; when it ends with ':' the next line names
            // the argument (e.g. a missing required one), so join the two.
            let text = e.render().to_string();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let first = lines
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            match lines.next().map(str::trim) {
                Some(next) if first.ends_with(':') => fail(&format!("{first} {next}")),
                // An invalid value: say what would be valid, on the same line.
                Some(next) if next.starts_with("[possible values:") => {
                    fail(&format!("{first} {next}"))
                }
                _ => fail(first),
            }
        }
    }
}
