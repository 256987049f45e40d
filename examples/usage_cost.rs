//! Measures what the watch task's port-usage check costs (bench/watch-cost.sh runs it inside a
//! network namespace filled with conntrack entries): CPU time per round of
//!   read   streaming /proc/net/nf_conntrack once and doing nothing with it (the floor),
//!   check  the watch task's check (substring filter, parse ours only),
//!   status the full `mape status` count of every line (what the watch task did every 10 s
//!          before), done here as parse_line on every line,
//! each the median of ROUNDS rounds, as `name seconds` lines.
//!
//!     usage_cost IPV4 FIRST-LAST[,FIRST-LAST...] [ROUNDS]

use std::io::{BufRead, BufReader};
use std::time::Instant;

use mape::engine::PortSet;
use mape::handler::usage::{UsageCheck, PROC_CONNTRACK};
use mape::status::conntrack;

fn cpu_seconds() -> f64 {
    // utime + stime of this process from /proc/self/stat (clock ticks).
    let s = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn measure(rounds: usize, mut f: impl FnMut()) -> f64 {
    // CPU time, not wall time: the machine may be busy with other work.
    let mut v: Vec<f64> = (0..rounds)
        .map(|_| {
            let t0 = cpu_seconds();
            let w0 = Instant::now();
            f();
            // Ticks are 10 ms: for short rounds fall back to wall time.
            let cpu = cpu_seconds() - t0;
            if cpu > 0.05 {
                cpu
            } else {
                w0.elapsed().as_secs_f64()
            }
        })
        .collect();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let ipv4 = args[1].parse().unwrap();
    let sets: Vec<PortSet> = args[2]
        .split(',')
        .map(|r| {
            let (a, b) = r.split_once('-').unwrap();
            PortSet {
                first: a.parse().unwrap(),
                last: b.parse().unwrap(),
            }
        })
        .collect();
    let rounds: usize = args.get(3).map_or(20, |r| r.parse().unwrap());
    let check = UsageCheck::new(ipv4, 32, &sets).unwrap();
    let open = || BufReader::with_capacity(64 * 1024, std::fs::File::open(PROC_CONNTRACK).unwrap());
    let mut counts = None;
    let read = measure(rounds, || {
        let mut n = 0usize;
        for l in open().lines() {
            n += l.unwrap().len();
        }
        assert!(n > 0);
    });
    let checked = measure(rounds, || counts = Some(check.count(open()).unwrap()));
    let full = measure(rounds, || {
        let mut ours = 0;
        for l in open().lines() {
            if let Some(e) = conntrack::parse_line(&l.unwrap()) {
                if e.nat_addr == ipv4 {
                    ours += 1;
                }
            }
        }
        assert!(ours > 0);
    });
    let c = counts.unwrap();
    println!("read {read:.6}");
    println!("check {checked:.6}");
    println!("status {full:.6}");
    println!("ours {} ports {}", c.flows, c.ports_in_use);
}
