/*
 * The HTTP side of the real-LuCI browser test: what uhttpd and the LuCI dispatcher do for the
 * pages the test opens, in as few lines as that takes.
 *
 * - /luci-static/…      files of the LuCI subset's htdocs (luci-base, luci-mod-network,
 *                       luci-proto-ipv6, the bootstrap theme) under our files/www;
 * - /ubus, /ubus/       LuCI's JSON-RPC as uhttpd-mod-ubus implements it (legacy endpoint, single
 *                       requests and batches): "call" looks the object up, asks rpcd's
 *                       `session access` whether the session may call it, adds
 *                       ubus_rpc_session to the arguments and forwards it to ubus; the
 *                       result is [status] or [status, data]; JSON-RPC errors -32000 (object
 *                       not found), -32002 (access denied), -32602, -32700 as uhttpd's;
 * - /cgi-bin/luci/…     stand-ins for the dispatcher's pieces the view needs: the page itself
 *                       (L.env with the session of a real rpcd login), the translation
 *                       catalogue (window.TR, read from .lmo files with LuCI's own lmo code)
 *                       and admin/uci/{apply_rollback,apply_unchecked,confirm,revert}, which
 *                       call rpcd's `uci apply|confirm|revert` as the dispatcher does.
 *
 * All ubus traffic goes through the real `ubus` command-line client.
 */
'use strict';

const fs = require('fs');
const path = require('path');
const http = require('http');
const crypto = require('crypto');
const { execFile } = require('child_process');

const TYPES = {
	'.html': 'text/html; charset=utf-8', '.js': 'application/javascript; charset=utf-8',
	'.css': 'text/css; charset=utf-8', '.svg': 'image/svg+xml', '.png': 'image/png',
	'.json': 'application/json'
};

/* `ubus call` through the real client: { status, data }. status is the ubus status code
 * (from the client's exit status), data the parsed reply or null. */
function ubus(object, method, args, timeout) {
	return new Promise((resolve) => {
		execFile('ubus', [ '-t', String(timeout || 30), 'call', object, method, JSON.stringify(args || {}) ],
			{ maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
				let data = null;
				try { data = stdout.trim() ? JSON.parse(stdout) : null; } catch (e) { data = null; }
				// The client exits with the ubus status, negated when stderr is not a terminal.
				const code = err ? (typeof err.code == 'number' ? err.code : 255) : 0;
				const status = code > 128 ? 256 - code : code;
				resolve({ status, data, stderr: String(stderr || '').trim() });
			});
	});
}

/* Whether a ubus object exists (uhttpd: ubus_lookup_id). */
function ubusExists(object) {
	return new Promise((resolve) => {
		execFile('ubus', [ 'list', object ], (err, stdout) => resolve(!err && stdout.trim() == object));
	});
}

function ubusList(pattern) {
	return new Promise((resolve) => {
		execFile('ubus', pattern ? [ '-v', 'list', pattern ] : [ 'list' ], (err, stdout) => resolve(err ? '' : stdout));
	});
}

class Server {
	/* opts: { htdocs: [dirs], testdir, lmoDump, lmoDir, log(line) } */
	constructor(opts) {
		this.opts = opts;
		this.sessions = {};        // user -> sid
		this.tokens = {};          // apply token -> sid
		this.calls = [];           // every JSON-RPC request: { sid, user, object, method, args, result|error }
		this.notFound = [];        // HTTP 404s
		this.translations = {};    // lang -> JS text
		this.catalogues = {};      // lang -> number of entries
	}

	async login(user, password) {
		const r = await ubus('session', 'login', { username: user, password });
		if (r.status != 0 || !r.data || !r.data.ubus_rpc_session)
			throw new Error(`rpcd session login of ${user} failed: status ${r.status} ${r.stderr}`);
		this.sessions[user] = r.data.ubus_rpc_session;
		return r.data.ubus_rpc_session;
	}

	userOf(sid) {
		return Object.keys(this.sessions).find((u) => this.sessions[u] == sid) || '?';
	}

	listen() {
		this.http = http.createServer((req, res) => this.handle(req, res).catch((e) => {
			this.opts.log(`server error on ${req.url}: ${e && e.stack || e}`);
			if (!res.headersSent)
				res.writeHead(500);
			res.end();
		}));
		return new Promise((resolve) => this.http.listen(0, '127.0.0.1', () => {
			this.base = `http://127.0.0.1:${this.http.address().port}`;
			resolve(this.base);
		}));
	}

	close() {
		if (this.http)
			this.http.close();
	}

	async body(req) {
		const chunks = [];
		for await (const c of req)
			chunks.push(c);
		return Buffer.concat(chunks).toString('utf8');
	}

	async handle(req, res) {
		const url = new URL(req.url, 'http://x');
		const p = decodeURIComponent(url.pathname);

		if (p == '/ubus' || p == '/ubus/') {
			if (req.method == 'OPTIONS')
				return res.writeHead(200, { 'content-type': 'application/json' }).end();
			if (req.method != 'POST')
				return res.writeHead(400).end();
			return this.rpc(await this.body(req), res);
		}

		if (p.startsWith('/luci-static/'))
			return this.file(p.slice(1), res);

		if (p.startsWith('/test/'))
			return this.sendFile(path.join(this.opts.testdir, path.basename(p)), res);

		if (p.startsWith('/cgi-bin/luci/admin/translations/'))
			return this.catalogue(path.basename(p), res);

		if (p.startsWith('/cgi-bin/luci/admin/uci/'))
			return this.uciAction(path.basename(p), url.searchParams, res);

		if (p == '/cgi-bin/luci/admin/network/network')
			return this.page(url.searchParams, res);

		if (p == '/cgi-bin/cgi-exec' && req.method == 'POST')
			return this.cgiExec(new URLSearchParams(await this.body(req)), res);

		if (p == '/favicon.ico')
			return res.writeHead(204).end();

		this.notFound.push(p);
		res.writeHead(404).end();
	}

	file(rel, res) {
		for (const dir of this.opts.htdocs) {
			const f = path.resolve(dir, rel);
			if (f.startsWith(dir + path.sep) && fs.existsSync(f) && fs.statSync(f).isFile())
				return this.sendFile(f, res);
		}
		this.notFound.push('/' + rel);
		res.writeHead(404).end();
	}

	sendFile(f, res) {
		if (!fs.existsSync(f)) {
			this.notFound.push(f);
			return res.writeHead(404).end();
		}
		res.writeHead(200, { 'content-type': TYPES[path.extname(f)] || 'application/octet-stream', 'cache-control': 'no-store' });
		fs.createReadStream(f).pipe(res);
	}

	/* ---- uhttpd-mod-ubus ---- */

	async rpc(text, res) {
		let msg;
		try {
			msg = JSON.parse(text);
		}
		catch (e) {
			return this.json(res, this.rpcError(null, -32700, 'Parse error'));
		}

		if (Array.isArray(msg)) {
			const out = [];
			for (const m of msg)   // uhttpd answers a batch one request after the other
				out.push(await this.rpcOne(m));
			return this.json(res, out);
		}

		if (msg === null || typeof msg != 'object')
			return this.json(res, this.rpcError(null, -32700, 'Parse error'));

		return this.json(res, await this.rpcOne(msg));
	}

	rpcError(id, code, message) {
		return { jsonrpc: '2.0', id: id === undefined ? null : id, error: { code, message } };
	}

	async rpcOne(m) {
		const id = (m && typeof m == 'object') ? m.id : null;

		if (!m || typeof m != 'object' || Array.isArray(m) || m.jsonrpc != '2.0' || typeof m.method != 'string')
			return this.rpcError(id, -32700, 'Parse error');

		if (m.method == 'list')
			return { jsonrpc: '2.0', id: id === undefined ? null : id, result: await this.list(m.params) };

		if (m.method != 'call')
			return this.rpcError(id, -32601, 'Method not found');

		const [ sid, object, method, args ] = Array.isArray(m.params) ? m.params : [];
		const rec = { sid, user: this.userOf(sid), object, method, args };
		this.calls.push(rec);

		if (typeof sid != 'string' || typeof object != 'string' || typeof method != 'string' ||
		    args === null || typeof args != 'object' || Array.isArray(args))
			return this.done(rec, this.rpcError(id, -32700, 'Parse error'));

		if (!await ubusExists(object))
			return this.done(rec, this.rpcError(id, -32000, 'Object not found'));

		const acc = await ubus('session', 'access', { ubus_rpc_session: sid, object, function: method });
		if (acc.status != 0 || !acc.data || acc.data.access !== true)
			return this.done(rec, this.rpcError(id, -32002, 'Access denied'));

		if (Object.prototype.hasOwnProperty.call(args, 'ubus_rpc_session'))
			return this.done(rec, this.rpcError(id, -32602, 'Invalid parameters'));

		const r = await ubus(object, method, Object.assign({}, args, { ubus_rpc_session: sid }), 60);
		const result = (r.data && typeof r.data == 'object') ? [ r.status, r.data ] : [ r.status ];
		return this.done(rec, { jsonrpc: '2.0', id: id === undefined ? null : id, result });
	}

	done(rec, reply) {
		rec.reply = reply;
		if (this.opts.verbose)
			this.opts.log(`ubus ${rec.user} ${rec.object}.${rec.method} ${JSON.stringify(rec.args)} -> ${JSON.stringify(reply.error || reply.result[0])}`);
		return reply;
	}

	/* "list": without parameters the object names, with names their methods and argument
	 * types (uhttpd's words: string, number, boolean, array, object). */
	async list(params) {
		if (!Array.isArray(params))
			return (await ubusList(null)).split('\n').filter((l) => l);

		const types = { String: 'string', Integer: 'number', Boolean: 'boolean', Array: 'array', Table: 'object' };
		const out = {};
		for (const name of params) {
			let cur = null;
			for (const line of (await ubusList(String(name))).split('\n')) {
				const o = /^'([^']+)' @/.exec(line);
				if (o) {
					cur = out[o[1]] = {};
					continue;
				}
				const mm = /^\t"([^"]+)":(\{.*\})$/.exec(line);
				if (cur && mm) {
					const sig = JSON.parse(mm[2]);
					cur[mm[1]] = {};
					for (const a in sig)
						cur[mm[1]][a] = types[sig[a]] || 'unknown';
				}
			}
		}
		return out;
	}

	json(res, v) {
		res.writeHead(200, { 'content-type': 'application/json' });
		res.end(JSON.stringify(v));
	}

	/* ---- the dispatcher's pieces ---- */

	catalogue(lang, res) {
		lang = lang.replace(/\.js$/, '');
		if (!/^[a-z]{2}(-[a-z]{2,4})?$/.test(lang) || !this.opts.lmoDir)
			return res.writeHead(404).end();

		if (this.translations[lang] == null) {
			const r = require('child_process').spawnSync(this.opts.lmoDump, [ lang, this.opts.lmoDir ], { encoding: 'utf8', maxBuffer: 64 << 20 });
			if (r.status != 0) {
				this.opts.log(`lmo-dump ${lang}: ${r.stderr}`);
				return res.writeHead(500).end();
			}
			this.translations[lang] = r.stdout;
			this.catalogues[lang] = +(/(\d+) entries/.exec(r.stderr) || [ 0, 0 ])[1];
		}

		res.writeHead(200, { 'content-type': 'application/javascript; charset=utf-8', 'cache-control': 'no-store' });
		res.end(this.translations[lang]);
	}

	async uciAction(action, q, res) {
		const sid = (action == 'confirm') ? this.tokens[q.get('token')] : q.get('sid');
		if (!sid || !Object.values(this.sessions).includes(sid))
			return res.writeHead(403, { 'x-luci-login-required': 'yes' }).end();

		if (action == 'apply_rollback' || action == 'apply_unchecked') {
			const rollback = action == 'apply_rollback';
			const r = await ubus('uci', 'apply', { rollback, timeout: this.opts.applyRollback, ubus_rpc_session: sid });
			this.opts.log(`uci apply (rollback ${rollback}) -> ${r.status}`);
			if (r.status != 0)
				return res.writeHead(500).end(`uci apply: ubus status ${r.status}`);
			if (!rollback)
				return res.writeHead(204).end();
			const token = crypto.randomBytes(16).toString('hex');
			this.tokens[token] = sid;
			return this.json(res, { token });
		}

		if (action == 'confirm') {
			const r = await ubus('uci', 'confirm', { ubus_rpc_session: sid });
			this.opts.log(`uci confirm -> ${r.status}`);
			return res.writeHead(r.status == 0 ? 204 : 500).end();
		}

		if (action == 'revert') {
			const ch = await ubus('uci', 'changes', { ubus_rpc_session: sid });
			for (const config of Object.keys((ch.data && ch.data.changes) || {}))
				await ubus('uci', 'revert', { config, ubus_rpc_session: sid });
			return res.writeHead(200).end();
		}

		res.writeHead(404).end();
	}

	/* cgi-io's cgi-exec, for the one command the view runs: luci-peeraddr (luci-base), which
	 * names the interfaces the browser's connection comes in on (here: lan). The session's
	 * file exec permission is checked with rpcd, as cgi-io does. */
	async cgiExec(form, res) {
		const sid = form.get('sessionid'), command = form.get('command');
		const acc = await ubus('session', 'access', { ubus_rpc_session: sid, scope: 'file', object: command, function: 'exec' });
		if (acc.status != 0 || !acc.data || acc.data.access !== true)
			return res.writeHead(403).end('Access to command denied by ACL');
		if (command != '/usr/libexec/luci-peeraddr') {
			this.notFound.push(`cgi-exec ${command}`);
			return res.writeHead(404).end('Failed to execute command');
		}
		res.writeHead(200, { 'content-type': 'text/plain' });
		res.end(JSON.stringify({ inbound_interfaces: [ 'lan' ] }));
	}

	/* The page the dispatcher renders for admin/network/network (header.ut + the view):
	 * ?user=<rpcd login> (default root), ?lang=<catalogue> (default en: none). */
	page(q, res) {
		const user = q.get('user') || 'root';
		const lang = q.get('lang') || 'en';
		const sid = this.sessions[user];
		if (!sid)
			return res.writeHead(403, { 'x-luci-login-required': 'yes' }).end();

		const env = {
			media: '/luci-static/bootstrap', resource: '/luci-static/resources',
			scriptname: '/cgi-bin/luci', pathinfo: '/admin/network/network',
			documentroot: '/www', requestpath: [ 'admin', 'network', 'network' ],
			dispatchpath: [ 'admin', 'network', 'network' ], pollinterval: 5,
			ubuspath: '/ubus/', sessionid: sid, token: crypto.randomBytes(16).toString('hex'),
			nodespec: { satisfied: true, readonly: false, action: { type: 'view', path: 'network/interfaces' } },
			apply_rollback: this.opts.applyRollback, apply_holdoff: 1, apply_timeout: 5, apply_display: 1,
			rollback_token: null
		};
		const tr = (lang != 'en') ? `<script src="/cgi-bin/luci/admin/translations/${lang}"></script>\n` : '';

		res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
		res.end(`<!DOCTYPE html>
<html lang="${lang}">
<head>
<meta charset="utf-8">
<title>OpenWrt - Interfaces - LuCI</title>
<link rel="stylesheet" href="/luci-static/bootstrap/cascade.css">
${tr}<script src="/luci-static/resources/cbi.js"></script>
<script src="/test/i18n-trace.js"></script>
<script src="/luci-static/resources/luci.js"></script>
<script>L = new LuCI(${JSON.stringify(env)});</script>
</head>
<body class="lang_${lang}" data-page="admin-network-network">
<header><div class="fill"><div class="container"><span class="brand">OpenWrt</span>
<div class="pull-right" id="indicators"></div></div></div></header>
<div id="maincontent" class="container">
<div id="tabmenu"></div>
<div id="view"><div class="spinning">Loading view…</div>
<script>L.require('ui').then(function(ui) { ui.instantiateView('network/interfaces'); });</script>
</div>
</div>
</body>
</html>
`);
	}
}

module.exports = { Server, ubus };
