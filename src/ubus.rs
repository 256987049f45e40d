//! A ubus client: calls and subscriptions over ubusd's Unix socket, without the `ubus` CLI.
//!
//! Why not the CLI: it takes the message as one argument, and Linux caps one argument at
//! 128 KiB (a rule with many forwarding rules makes a bigger `notify_proto`); every call costs a
//! process; and it cannot wait for several kinds of event at once. The wire format is libubus's
//! (read from its sources, `ubusmsg.h`, `libubus-io.c`, `blob.h`, `blobmsg.h`):
//!
//! - a message is a [`MsgHeader`] (version, type, sequence number, peer; big-endian) and one
//!   blob attribute (id 0) holding the message's attributes (`UBUS_ATTR_*`);
//! - a blob attribute is a big-endian `u32`: extended flag (bit 31), id (bits 24–30), length
//!   including the 4-byte header (bits 0–23); then the payload, padded to 4 bytes;
//! - a blobmsg attribute (the JSON-like payload of `UBUS_ATTR_DATA`) is an extended blob
//!   attribute whose id is its type, followed by its name (`u16` length, bytes, NUL, padded to 4)
//!   and its value. JSON maps to it as `blobmsg_add_json_element` does: integers that fit are
//!   `INT32`, larger ones `INT64`, booleans `INT8`, `null` `UNSPEC`.
//!
//! Every read and write has a deadline ([`Ubus::connect`]'s timeout).
//!
//! [`server`] is the other end of the same format, for test tools that stand in for ubusd where
//! there is none (examples/fake_ubusd.rs); the router never uses it.

use std::collections::VecDeque;
use std::io::{self, Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Map, Number, Value};

/// ubusd's socket on OpenWrt 19.07 and later, and before.
pub const SOCKETS: &[&str] = &["/var/run/ubus/ubus.sock", "/var/run/ubus.sock"];
/// ubusd refuses longer messages (`UBUS_MAX_MSGLEN`).
pub const MAX_MSGLEN: usize = 1 << 20;

/// `enum ubus_msg_type`.
mod msg {
    pub const HELLO: u8 = 0;
    pub const STATUS: u8 = 1;
    pub const DATA: u8 = 2;
    pub const LOOKUP: u8 = 4;
    pub const INVOKE: u8 = 5;
    pub const ADD_OBJECT: u8 = 6;
    pub const SUBSCRIBE: u8 = 8;
    pub const UNSUBSCRIBE: u8 = 9;
}

/// `enum ubus_msg_attr`.
mod attr {
    pub const STATUS: u8 = 1;
    pub const OBJPATH: u8 = 2;
    pub const OBJID: u8 = 3;
    pub const METHOD: u8 = 4;
    pub const OBJTYPE: u8 = 5;
    pub const SIGNATURE: u8 = 6;
    pub const DATA: u8 = 7;
    pub const TARGET: u8 = 8;
    pub const NO_REPLY: u8 = 10;
}

/// `enum blobmsg_type`.
mod ty {
    pub const UNSPEC: u8 = 0;
    pub const ARRAY: u8 = 1;
    pub const TABLE: u8 = 2;
    pub const STRING: u8 = 3;
    pub const INT64: u8 = 4;
    pub const INT32: u8 = 5;
    pub const INT16: u8 = 6;
    pub const INT8: u8 = 7;
    pub const DOUBLE: u8 = 8;
}

/// `enum ubus_msg_status` values callers look at.
pub mod status {
    pub const OK: u32 = 0;
    pub const INVALID_COMMAND: u32 = 1;
    pub const INVALID_ARGUMENT: u32 = 2;
    pub const METHOD_NOT_FOUND: u32 = 3;
    pub const NOT_FOUND: u32 = 4;
    pub const PERMISSION_DENIED: u32 = 6;
    pub const TIMEOUT: u32 = 7;
    pub const UNKNOWN_ERROR: u32 = 9;
}

const BLOB_EXTENDED: u32 = 0x8000_0000;
const BLOB_ID_SHIFT: u32 = 24;
const BLOB_ID_MASK: u32 = 0x7f00_0000;
const BLOB_LEN_MASK: u32 = 0x00ff_ffff;
const BLOB_HDR: usize = 4;
const MSG_HDR: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum UbusError {
    #[error("ubus: cannot connect to {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("ubus: {0}")]
    Io(#[from] io::Error),
    #[error("ubus: no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// ubusd or the object answered with a status other than OK.
    #[error("ubus {what}: {}", status_text(*.code))]
    Status { what: String, code: u32 },
    #[error("ubus: malformed message: {0}")]
    Protocol(&'static str),
    #[error("ubus: message of {0} bytes is over ubusd's limit")]
    TooLarge(usize),
}

impl UbusError {
    /// The ubus status code, when the failure is one.
    pub fn status(&self) -> Option<u32> {
        match self {
            UbusError::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

fn status_text(code: u32) -> &'static str {
    match code {
        0 => "Success",
        1 => "Invalid command",
        2 => "Invalid argument",
        3 => "Method not found",
        4 => "Not found",
        5 => "No response",
        6 => "Permission denied",
        7 => "Request timed out",
        8 => "Operation not supported",
        9 => "Unknown error",
        10 => "Connection failed",
        _ => "unknown status",
    }
}

/// A message header (`struct ubus_msghdr`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MsgHeader {
    version: u8,
    kind: u8,
    seq: u16,
    peer: u32,
}

impl MsgHeader {
    fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.push(self.kind);
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.peer.to_be_bytes());
    }

    fn parse(b: &[u8; MSG_HDR]) -> Self {
        MsgHeader {
            version: b[0],
            kind: b[1],
            seq: u16::from_be_bytes([b[2], b[3]]),
            peer: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// A notification from an object we subscribed to, or the end of the subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// `type` (e.g. `interface.update`) and its data.
    Notify(String, Value),
    /// The object went away (ubusd unsubscribed us), e.g. netifd restarted.
    Gone,
}

fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends a blob attribute header for `payload_len` bytes and the payload, padded.
fn put_blob(out: &mut Vec<u8>, id: u8, extended: bool, payload: &[u8]) {
    let len = (BLOB_HDR + payload.len()) as u32;
    let mut id_len = (u32::from(id) << BLOB_ID_SHIFT) | len;
    if extended {
        id_len |= BLOB_EXTENDED;
    }
    out.extend_from_slice(&id_len.to_be_bytes());
    out.extend_from_slice(payload);
    out.resize(pad4(out.len()), 0);
}

/// One parsed blob attribute: id, extended flag, payload (without padding).
struct Blob<'a> {
    id: u8,
    extended: bool,
    data: &'a [u8],
}

/// Splits a run of blob attributes.
fn blobs(mut b: &[u8]) -> Result<Vec<Blob<'_>>, UbusError> {
    let mut out = Vec::new();
    while b.len() >= BLOB_HDR {
        let id_len = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let len = (id_len & BLOB_LEN_MASK) as usize;
        if len < BLOB_HDR || len > b.len() {
            return Err(UbusError::Protocol("attribute length"));
        }
        out.push(Blob {
            id: ((id_len & BLOB_ID_MASK) >> BLOB_ID_SHIFT) as u8,
            extended: id_len & BLOB_EXTENDED != 0,
            data: &b[BLOB_HDR..len],
        });
        b = &b[pad4(len).min(b.len())..];
    }
    Ok(out)
}

/// Encodes the members of a JSON object (or the elements of an array, with empty names) as
/// blobmsg attributes.
pub fn blobmsg_encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    match v {
        Value::Object(o) => o.iter().for_each(|(k, v)| put_blobmsg(&mut out, k, v)),
        Value::Array(a) => a.iter().for_each(|v| put_blobmsg(&mut out, "", v)),
        _ => {}
    }
    out
}

fn put_blobmsg(out: &mut Vec<u8>, name: &str, v: &Value) {
    let name = name.as_bytes();
    let mut payload = Vec::with_capacity(pad4(3 + name.len()) + 8);
    payload.extend_from_slice(&(name.len() as u16).to_be_bytes());
    payload.extend_from_slice(name);
    payload.push(0);
    payload.resize(pad4(payload.len()), 0);
    let kind = match v {
        Value::Null => ty::UNSPEC,
        Value::Bool(b) => {
            payload.push(u8::from(*b));
            ty::INT8
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) if i32::try_from(i).is_ok() => {
                payload.extend_from_slice(&(i as i32).to_be_bytes());
                ty::INT32
            }
            (Some(i), _) => {
                payload.extend_from_slice(&i.to_be_bytes());
                ty::INT64
            }
            (None, Some(u)) => {
                payload.extend_from_slice(&u.to_be_bytes());
                ty::INT64
            }
            _ => {
                let f = n.as_f64().unwrap_or(0.0);
                payload.extend_from_slice(&f.to_bits().to_be_bytes());
                ty::DOUBLE
            }
        },
        Value::String(s) => {
            payload.extend_from_slice(s.as_bytes());
            payload.push(0);
            ty::STRING
        }
        Value::Array(_) => {
            payload.extend_from_slice(&blobmsg_encode(v));
            ty::ARRAY
        }
        Value::Object(_) => {
            payload.extend_from_slice(&blobmsg_encode(v));
            ty::TABLE
        }
    };
    put_blob(out, kind, true, &payload);
}

/// Decodes blobmsg attributes as a JSON object (`table`) or array, as
/// `blobmsg_format_json` does.
pub fn blobmsg_decode(b: &[u8], table: bool) -> Result<Value, UbusError> {
    let mut obj = Map::new();
    let mut arr = Vec::new();
    for a in blobs(b)? {
        if !a.extended || a.data.len() < 2 {
            return Err(UbusError::Protocol("blobmsg attribute"));
        }
        let namelen = usize::from(u16::from_be_bytes([a.data[0], a.data[1]]));
        let hdr = pad4(2 + namelen + 1);
        if hdr > a.data.len() {
            return Err(UbusError::Protocol("blobmsg name"));
        }
        let name = String::from_utf8_lossy(&a.data[2..2 + namelen]).into_owned();
        let d = &a.data[hdr..];
        let fixed = |n: usize| -> Result<&[u8], UbusError> {
            d.get(..n).ok_or(UbusError::Protocol("blobmsg value"))
        };
        let value = match a.id {
            ty::UNSPEC => Value::Null,
            ty::INT8 => Value::Bool(fixed(1)?[0] != 0),
            ty::INT16 => Value::from(i16::from_be_bytes(fixed(2)?.try_into().unwrap_or_default())),
            ty::INT32 => Value::from(i32::from_be_bytes(fixed(4)?.try_into().unwrap_or_default())),
            ty::INT64 => Value::from(i64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default())),
            ty::DOUBLE => {
                let bits = u64::from_be_bytes(fixed(8)?.try_into().unwrap_or_default());
                Number::from_f64(f64::from_bits(bits)).map_or(Value::Null, Value::Number)
            }
            ty::STRING => {
                let s = d.split(|c| *c == 0).next().unwrap_or_default();
                Value::String(String::from_utf8_lossy(s).into_owned())
            }
            ty::ARRAY => blobmsg_decode(d, false)?,
            ty::TABLE => blobmsg_decode(d, true)?,
            _ => return Err(UbusError::Protocol("blobmsg type")),
        };
        if table {
            obj.insert(name, value);
        } else {
            arr.push(value);
        }
    }
    Ok(if table {
        Value::Object(obj)
    } else {
        Value::Array(arr)
    })
}

/// The attributes of one message, as `UBUS_ATTR_*` id and payload.
#[derive(Default)]
struct Attrs(Vec<(u8, Vec<u8>)>);

impl Attrs {
    fn u32(mut self, id: u8, v: u32) -> Self {
        self.0.push((id, v.to_be_bytes().to_vec()));
        self
    }
    fn string(mut self, id: u8, s: &str) -> Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.0.push((id, b));
        self
    }
    fn raw(mut self, id: u8, b: Vec<u8>) -> Self {
        self.0.push((id, b));
        self
    }
    fn emit(&self, out: &mut Vec<u8>) {
        let mut body = Vec::new();
        for (id, b) in &self.0 {
            put_blob(&mut body, *id, false, b);
        }
        put_blob(out, 0, false, &body);
    }
}

/// One message on the wire: header, then the attributes in one blob.
fn encode(kind: u8, seq: u16, peer: u32, attrs: &Attrs) -> Vec<u8> {
    let mut out = Vec::new();
    MsgHeader {
        version: 0,
        kind,
        seq,
        peer,
    }
    .emit(&mut out);
    attrs.emit(&mut out);
    out
}

/// Reads one message with `read_exact` (which fills its buffer or fails).
fn read_message_with(
    mut read_exact: impl FnMut(&mut [u8]) -> Result<(), UbusError>,
) -> Result<Message, UbusError> {
    let mut h = [0u8; MSG_HDR];
    read_exact(&mut h)?;
    let hdr = MsgHeader::parse(&h);
    let mut b = [0u8; BLOB_HDR];
    read_exact(&mut b)?;
    let len = (u32::from_be_bytes(b) & BLOB_LEN_MASK) as usize;
    if !(BLOB_HDR..=MAX_MSGLEN + BLOB_HDR).contains(&len) {
        return Err(UbusError::Protocol("message length"));
    }
    let mut body = vec![0u8; len - BLOB_HDR];
    read_exact(&mut body)?;
    let attrs = blobs(&body)?
        .into_iter()
        .map(|a| (a.id, a.data.to_vec()))
        .collect();
    Ok(Message { hdr, attrs })
}

/// A received message: header and its attributes.
struct Message {
    hdr: MsgHeader,
    attrs: Vec<(u8, Vec<u8>)>,
}

impl Message {
    fn get(&self, id: u8) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, b)| b.as_slice())
    }
    fn u32(&self, id: u8) -> Option<u32> {
        let b = self.get(id)?;
        Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
    }
    fn string(&self, id: u8) -> Option<String> {
        let b = self.get(id)?;
        let s = b.split(|c| *c == 0).next()?;
        Some(String::from_utf8_lossy(s).into_owned())
    }
}

/// A connection to ubusd.
pub struct Ubus {
    sock: UnixStream,
    seq: u16,
    timeout: Duration,
    /// Our anonymous subscriber object, once [`Ubus::subscribe`] made one.
    subscriber: Option<u32>,
    events: VecDeque<Event>,
}

impl Ubus {
    /// The socket to use: `$MAPE_UBUS_SOCKET`, else the first of [`SOCKETS`] that exists.
    pub fn socket_path() -> PathBuf {
        if let Some(p) = std::env::var_os("MAPE_UBUS_SOCKET") {
            return PathBuf::from(p);
        }
        SOCKETS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap_or_else(|| PathBuf::from(SOCKETS[0]))
    }

    /// Connects to `path` (default [`Ubus::socket_path`]); `timeout` bounds every later call.
    pub fn connect(path: Option<&Path>, timeout: Duration) -> Result<Self, UbusError> {
        let path = path.map_or_else(Self::socket_path, Path::to_path_buf);
        let sock = UnixStream::connect(&path).map_err(|source| UbusError::Connect {
            path: path.clone(),
            source,
        })?;
        let mut u = Ubus {
            sock,
            seq: 0,
            timeout,
            subscriber: None,
            events: VecDeque::new(),
        };
        let deadline = Instant::now() + timeout;
        let hello = u.read_message(deadline)?;
        if hello.hdr.kind != msg::HELLO {
            return Err(UbusError::Protocol("no hello"));
        }
        Ok(u)
    }

    fn send(&mut self, kind: u8, peer: u32, attrs: &Attrs) -> Result<u16, UbusError> {
        self.seq = self.seq.wrapping_add(1);
        let out = encode(kind, self.seq, peer, attrs);
        if out.len() - MSG_HDR > MAX_MSGLEN {
            return Err(UbusError::TooLarge(out.len() - MSG_HDR));
        }
        self.sock.set_write_timeout(Some(self.timeout))?;
        self.sock
            .write_all(&out)
            .map_err(|e| timeout_or(e, self.timeout))?;
        Ok(self.seq)
    }

    fn read_exact(&mut self, buf: &mut [u8], deadline: Instant) -> Result<(), UbusError> {
        let mut at = 0;
        while at < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(UbusError::Timeout(self.timeout));
            }
            self.sock.set_read_timeout(Some(left))?;
            match self.sock.read(&mut buf[at..]) {
                Ok(0) => {
                    return Err(UbusError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "ubusd closed the connection",
                    )))
                }
                Ok(n) => at += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(timeout_or(e, self.timeout)),
            }
        }
        Ok(())
    }

    fn read_message(&mut self, deadline: Instant) -> Result<Message, UbusError> {
        read_message_with(|b| self.read_exact(b, deadline))
    }

    /// Handles a message that is not the reply we wait for: a notification for our subscriber
    /// (answered unless it asks for no reply), or the end of a subscription.
    fn unsolicited(&mut self, m: Message) -> Result<(), UbusError> {
        match m.hdr.kind {
            msg::INVOKE if self.subscriber.is_some() => {
                let kind = m.string(attr::METHOD).unwrap_or_default();
                let data = match m.get(attr::DATA) {
                    Some(d) => blobmsg_decode(d, true)?,
                    None => Value::Object(Map::new()),
                };
                self.events.push_back(Event::Notify(kind, data));
                if m.get(attr::NO_REPLY)
                    .map_or(true, |b| b.first() == Some(&0))
                {
                    // Our status for this request, to the peer that sent it.
                    let attrs = Attrs::default()
                        .u32(attr::STATUS, status::OK)
                        .u32(attr::OBJID, m.u32(attr::OBJID).unwrap_or(0));
                    self.sock
                        .write_all(&encode(msg::STATUS, m.hdr.seq, m.hdr.peer, &attrs))?;
                }
            }
            msg::UNSUBSCRIBE => self.events.push_back(Event::Gone),
            _ => {}
        }
        Ok(())
    }

    /// Sends a request and collects its DATA messages until its STATUS.
    fn request(
        &mut self,
        kind: u8,
        peer: u32,
        attrs: &Attrs,
        what: &str,
    ) -> Result<Vec<Message>, UbusError> {
        let seq = self.send(kind, peer, attrs)?;
        let deadline = Instant::now() + self.timeout;
        let mut data = Vec::new();
        loop {
            let m = self.read_message(deadline)?;
            if m.hdr.seq != seq || !matches!(m.hdr.kind, msg::STATUS | msg::DATA) {
                self.unsolicited(m)?;
                continue;
            }
            if m.hdr.kind == msg::DATA {
                data.push(m);
                continue;
            }
            return match m.u32(attr::STATUS) {
                Some(status::OK) => Ok(data),
                Some(code) => Err(UbusError::Status {
                    what: what.to_string(),
                    code,
                }),
                None => Err(UbusError::Protocol("status without a code")),
            };
        }
    }

    /// The id of the object at `path`.
    pub fn lookup(&mut self, path: &str) -> Result<u32, UbusError> {
        let data = self.request(
            msg::LOOKUP,
            0,
            &Attrs::default().string(attr::OBJPATH, path),
            path,
        )?;
        data.iter()
            .find(|m| m.string(attr::OBJPATH).as_deref() == Some(path))
            .and_then(|m| m.u32(attr::OBJID))
            .ok_or(UbusError::Status {
                what: path.to_string(),
                code: status::NOT_FOUND,
            })
    }

    /// `ubus call <path> <method> <args>`: the reply (`Null` when there is none).
    pub fn call(&mut self, path: &str, method: &str, args: &Value) -> Result<Value, UbusError> {
        let id = self.lookup(path)?;
        let attrs = Attrs::default()
            .u32(attr::OBJID, id)
            .string(attr::METHOD, method)
            .raw(attr::DATA, blobmsg_encode(args));
        let data = self.request(msg::INVOKE, id, &attrs, &format!("{path} {method}"))?;
        match data.iter().find_map(|m| m.get(attr::DATA)) {
            Some(d) => blobmsg_decode(d, true),
            None => Ok(Value::Null),
        }
    }

    /// Subscribes to the notifications of the object at `path` (as `ubus subscribe` does):
    /// they arrive through [`Ubus::next_event`].
    pub fn subscribe(&mut self, path: &str) -> Result<(), UbusError> {
        let id = self.lookup(path)?;
        let me = match self.subscriber {
            Some(me) => me,
            None => {
                let data = self.request(msg::ADD_OBJECT, 0, &Attrs::default(), "add object")?;
                let me = data
                    .iter()
                    .find_map(|m| m.u32(attr::OBJID))
                    .ok_or(UbusError::Protocol("no object id"))?;
                self.subscriber = Some(me);
                me
            }
        };
        let attrs = Attrs::default().u32(attr::OBJID, me).u32(attr::TARGET, id);
        self.request(msg::SUBSCRIBE, 0, &attrs, &format!("subscribe {path}"))?;
        Ok(())
    }

    /// The next notification, waiting at most `wait`; `Ok(None)` when none came.
    pub fn next_event(&mut self, wait: Duration) -> Result<Option<Event>, UbusError> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(e) = self.events.pop_front() {
                return Ok(Some(e));
            }
            match self.read_message(deadline) {
                Ok(m) => self.unsolicited(m)?,
                Err(UbusError::Timeout(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }
}

fn timeout_or(e: io::Error, t: Duration) -> UbusError {
    if matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    ) {
        UbusError::Timeout(t)
    } else {
        UbusError::Io(e)
    }
}

/// ubusd's end of the wire format, for test tools that stand in for ubusd and the objects behind
/// it where there is none (examples/fake_ubusd.rs, in the foreign-architecture guests). It
/// answers as ubusd does (`ubusd_proto.c`): HELLO carries the client's id in its peer field;
/// every DATA and STATUS of a request carries the request's sequence number and peer (for an
/// INVOKE, the object's id, which libubus matches), and INVOKE's replies name the object.
pub mod server {
    use super::*;
    use std::io::{Read, Write};

    /// What a client asks.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Call {
        /// `LOOKUP` of the object at a path (every object when `None`).
        Lookup(Option<String>),
        /// `INVOKE` of `method` on object `obj` with `args` (`{}` when the message has none).
        Invoke {
            obj: u32,
            method: String,
            args: Value,
        },
        /// A message type this end does not serve, or a request without the attributes it
        /// needs (ubusd answers `INVALID_COMMAND` or `INVALID_ARGUMENT`).
        Other(u8),
    }

    /// One request, with what its replies must carry.
    #[derive(Debug)]
    pub struct Request {
        pub call: Call,
        seq: u16,
        peer: u32,
    }

    /// Greets a new client as ubusd does: HELLO with an empty body, its peer field `client`
    /// (the client's id: libubus refuses 0 and 1).
    pub fn hello(w: &mut impl Write, client: u32) -> io::Result<()> {
        w.write_all(&encode(msg::HELLO, 0, client, &Attrs::default()))
    }

    /// The next request; `Ok(None)` when the client closed the connection between messages.
    pub fn read_request(r: &mut impl Read) -> Result<Option<Request>, UbusError> {
        let mut first = [0u8; 1];
        loop {
            match r.read(&mut first) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut rest = (&first[..]).chain(r);
        let m = read_message_with(|b| Ok(rest.read_exact(b)?))?;
        let call = match m.hdr.kind {
            msg::LOOKUP => Call::Lookup(m.string(attr::OBJPATH)),
            msg::INVOKE => match (m.u32(attr::OBJID), m.string(attr::METHOD)) {
                (Some(obj), Some(method)) => Call::Invoke {
                    obj,
                    method,
                    args: blobmsg_decode(m.get(attr::DATA).unwrap_or_default(), true)?,
                },
                _ => Call::Other(msg::INVOKE),
            },
            kind => Call::Other(kind),
        };
        Ok(Some(Request {
            call,
            seq: m.hdr.seq,
            peer: m.hdr.peer,
        }))
    }

    impl Request {
        fn obj(&self) -> Option<u32> {
            match self.call {
                Call::Invoke { obj, .. } => Some(obj),
                _ => None,
            }
        }

        fn reply(&self, w: &mut impl Write, kind: u8, attrs: Attrs) -> io::Result<()> {
            w.write_all(&encode(kind, self.seq, self.peer, &attrs))
        }

        /// One object found by a LOOKUP: its path, id and type (the id again) and an empty
        /// signature, as ubusd sends them (`ubus list -v` shows no methods).
        pub fn object(&self, w: &mut impl Write, path: &str, id: u32) -> io::Result<()> {
            let attrs = Attrs::default()
                .string(attr::OBJPATH, path)
                .u32(attr::OBJID, id)
                .u32(attr::OBJTYPE, id)
                .raw(attr::SIGNATURE, Vec::new());
            self.reply(w, msg::DATA, attrs)
        }

        /// The data an INVOKE answers with (a JSON object, as blobmsg).
        pub fn data(&self, w: &mut impl Write, data: &Value) -> io::Result<()> {
            let attrs = Attrs::default()
                .u32(attr::OBJID, self.obj().unwrap_or(0))
                .raw(attr::DATA, blobmsg_encode(data));
            self.reply(w, msg::DATA, attrs)
        }

        /// The request's final status (`status::OK` or an error).
        pub fn status(&self, w: &mut impl Write, code: u32) -> io::Result<()> {
            let mut attrs = Attrs::default().u32(attr::STATUS, code);
            if let Some(obj) = self.obj() {
                attrs = attrs.u32(attr::OBJID, obj);
            }
            self.reply(w, msg::STATUS, attrs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blobmsg_round_trips_like_libubox() {
        let v = json!({"action": 0, "interface": "wanmap", "link-up": true, "mtu": 1460,
            "big": 1u64 << 40, "neg": -5, "ratio": 0.5, "none": null,
            "ipaddr": [{"ipaddr": "192.0.2.1", "mask": "32"}], "empty": {}, "list": []});
        let b = blobmsg_encode(&v);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(blobmsg_decode(&b, true).unwrap(), v);
    }

    #[test]
    fn blobmsg_layout_is_libubox_s() {
        // blobmsg_add_u32(b, "mtu", 1460): extended | INT32 << 24 | 4 + 8 + 4,
        // name length 3, "mtu\0", value big-endian.
        let b = blobmsg_encode(&json!({"mtu": 1460}));
        assert_eq!(
            b,
            [0x85, 0, 0, 16, 0, 3, b'm', b't', b'u', 0, 0, 0, 0, 0, 0x05, 0xb4]
        );
        // A string carries its NUL; the attribute is padded to 4 bytes.
        let b = blobmsg_encode(&json!({"a": "xy"}));
        assert_eq!(b, [0x83, 0, 0, 11, 0, 1, b'a', 0, b'x', b'y', 0, 0]);
        // Booleans are INT8, as blobmsg_add_json_element makes them.
        assert_eq!(blobmsg_encode(&json!({"b": true}))[0], 0x87);
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &[0x85u8, 0, 0, 40, 0, 3][..],
            &[0x05, 0, 0, 8, 0, 0, 0, 0],
            &[0x85, 0, 0, 8, 0xff, 0xff, 0, 0],
            &[0x85, 0, 0, 8, 0, 0, 0, 0],
            &[0x8f, 0, 0, 8, 0, 0, 0, 0],
        ] {
            assert!(blobmsg_decode(bad, true).is_err(), "{bad:?}");
        }
        assert_eq!(blobmsg_decode(&[], true).unwrap(), json!({}));
    }

    #[test]
    fn message_header_layout() {
        let mut out = Vec::new();
        MsgHeader {
            version: 0,
            kind: msg::INVOKE,
            seq: 0x102,
            peer: 0x0304_0506,
        }
        .emit(&mut out);
        Attrs::default().u32(attr::OBJID, 7).emit(&mut out);
        assert_eq!(&out[..8], &[0, 5, 1, 2, 3, 4, 5, 6]);
        // The outer blob (id 0) holds one attribute: OBJID (3) = 7.
        assert_eq!(&out[8..], &[0, 0, 0, 12, 3, 0, 0, 8, 0, 0, 0, 7]);
    }

    /// Our client against our server end, over a real Unix socket: HELLO, LOOKUP (found and
    /// not), INVOKE with data and a reply, a refusal, in one connection as the handler uses it.
    #[test]
    fn client_and_server_ends_agree() {
        use std::os::unix::net::UnixListener;
        let dir = std::env::temp_dir().join(format!("mape-ubus-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ubus.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let served = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            server::hello(&mut s, 0x1234).unwrap();
            let mut seen = Vec::new();
            while let Some(req) = server::read_request(&mut s).unwrap() {
                match &req.call {
                    server::Call::Lookup(Some(p)) if p == "network.interface" => {
                        req.object(&mut s, p, 77).unwrap();
                        req.status(&mut s, status::OK).unwrap();
                    }
                    server::Call::Lookup(_) => req.status(&mut s, status::NOT_FOUND).unwrap(),
                    server::Call::Invoke { method, args, .. } if method == "echo" => {
                        req.data(&mut s, args).unwrap();
                        req.status(&mut s, status::OK).unwrap();
                    }
                    server::Call::Invoke { .. } => {
                        req.status(&mut s, status::METHOD_NOT_FOUND).unwrap()
                    }
                    server::Call::Other(_) => req.status(&mut s, status::INVALID_COMMAND).unwrap(),
                }
                seen.push(req.call);
            }
            seen
        });
        let mut u = Ubus::connect(Some(&path), Duration::from_secs(5)).unwrap();
        let args = json!({"action": 0, "ifname": "map-wanmap", "link-up": true,
            "ipaddr": [{"ipaddr": "192.0.2.18", "mask": "32"}]});
        assert_eq!(u.call("network.interface", "echo", &args).unwrap(), args);
        let e = u
            .call("network.interface.nope", "status", &json!({}))
            .unwrap_err();
        assert_eq!(e.status(), Some(status::NOT_FOUND), "{e}");
        let e = u.call("network.interface", "nope", &json!({})).unwrap_err();
        assert_eq!(e.status(), Some(status::METHOD_NOT_FOUND), "{e}");
        drop(u);
        let seen = served.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            seen,
            [
                server::Call::Lookup(Some("network.interface".into())),
                server::Call::Invoke {
                    obj: 77,
                    method: "echo".into(),
                    args
                },
                server::Call::Lookup(Some("network.interface.nope".into())),
                server::Call::Lookup(Some("network.interface".into())),
                server::Call::Invoke {
                    obj: 77,
                    method: "nope".into(),
                    args: json!({})
                },
            ]
        );
    }
}
