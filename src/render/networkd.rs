//! systemd-networkd files for a plain Linux router (systemd.netdev(5), systemd.network(5)).
//!
//! Three files, named as they go into /etc/systemd/network:
//! - `<wan .network>.d/mape.conf`: a drop-in for the file that already manages the WAN, so the
//!   user's own file stays untouched. It accepts RAs, adds the CE address and asks for the
//!   tunnel (`Tunnel=`: networkd creates an ip6tnl only for a link whose .network names it).
//! - `map-<name>.netdev`: the ip6tnl in `ipip6` mode, CE to BR, encapsulation limit off.
//! - `map-<name>.network`: the IPv4 address and the default route on the tunnel.
//!
//! Every key used here exists in systemd 245 or newer (`AddPrefixRoute=` is the youngest); the
//! versions are noted beside the keys that are newer than 219.

use std::fmt::Write as _;

use crate::provision::Resolved;

/// One generated file: its path relative to the output folder, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub path: String,
    pub text: String,
}

/// Everything the networkd files depend on besides the mapping.
#[derive(Debug, Clone)]
pub struct NetworkdParams<'a> {
    pub resolved: &'a Resolved,
    /// The WAN device, e.g. `enp1s0`.
    pub wan: &'a str,
    /// The .network file that manages the WAN (e.g. `10-wan.network`); the drop-in directory is
    /// named after it, because networkd looks drop-ins up by file name, not by device.
    pub wan_network: &'a str,
    /// The tunnel device, e.g. `map-enp1s0`.
    pub ifname: &'a str,
    pub mtu: u32,
    /// Hop limit of the outer IPv6 header; `None` keeps networkd's default (64).
    pub ttl: Option<u8>,
    pub default_route: bool,
    /// Header lines (see [`crate::render::origin`]).
    pub origin: &'a str,
}

fn header(s: &mut String, title: &str, origin: &str) {
    let _ = writeln!(s, "# mape-rs: {title}");
    for line in origin.lines() {
        let _ = writeln!(s, "# {line}");
    }
}

/// The three files, drop-in first.
pub fn files(p: &NetworkdParams) -> Vec<File> {
    vec![wan_dropin(p), netdev(p), tunnel_network(p)]
}

fn wan_dropin(p: &NetworkdParams) -> File {
    let m = &p.resolved.mapping;
    let dir = format!("{}.d", p.wan_network);
    let mut s = String::new();
    header(
        &mut s,
        &format!(
            "MAP-E additions for {}, the .network file of {} (a drop-in: that file stays untouched)",
            p.wan_network, p.wan
        ),
        p.origin,
    );
    let _ = writeln!(
        s,
        "# Install as /etc/systemd/network/{dir}/mape.conf. If another file manages {}, name the",
        p.wan
    );
    let _ = writeln!(s, "# directory after that file instead (FILE.network.d/).");
    let _ = writeln!(s);
    let _ = writeln!(s, "[Network]");
    let _ = writeln!(
        s,
        "# MAP-E rides on the WAN's IPv6. networkd ignores RAs when IP forwarding is on (a router)"
    );
    let _ = writeln!(
        s,
        "# unless told; the RA's M/O flags also start the DHCPv6 client that asks for the prefix."
    );
    let _ = writeln!(s, "IPv6AcceptRA=yes");
    let _ = writeln!(
        s,
        "# The tunnel is created over this link (a stacked netdev needs a .network that names it)."
    );
    let _ = writeln!(s, "Tunnel={}", p.ifname);
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "# The CE address, the tunnel's local end. It comes from our own prefix, so it cannot be a"
    );
    let _ = writeln!(
        s,
        "# duplicate; DAD would only keep it tentative for a second, and the kernel's ip6tnl drops"
    );
    let _ = writeln!(
        s,
        "# every packet while its local address is tentative. (DuplicateAddressDetection=: v243,"
    );
    let _ = writeln!(s, "# AddPrefixRoute=: v245)");
    let _ = writeln!(s, "[Address]");
    let _ = writeln!(s, "Address={}/128", m.ce);
    let _ = writeln!(s, "DuplicateAddressDetection=none");
    let _ = writeln!(s, "AddPrefixRoute=no");
    File {
        path: format!("{dir}/mape.conf"),
        text: s,
    }
}

fn netdev(p: &NetworkdParams) -> File {
    let m = &p.resolved.mapping;
    let mut s = String::new();
    header(
        &mut s,
        &format!(
            "the MAP-E tunnel {} (IPv4 in IPv6, CE to BR) over {}",
            p.ifname, p.wan
        ),
        p.origin,
    );
    let _ = writeln!(
        s,
        "# networkd never changes a netdev that exists: after a prefix change (new Local=), run"
    );
    let _ = writeln!(
        s,
        "# `ip link del {}` before `networkctl reload`.",
        p.ifname
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "[NetDev]");
    let _ = writeln!(s, "Name={}", p.ifname);
    let _ = writeln!(s, "Kind=ip6tnl");
    if p.mtu == crate::render::calc::DEFAULT_MTU {
        let _ = writeln!(
            s,
            "# A 1500-byte IPv6 path minus the 40-byte outer IPv6 header (networkd's default is 1280)."
        );
    }
    let _ = writeln!(s, "MTUBytes={}", p.mtu);
    let _ = writeln!(s);
    let _ = writeln!(s, "[Tunnel]");
    let _ = writeln!(s, "Mode=ipip6");
    let _ = writeln!(s, "Local={}", m.ce);
    match m.br {
        Some(br) => {
            let _ = writeln!(s, "Remote={br}");
        }
        None => {
            // resolve() already warned; keep the file valid but obviously incomplete.
            let _ = writeln!(
                s,
                "# Remote=: the rule has no BR address; give it with --br"
            );
        }
    }
    let _ = writeln!(
        s,
        "# BRs drop packets that carry RFC 2473's encapsulation-limit option, which Linux adds by"
    );
    let _ = writeln!(s, "# default. (v226)");
    let _ = writeln!(s, "EncapsulationLimit=none");
    if let Some(ttl) = p.ttl {
        let _ = writeln!(s, "TTL={ttl}");
    }
    File {
        path: format!("{}.netdev", p.ifname),
        text: s,
    }
}

fn tunnel_network(p: &NetworkdParams) -> File {
    let m = &p.resolved.mapping;
    let mut s = String::new();
    header(
        &mut s,
        &format!("IPv4 over the MAP-E tunnel {}", p.ifname),
        p.origin,
    );
    let _ = writeln!(s);
    let _ = writeln!(s, "[Match]");
    let _ = writeln!(s, "Name={}", p.ifname);
    let _ = writeln!(s);
    let _ = writeln!(s, "[Network]");
    if m.ports.is_shared() {
        let _ = writeln!(
            s,
            "# A shared address: only the SNAT rules (mape_*.nft or mape_*.iptables) keep traffic"
        );
        let _ = writeln!(s, "# inside this line's ports.");
    }
    let _ = writeln!(s, "Address={}/{}", m.ipv4, m.ipv4_prefix_len);
    let _ = writeln!(
        s,
        "# IPv4 only: no link-local IPv6 or RAs on the tunnel (the BR speaks IPv4 inside it)."
    );
    let _ = writeln!(s, "LinkLocalAddressing=no");
    let _ = writeln!(s, "IPv6AcceptRA=no");
    if p.default_route {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "# The IPv4 default route into the tunnel. No Gateway=: the tunnel is point-to-point, so"
        );
        let _ = writeln!(
            s,
            "# the route is on-link (`ip route add default dev {}`).",
            p.ifname
        );
        let _ = writeln!(s, "[Route]");
        let _ = writeln!(s, "Destination=0.0.0.0/0");
    }
    File {
        path: format!("{}.network", p.ifname),
        text: s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::CustomerPrefix;
    use crate::provision::builtin::IspChoice;
    use crate::provision::{resolve, RuleSource};

    fn params_files(default_route: bool) -> Vec<File> {
        let prefix: CustomerPrefix = "240b:10:3f6c:d400::/56".parse().unwrap();
        let r = resolve(&RuleSource::Builtin(IspChoice::Auto), prefix).unwrap();
        files(&NetworkdParams {
            resolved: &r,
            wan: "enp1s0",
            wan_network: "10-wan.network",
            ifname: "map-enp1s0",
            mtu: 1460,
            ttl: None,
            default_route,
            origin: "origin line",
        })
    }

    #[test]
    fn three_files_named_for_networkd() {
        let f = params_files(true);
        let names: Vec<_> = f.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            names,
            [
                "10-wan.network.d/mape.conf",
                "map-enp1s0.netdev",
                "map-enp1s0.network"
            ]
        );
        assert!(f[0].text.contains("\nTunnel=map-enp1s0\n"));
        assert!(f[0].text.contains("\nDuplicateAddressDetection=none\n"));
        assert!(f[1].text.contains("\nKind=ip6tnl\n"));
        assert!(f[1].text.contains("\nMode=ipip6\n"));
        assert!(f[1].text.contains("\nRemote=2404:9200:225:100::64\n"));
        assert!(f[1].text.contains("\nEncapsulationLimit=none\n"));
        assert!(f[2].text.contains("\nAddress=106.72.63.108/32\n"));
        assert!(f[2].text.contains("\nDestination=0.0.0.0/0\n"));
        assert!(f.iter().all(|f| f.text.contains("# origin line\n")));
    }

    #[test]
    fn no_route_section_without_default_route() {
        let f = params_files(false);
        assert!(!f[2].text.contains("[Route]"));
    }
}
