//! A test tool: ubusd and netifd's `network.interface` objects in one process, for the
//! foreign-architecture guests of tests/arch, which have neither (they boot Debian's MIPS and
//! ARM kernels; the real ubusd and netifd run in the x86 beds). The handler there (`mape netifd
//! mape setup|teardown`, `MAPE_UBUS_SOCKET` pointing here) talks to it with its own ubus client
//! (src/ubus.rs) exactly as to ubusd: HELLO, then LOOKUP and INVOKE per call. Served from a
//! directory:
//!
//! - `DIR/status/<name>.json`: the object `network.interface.<name>` exists while the file does;
//!   its `status` answers with the file's JSON object;
//! - `network.interface dump`: `{"interface":[{"interface":<name>, ...status}, ...]}` over the
//!   status files, by name;
//! - every other method of these objects (`notify_proto`, ...) is appended to
//!   `DIR/calls.jsonl` as one line `{"object":..,"method":..,"args":..}` (the args as serde_json
//!   writes them: what tests/arch/standin.sh reads), then answered OK with no data;
//! - any other object: "Not found", as ubusd answers.
//!
//!     fake_ubusd SOCKET DIR
//!
//! Serves until killed, one thread per connection. Bad usage: one line, exit 2; a socket it
//! cannot make: exit 1. Not shipped: built by tests/arch/run.sh with `scripts/dist.sh --example`.

use std::fs::OpenOptions;
use std::io::{self, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mape::ubus::server::{self, Call, Request};
use mape::ubus::status;
use serde_json::{json, Map, Value};

const IFACE: &str = "network.interface";
/// Object ids are this plus the object's index in the registry (ubusd's are random; libubus
/// only needs them to be stable and not 0).
const FIRST_ID: u32 = 0x100;

/// What the connections share: the directory, the ids given out, the record file's lock.
pub struct Netifd {
    dir: PathBuf,
    ids: Mutex<Vec<String>>,
    record: Mutex<()>,
}

impl Netifd {
    pub fn new(dir: &Path) -> Self {
        Netifd {
            dir: dir.to_path_buf(),
            ids: Mutex::new(Vec::new()),
            record: Mutex::new(()),
        }
    }

    fn status_file(&self, name: &str) -> PathBuf {
        self.dir.join("status").join(format!("{name}.json"))
    }

    /// The interfaces with a status file, by name.
    fn interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.join("status"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.strip_suffix(".json").map(str::to_string)
            })
            .collect();
        v.sort();
        v
    }

    /// The objects that exist now.
    fn objects(&self) -> Vec<String> {
        let mut v = vec![IFACE.to_string()];
        v.extend(self.interfaces().iter().map(|n| format!("{IFACE}.{n}")));
        v
    }

    fn id(&self, path: &str) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        let i = ids.iter().position(|p| p == path).unwrap_or_else(|| {
            ids.push(path.to_string());
            ids.len() - 1
        });
        FIRST_ID + i as u32
    }

    fn path(&self, id: u32) -> Option<String> {
        let ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        ids.get(id.checked_sub(FIRST_ID)? as usize).cloned()
    }

    fn status(&self, name: &str) -> Result<Value, u32> {
        let text =
            std::fs::read_to_string(self.status_file(name)).map_err(|_| status::NOT_FOUND)?;
        match serde_json::from_str::<Value>(&text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => {
                eprintln!(
                    "fake_ubusd: {}: not a JSON object",
                    self.status_file(name).display()
                );
                Err(status::UNKNOWN_ERROR)
            }
        }
    }

    fn dump(&self) -> Result<Value, u32> {
        let mut list = Vec::new();
        for name in self.interfaces() {
            let mut o = Map::new();
            o.insert("interface".into(), Value::String(name.clone()));
            if let Value::Object(s) = self.status(&name)? {
                o.extend(s);
            }
            list.push(Value::Object(o));
        }
        Ok(json!({ "interface": list }))
    }

    fn record(&self, object: &str, method: &str, args: &Value) -> Result<(), u32> {
        let line = format!(
            "{{\"object\":{},\"method\":{},\"args\":{}}}\n",
            Value::from(object),
            Value::from(method),
            args
        );
        let _held = self.record.lock().unwrap_or_else(|e| e.into_inner());
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("calls.jsonl"))
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|e| {
                eprintln!(
                    "fake_ubusd: {}: {e}",
                    self.dir.join("calls.jsonl").display()
                );
                status::UNKNOWN_ERROR
            })
    }

    /// Answers one request: LOOKUP as ubusd, INVOKE as netifd (or the recorder).
    fn answer(&self, req: &Request, w: &mut UnixStream) -> io::Result<()> {
        let code = match &req.call {
            Call::Lookup(want) => {
                let found: Vec<String> = self
                    .objects()
                    .into_iter()
                    .filter(|p| match want.as_deref() {
                        None => true,
                        Some(w) => match w.strip_suffix('*') {
                            Some(prefix) => p.starts_with(prefix),
                            None => p == w,
                        },
                    })
                    .collect();
                for p in &found {
                    req.object(w, p, self.id(p))?;
                }
                if found.is_empty() {
                    status::NOT_FOUND
                } else {
                    status::OK
                }
            }
            Call::Invoke { obj, method, args } => match self.invoke(*obj, method, args) {
                Ok(Some(data)) => {
                    req.data(w, &data)?;
                    status::OK
                }
                Ok(None) => status::OK,
                Err(code) => code,
            },
            Call::Other(_) => status::INVALID_COMMAND,
        };
        req.status(w, code)
    }

    fn invoke(&self, obj: u32, method: &str, args: &Value) -> Result<Option<Value>, u32> {
        let path = self.path(obj).ok_or(status::NOT_FOUND)?;
        let name = path.strip_prefix(IFACE).and_then(|n| n.strip_prefix('.'));
        match (name, method) {
            (Some(name), "status") => self.status(name).map(Some),
            (None, "dump") => self.dump().map(Some),
            _ => self.record(&path, method, args).map(|()| None),
        }
    }

    /// Serves one connection until the client closes it.
    pub fn serve_client(&self, mut s: UnixStream, client: u32) {
        if let Err(e) = server::hello(&mut s, client) {
            eprintln!("fake_ubusd: hello: {e}");
            return;
        }
        loop {
            match server::read_request(&mut s) {
                Ok(Some(req)) => {
                    if let Err(e) = self.answer(&req, &mut s) {
                        eprintln!("fake_ubusd: reply: {e}");
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    eprintln!("fake_ubusd: {e}");
                    return;
                }
            }
        }
    }
}

/// Accepts connections on `listener` for ever, a thread each.
pub fn serve(listener: UnixListener, netifd: Arc<Netifd>) {
    let mut client = FIRST_ID;
    for conn in listener.incoming() {
        match conn {
            Ok(s) => {
                client += 1;
                let (n, id) = (Arc::clone(&netifd), client);
                std::thread::spawn(move || n.serve_client(s, id));
            }
            Err(e) => eprintln!("fake_ubusd: accept: {e}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [sock, dir] = args.as_slice() else {
        eprintln!("usage: fake_ubusd SOCKET DIR");
        std::process::exit(2);
    };
    if !Path::new(dir).is_dir() {
        eprintln!("fake_ubusd: DIR {dir}: not a directory");
        std::process::exit(2);
    }
    let _ = std::fs::remove_file(sock);
    let listener = match UnixListener::bind(sock) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake_ubusd: SOCKET {sock}: {e}");
            std::process::exit(1);
        }
    };
    serve(listener, Arc::new(Netifd::new(Path::new(dir))));
}
