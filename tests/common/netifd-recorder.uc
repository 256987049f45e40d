// A recorder standing in for netifd's ubus objects in the namespace tests (the real netifd runs
// in the VM bed). It runs under the real ucode against the real ubusd, so the transport is real:
//   network.interface notify_proto   appended to DIR/calls.log ("network.interface notify_proto JSON")
//   network.interface dump           DIR/dump.json, else an empty list
//   network.interface.<name> status  DIR/status.json, for every name in NAMES (comma-separated)
//   DIR/hang-update (a file)         the next update (action 0) is never answered: DIR/hanging
//                                    is written and the caller's call times out (a stale setup
//                                    of a netifd that restarted)
// Usage: ucode -L <prefix>/lib/ucode netifd-recorder.uc SOCKET DIR [NAMES]
let ubus = require("ubus"), uloop = require("uloop"), fs = require("fs");
uloop.init();
let sock = ARGV[0], dir = ARGV[1];
let conn = ubus.connect(sock);
if (!conn) {
	warn("netifd-recorder: cannot connect to ", sock, "\n");
	exit(1);
}
function file(name, dflt) {
	let t = fs.readfile(dir + "/" + name);
	return t ? json(t) : dflt;
}
// Every argument netifd's notify_proto takes (proto-ext.c notify_attr), with its type.
const NOTIFY_ARGS = {
	action: 0, interface: "", ifname: "", "link-up": true, "address-external": true, keep: true,
	tunnel: {}, ipaddr: [], ip6addr: [], routes: [], routes6: [], ip6prefix: [], dns: [],
	"dns-search": [], data: {}, command: [], env: [], error: [], host: "", signal: 0,
	expires: 0, neighbor: [], neighbor6: [], "ip6table": 0, "available": true
};
let objs = [];
// Deferred requests are kept here: a request freed unanswered is answered with a timeout.
let hung = [];
push(objs, conn.publish("network.interface", {
	notify_proto: {
		call: function(req) {
			let f = fs.open(dir + "/calls.log", "a");
			f.write(sprintf("network.interface notify_proto %J\n", req.args));
			f.close();
			if (req.args.action == 0 && fs.access(dir + "/hang-update")) {
				fs.unlink(dir + "/hang-update");
				fs.writefile(dir + "/hanging", "1");
				req.defer();
				push(hung, req);
				return null;
			}
			return 0;
		},
		args: NOTIFY_ARGS
	},
	dump: { call: function(req) { return file("dump.json", { interface: [] }); }, args: {} },
}));
for (let name in split(ARGV[2] ?? "wan6", ","))
	push(objs, conn.publish("network.interface." + name, {
		status: { call: function(req) { return file("status.json", {}); }, args: {} },
	}));
fs.writefile(dir + "/recorder.ready", "1");
uloop.run();
