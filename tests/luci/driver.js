#!/usr/bin/env node
/*
 * Unit checks of mape.js (part 1 of tests/luci/run.sh; docs/luci.md): drives
 * tests/luci/index.html in headless Chromium (playwright-core, the Debian
 * chromium binary): serves files/www (the router's /www) and this directory
 * over HTTP on 127.0.0.1, lets the page load
 * /luci-static/resources/protocol/mape.js through the stand-in class loader
 * (stubs/: not LuCI's code), renders the interface form, types into it like a
 * user and checks the validation errors, the UCI values the form writes, the
 * status rendering and the map -> mape take-over. What real LuCI, rpcd and uci
 * do with it is part 2 (tests/luci/real).
 *
 * Prints "ok - …" / "not ok - …" per check and a final "N passed, M failed";
 * exits 1 when anything failed.
 *
 * Environment: CHROMIUM (default /usr/bin/chromium), LUCI_TEST_VERBOSE=1.
 */
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const http = require('http');
const { chromium } = require('playwright-core');
const { check, eq, finish } = require('./tap.js');

const REPO = path.resolve(__dirname, '..', '..');
const WWW = path.join(REPO, 'files', 'www');
const HERE = __dirname;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const SID = 'wanmap';

/* ---- static server ---- */

const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'application/javascript; charset=utf-8', '.css': 'text/css' };

function serve(req, res) {
	const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
	let root, rel;

	if (url.startsWith('/test/'))
		root = HERE, rel = url.slice('/test/'.length);
	else if (url.startsWith('/luci-static/'))
		root = WWW, rel = url.slice(1);
	else
		return res.writeHead(404).end();

	const file = path.resolve(root, rel);

	if (!file.startsWith(root + path.sep) || rel.includes('node_modules') || !fs.existsSync(file) || !fs.statSync(file).isFile())
		return res.writeHead(404).end();

	res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
	fs.createReadStream(file).pipe(res);
}

/* ---- page helpers ---- */

/* The built-in ISPs (id, label) of data/mape-rules-jp.json: mape.js gets its ISP list from
 * mape (rpcd `mape isps`), never from its own source. */
const ISPS = JSON.parse(fs.readFileSync(path.join(REPO, 'data', 'mape-rules-jp.json'), 'utf8'))
	.isps.map((i) => ({ id: i.id, label: i.label }));
const widget = (name) => `[id="widget.cbid.network.${SID}.${name}"]`;

async function main() {
	const mapeJs = path.join(WWW, 'luci-static', 'resources', 'protocol', 'mape.js');
	const syntax = require('child_process').spawnSync(process.execPath, [ '--check', mapeJs ], { encoding: 'utf8' });
	check('node --check mape.js', syntax.status === 0, (syntax.stderr || '').trim());

	const server = http.createServer(serve);
	await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
	const base = `http://127.0.0.1:${server.address().port}`;

	const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'mape-luci-chromium-'));
	const context = await chromium.launchPersistentContext(profile, {
		executablePath: CHROMIUM,
		headless: true,
		args: [ '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
		        '--disable-background-networking', '--disable-component-update', '--disable-sync' ],
		timeout: 60000
	});

	const pageErrors = [];

	try {
		const page = context.pages()[0] || await context.newPage();
		page.setDefaultTimeout(5000);
		page.on('pageerror', (e) => pageErrors.push(String(e && e.stack || e)));
		page.on('console', (m) => {
			if (m.type() === 'error')
				pageErrors.push(m.text());
			if (process.env.LUCI_TEST_VERBOSE)
				console.log(`    [console.${m.type()}] ${m.text()}`);
		});

		// What `mape rpcd call isps` answers: the ISPs of the data file, in order.
		await page.addInitScript((isps) => { window.__MAPE_ISPS = isps; }, ISPS);
		await page.goto(`${base}/test/index.html`);

		const loaded = await page.evaluate(() => window.harness.ready.then(() => null, () => window.harness.loadError));
		check('mape.js loads through the LuCI class loader and returns a Protocol class', loaded === null, loaded);
		if (loaded !== null)
			return;

		await runTests(page);
	}
	finally {
		check('no uncaught errors or console errors in the page', pageErrors.length === 0, pageErrors.join('\n    '));
		await context.close();
		server.close();
		fs.rmSync(profile, { recursive: true, force: true });
	}
}

async function runTests(page) {
	const render = (opts) => page.evaluate((o) => window.harness.render(o), opts || {});
	const fields = () => page.evaluate(() => window.harness.fields());
	const save = () => page.evaluate(() => window.harness.save());

	/* Type like a user: the value, a key press (keyup validates), leave the
	 * field (blur validates, change re-checks dependencies). */
	async function type(name, value) {
		const el = page.locator(widget(name));
		await el.fill(value);
		await el.press('End');
		await el.blur();
	}

	const select = async (name, value) => page.locator(widget(name)).selectOption(value);
	const setFlag = async (name, on) => page.locator(widget(name)).setChecked(on);

	/* ---- the protocol class ---- */

	const info = await page.evaluate(() => window.harness.protocolInfo());
	eq('label is "MAP-E (mape-rs)"', info.i18n, 'MAP-E (mape-rs)');
	eq('package name is mape-rs (getPackageName and getOpkgPackage)', [ info.packageName, info.opkgPackage ], [ 'mape-rs', 'mape-rs' ]);
	eq('floating and virtual like map.js', [ info.floating, info.virtual, info.devices ], [ true, true, null ]);
	eq('L3 device is map-<section>', [ info.ifname, info.device ], [ 'map-wanmap', 'map-wanmap' ]);
	eq('map-<section> is registered as a virtual (tunnel) device', [ info.virtualPattern, info.deviceType ], [ true, 'tunnel' ]);
	eq('containsDevice matches map-<section> only', [ info.containsOwn, info.containsOther ], [ true, false ]);
	check('isCreateable: any name up to the handler\'s 32 characters, not 33', info.createShort === null && info.create32 === null &&
		typeof info.create33 == 'string' && info.create33.includes('32'), info);

	/* Device names of interfaces that are down, as src/render/netifd.rs ifname_for gives them
	 * (values from the Rust function; the real-LuCI test compares against the binary). */
	eq('tunnel names: map-<name> up to 15 bytes, else map-<first 6>_<FNV-1a low 16 bits, 4 hex digits>',
		await page.evaluate((n) => window.harness.ifnames(n), [ 'wanmap', 'mape_11char', 'mape_12chars', 'wan_v6plus_backup', 'wanmap_v6plus_11' ]),
		[ 'map-wanmap', 'map-mape_11char', 'map-mape_1_46d3', 'map-wan_v6_c715', 'map-wanmap_00fd' ]);

	/* Every code the handler can report, read from its single list in src/render/netifd.rs,
	 * must have a registered text: a code added there without a text here fails this check. */
	const rustCodes = fs.readFileSync(path.join(REPO, 'src', 'render', 'netifd.rs'), 'utf8')
		.match(/pub const ALL: &\[&str\] = &\[([^\]]*)\]/);
	const codes = rustCodes ? rustCodes[1].split(',').map((c) => c.trim()).filter((c) => c) : [];
	check('the handler\'s error-code list was found (src/render/netifd.rs codes::ALL)', codes.length >= 8, codes);
	const texts = await page.evaluate((c) => window.harness.errorTexts(c), codes);
	check(`all ${codes.length} handler error codes have registered texts`, Array.isArray(texts) && texts.length == codes.length && texts.every((t) => !/^Unknown error/.test(t)), codes.map((c, i) => `${c}: ${texts[i]}`));
	const text = (c) => texts[codes.indexOf(c)] || '';
	check('NO_MATCHING_RULE tells to choose isp none and enter the rule', /no supported ISP/.test(text('NO_MATCHING_RULE')) && /None: explicit rule/.test(text('NO_MATCHING_RULE')), text('NO_MATCHING_RULE'));
	check('NO_PREFIX / NO_MATCHING_PD mention the missing IPv6 prefix', /IPv6 prefix/.test(text('NO_PREFIX')) && /IPv6 prefix/.test(text('NO_MATCHING_PD')), [ text('NO_MATCHING_PD'), text('NO_PREFIX') ]);
	check('INVALID_OPTION and NFT_FAILED are readable', /invalid/.test(text('INVALID_OPTION')) && /nftables/.test(text('NFT_FAILED')), [ text('INVALID_OPTION'), text('NFT_FAILED') ]);

	/* ---- defaults: isp auto ---- */

	const names = await render();
	const explicit = [ 'peeraddr', 'ipaddr', 'ip4prefixlen', 'ip6prefix', 'ip6prefixlen', 'ealen', 'psidlen', 'psid', 'offset', 'legacymap', 'rule' ];
	check('the form has every documented option', [ 'isp', 'tunlink', ...explicit, 'mtu', 'ttl', 'zone', 'encaplimit', 'ports_exclude', 'defaultroute', '_mape_status' ]
		.every((n) => names.includes(n)), names);

	let f = await fields();
	eq('isp defaults to auto', f.isp.value, 'auto');
	eq('isp choices: auto, every ISP of the data file (from mape through rpcd), none', f.isp.choices,
		[ 'auto' ].concat(ISPS.map((i) => i.id), [ 'none' ]));
	eq('… labelled as the ISPs write them', await page.locator(`${widget('isp')} option`).allTextContents(),
		[ 'Automatic (by IPv6 prefix)' ].concat(ISPS.map((i) => i.label), [ 'None: explicit rule' ]));
	eq('isp "none" is labelled "None: explicit rule"', await page.locator(`${widget('isp')} option[value="none"]`).textContent(), 'None: explicit rule');
	eq('explicit rule fields are hidden when isp=auto', explicit.filter((n) => f[n].visible), []);
	check('tunlink lists the other interfaces but not the MAP-E one', f.tunlink.choices.includes('wan6') && f.tunlink.choices.includes('wan') &&
		!f.tunlink.choices.includes(SID), f.tunlink.choices);
	eq('tunlink defaults to wan6', f.tunlink.value, 'wan6');
	eq('advanced placeholders (mtu, ttl, zone, encaplimit)', [ f.mtu.placeholder, f.ttl.placeholder, f.zone.placeholder, f.encaplimit.placeholder ], [ '1460', '64', 'wan', 'ignore' ]);
	eq('defaultroute is on by default', f.defaultroute.value, '1');

	let r = await save();
	eq('saving the untouched form writes isp auto and tunlink wan6 only', r.values, { proto: 'mape', isp: 'auto', tunlink: 'wan6' });

	await select('isp', 'v6plus');
	r = await save();
	eq('isp v6plus is written', r.values.isp, 'v6plus');

	/* ---- isp none: explicit v6plus rule ---- */

	await render();
	await select('isp', 'none');
	f = await fields();
	eq('explicit rule fields appear when isp=none', explicit.filter((n) => !f[n].visible), []);
	eq('ip4prefixlen defaults to 32', f.ip4prefixlen.value, '32');

	const v6plus = { peeraddr: '2404:9200:225:100::64', ip6prefix: '240b:10::', ip6prefixlen: '31',
		ipaddr: '106.72.0.0', ip4prefixlen: '15', ealen: '25', psidlen: '8', offset: '4' };
	for (const [ k, v ] of Object.entries(v6plus))
		await type(k, v);
	await setFlag('legacymap', true);
	await type('mtu', '1460');
	await type('encaplimit', 'ignore');
	await type('ports_exclude', '5000 5001-5010');
	await type('zone', 'wan');
	await setFlag('defaultroute', false);

	f = await fields();
	eq('the v6plus rule validates', Object.keys(f).filter((n) => f[n].visible && !f[n].valid).map((n) => `${n}: ${f[n].error}`), []);

	r = await save();
	check('the v6plus rule saves', r.ok, r.error);
	eq('UCI values of the explicit v6plus rule', r.values, {
		proto: 'mape', isp: 'none', tunlink: 'wan6', peeraddr: '2404:9200:225:100::64',
		ipaddr: '106.72.0.0', ip4prefixlen: '15', ip6prefix: '240b:10::', ip6prefixlen: '31',
		ealen: '25', psidlen: '8', offset: '4', legacymap: '1', mtu: '1460', zone: 'wan',
		encaplimit: 'ignore', ports_exclude: '5000 5001-5010', defaultroute: '0'
	});

	/* field-level errors, each fixed again afterwards */
	async function expectError(label, name, value, re, fixValue, alsoOn) {
		await type(name, value);
		const s = await fields();
		const on = [ name ].concat(alsoOn || []);
		check(`${label}: error on ${on.join(' and ')}`, on.every((n) => !s[n].valid && re.test(s[n].error)),
			on.map((n) => `${n}: valid=${s[n].valid} error=${JSON.stringify(s[n].error)}`).join('; '));
		const sv = await save();
		check(`${label}: save is refused`, !sv.ok && /invalid input value/.test(sv.error), sv);
		if (fixValue !== undefined) {
			await type(name, fixValue);
			const t = await fields();
			check(`${label}: fixed by ${name}=${JSON.stringify(fixValue)}`, on.every((n) => t[n].valid),
				on.map((n) => `${n}: ${t[n].error}`).join('; '));
		}
	}

	await expectError('offset 10 + psidlen 8', 'offset', '10', /10 \+ PSID length 8 exceed the 16 port bits/, '4', [ 'psidlen' ]);
	await expectError('offset 16', 'offset', '16', /between 0 and 15/, '4');
	await expectError('offset 04 (octal for netifd)', 'offset', '04', /plain decimal/, '4');
	await expectError('psid 212 with psidlen 8', 'psid', '212', /not left-aligned.*PSID 212 is written 54272/, '');
	await expectError('psid 1000 with psidlen 8', 'psid', '1000', /not left-aligned.*multiple of 256/, '');
	await expectError('psid 65536', 'psid', '65536', /between 0 and 65535/, '');
	await expectError('ealen 40 with ip6prefixlen 31', 'ealen', '40', /31 \+ EA-bits length 40 exceed 64/, '25', [ 'ip6prefixlen' ]);
	await expectError('ealen 49', 'ealen', '49', /0 and 48/, '25');
	await expectError('psidlen 7 against ealen 25 and /15', 'psidlen', '7', /contradicts EA-bits length 25 with IPv4 prefix length 15, which give PSID length 8/, '8');
	await expectError('psidlen 17', 'psidlen', '17', /0 and 16/, '8');
	await expectError('ipaddr 106.73.0.0/15 has host bits', 'ipaddr', '106.73.0.0', /Host bits.*IPv4 prefix length 15/, '106.72.0.0');
	await expectError('ipaddr with a mask', 'ipaddr', '106.72.0.0/15', /valid IPv4 address/, '106.72.0.0');
	await expectError('ip6prefix 240b:11:: /31 has host bits', 'ip6prefix', '240b:11::', /Host bits.*IPv6 prefix length 31/, '240b:10::');
	await expectError('ip6prefixlen 65', 'ip6prefixlen', '65', /0 and 64/, '31');
	await expectError('peeraddr not IPv6', 'peeraddr', '192.0.2.1', /valid IPv6 address/, '2404:9200:225:100::64');
	await expectError('peeraddr empty without a rule', 'peeraddr', '', /needs a BR address/, '2404:9200:225:100::64');
	await expectError('ip6prefix empty without a rule', 'ip6prefix', '', /Required unless a rule string/, '240b:10::');
	await expectError('ports_exclude "80-"', 'ports_exclude', '80-', /"80-" is not a port/, '80 443 1000-2000');
	await expectError('ports_exclude "0"', 'ports_exclude', '0', /"0" is not a port/, '65535');
	await expectError('ports_exclude "10-5"', 'ports_exclude', '80 10-5', /"10-5" is not a port/, '5 10-10');
	await expectError('ports_exclude "65536"', 'ports_exclude', '65536', /"65536" is not a port/, '1-65535');
	await expectError('encaplimit 256', 'encaplimit', '256', /"ignore" or a number from 0 to 255/, '4');
	await expectError('encaplimit foo', 'encaplimit', 'foo', /"ignore" or a number/, 'ignore');
	await expectError('mtu 1279', 'mtu', '1279', /1280 and 9000/, '1460');
	await expectError('mtu 9001', 'mtu', '9001', /1280 and 9000/, '9000');
	await expectError('ttl 0', 'ttl', '0', /1 and 255/, '64');
	await expectError('zone with a space', 'zone', 'my zone', /zone name/, 'wan');

	/* left-aligned PSID accepted */
	await type('psid', '54272');
	f = await fields();
	check('psid 54272 (212 left-aligned for psidlen 8) is accepted', f.psid.valid, f.psid.error);
	r = await save();
	check('psid 54272 is saved as written', r.ok && r.values.psid === '54272', r);

	/* an explicit PSID needs a PSID length */
	await type('psidlen', '');
	f = await fields();
	check('psid without psidlen: error on psid', !f.psid.valid && /needs a PSID length/.test(f.psid.error), f.psid);
	await type('psidlen', '8');
	f = await fields();
	check('psid error clears once psidlen is back (cross-field revalidation)', f.psid.valid, f.psid.error);

	/* the default offset counts: RFC 7597 offset 6 + psidlen 12 > 16, legacy 4 + 12 = 16 */
	await render();
	await select('isp', 'none');
	for (const [ k, v ] of Object.entries({ peeraddr: '2001:db8::1', ip6prefix: '2001:db8::', ip6prefixlen: '32', ipaddr: '192.0.2.0', ip4prefixlen: '24', psidlen: '12' }))
		await type(k, v);
	f = await fields();
	check('no offset: default 6 + psidlen 12 is refused', !f.psidlen.valid && /offset 6 \(the default\) \+ PSID length 12/.test(f.psidlen.error), f.psidlen);
	await setFlag('legacymap', true);
	f = await fields();
	check('with the legacy IID the default offset is 4 and psidlen 12 fits', f.psidlen.valid, f.psidlen.error);

	/* ---- rule string ---- */

	const ruleStr = 'type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,psidlen=8,offset=4,br=2404:9200:225:100::64';
	await render();
	await select('isp', 'none');
	await type('ip6prefix', '240b:10::');
	await type('rule', ruleStr);
	f = await fields();
	check('rule string together with rule fields is refused', !f.rule.valid && /either the rule string or the rule fields/.test(f.rule.error), f.rule);
	await type('ip6prefix', '');
	f = await fields();
	eq('a rule string alone validates (no BR, prefix or ipaddr field needed)',
		Object.keys(f).filter((n) => f[n].visible && !f[n].valid).map((n) => `${n}: ${f[n].error}`), []);
	r = await save();
	check('the rule string saves', r.ok, r.error);
	eq('UCI values with a rule string', r.values, { proto: 'mape', isp: 'none', tunlink: 'wan6', ip4prefixlen: '32', rule: ruleStr });
	await expectError('rule with an unknown key', 'rule', 'type=map-e,ipv6prefix=240b:10::,ipv4prefix=106.72.0.0,dmr=2001:db8::/64', /unknown key "dmr"/, ruleStr);
	await expectError('rule of type map-t', 'rule', 'type=map-t,ipv6prefix=240b:10::,ipv4prefix=106.72.0.0', /only type=map-e/, ruleStr);
	await expectError('rule without ipv4prefix', 'rule', 'ipv6prefix=240b:10::,prefix6len=31,br=2404:9200:225:100::64', /ipv4prefix is missing/, ruleStr);
	await type('rule', 'ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15');
	f = await fields();
	check('a rule string without br= needs the BR field', !f.peeraddr.valid && /needs a BR address/.test(f.peeraddr.error), f.peeraddr);

	/* ---- back to auto: hidden values are removed ---- */

	await render({ uci: { isp: 'none', peeraddr: '2404:9200:225:100::64', ip6prefix: '240b:10::', ip6prefixlen: '31',
		ipaddr: '106.72.0.0', ip4prefixlen: '15', ealen: '25', psidlen: '8', offset: '4', legacymap: '1' } });
	f = await fields();
	eq('a stored explicit rule is shown with isp none', [ f.isp.value, f.ealen.visible, f.ealen.value, f.legacymap.value ], [ 'none', true, '25', '1' ]);
	eq('a stored explicit rule validates', Object.keys(f).filter((n) => f[n].visible && !f[n].valid).map((n) => `${n}: ${f[n].error}`), []);
	await select('isp', 'auto');
	f = await fields();
	eq('switching to isp auto hides the explicit fields again', explicit.filter((n) => f[n].visible), []);
	r = await save();
	eq('saving with isp auto removes the explicit rule options', r.values, { proto: 'mape', isp: 'auto', tunlink: 'wan6' });

	/* ---- map -> mape: LuCI's switch deleted the map options; they are taken over ---- */

	const mapCfg = { '.type': 'interface', '.name': SID, proto: 'map', maptype: 'map-e', peeraddr: '2404:9200:225:100::64',
		ipaddr: '106.72.0.0', ip4prefixlen: '15', ip6prefix: '240b:10::', ip6prefixlen: '31', ealen: '25', psidlen: '8',
		offset: '4', legacymap: '1', tunlink: 'wan6', mtu: '1400', ttl: '64', defaultroute: '0' };
	await render({ committed: mapCfg });
	f = await fields();
	eq('after a switch from map (MAP-E) the form shows the rule with isp none, tunlink, mtu, ttl and the flags',
		[ 'isp', 'peeraddr', 'ip4prefixlen', 'ealen', 'legacymap', 'tunlink', 'mtu', 'ttl', 'defaultroute' ].map((n) => f[n].value),
		[ 'none', '2404:9200:225:100::64', '15', '25', '1', 'wan6', '1400', '64', '0' ]);
	check('the status box says what was taken over', /Taken over from the former "map" configuration.*peeraddr/.test(
		await page.locator('[data-mape-taken]').textContent()));
	r = await save();
	eq('… and Save writes them', r.values, { proto: 'mape', isp: 'none', tunlink: 'wan6', peeraddr: '2404:9200:225:100::64',
		ipaddr: '106.72.0.0', ip4prefixlen: '15', ip6prefix: '240b:10::', ip6prefixlen: '31', ealen: '25', psidlen: '8',
		offset: '4', legacymap: '1', mtu: '1400', ttl: '64', defaultroute: '0' });
	await render({ committed: Object.assign({}, mapCfg, { maptype: 'map-t' }) });
	f = await fields();
	eq('from a MAP-T map interface only tunlink, mtu, ttl and defaultroute are taken over (isp stays auto)',
		[ f.isp.value, f.peeraddr.visible, f.tunlink.value, f.mtu.value, f.defaultroute.value, f.legacymap.value ],
		[ 'auto', false, 'wan6', '1400', '0', '0' ]);
	await render({ committed: { '.type': 'interface', proto: 'mape', isp: 'v6plus', mtu: '1400' } });
	f = await fields();
	eq('an interface committed as mape takes nothing over (the staged values are the user\'s)', [ f.isp.value, f.mtu.value ], [ 'auto', '' ]);
	eq('the dialog asked the rpcd plugin for the status, the committed section of this interface and the ISPs',
		(await page.evaluate(() => window.harness.rpcCalls)).map(JSON.stringify).sort(),
		[ [ 'mape.status', {} ], [ 'mape.config', { interface: SID } ], [ 'mape.isps', {} ] ].map(JSON.stringify).sort());

	/* ---- status ---- */

	const portSets = [];
	for (let k = 1; k < 16; k++) {
		const start = (k << 12) | (212 << 4);
		portSets.push([ start, start + 15 ]);
	}
	const sample = {
		isp: 'v6plus', prefix: '240b:10:3f6c:d400::/56',
		rule: { ipv6_prefix: '240b:10::/31', ipv4_prefix: '106.72.0.0/15', ea_len: 25, psid_offset: 4, psid_len: 8 },
		iid_format: 'draft03', ipv4: '106.72.63.108', ipv4_prefix_len: 32, psid: 212,
		port_sets: portSets, port_count: 240,
		ce: '240b:10:3f6c:d400:6a:483f:6c00:d400', br: '2404:9200:225:100::64',
		warnings: [ 'rule <b>240b:10::/31</b> is unverified' ]
	};

	let st = await page.evaluate((m) => window.harness.statusFor(m), sample);
	eq('status: IPv4', st.fields.ipv4, '106.72.63.108');
	check('status: PSID 212 with length and offset', /^212 \(0xd4; PSID length 8, offset 4\)$/.test(st.fields.psid), st.fields.psid);
	eq('status: ports compact (first 3 … last, count)', st.fields.ports, '7488-7503, 11584-11599, 15680-15695, …, 64832-64847 (240 ports in 15 sets)');
	eq('status: CE', st.fields.ce, '240b:10:3f6c:d400:6a:483f:6c00:d400');
	eq('status: BR', st.fields.br, '2404:9200:225:100::64');
	eq('status: ISP, prefix, rule, IID', [ st.fields.isp, st.fields.prefix, st.fields.rule, st.fields.iid ],
		[ ISPS.find((i) => i.id == 'v6plus').label, '240b:10:3f6c:d400::/56', '240b:10::/31 → 106.72.0.0/15, EA-bits 25', 'draft-03 (legacy)' ]);
	check('status: warnings are shown as text, not HTML', st.fields.warning === 'rule <b>240b:10::/31</b> is unverified' && !/<b>/.test(st.html), st.html);

	st = await page.evaluate((m) => window.harness.statusFor(m), Object.assign({}, sample, {
		isp: null, ipv4: '192.0.2.0', ipv4_prefix_len: 24, psid: null, iid_format: 'rfc7597', warnings: [],
		rule: Object.assign({}, sample.rule, { psid_len: 0 }), port_sets: [], port_count: 65536
	}));
	eq('status without port sharing: prefix IPv4, all ports, explicit rule', [ st.fields.isp, st.fields.ipv4, st.fields.psid, st.fields.ports, st.fields.iid ],
		[ 'explicit rule', '192.0.2.0/24', undefined, 'all ports (no sharing)', 'RFC 7597' ]);

	/* The live status: the interface's object of `mape status --json`, from the rpcd plugin. */
	const entry = { interface: 'wanmap', level: 'warning', port_count: 240,
		ports: { in_use: 200, usage_percent: 83, connections: 215, hosts: 3 },
		warnings: [ { code: 'PORTS_HIGH', message: '200 of 240 ports in use (83%): new flows will start to fail' } ] };
	st = await page.evaluate(([m, e]) => window.harness.statusFor(m, { entry: e }), [ sample, entry ]);
	eq('status: ports in use from the live status', st.fields.usage, '200 of 240 (83%), 215 flows from 3 hosts');
	eq('status: live state and warnings with their code, in the user\'s words', [ st.fields.level, st.fields['live-warning'] ],
		[ 'working, with warnings', 'PORTS_HIGH: 80% or more of the ports are in use: new connections will start to fail' ]);
	st = await page.evaluate((m) => window.harness.statusFor(m), sample);
	check('status without a live status has no usage row', st.fields.usage === undefined && st.fields.level === undefined, st.fields);
	st = await page.evaluate((m) => window.harness.statusFor(m, { error: 'status: needs root' }), sample);
	eq('status: a live-status error is shown as such, the mapping stays', [ st.fields['live-error'], st.fields.ipv4 ], [ 'status: needs root', '106.72.63.108' ]);
	st = await page.evaluate(() => window.harness.statusFor(null, { entry: { interface: 'wanmap', level: 'down', warnings: [ { code: 'NO_PREFIX', message: 'wan6 has no IPv6 prefix' } ] } }));
	check('status of an interface that is down: "not up" and the live warnings', /not up/.test(st.text) &&
		st.fields['live-warning'] == 'NO_PREFIX: wan6 has no IPv6 prefix' && st.fields.level == 'not working', st);

	st = await page.evaluate(() => window.harness.statusFor(null));
	check('status of an interface that is down says so', /not up/.test(st.text), st.text);

	await render({ uci: { isp: 'auto' }, dump: [ { interface: SID, proto: 'mape', up: true, l3_device: 'map-wanmap', data: { zone: 'wan', mape: sample } } ] });
	const box = page.locator('[data-name="_mape_status"]');
	check('the edit form shows the MAP-E status from the interface\'s ubus data', await box.isVisible(), 'status box hidden');
	eq('the form\'s status box shows IPv4, PSID, ports, CE and BR', await box.locator('[data-mape-field]').evaluateAll((tds) =>
		tds.filter((td) => [ 'ipv4', 'psid', 'ports', 'ce', 'br' ].includes(td.dataset.mapeField)).map((td) => td.textContent)), [
		'106.72.63.108', '212 (0xd4; PSID length 8, offset 4)',
		'7488-7503, 11584-11599, 15680-15695, …, 64832-64847 (240 ports in 15 sets)',
		'240b:10:3f6c:d400:6a:483f:6c00:d400', '2404:9200:225:100::64' ]);
	r = await save();
	eq('the status box writes nothing', r.values, { proto: 'mape', isp: 'auto', tunlink: 'wan6' });
}

finish(main());
