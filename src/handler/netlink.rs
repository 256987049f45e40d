//! Just enough rtnetlink to add and remove the CE address (RTM_NEWADDR / RTM_DELADDR).
//!
//! Why not `ip`: OpenWrt's default busybox `ip` cannot set `nodad`, and `ip-full` would be one
//! more dependency. Why NODAD: the CE address is computed from our own delegated prefix, so a
//! duplicate is impossible, and duplicate address detection would leave it "tentative" for a
//! second, during which the tunnel drops every packet.

use std::net::Ipv6Addr;
use std::os::fd::AsRawFd;

use nix::net::if_::if_nametoindex;
use nix::sys::socket::{
    bind, recv, sendto, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const AF_INET6: u8 = 10;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;
const IFA_F_NOPREFIXROUTE: u32 = 0x200;
const RT_SCOPE_UNIVERSE: u8 = 0;
const ENOENT: i32 = 2;
const EADDRNOTAVAIL: i32 = 99;
const ENODEV: i32 = 19;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("device {0}: not found")]
    NoDevice(String),
    #[error("netlink: {0}")]
    Io(#[from] nix::Error),
    #[error("netlink: kernel refused: {0}")]
    Kernel(std::io::Error),
    #[error("netlink: no answer from the kernel")]
    NoAck,
}

/// Adds (`add = true`, replacing an existing one) or deletes `addr/128` on `dev`.
/// Deleting an address that is not there is success.
pub fn address(dev: &str, addr: Ipv6Addr, add: bool) -> Result<(), NetlinkError> {
    let index = match if_nametoindex(dev) {
        Ok(i) => i,
        Err(_) if !add => return Ok(()), // the device is gone, and the address with it
        Err(_) => return Err(NetlinkError::NoDevice(dev.to_string())),
    };
    let msg = encode(index, addr, add);
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    sendto(
        fd.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = [0u8; 4096];
    let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
    match ack_errno(&buf[..n]) {
        None => Err(NetlinkError::NoAck),
        Some(0) => Ok(()),
        Some(e) if !add && (e == ENOENT || e == EADDRNOTAVAIL || e == ENODEV) => Ok(()),
        Some(e) => Err(NetlinkError::Kernel(std::io::Error::from_raw_os_error(e))),
    }
}

/// nlmsghdr + ifaddrmsg + attributes, in host byte order as netlink wants.
fn encode(index: u32, addr: Ipv6Addr, add: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(64);
    // struct ifaddrmsg { family, prefixlen, flags, scope, index }
    body.extend_from_slice(&[AF_INET6, 128, IFA_F_NODAD as u8, RT_SCOPE_UNIVERSE]);
    body.extend_from_slice(&index.to_ne_bytes());
    attr(&mut body, IFA_LOCAL, &addr.octets());
    attr(&mut body, IFA_ADDRESS, &addr.octets());
    if add {
        attr(
            &mut body,
            IFA_FLAGS,
            &(IFA_F_NODAD | IFA_F_NOPREFIXROUTE).to_ne_bytes(),
        );
    }
    let (kind, flags) = if add {
        (
            RTM_NEWADDR,
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
        )
    } else {
        (RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK)
    };
    let len = 16 + body.len() as u32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    msg.extend_from_slice(&flags.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence number
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.extend_from_slice(&body);
    msg
}

fn attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

/// The errno of the first NLMSG_ERROR in a reply (0 is an ACK), if any.
fn ack_errno(reply: &[u8]) -> Option<i32> {
    let mut at = 0;
    while at + 16 <= reply.len() {
        let len = u32::from_ne_bytes(reply[at..at + 4].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(reply[at + 4..at + 6].try_into().ok()?);
        if len < 16 || at + len > reply.len() {
            return None;
        }
        if kind == NLMSG_ERROR && len >= 20 {
            let err = i32::from_ne_bytes(reply[at + 16..at + 20].try_into().ok()?);
            return Some(-err);
        }
        at += (len + 3) & !3;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        let m = encode(7, "2001:db8::1".parse().unwrap(), true);
        assert_eq!(
            u32::from_ne_bytes(m[0..4].try_into().unwrap()) as usize,
            m.len()
        );
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), RTM_NEWADDR);
        assert_eq!(m[16], AF_INET6);
        assert_eq!(m[17], 128);
        assert_eq!(u32::from_ne_bytes(m[20..24].try_into().unwrap()), 7);
        assert_eq!(m.len() % 4, 0);
    }

    #[test]
    fn ack_parsing() {
        let mut ack = vec![0u8; 36];
        ack[0..4].copy_from_slice(&36u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_errno(&ack), Some(0));
        ack[16..20].copy_from_slice(&(-17i32).to_ne_bytes());
        assert_eq!(ack_errno(&ack), Some(17));
        assert_eq!(ack_errno(&ack[..10]), None);
    }
}
