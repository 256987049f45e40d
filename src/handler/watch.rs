//! The proto task: after setup, `mape netifd watch` follows the tunnel link and acts only when
//! the mapping really changed: it renumbers the interface in place ([`super::renumber`]), or, if
//! that cannot be done, ends (so netifd sets the interface up again).
//!
//! What it looks at: the link's status, from netifd's `interface.update` notifications on the
//! `network.interface` object (sent on every change of an interface, an in-place prefix update
//! included), with a poll as a fallback ([`POLL_SUBSCRIBED`], or [`POLL_ALONE`] while no
//! subscription works, e.g. during a netifd restart).
//!
//! What it decides ([`look`], [`Watcher`]):
//! - a status that cannot be read (ubus timeout, netifd busy or restarting), an interface that
//!   is not up or is pending, a link without a usable prefix: **unknown**, never a restart
//!   (netifd's host dependency takes the interface down when the link really goes);
//! - the mapping of the best usable prefix (IPv4, PSID, port sets, CE, BR): the **same** as the
//!   running one (a move between the RA /64 and the delegated /60 of the same /56 included)
//!   keeps everything; a **different** one is followed ([`act`]), once it has been seen twice
//!   in a row ([`CONFIRM_AFTER`] apart), so one odd answer during a renumbering cannot flap.
//!
//! While the interface waits for a prefix (`--current none`), the task ends as soon as a
//! usable one appears; after a transient setup failure (`--retry-after N`) it ends after the
//! back-off, and netifd retries the setup.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde_json::Value;

use super::{link_status, resolve_for_link, tunlink_for, System};
use crate::engine::{Mapping, PortParams};
use crate::provision::netifd::{HandlerConfig, LinkStatus};

/// Poll period while subscribed to netifd's notifications (a safety net only).
pub const POLL_SUBSCRIBED: Duration = Duration::from_secs(30);
/// Poll period without a subscription.
pub const POLL_ALONE: Duration = Duration::from_secs(5);
/// How long after a first sighting of another mapping (in a notification) it is looked at again
/// (asking netifd). Short: the second look is a fresh answer of netifd's anyway, and the wait
/// adds to the outage of every renumbering (0.3 s was 12 % of it in the test VM).
pub const CONFIRM_AFTER: Duration = Duration::from_millis(50);

/// What makes two mappings the same for the tunnel: everything the kernel and the BR see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingKey {
    pub ipv4: Ipv4Addr,
    pub ipv4_prefix_len: u8,
    pub ports: PortParams,
    pub ce: Ipv6Addr,
    pub br: Option<Ipv6Addr>,
}

impl MappingKey {
    pub fn of(m: &Mapping) -> Self {
        MappingKey {
            ipv4: m.ipv4,
            ipv4_prefix_len: m.ipv4_prefix_len,
            ports: m.ports,
            ce: m.ce.addr(),
            br: m.br,
        }
    }
}

impl std::fmt::Display for MappingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IPv4 {}/{} PSID {} CE {}",
            self.ipv4,
            self.ipv4_prefix_len,
            self.ports.psid(),
            self.ce
        )
    }
}

/// One look at the link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Look {
    /// Nothing can be said (status unreadable, link not up, no usable prefix): keep going.
    Unknown(String),
    /// The best usable prefix maps to this: the mapping, the prefix (for the log), and the link
    /// status it came from (`None` in tests), which a renumbering in place then uses.
    Maps(MappingKey, String, Option<Box<LinkStatus>>),
    /// The tunnel link is down (not setting up) and the interface is dhcpv6.script's: it must
    /// go with the binding.
    Gone,
}

/// Looks at the link once: with `status` (a notification's payload) or by asking netifd.
pub fn look(
    sys: &mut dyn System,
    iface: &str,
    cfg: &HandlerConfig,
    status: Option<&Value>,
) -> Look {
    let link = match status {
        Some(v) => LinkStatus::from_value(v).map_err(|e| e.to_string()),
        None => match tunlink_for(sys, iface, cfg) {
            None => return Look::Unknown("no tunnel link found".into()),
            Some(t) => link_status(sys, &t).map_err(|e| e.to_string()),
        },
    };
    let link = match link {
        Ok(l) => l,
        Err(e) => return Look::Unknown(e),
    };
    if cfg.dynamic && !link.up && !link.pending {
        // The binding of this dhcpv6.script interface ended: setup removes it (see setup).
        return Look::Gone;
    }
    if !link.up || link.pending {
        return Look::Unknown("the tunnel link is not up".into());
    }
    match resolve_for_link(cfg, &link) {
        Ok(r) => Look::Maps(
            MappingKey::of(&r.mapping),
            format!("prefix {}", r.mapping.prefix),
            Some(Box::new(link)),
        ),
        Err((_, why, _)) => Look::Unknown(why),
    }
}

/// What the task does after a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Keep watching.
    Keep,
    /// Look again after [`CONFIRM_AFTER`] before deciding.
    Confirm,
    /// End the task: netifd sets the interface up again. The text says why.
    Restart(String),
}

/// The decision logic of the task, fed one look at a time.
#[derive(Debug, Clone)]
pub struct Watcher {
    /// The running mapping; `None` while waiting for a usable prefix.
    current: Option<MappingKey>,
    /// Another mapping seen once, waiting for confirmation.
    seen: Option<MappingKey>,
}

impl Watcher {
    pub fn new(current: Option<MappingKey>) -> Self {
        Watcher {
            current,
            seen: None,
        }
    }

    /// The interface now runs `m` (renumbered in place): watch for changes from it.
    pub fn renumbered(&mut self, m: MappingKey) {
        self.current = Some(m);
        self.seen = None;
    }

    pub fn feed(&mut self, look: &Look) -> Verdict {
        match (look, &self.current) {
            (Look::Gone, _) => {
                Verdict::Restart("the tunnel link is down: its DHCPv6 binding ended".into())
            }
            (Look::Unknown(_), _) => {
                self.seen = None;
                Verdict::Keep
            }
            (Look::Maps(m, ..), Some(cur)) if m == cur => {
                self.seen = None;
                Verdict::Keep
            }
            (Look::Maps(m, how, _), cur) => {
                if self.seen.as_ref() == Some(m) {
                    let was = cur.as_ref().map_or("none".to_string(), |c| c.to_string());
                    Verdict::Restart(format!("{how} now maps to {m} (was {was})"))
                } else {
                    self.seen = Some(m.clone());
                    Verdict::Confirm
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str, psid: u16) -> MappingKey {
        MappingKey {
            ipv4: ip.parse().unwrap(),
            ipv4_prefix_len: 32,
            ports: PortParams::new(4, 8, psid).unwrap(),
            ce: "2001:db8::1".parse().unwrap(),
            br: None,
        }
    }

    #[test]
    fn restarts_only_on_a_confirmed_other_mapping() {
        let mut w = Watcher::new(Some(key("192.0.2.1", 1)));
        let same = Look::Maps(key("192.0.2.1", 1), "p".into(), None);
        let other = Look::Maps(key("192.0.2.2", 1), "p2".into(), None);
        let unknown = Look::Unknown("timeout".into());
        assert_eq!(w.feed(&same), Verdict::Keep);
        assert_eq!(w.feed(&unknown), Verdict::Keep);
        assert_eq!(w.feed(&other), Verdict::Confirm);
        // One odd answer between: no restart.
        assert_eq!(w.feed(&unknown), Verdict::Keep);
        assert_eq!(w.feed(&other), Verdict::Confirm);
        assert_eq!(w.feed(&same), Verdict::Keep);
        assert_eq!(w.feed(&other), Verdict::Confirm);
        assert!(matches!(w.feed(&other), Verdict::Restart(_)));
    }

    #[test]
    fn waiting_ends_when_a_prefix_maps() {
        let mut w = Watcher::new(None);
        assert_eq!(w.feed(&Look::Unknown("no prefix".into())), Verdict::Keep);
        let m = Look::Maps(key("192.0.2.1", 1), "p".into(), None);
        assert_eq!(w.feed(&m), Verdict::Confirm);
        assert!(matches!(w.feed(&m), Verdict::Restart(_)));
    }
}

/// What woke the task up.
#[derive(Debug, Clone, PartialEq)]
pub enum Wake {
    /// netifd reported a change of the tunnel link: its status, as `status` would answer.
    Link(Value),
    /// A notification about another interface.
    Other,
    /// Nothing came within the wait.
    Timeout,
    /// The subscription ended (netifd restarted, ubusd went away): poll until it is back.
    Lost,
}

/// Where the task's notifications come from: netifd's, through ubus ([`UbusEvents`]), or a
/// script in tests.
pub trait Events {
    /// Waits at most `wait` for something to happen.
    fn next(&mut self, wait: Duration) -> Wake;
    /// Whether notifications are coming (else the task polls more often).
    fn subscribed(&self) -> bool;
}

/// netifd's notifications on the `network.interface` object, filtered for the tunnel link.
pub struct UbusEvents {
    conn: Option<crate::ubus::Ubus>,
    tunlink: Option<String>,
    retry_at: std::time::Instant,
}

impl UbusEvents {
    /// Subscribes now; a failure is not fatal (the task polls and subscribes again later).
    pub fn new(tunlink: Option<String>) -> Self {
        let mut e = UbusEvents {
            conn: None,
            tunlink,
            retry_at: std::time::Instant::now(),
        };
        e.subscribe();
        e
    }

    fn subscribe(&mut self) {
        let conn =
            crate::ubus::Ubus::connect(None, super::system::UBUS_TIMEOUT).and_then(|mut c| {
                c.subscribe("network.interface")?;
                Ok(c)
            });
        self.conn = conn.ok();
        self.retry_at = std::time::Instant::now() + POLL_ALONE;
    }
}

impl Events for UbusEvents {
    fn next(&mut self, wait: Duration) -> Wake {
        let Some(conn) = self.conn.as_mut() else {
            std::thread::sleep(wait);
            if std::time::Instant::now() >= self.retry_at {
                self.subscribe();
            }
            return Wake::Timeout;
        };
        match conn.next_event(wait) {
            Ok(None) => Wake::Timeout,
            Ok(Some(crate::ubus::Event::Notify(_, data))) => {
                let name = data.get("interface").and_then(Value::as_str);
                match (&self.tunlink, name) {
                    (Some(t), Some(n)) if t == n => Wake::Link(data),
                    (None, Some(_)) => Wake::Link(data),
                    _ => Wake::Other,
                }
            }
            Ok(Some(crate::ubus::Event::Gone)) | Err(_) => {
                self.conn = None;
                self.retry_at = std::time::Instant::now();
                Wake::Lost
            }
        }
    }

    fn subscribed(&self) -> bool {
        self.conn.is_some()
    }
}

/// How the task runs.
#[derive(Debug, Clone)]
pub struct TaskParams<'a> {
    pub iface: &'a str,
    pub cfg: &'a HandlerConfig,
    /// After a transient setup failure: end after this back-off.
    pub retry_after: Option<Duration>,
    /// The port-usage check, while the interface is up with a shared address.
    pub usage: Option<super::usage::UsageCheck>,
    /// The token of the setup that started the task: it ends once the interface's state names
    /// another owner (a setup of a restarted netifd took over; this task is a leftover).
    pub owner: Option<&'a str>,
}

/// How often a task checks that its setup still owns the interface.
pub const OWNER_EVERY: Duration = Duration::from_secs(5);

/// Runs the task until the interface must be set up again; returns why.
pub fn run(
    sys: &mut dyn System,
    events: &mut dyn Events,
    watcher: &mut Watcher,
    mut p: TaskParams,
) -> String {
    if let Some(d) = p.retry_after {
        // After a transient failure the prefix is fine: only the back-off matters.
        std::thread::sleep(d);
        return "retrying the setup".into();
    }
    if let Some(owner) = p.owner {
        super::depend(sys, p.iface, owner);
    }
    let mut usage_at = std::time::Instant::now() + super::usage::USAGE_EVERY;
    let mut owner_at = std::time::Instant::now();
    let mut confirming = false;
    // A running interface looks once at once: a change between its setup's look and the
    // subscription would otherwise wait for the poll.
    let mut look_now = p.owner.is_some();
    loop {
        let now = std::time::Instant::now();
        if let Some(owner) = p.owner {
            if now >= owner_at {
                if !super::owns(sys, p.iface, owner) {
                    return "another setup owns the interface now".into();
                }
                owner_at = now + OWNER_EVERY;
            }
        }
        if now >= usage_at {
            if let Some(u) = p.usage.as_mut() {
                for line in u.round() {
                    sys.log(&format!("mape: {}: {line}", p.iface));
                }
            }
            usage_at = now + super::usage::USAGE_EVERY;
        }
        let mut wait = if confirming {
            CONFIRM_AFTER
        } else if events.subscribed() {
            POLL_SUBSCRIBED
        } else {
            POLL_ALONE
        };
        if p.usage.is_some() {
            wait = wait.min(usage_at.saturating_duration_since(now));
        }
        if p.owner.is_some() {
            wait = wait.min(owner_at.saturating_duration_since(now));
        }
        let woke = if std::mem::take(&mut look_now) {
            Wake::Lost
        } else {
            events.next(wait)
        };
        let l = match woke {
            Wake::Link(status) => look(sys, p.iface, p.cfg, Some(&status)),
            Wake::Other => continue,
            // Woken for the usage or the owner check: nothing to look at yet.
            Wake::Timeout
                if !confirming
                    && (std::time::Instant::now() >= usage_at
                        || (p.owner.is_some() && std::time::Instant::now() >= owner_at)) =>
            {
                continue
            }
            Wake::Timeout | Wake::Lost => look(sys, p.iface, p.cfg, None),
        };
        match act(sys, watcher, &l, p.iface, p.cfg, p.owner) {
            Act::Keep => confirming = false,
            Act::Confirm => confirming = true,
            Act::Renumbered(usage) => {
                p.usage = usage;
                confirming = false;
            }
            Act::End(why) => return why,
        }
    }
}

/// What the task does after a look.
#[derive(Debug)]
pub enum Act {
    /// Keep watching.
    Keep,
    /// Look again after [`CONFIRM_AFTER`] before deciding.
    Confirm,
    /// The interface was renumbered in place; the port-usage check of its new mapping.
    Renumbered(Option<super::usage::UsageCheck>),
    /// End the task (netifd sets the interface up again); why.
    End(String),
}

/// Feeds a look to the watcher; a running interface (the task of the setup with token `owner`)
/// whose mapping changed is renumbered in place ([`super::renumber`]), and the task ends only if
/// that cannot be done.
pub fn act(
    sys: &mut dyn System,
    watcher: &mut Watcher,
    l: &Look,
    iface: &str,
    cfg: &HandlerConfig,
    owner: Option<&str>,
) -> Act {
    let why = match watcher.feed(l) {
        Verdict::Keep => return Act::Keep,
        Verdict::Confirm => return Act::Confirm,
        Verdict::Restart(why) => why,
    };
    let (Some(owner), Look::Maps(m, _, link)) = (owner, l) else {
        return Act::End(why);
    };
    sys.log(&format!("mape: {iface}: {why}: renumbering in place"));
    match super::renumber(sys, iface, cfg, owner, m, link.as_deref()) {
        Ok(usage) => {
            watcher.renumbered(m.clone());
            return Act::Renumbered(usage);
        }
        Err(super::NotInPlace::Untouched(e)) => {
            sys.log(&format!("mape: {iface}: not in place ({e})"));
        }
        Err(super::NotInPlace::Failed(e)) => {
            sys.log(&format!("mape: {iface}: renumbering in place failed: {e}"));
        }
    }
    Act::End(why)
}
