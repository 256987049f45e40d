// Stand-ins for the ubus objects of daemons the LuCI browser test does not run (netifd's
// network / network.interface / network.device, rpcd-mod-luci's luci and luci-rpc), published
// on the real ubusd, so that LuCI (through the HTTP shim) and our rpcd plugin (through the
// ubus CLI) see the same answers. Every stand-in is listed in docs/luci.md.
//
//   ucode standins.uc REPLIES.json LOG
//
// REPLIES.json maps object -> method -> reply. It is re-read on every call, so the test can
// change an answer (e.g. the interface dump) while the page is open. A reply of the form
// {"@arg": "name", "@map": {...}, "@default": {...}} answers by the value of one argument.
// Every call is appended to LOG as one JSON line {object, method, args}.

import * as ubus from 'ubus';
import * as uloop from 'uloop';
import * as fs from 'fs';

const replies_path = ARGV[0], log_path = ARGV[1];

// libubus' enum ubus_msg_status (ubusmsg.h): UBUS_STATUS_NOT_FOUND. ucode's ubus module does
// not export the enum; a handler returning an integer finishes the request with that status.
const UBUS_STATUS_NOT_FOUND = 4;

function replies() {
	const text = fs.readfile(replies_path);
	return text ? json(text) : {};
}

function answer(object, method, args) {
	const log = fs.open(log_path, 'a');
	if (log) {
		log.write(sprintf('%J\n', { object, method, args }));
		log.close();
	}

	let r = replies()?.[object]?.[method];

	if (type(r) == 'object' && r['@arg'] != null) {
		const key = args?.[r['@arg']];
		r = r['@map']?.[key] ?? r['@default'];
	}

	return r;
}

uloop.init();

const conn = ubus.connect();
if (!conn) {
	warn(`standins: cannot connect to ubus: ${ubus.error()}\n`);
	exit(1);
}

const published = [];

for (let object, methods in replies()) {
	const table = {};

	for (let method, reply in methods) {
		const o = object, m = method;
		// ucode refuses arguments a method does not declare; uhttpd adds ubus_rpc_session
		const args = { ubus_rpc_session: '' };
		if (type(reply) == 'object' && reply['@arg'] != null)
			args[reply['@arg']] = '';
		table[m] = {
			args,
			call: function(req) {
				const r = answer(o, m, req.args);
				return (type(r) == 'object') ? r : UBUS_STATUS_NOT_FOUND;
			}
		};
	}

	const obj = conn.publish(object, table);
	if (!obj) {
		warn(`standins: cannot publish ${object}: ${ubus.error()}\n`);
		exit(1);
	}
	push(published, obj);
}

print('ready\n');
fs.stdout.flush();
uloop.run();
