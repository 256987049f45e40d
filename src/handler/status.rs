//! The watch task's status round: collect `mape status` for the interface, keep it in
//! `$MAPE_STATE_DIR/status/<iface>.json` (every round) and publish it in the interface's ubus
//! data as `data.mape_status` (when it changed, rate-limited).
//!
//! The publication is a `notify_proto` update with `keep: true` and only `data`. In netifd
//! (`proto-ext.c`/`proto-shell.c` `*_update_link`), `keep` holds while the interface is up with
//! its L3 device: no device is created or claimed, `interface_update_start(iface, keep)` skips
//! `interface_ip_update_start`, so the flush at `interface_update_complete` removes nothing
//! (addresses, routes and the tunnel stay), and `interface_add_data` replaces only the keys
//! given: `data.mape` and `data.zone` stay. We leave `ifname` out on purpose: should the
//! interface not be up, netifd then has no device to bring up and refuses the update
//! (`UBUS_STATUS_INVALID_ARGUMENT`) instead of half-configuring it.
//!
//! Cost: every changed `data` makes netifd run the `ifupdate` hotplug event with
//! `IFUPDATE_DATA=1`, and fw4's `/etc/hotplug.d/iface/20-firewall` answers that with a full
//! `fw4 reload` for an interface in a zone. So we publish only when something other than the
//! traffic counters changed, at most every [`PUSH_INTERVAL`] seconds
//! (`$MAPE_STATUS_PUSH_INTERVAL`; 0 turns publishing off), except that a change of the level
//! or of the warning codes goes out after [`ALERT_FLOOR`] seconds. Readers wanting live numbers
//! read the status file, which is rewritten every round at no cost.

use serde_json::{json, Value};

use super::{SysError, System};
use crate::render::status::ubus_payload;
use crate::status::{self, Options, Source, Stats};

/// Default seconds between two publications of an unchanged alert state.
pub const PUSH_INTERVAL: u64 = 300;
/// Seconds between two publications when the level or a warning code changed.
pub const ALERT_FLOOR: u64 = 30;

/// The `notify_proto` message that publishes `payload` as `data.mape_status`.
pub fn status_message(iface: &str, payload: &Value) -> Value {
    json!({
        "action": 0,
        "interface": iface,
        "link-up": true,
        "keep": true,
        "data": { "mape_status": payload },
    })
}

/// The payload without what changes on every look (time, traffic counters, table size).
fn stable(payload: &Value) -> Value {
    let mut v = payload.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("time");
    }
    if let Some(t) = v.get_mut("tunnel").and_then(Value::as_object_mut) {
        for k in ["rx_bytes", "tx_bytes", "rx_packets", "tx_packets"] {
            t.remove(k);
        }
    }
    if let Some(n) = v.get_mut("nft").and_then(Value::as_object_mut) {
        n.remove("counters");
    }
    if let Some(c) = v.get_mut("conntrack").and_then(Value::as_object_mut) {
        c.remove("entries");
        if let Some(r) = c.get_mut("recent").and_then(Value::as_object_mut) {
            r.remove("seconds");
        }
    }
    v
}

/// The level and the warning codes.
fn alerts(payload: &Value) -> Vec<String> {
    let mut a = vec![payload["level"].as_str().unwrap_or("").to_string()];
    let mut codes: Vec<String> = payload["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|w| w["code"].as_str().map(str::to_string))
        .collect();
    codes.sort();
    a.extend(codes);
    a
}

/// Decides when to publish (see the module documentation) and does it.
#[derive(Debug, Clone)]
pub struct StatusPush {
    interval: u64,
    last: Option<(u64, Value, Vec<String>)>,
    failing: bool,
}

impl StatusPush {
    /// `interval` 0: never publish.
    pub fn new(interval: u64) -> Self {
        StatusPush {
            interval,
            last: None,
            failing: false,
        }
    }

    /// From `$MAPE_STATUS_PUSH_INTERVAL`, default `PUSH_INTERVAL` (300 s).
    pub fn from_env() -> Self {
        Self::new(
            std::env::var("MAPE_STATUS_PUSH_INTERVAL")
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(PUSH_INTERVAL),
        )
    }

    /// Whether `payload`, sampled at `now`, should be published.
    pub fn due(&self, payload: &Value, now: u64) -> bool {
        if self.interval == 0 {
            return false;
        }
        let Some((t, key, alerts_then)) = &self.last else {
            return true;
        };
        if stable(payload) == *key {
            return false;
        }
        if now < *t {
            return true; // the clock went back
        }
        let waited = now - t;
        if alerts(payload) != *alerts_then {
            waited >= ALERT_FLOOR.min(self.interval)
        } else {
            waited >= self.interval
        }
    }

    /// Publishes `payload` if due; `Ok(true)` when it was sent.
    pub fn push(
        &mut self,
        sys: &mut dyn System,
        iface: &str,
        payload: &Value,
        now: u64,
    ) -> Result<bool, SysError> {
        if !self.due(payload, now) {
            return Ok(false);
        }
        match sys.ubus_call(
            "network.interface",
            "notify_proto",
            &status_message(iface, payload),
        ) {
            Ok(_) => {
                self.last = Some((now, stable(payload), alerts(payload)));
                self.failing = false;
                Ok(true)
            }
            Err(e) => {
                // Retried next round; logged once per run of failures.
                if !self.failing {
                    sys.log(&format!("mape: {iface}: cannot publish the status: {e}"));
                }
                self.failing = true;
                Err(e)
            }
        }
    }
}

/// What the watch task keeps between status rounds.
#[derive(Debug, Clone)]
pub struct StatusWatch {
    pub push: StatusPush,
    /// State directories to look in (see [`status::RealSource::state_dirs`]).
    pub dirs: Vec<String>,
    prev: Option<(u64, Stats)>,
}

impl StatusWatch {
    pub fn new(push: StatusPush, dirs: Vec<String>) -> Self {
        StatusWatch {
            push,
            dirs,
            prev: None,
        }
    }
}

/// One round: collect the status of `iface`, save it, publish it if due. Returns the payload
/// (`None` only for an invalid interface name).
pub fn status_round(
    sys: &mut dyn System,
    src: &mut dyn Source,
    iface: &str,
    w: &mut StatusWatch,
) -> Option<Value> {
    let target = status::discover_one(src, &w.dirs, iface)?;
    let report = status::collect(
        src,
        vec![target],
        &Options {
            top: 5,
            prev: w.prev,
        },
    );
    if report.conntrack.stats.is_known() {
        w.prev = Some((report.time, report.conntrack.stats));
    }
    let s = report.interfaces.first()?;
    let payload = ubus_payload(&report, s);
    if let Err(e) = sys.save_status(iface, &payload) {
        sys.log(&format!("mape: {iface}: cannot save the status: {e}"));
    }
    let _ = w.push.push(sys, iface, &payload, report.time);
    Some(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handler::DryRun;
    use crate::status::collect::tests::router;

    fn pushes(sys: &DryRun) -> Vec<&Value> {
        sys.calls
            .iter()
            .filter(|c| c["method"] == "notify_proto")
            .map(|c| &c["args"])
            .collect()
    }

    #[test]
    fn publishes_keep_data_only_and_saves_every_round() {
        let mut sys = DryRun::new(None);
        let mut src = router();
        let mut w = StatusWatch::new(StatusPush::new(300), vec!["/st".into()]);
        let p = status_round(&mut sys, &mut src, "wanmap", &mut w).unwrap();
        assert_eq!(p["interface"], "wanmap");
        assert_eq!(p["ports"]["in_use"], 4);
        assert_eq!(p["version"], 1);
        assert_eq!(sys.status.get("wanmap"), Some(&p));
        let sent = pushes(&sys);
        assert_eq!(sent.len(), 1);
        let m = sent[0];
        assert_eq!(m["action"], 0);
        assert_eq!(m["keep"], true);
        assert_eq!(m["link-up"], true);
        assert_eq!(m["interface"], "wanmap");
        assert!(
            m.get("ifname").is_none(),
            "no ifname: never (re)creates a device"
        );
        for k in ["ipaddr", "routes", "tunnel", "ip6addr"] {
            assert!(m.get(k).is_none(), "{k}");
        }
        assert_eq!(m["data"].as_object().unwrap().len(), 1);
        assert_eq!(m["data"]["mape_status"], p);

        // Next round, only counters and time moved: saved, not published.
        src.time += 10;
        src.files.insert(
            "/sys/class/net/map-wanmap/statistics/rx_bytes".into(),
            "99999".into(),
        );
        status_round(&mut sys, &mut src, "wanmap", &mut w).unwrap();
        assert_eq!(pushes(&sys).len(), 1);
        assert_eq!(sys.status["wanmap"]["time"], 1010);
        // The second round knows the previous statistics.
        assert_eq!(sys.status["wanmap"]["conntrack"]["recent"]["seconds"], 10);

        // A flow more: changed, but within the interval: not yet.
        let line = "ipv4 2 tcp 6 100 ESTABLISHED src=192.168.1.7 dst=10.0.0.8 sport=1 dport=80 src=10.0.0.8 dst=106.72.63.108 sport=80 dport=7500 mark=0 use=1\n";
        src.files
            .get_mut("/proc/net/nf_conntrack")
            .unwrap()
            .push_str(line);
        src.time += 10;
        status_round(&mut sys, &mut src, "wanmap", &mut w).unwrap();
        assert_eq!(pushes(&sys).len(), 1);
        // After the interval it goes out.
        src.time += 300;
        status_round(&mut sys, &mut src, "wanmap", &mut w).unwrap();
        assert_eq!(pushes(&sys).len(), 2);
        assert_eq!(pushes(&sys)[1]["data"]["mape_status"]["ports"]["in_use"], 5);
    }

    #[test]
    fn setup_keeps_the_mapping_in_the_state() {
        let link = json!({"up": true, "l3_device": "wan",
                          "ipv6-prefix": [{"address": "240b:10:3f6c:d400::", "mask": 56}]});
        let mut sys = DryRun::new(Some(link));
        let code = crate::handler::setup(
            &mut sys,
            "/usr/sbin/mape",
            "wanmap",
            r#"{"tunlink":"wan6"}"#,
        );
        assert_eq!(code, 0, "{:?}", sys.log);
        let m =
            crate::status::MappingInfo::from_calc_json(&sys.state["wanmap"]["mapping"]).unwrap();
        assert_eq!((m.port_count, m.psid), (240, Some(212)));
        assert_eq!(m.isp.as_deref(), Some("v6plus"));
    }

    #[test]
    fn alerts_go_out_sooner_and_zero_disables() {
        let mut sys = DryRun::new(None);
        let mut src = router();
        let mut w = StatusWatch::new(StatusPush::new(300), vec!["/st".into()]);
        status_round(&mut sys, &mut src, "wanmap", &mut w).unwrap();
        // The table disappears (fw4 flush): level down, new warning codes.
        src.tables.remove("mape_wanmap");
        src.time += 10;
        status_round(&mut sys, &mut src, "wanmap", &mut w).unwrap();
        assert_eq!(pushes(&sys).len(), 1, "not before the alert floor");
        src.time += ALERT_FLOOR;
        let p = status_round(&mut sys, &mut src, "wanmap", &mut w).unwrap();
        assert_eq!(p["level"], "down");
        assert_eq!(pushes(&sys).len(), 2);

        let mut sys = DryRun::new(None);
        let mut w = StatusWatch::new(StatusPush::new(0), vec!["/st".into()]);
        status_round(&mut sys, &mut router(), "wanmap", &mut w).unwrap();
        assert!(pushes(&sys).is_empty());
        assert!(
            sys.status.contains_key("wanmap"),
            "the file is still written"
        );
        assert!(status_round(&mut sys, &mut router(), "../x", &mut w).is_none());
        // No state and no table: reported as down, not skipped.
        let p = status_round(&mut sys, &mut router(), "nosuch", &mut w).unwrap();
        assert_eq!(p["level"], "down");
        assert_eq!(p["nft"]["table"], "mape_nosuch");
    }
}
