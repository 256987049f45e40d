#!/usr/bin/env node
/*
 * The real-LuCI browser test (run by ns.sh inside its namespaces; see docs/luci.md):
 * LuCI's own luci.js, form.js, network.js, uci.js, rpc.js, ui.js and
 * view/network/interfaces.js from the LuCI subset, our mape.js, in headless Chromium, against
 * the real ubusd, rpcd (session, uci, file, our exec plugin with its ACL) and uci.
 *
 * Prints "ok - …" / "not ok - …" per check and a final "N passed, M failed"; exits 1 when
 * anything failed.
 *
 * Environment: USERLAND, MAPE_LUCI_TMP (set by ns.sh), CHROMIUM (default /usr/bin/chromium),
 * MAPE_LUCI_LMO (our Japanese catalogue(s), ':'-separated .lmo files: then no string of our
 * form may be untranslated), MAPE_LUCI_SHOTS (where the screenshots go, default
 * /tmp/mape-luci-shots), LUCI_TEST_VERBOSE=1 (every ubus call and console message).
 */
'use strict';

const fs = require('fs');
const path = require('path');
const { spawn, spawnSync } = require('child_process');
const { chromium } = require('playwright-core');
const { Server, ubus } = require('./server.js');
const { log, check, eq, finish } = require('../tap.js');

const HERE = __dirname;
const REPO = path.resolve(HERE, '..', '..', '..');
const USERLAND = process.env.USERLAND;
const T = process.env.MAPE_LUCI_TMP;
const LUCI = path.join(USERLAND, 'share', 'luci');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SHOTS = process.env.MAPE_LUCI_SHOTS || '/tmp/mape-luci-shots';
const VERBOSE = !!process.env.LUCI_TEST_VERBOSE;
const PASSWORD = 'mape-luci-test';   /* tests/luci/real/config/rpcd */
const STATE_DIR = '/var/run/mape';    /* the handler's, inside the namespace */

function run(cmd, args, input) {
	const r = spawnSync(cmd, args, { input, encoding: 'utf8', maxBuffer: 64 << 20 });
	return { status: r.status, stdout: r.stdout || '', stderr: (r.stderr || '').trim(), error: r.error };
}

/* The real uci, reading /etc/config (rpcd's directory) with the deltas of `savedir` applied
 * (an empty directory: the committed configuration only). */
function uciShow(what, savedir) {
	const empty = path.join(T, 'uci-empty');
	fs.mkdirSync(empty, { recursive: true });
	const r = run('uci', [ '-c', '/etc/config', '-t', savedir || empty, 'show', what ]);
	const out = {};
	for (const line of r.stdout.split('\n')) {
		const m = /^[^.]+\.([^.=]+)\.([^=]+)=(.*)$/.exec(line);
		if (m && m[1] == what.split('.')[1])
			out[m[2]] = m[3].replace(/^'(.*)'$/, '$1').replace(/' '/g, ' ');
	}
	return out;
}

/* ---- the data the stand-ins answer with, from our own binary ---- */

/* The tunnel link as netifd reports it: wan6 with a v6plus delegated /56. */
const WAN6 = {
	interface: 'wan6', up: true, pending: false, available: true, autostart: true, dynamic: false,
	uptime: 3600, l3_device: 'eth1', proto: 'dhcpv6', device: 'eth1', updated: [ 'addresses', 'prefixes' ],
	metric: 0, dns_metric: 0, delegation: true,
	'ipv4-address': [], 'ipv6-address': [ { address: '240b:10:3f6c:d400::1', mask: 64 } ],
	'ipv6-prefix': [ { address: '240b:10:3f6c:d400::', mask: 56, class: 'wan6', assigned: {} } ],
	'ipv6-prefix-assignment': [], route: [ { target: '::', mask: 0, nexthop: 'fe80::1', source: '::/0' } ],
	'dns-server': [], 'dns-search': [], neighbors: [], inactive: {}, data: {}
};

function dryRunSetup(iface, config, stateDir) {
	const status = path.join(T, 'tunlink-status.json');
	fs.writeFileSync(status, JSON.stringify(WAN6));
	const args = [ 'netifd', 'setup', iface, JSON.stringify(config), '--dry-run', '--tunlink-status', status ];
	if (stateDir)
		args.push('--state-dir', stateDir);
	const r = run('/usr/sbin/mape', args);
	let report = null;
	try { report = JSON.parse(r.stdout); } catch (e) { /* checked by the caller */ }
	return { status: r.status, report, stderr: r.stderr };
}

/* netifd's `network.interface dump` entry for an interface our handler brought up with this
 * notify_proto update (action 0). */
function dumpEntry(iface, update) {
	return {
		interface: iface, up: true, pending: false, available: true, autostart: true, dynamic: false,
		uptime: 600, l3_device: update.ifname, proto: 'mape', updated: [ 'addresses', 'routes', 'data' ],
		metric: 0, dns_metric: 0, delegation: true,
		'ipv4-address': (update.ipaddr || []).map((a) => ({ address: a.ipaddr, mask: +a.mask })),
		'ipv6-address': [], 'ipv6-prefix': [], 'ipv6-prefix-assignment': [],
		route: (update.routes || []).map((r) => ({ target: r.target, mask: +r.netmask, nexthop: '0.0.0.0', source: '0.0.0.0/0' })),
		'dns-server': [], 'dns-search': [], neighbors: [], inactive: {}, data: update.data || {}
	};
}

function downEntry(iface, proto, errors) {
	return {
		interface: iface, up: false, pending: false, available: true, autostart: true, dynamic: false,
		proto, 'ipv4-address': [], 'ipv6-address': [], 'ipv6-prefix': [], 'ipv6-prefix-assignment': [],
		route: [], 'dns-server': [], 'dns-search': [], neighbors: [], inactive: {}, data: {},
		errors: (errors || []).map((code) => ({ subsystem: proto, code }))
	};
}

function device(name, up, type, extra) {
	return Object.assign({
		name, up, mtu: 1500, mac: '02:00:00:00:00:0' + (name.length % 10), type, devtype: type == 'bridge' ? 'bridge' : 'ethernet',
		flags: { up, broadcast: true, promisc: false, loopback: name == 'lo', noarp: false, multicast: true, pointtopoint: false },
		stats: { rx_bytes: 1048576, tx_bytes: 524288, rx_packets: 1000, tx_packets: 800 },
		link: { carrier: up, speed: 1000, duplex: 'full' }, ipaddrs: [], ip6addrs: []
	}, extra || {});
}

function replies(interfaces, handlers) {
	return {
		'network.interface': { dump: { interface: interfaces } },
		network: { get_proto_handlers: handlers },
		'network.device': { status: { '@arg': 'name', '@map': {
			eth0: { type: 'Network device', up: true, carrier: true, mtu: 1500, macaddr: '02:00:00:00:00:01' },
			eth1: { type: 'Network device', up: true, carrier: true, mtu: 1500, macaddr: '02:00:00:00:00:02' },
			'br-lan': { type: 'bridge', up: true, carrier: true, mtu: 1500, macaddr: '02:00:00:00:00:03', 'bridge-members': [ 'eth0' ] }
		} } },
		luci: { getFeatures: { firewall: true, firewall4: true, ipv6: true, bonding: false, wifi: false, dnsmasq: false, odhcpd: false } },
		'luci-rpc': {
			getBoardJSON: { model: { id: 'x86-64', name: 'mape-rs test bed' }, network: { lan: { device: 'br-lan', protocol: 'static' }, wan: { device: 'eth1', protocol: 'dhcp' } } },
			getNetworkDevices: {
				lo: device('lo', true, 'loopback'), eth0: device('eth0', true, 'ethernet'),
				eth1: device('eth1', true, 'ethernet'), 'br-lan': device('br-lan', true, 'bridge', { ports: [ 'eth0' ] })
			},
			getWirelessDevices: {}, getHostHints: {}, getDSLStatus: {}
		}
	};
}

async function startStandins(file) {
	const p = spawn('ucode', [ path.join(HERE, 'standins.uc'), file, path.join(T, 'standins.log') ], { stdio: [ 'ignore', 'pipe', 'pipe' ] });
	let err = '';
	p.stderr.on('data', (d) => err += d);
	const ready = await new Promise((resolve) => {
		p.stdout.on('data', (d) => { if (/ready/.test(String(d))) resolve(true); });
		p.on('exit', () => resolve(false));
		setTimeout(() => resolve(false), 10000);
	});
	if (!ready)
		throw new Error(`the ubus stand-ins did not start: ${err}`);
	return p;
}

/* The message ids of mape.js (first argument of every _('…') call). */
function mapeMsgids() {
	const src = fs.readFileSync(path.join(REPO, 'files', 'www', 'luci-static', 'resources', 'protocol', 'mape.js'), 'utf8');
	const ids = new Set();
	const re = /\b_\(\s*'((?:[^'\\]|\\.)*)'/g;
	let m;
	while ((m = re.exec(src)) != null)
		ids.add(m[1].replace(/\\(.)/g, '$1').trim().replace(/[ \t\n]+/g, ' '));
	return ids;
}

/* The msgids whose Japanese translation is the msgid itself ("PSID", the protocol's name):
 * po2lmo leaves them out of the .lmo (an entry that translates to itself is a no-op), so LuCI
 * shows them as they are, which is the translation. */
function identicalInPo() {
	const po = path.join(REPO, 'po', 'ja', 'mape.po');
	const same = new Set();
	if (!fs.existsSync(po))
		return same;
	const re = /^msgid "((?:[^"\\]|\\.)*)"\nmsgstr "((?:[^"\\]|\\.)*)"$/gm;
	let m;
	while ((m = re.exec(fs.readFileSync(po, 'utf8'))) != null)
		if (m[1] && m[1] == m[2])
			same.add(m[1].replace(/\\(.)/g, '$1'));
	return same;
}

/* ---- the page ---- */

const LONG_NAMES = [ 'mape_10chr', 'mape_11char', 'mape_12chars', 'mape_32_characters_long_name_xyz' ];
/* More names for the device-name comparison; wanmap_v6plus_11's hash needs the 4-digit padding. */
const NAME_SAMPLES = LONG_NAMES.concat([ 'w', 'wan_v6plus_backup', 'wanmap_v6plus_11', 'Upper_Case_and_digits_0123456789' ]);
/* A field's input: its id, or for checkboxes (ui.Checkbox) the data-widget-id of the box. */
const widget = (sid, name) => `:is([id="widget.cbid.network.${sid}.${name}"], [data-widget-id="widget.cbid.network.${sid}.${name}"])`;
const row = (sid) => `.cbi-section-table-row[data-sid="${sid}"]`;
/* A screenshot of the page once LuCI's dialog has faded in (its overlay's opacity transition):
 * taken during the fade, the page behind shows through the form. */
async function shot(p, name) {
	await p.waitForFunction(() => {
		const o = document.querySelector('#modal_overlay');
		return !o || getComputedStyle(o).opacity === '1';
	});
	await p.screenshot({ path: path.join(SHOTS, name), fullPage: true });
}

const MODAL = '#modal_overlay .modal';

class View {
	constructor(ctx, base, user, lang) {
		this.ctx = ctx;
		this.url = `${base}/cgi-bin/luci/admin/network/network?user=${user}&lang=${lang}`;
		this.errors = [];
	}

	async open() {
		this.page = await this.ctx.newPage();
		this.page.setDefaultTimeout(15000);
		this.page.on('pageerror', (e) => this.errors.push(String(e && e.stack || e)));
		this.page.on('console', (m) => {
			if (m.type() === 'error')
				this.errors.push(m.text());
			if (VERBOSE)
				log(`[console.${m.type()}] ${m.text()}`);
		});
		await this.page.goto(this.url);
		await this.loaded();
		return this.page;
	}

	async loaded() {
		await this.page.waitForSelector(row('wanmap'), { timeout: 30000 });
	}

	/* Opens the edit dialog of an interface and waits for its protocol options. */
	async edit(sid, marker) {
		await this.page.click(`${row(sid)} .cbi-button-edit`);
		await this.page.waitForSelector(`${MODAL} ${marker}`);
	}

	async closeModal() {
		await this.page.click(`${MODAL} .cbi-button:has-text("Dismiss")`);
		await this.page.waitForSelector(MODAL, { state: 'detached' }).catch(() => {});
		await this.page.waitForFunction(() => !document.body.classList.contains('modal-overlay-active'));
	}

	/* Shows the tab of the dialog holding a field. */
	async showField(sid, name) {
		const tab = await this.page.evaluate((sel) => {
			const el = document.querySelector(sel);
			const pane = el && el.closest('[data-tab]');
			return pane ? pane.getAttribute('data-tab') : null;
		}, `${MODAL} ${widget(sid, name)}`);
		if (tab)
			await this.page.click(`${MODAL} .cbi-tabmenu > li[data-tab="${tab}"] > a`);
	}

	async type(sid, name, value) {
		await this.showField(sid, name);
		const el = this.page.locator(`${MODAL} ${widget(sid, name)}`);
		await el.fill(value);
		await el.press('End');
		await el.blur();
	}

	async select(sid, name, value) {
		await this.showField(sid, name);
		await this.page.selectOption(`${MODAL} ${widget(sid, name)}`, value);
	}

	async setFlag(sid, name, on) {
		await this.showField(sid, name);
		await this.page.locator(`${MODAL} ${widget(sid, name)}`).setChecked(on, { force: true });
	}

	/* Value, validity and error text of the dialog's widgets (LuCI's own ui elements). */
	fields(sid, names) {
		return this.page.evaluate(([sid, names]) => {
			const out = {};
			for (const n of names) {
				/* ui.Textfield/Select put the id "widget.<cbid>" on the input, ui.Checkbox and
				 * ui.Dropdown the id "<cbid>" on their frame */
				const cbid = `cbid.network.${sid}.${n}`;
				const el = document.getElementById(`widget.${cbid}`) || document.getElementById(cbid);
				const inst = el && L.dom.findClassInstance(el);
				const frame = el && el.closest('.cbi-value');
				out[n] = el ? {
					value: inst ? inst.getValue() : el.value,
					valid: inst ? inst.isValid() : null,
					error: inst && inst.getValidationError ? inst.getValidationError() : null,
					visible: !!(frame && !frame.classList.contains('hidden'))
				} : null;
			}
			return out;
		}, [ sid, names ]);
	}

	/* The MAP-E status box: field -> text (repeated fields joined by newlines). */
	statusBox() {
		return this.page.evaluate((sel) => {
			const box = document.querySelector(sel);
			if (!box)
				return null;
			const rv = { live: box.getAttribute('data-mape-live'), text: box.textContent, fields: {} };
			box.querySelectorAll('[data-mape-field]').forEach((td) => {
				const k = td.getAttribute('data-mape-field');
				rv.fields[k] = (rv.fields[k] != null) ? rv.fields[k] + '\n' + td.textContent : td.textContent;
			});
			const taken = box.querySelector('[data-mape-taken]');
			rv.taken = taken ? taken.getAttribute('data-mape-taken').split(' ') : [];
			return rv;
		}, `${MODAL} .mape-status-box`);
	}

	async saveModal() {
		await this.page.click(`${MODAL} .cbi-button-positive`);
		await this.page.waitForFunction(() => !document.body.classList.contains('modal-overlay-active'));
	}

	close() {
		return this.page.close();
	}
}

function sessionDir(sid) {
	return `/var/run/rpcd/uci-${sid}`;
}

async function waitFor(fn, ms) {
	const end = Date.now() + (ms || 15000);
	for (;;) {
		const v = await fn();
		if (v || Date.now() > end)
			return v;
		await new Promise((r) => setTimeout(r, 200));
	}
}

async function main() {
	fs.mkdirSync(SHOTS, { recursive: true });
	fs.mkdirSync(STATE_DIR, { recursive: true });

	/* ---- the backend: what the handler would have set up, from its dry run ---- */

	const setup = dryRunSetup('wanmap', { tunlink: 'wan6', isp: 'v6plus' }, STATE_DIR);
	const update = setup.report && (setup.report.calls || []).map((c) => c.args).find((a) => a && a.action === 0);
	if (!check('the handler\'s dry-run setup of wanmap (v6plus on wan6) succeeds', setup.status === 0 && update, setup.stderr))
		return;
	check('it wrote its state file /var/run/mape/wanmap.json', fs.existsSync(`${STATE_DIR}/wanmap.json`));
	const nft = run('nft', [ '-f', '-' ], setup.report.nft);
	check('its nft table mape_wanmap loads into the test\'s network namespace (real nft)', nft.status === 0, nft.stderr);

	const ifnames = {};
	for (const n of NAME_SAMPLES) {
		const r = dryRunSetup(n, { tunlink: 'wan6', isp: 'v6plus' });
		ifnames[n] = r.report && r.report.ifname;
	}
	check('the handler names the tunnels map-<name> up to 15 bytes, shortened beyond',
		ifnames.mape_10chr == 'map-mape_10chr' && ifnames.mape_11char == 'map-mape_11char' &&
		/^map-mape_1_[0-9a-f]{4}$/.test(ifnames.mape_12chars) && /^map-mape_3_[0-9a-f]{4}$/.test(ifnames.mape_32_characters_long_name_xyz), ifnames);

	const decl = JSON.parse(run('/usr/sbin/mape', [ 'netifd', 'dump' ]).stdout || '{}');
	const handler = (noDevice) => ({ no_device: noDevice, init_available: false, renew_available: false, force_link_default: false, no_device_config: false, no_proto_task: false });
	const handlers = {
		static: handler(false), dhcp: handler(false), dhcpv6: handler(false), map: handler(true),
		mape: Object.assign(handler(!!decl['no-device']), { no_proto_task: !!decl['no-proto-task'] })
	};
	const up = (iface, proto, dev, v4) => Object.assign(downEntry(iface, proto), {
		up: true, uptime: 3600, device: dev, l3_device: dev, 'ipv4-address': v4 ? [ v4 ] : [] });
	const interfaces = [
		up('loopback', 'static', 'lo', { address: '127.0.0.1', mask: 8 }),
		up('lan', 'static', 'br-lan', { address: '192.168.1.1', mask: 24 }),
		up('wan', 'dhcp', 'eth1'),
		WAN6,
		dumpEntry('wanmap', update),
		downEntry('oldmap', 'map', [ 'NO_MATCHING_PD' ])
	].concat(LONG_NAMES.map((n) => downEntry(n, 'mape', [ 'NO_PREFIX' ])));
	const repliesFile = path.join(T, 'replies.json');
	fs.writeFileSync(repliesFile, JSON.stringify(replies(interfaces, handlers)));
	const standins = await startStandins(repliesFile);

	/* ---- the rpcd plugin, through the real rpcd ---- */

	const sig = run('ubus', [ '-v', 'list', 'mape' ]).stdout;
	check('rpcd registered /usr/libexec/rpcd/mape as ubus object mape: status {interface: string, top: integer}, config {interface: string}',
		/"status":\{"interface":"String","top":"Integer"\}/.test(sig) && /"config":\{"interface":"String"\}/.test(sig), sig);

	const direct = await ubus('mape', 'status', { interface: 'wanmap' });
	const d = direct.data || {};
	const dw = (d.interfaces || [])[0] || {};
	check('ubus call mape status {"interface":"wanmap"} answers wanmap (found through ubus, mapping, nft table)',
		direct.status === 0 && d.interfaces.length == 1 && dw.interface == 'wanmap' && dw.origin == 'ubus' &&
		dw.ipv4 == '106.72.63.108' && dw.psid == 212 && dw.nft && dw.nft.present === true, direct);
	const cli = JSON.parse(run('/usr/sbin/mape', [ 'status', '--json', 'wanmap' ]).stdout || '{}');
	const noTime = (v) => Object.assign({}, v, { time: 0 });
	eq('its reply is the object `mape status --json wanmap` prints (but the time)', noTime(d), noTime(cli));

	const all = await ubus('mape', 'status', {});
	eq('with {} it lists every MAP-E interface (ubus, state files, nft)', ((all.data || {}).interfaces || []).map((i) => i.interface).sort(),
		[ 'mape_10chr', 'mape_11char', 'mape_12chars', 'mape_32_characters_long_name_xyz', 'wanmap' ]);

	const conf = await ubus('mape', 'config', { interface: 'oldmap' });
	check('ubus call mape config {"interface":"oldmap"}: its committed section (proto map, the rule)',
		conf.status === 0 && conf.data && conf.data.values && conf.data.values.proto == 'map' && conf.data.values.ealen == '25', conf);
	for (const [ args, re ] of [
		[ { interface: 'nosuch' }, /^config "nosuch": no such interface in \/etc\/config\/network/ ],
		[ { interface: 'wan6 x' }, /"interface" must be an interface name/ ]
	]) {
		const r = await ubus('mape', 'config', args);
		check(`config ${JSON.stringify(args)}: a JSON object with one error text`,
			r.status === 0 && r.data && Object.keys(r.data).join() == 'error' && re.test(r.data.error), r);
	}

	for (const [ args, re ] of [
		[ { interface: 'nosuch' }, /^status "nosuch": no such MAP-E interface/ ],
		[ { top: 'x' }, /argument "top" must be a whole number from 0 to 1000, not "x"/ ],
		[ { iface: 'wanmap' }, /unknown argument "iface"/ ],
		[ { interface: 7 }, /"interface" must be an interface name .*, not 7$/ ]
	]) {
		const r = await ubus('mape', 'status', args);
		check(`status ${JSON.stringify(args)}: a JSON object with one error text, through rpcd`,
			r.status === 0 && r.data && Object.keys(r.data).join() == 'error' && re.test(r.data.error), r);
	}

	/* ---- the HTTP side: uhttpd-style /ubus/ with rpcd's session ACLs ---- */

	const server = new Server({
		htdocs: [
			path.join(REPO, 'files', 'www'),
			path.join(LUCI, 'modules', 'luci-base', 'htdocs'),
			path.join(LUCI, 'modules', 'luci-mod-network', 'htdocs'),
			path.join(LUCI, 'protocols', 'luci-proto-ipv6', 'htdocs'),
			path.join(LUCI, 'themes', 'luci-theme-bootstrap', 'htdocs')
		],
		testdir: HERE, lmoDump: path.join(T, 'lmo-dump'), lmoDir: path.join(T, 'lmo'),
		applyRollback: 30, log, verbose: VERBOSE
	});
	const base = await server.listen();
	const rootSid = await server.login('root', PASSWORD);
	const viewerSid = await server.login('viewer', PASSWORD);

	const post = async (body) => (await fetch(`${base}/ubus/`, { method: 'POST', body: JSON.stringify(body) })).json();
	const call = (sid, object, method, args) => post({ jsonrpc: '2.0', id: 7, method: 'call', params: [ sid, object, method, args ] });
	let r = await call(rootSid, 'mape', 'status', { interface: 'wanmap' });
	check('POST /ubus/ as root (ACL luci-proto-mape granted): [0, status of wanmap]',
		r.result && r.result[0] === 0 && r.result[1].interfaces[0].interface == 'wanmap', r);
	r = await call(viewerSid, 'mape', 'status', { interface: 'wanmap' });
	eq('POST /ubus/ as a login without luci-proto-mape: access denied (-32002)', r.error, { code: -32002, message: 'Access denied' });
	r = await call(viewerSid, 'uci', 'get', { config: 'network', section: 'wanmap' });
	check('… while that login may read the network configuration (the denial is our ACL, not the login)',
		r.result && r.result[0] === 0 && r.result[1].values.proto == 'mape', r);
	r = await call('0123456789abcdef0123456789abcdef', 'mape', 'status', {});
	eq('POST /ubus/ with an unknown session: access denied', r.error && r.error.code, -32002);
	r = await call(rootSid, 'mape', 'status', { ubus_rpc_session: rootSid });
	eq('a caller cannot pass its own ubus_rpc_session (-32602, as uhttpd)', r.error && r.error.code, -32602);

	/* ---- Japanese catalogue: LuCI's base.po through po2lmo, plus ours when given ---- */

	const lmoDir = path.join(T, 'lmo');
	fs.mkdirSync(lmoDir, { recursive: true });
	const po2lmo = run(path.join(USERLAND, 'bin', 'po2lmo'), [ path.join(LUCI, 'modules', 'luci-base', 'po', 'ja', 'base.po'), path.join(lmoDir, 'base.ja.lmo') ]);
	check('po2lmo compiles luci-base\'s po/ja/base.po', po2lmo.status === 0, po2lmo.stderr);
	const ours = (process.env.MAPE_LUCI_LMO || '').split(':').filter((f) => f);
	ours.forEach((f, i) => fs.copyFileSync(f, path.join(lmoDir, `mape${i || ''}.ja.lmo`)));
	const src = path.join(LUCI, 'modules', 'luci-base', 'src');
	const cc = run('cc', [ '-O1', '-I', path.join(src, 'lib'), '-o', path.join(T, 'lmo-dump'),
		path.join(HERE, 'lmo-dump.c'), path.join(src, 'lib', 'lmo.c'), path.join(src, 'lib', 'plural_formula.c') ]);
	check('lmo-dump builds against LuCI\'s own lmo.c', cc.status === 0, cc.stderr);

	/* ---- the browser ---- */

	const browser = await chromium.launch({
		executablePath: CHROMIUM, headless: true, timeout: 60000,
		args: [ '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-dev-shm-usage',
		        '--disable-background-networking', '--disable-component-update', '--disable-sync' ]
	});
	const views = [];
	const newView = async (user, lang) => {
		const ctx = await browser.newContext({ viewport: { width: 1280, height: 1400 } });
		const v = new View(ctx, base, user, lang);
		views.push(v);
		await v.open();
		return v;
	};

	try {
		await runUi(newView, server, { rootSid, ifnames, update, setup, ours });
	}
	finally {
		for (const v of views)
			check(`no uncaught errors or console errors in the page (${v.url.replace(/^.*\?/, '')})`, v.errors.length === 0, v.errors.join('\n    '));
		const unanswered = server.calls.filter((c) => c.reply && c.reply.error && c.reply.error.code == -32000);
		check('every ubus object LuCI called exists (real or stand-in)', unanswered.length === 0,
			unanswered.map((c) => `${c.object}.${c.method}`).join(', '));
		const denied = server.calls.filter((c) => c.user == 'root' && c.reply && c.reply.error && c.reply.error.code == -32002);
		check('rpcd allowed every call of the root login', denied.length === 0, denied.map((c) => `${c.object}.${c.method}`).join(', '));
		check('no request for a missing file', server.notFound.length === 0, server.notFound.join(', '));
		await browser.close();
		server.close();
		standins.kill();
	}
}

async function runUi(newView, server, ctx) {
	const { rootSid, ifnames, update, ours } = ctx;

	/* ---- the overview ---- */

	let v = await newView('root', 'en');
	let p = v.page;

	const wanmapRow = await p.locator(row('wanmap')).textContent();
	check('the overview shows wanmap as "MAP-E (mape-rs)" with its IPv4 address and tunnel device',
		/MAP-E \(mape-rs\)/.test(wanmapRow) && /106\.72\.63\.108/.test(wanmapRow) && /map-wanmap/.test(wanmapRow), wanmapRow);

	const luciNames = await p.evaluate((names) => L.require('network').then((network) =>
		Promise.all(names.map((n) => network.getNetwork(n).then((ifc) => ifc ? ifc.getIfname() : null)))), LONG_NAMES);
	eq('mape.js names the tunnel of an interface that is down as the handler does (10, 11, 12, 32 characters)',
		luciNames, LONG_NAMES.map((n) => ifnames[n]));
	eq('… and for names of 1 to 32 characters (mape.js ifnameFor against the binary\'s ifname_for)',
		await p.evaluate((names) => L.require('network').then((network) => names.map((n) => network.getProtocol('mape', n).getIfname())), NAME_SAMPLES),
		NAME_SAMPLES.map((n) => ifnames[n]));
	const boxes = await Promise.all(LONG_NAMES.map((n) => p.locator(`${row(n)} [data-name="_ifacebox"]`).textContent()));
	check('the overview shows those device names', LONG_NAMES.every((n, i) => boxes[i].includes(ifnames[n])), boxes);

	/* ---- the edit dialog: status from data.mape and from rpcd ---- */

	await v.edit('wanmap', '.mape-status-box');
	let st = await v.statusBox();
	const m = update.data.mape;
	eq('the dialog shows the mapping (data.mape): IPv4, PSID, ports, CE, BR',
		[ st.fields.ipv4, st.fields.psid, st.fields.ports, st.fields.ce, st.fields.br ],
		[ m.ipv4, '212 (0xd4; PSID length 8, offset 4)',
		  '7488-7503, 11584-11599, 15680-15695, …, 64832-64847 (240 ports in 15 sets)', m.ce, m.br ]);

	const live = ((await ubus('mape', 'status', { interface: 'wanmap' })).data.interfaces || [])[0];
	eq('… and the live status read through rpcd: state, ports in use and every warning of `mape status`',
		[ st.live, st.fields.level, st.fields.usage,
		  (st.fields['live-warning'] || '').split('\n').filter((x) => x).map((w) => w.replace(/:.*/, '')) ],
		[ 'ok', { ok: 'working', warning: 'working, with warnings', down: 'not working' }[live.level],
		  `${live.ports.in_use} of ${live.port_count} (${live.ports.usage_percent}%), ${live.ports.connections} flows from ${live.ports.hosts} hosts`,
		  live.warnings.map((w) => w.code) ]);
	const statusCalls = server.calls.filter((c) => c.object == 'mape' && c.method == 'status' && c.user == 'root');
	check('mape.js asked rpcd for it: POST /ubus/ mape.status, answered with status 0',
		statusCalls.some((c) => c.reply.result && c.reply.result[0] === 0 && c.reply.result[1].interfaces.some((i) => i.interface == 'wanmap')), statusCalls);
	await shot(p, 'luci-en-status.png');

	/* It is computed when asked: take the nft table away, let the dialog's poll run. */
	run('nft', [ 'delete', 'table', 'ip', 'mape_wanmap' ]);
	await p.evaluate(() => L.require('poll').then((poll) => Promise.all(poll.queue.map((e) => e.fn()))));
	st = await waitFor(async () => { const s = await v.statusBox(); return /TABLE_MISSING/.test(s.fields['live-warning'] || '') && s; }, 5000);
	check('the open dialog\'s refresh shows a table removed meanwhile (TABLE_MISSING, level down)',
		st && st.fields.level == 'not working', st);
	run('nft', [ '-f', '-' ], ctx.setup.report.nft);
	await v.closeModal();

	/* ---- fill, validate, save ---- */

	await v.edit('wanmap', widget('wanmap', 'isp'));
	/* The ISP list comes from mape's compiled table through rpcd (`mape rpcd call isps`): every
	 * ISP of data/mape-rules-jp.json, with its label, between auto and none. */
	const isps = JSON.parse(run('/usr/sbin/mape', [ 'rules', '--isps', '--json' ]).stdout);
	const ispOptions = await p.$$eval(`${MODAL} ${widget('wanmap', 'isp')} option`,
		(os) => os.map((o) => [ o.value, o.textContent.trim() ]));
	eq('the ISP list is mape\'s own: auto, every built-in ISP with its label, none',
		ispOptions.map((o) => o[0]), [ 'auto' ].concat(isps.map((i) => i.id), [ 'none' ]));
	eq('… with the labels the ISPs write', ispOptions.slice(1, -1).map((o) => o[1]), isps.map((i) => i.label));
	await v.select('wanmap', 'isp', 'none');
	const rule = { peeraddr: '2404:9200:225:100::64', ipaddr: '106.72.0.0', ip4prefixlen: '15', ip6prefix: '240b:10::',
		ip6prefixlen: '31', ealen: '25', psidlen: '8', offset: '4' };
	for (const [ k, val ] of Object.entries(rule))
		await v.type('wanmap', k, val);
	await v.setFlag('wanmap', 'legacymap', true);
	await v.type('wanmap', 'psid', '212');
	let f = await v.fields('wanmap', [ 'psid' ]);
	check('a PSID that is not left-aligned is refused with the value it should be', f.psid && f.psid.valid === false &&
		/PSID 212 is written 54272/.test(f.psid.error), f.psid);
	await v.type('wanmap', 'psid', '54272');
	await v.type('wanmap', 'mtu', '1460');
	f = await v.fields('wanmap', Object.keys(rule).concat([ 'psid', 'mtu', 'isp', 'legacymap' ]));
	eq('the explicit v6plus rule validates in LuCI\'s own form', Object.keys(f).filter((k) => !f[k] || !f[k].valid), []);
	await v.saveModal();
	const staged = uciShow('network.wanmap', sessionDir(rootSid));
	/* multipath: interfaces.js's own option, written as "off" for every interface it saves */
	eq('Save stages the rule in rpcd (real uci, the session\'s delta)', staged, Object.assign({ proto: 'mape', isp: 'none', tunlink: 'wan6' },
		rule, { psid: '54272', legacymap: '1', mtu: '1460', multipath: 'off' }));
	eq('… nothing is committed yet', uciShow('network.wanmap').isp, 'v6plus');

	/* ---- switching an interface from map to mape ---- */

	const before = uciShow('network.oldmap');
	await v.edit('oldmap', widget('oldmap', 'maptype'));
	await v.select('oldmap', 'proto', 'mape');
	await p.click(`${MODAL} [data-name="_switch_proto"] button`);
	await p.waitForSelector(`${MODAL} ${widget('oldmap', 'isp')}`);
	const dropped = uciShow('network.oldmap', sessionDir(rootSid));
	eq('LuCI\'s switch deletes every option the map page showed (and the common ones)', dropped, { proto: 'mape' });
	st = await v.statusBox();
	const carry = [ 'tunlink', 'peeraddr', 'ipaddr', 'ip4prefixlen', 'ip6prefix', 'ip6prefixlen', 'ealen', 'psidlen', 'offset',
		'legacymap', 'mtu', 'ttl', 'defaultroute', 'metric', 'auto' ];
	eq('mape.js takes them over from the committed configuration and says so', st.taken.slice().sort(), carry.slice().sort());
	check('an interface the plugin does not know yet gets no live-status error', st.fields['live-error'] === undefined, st.fields);
	f = await v.fields('oldmap', [ 'isp', 'peeraddr', 'ip6prefixlen', 'tunlink', 'mtu', 'legacymap', 'defaultroute', 'metric' ]);
	eq('the mape form shows them: isp none, the rule, tunlink, mtu, flags, metric',
		Object.fromEntries(Object.entries(f).map(([ k, x ]) => [ k, x && x.value ])),
		{ isp: 'none', peeraddr: before.peeraddr, ip6prefixlen: before.ip6prefixlen, tunlink: 'wan6', mtu: '1460',
		  legacymap: '1', defaultroute: '0', metric: '20' });
	await v.saveModal();
	const switched = uciShow('network.oldmap', sessionDir(rootSid));
	/* auto '1' is LuCI's default: saved as absent; multipath "off" as above */
	const kept = Object.assign({}, before, { proto: 'mape', isp: 'none', multipath: 'off' });
	delete kept.maptype;
	delete kept.auto;
	eq('after Save the switched interface keeps all but maptype', switched, kept);

	/* ---- new interfaces: LuCI's name limit ---- */

	await p.click('.cbi-section-create .cbi-button-add');
	await p.waitForSelector(`${MODAL} ${widget('_new_', 'name')}`);
	await p.selectOption(`${MODAL} ${widget('_new_', 'proto')}`, 'mape');
	for (const [ name, ok ] of [ [ 'newmape_11c', false ], [ 'newmape_10', true ] ]) {
		const el = p.locator(`${MODAL} ${widget('_new_', 'name')}`);
		await el.fill(name);
		await el.press('End');
		await el.blur();
		f = await v.fields('_new_', [ 'name' ]);
		check(ok ? 'the Add dialog accepts a 10-character name for proto mape'
			: 'LuCI\'s Add dialog refuses an 11-character name for any "<proto>-<name>" over 15 characters (documented)',
			f.name && f.name.valid === ok && (ok || /too long/.test(f.name.error)), f.name);
	}
	await p.click(`${MODAL} .cbi-button-positive`);
	await p.waitForSelector(`${MODAL} ${widget('newmape_10', 'isp')}`);
	await v.saveModal();
	eq('the new interface is staged as proto mape with the form\'s defaults', uciShow('network.newmape_10', sessionDir(rootSid)),
		{ proto: 'mape', isp: 'auto', tunlink: 'wan6', multipath: 'off' });

	/* ---- Save & Apply: rpcd commits to /etc/config/network ---- */

	await p.click('.cbi-page-actions .cbi-button-apply');
	const committed = await waitFor(() => uciShow('network.wanmap').isp == 'none' && uciShow('network.oldmap').proto == 'mape', 20000);
	check('Save & Apply commits through rpcd (uci apply with rollback, then confirm)', committed);
	eq('/etc/config/network: wanmap (read back with the real uci)', uciShow('network.wanmap'), staged);
	eq('/etc/config/network: oldmap', uciShow('network.oldmap'), kept);
	eq('/etc/config/network: newmape_10', uciShow('network.newmape_10'), { proto: 'mape', isp: 'auto', tunlink: 'wan6', multipath: 'off' });
	await p.waitForFunction(() => !document.querySelector('.alert-message.notice.spinning'), null, { timeout: 20000 }).catch(() => {});
	await p.waitForSelector(row('wanmap'));
	await v.close();

	/* ---- a login without our ACL ---- */

	v = await newView('viewer', 'en');
	await v.edit('wanmap', '.mape-status-box');
	st = await v.statusBox();
	check('without luci-proto-mape the dialog still shows the mapping and says the live status was denied',
		st.live == 'error' && st.fields.ipv4 == '106.72.63.108' && /luci-proto-mape/.test(st.fields['live-error'] || ''), st);
	await v.close();

	/* ---- Japanese ---- */

	v = await newView('root', 'ja');
	p = v.page;
	await v.edit('wanmap', '.mape-status-box');
	const tr = await p.evaluate(() => window.__mapeI18n);
	check(`LuCI's Japanese catalogue is loaded (${server.catalogues.ja} entries from .lmo) and used by LuCI's own strings`,
		server.catalogues.ja > 1000 && tr['General Settings'] && tr['General Settings'].translated &&
		/一般設定|基本設定/.test(await p.locator(`${MODAL} .cbi-tabmenu`).textContent()), tr['General Settings']);
	const ids = mapeMsgids();
	const used = Object.keys(tr).filter((k) => ids.has(k));
	const same = identicalInPo();
	const untranslated = used.filter((k) => !tr[k].translated && !same.has(k));
	log(`mape.js strings in this dialog: ${used.length}, translated: ${used.length - untranslated.length}`);
	if (ours.length) {
		eq('with our catalogue (MAPE_LUCI_LMO) no string of our form is untranslated', untranslated, []);
		const missing = await p.evaluate((all) => all.filter((k) => !(window.TR && TR[sfh(k)])),
			[ ...ids ].filter((k) => !same.has(k)));
		eq('… and every string of mape.js has a Japanese entry', missing, []);
	}
	else {
		check('without our catalogue the untranslated-string check finds mape.js strings (its negative control)',
			used.length > 20 && untranslated.length > 0, { used: used.length, untranslated: untranslated.length });
		log('MAPE_LUCI_LMO not set: our own Japanese catalogue is not checked');
	}
	await shot(p, 'luci-ja-status.png');
	log(`screenshots: ${SHOTS}/luci-en-status.png, ${SHOTS}/luci-ja-status.png`);
	await v.close();
}

finish(main());
