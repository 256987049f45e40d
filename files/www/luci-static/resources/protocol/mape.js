'use strict';
'require form';
'require network';
'require poll';
'require rpc';
'require uci';
'require validation';
'require tools.widgets as widgets';

/*
 * LuCI protocol page for mape-rs: `proto mape` (MAP-E, RFC 7597).
 *
 * Loaded by LuCI's class loader (luci.js require()): the quoted 'require'
 * directives above must stay the first statements of the file, and the file
 * body runs as a function, which is why it ends in a top-level `return`.
 *
 * The field checks below mirror what the handler refuses (src/provision/input.rs,
 * src/provision/rulestr.rs, src/engine/rule.rs), so that a configuration the
 * form accepts is one the handler accepts too.
 *
 * Where the status is shown: LuCI's interface overview
 * (view/network/interfaces.js, render_status) has no per-protocol hook; it
 * prints getI18n(), the interface's IPv4/IPv6 addresses from ubus (so the
 * MAP-E IPv4 address appears there) and getErrors() (the texts registered
 * below). The MAP-E details are therefore shown in the interface's edit
 * dialog: renderFormOptions() adds a read-only DummyValue to the "General
 * Settings" tab. The mapping (IPv4, PSID, port sets, CE, BR) is the
 * interface's ubus status `data.mape`, which the handler sets once at setup;
 * the live part (ports in use, warnings) is asked from the rpcd plugin
 * (`ubus call mape status`, /usr/libexec/rpcd/mape, allowed by the ACL
 * luci-proto-mape) when the dialog opens and every 10 s while it is open.
 * See docs/luci.md.
 */

network.registerPatternVirtual(/^map-.+$/);

/* registerErrorCode() keeps the first text registered for a code: when the
 * OpenWrt `map` page (luci-proto-ipv6) is loaded too, its texts for the three
 * shared codes win, which say the same thing. */
network.registerErrorCode('INVALID_MAP_RULE', _('The MAP rule is invalid'));
network.registerErrorCode('NO_MATCHING_PD', _('No IPv6 prefix on the tunnel link matches the MAP rule yet'));
network.registerErrorCode('UNSUPPORTED_TYPE', _('Unsupported MAP type (mape-rs handles MAP-E only)'));
network.registerErrorCode('NO_MATCHING_RULE', _('The IPv6 prefix belongs to no supported ISP; choose ISP "None: explicit rule" and enter the rule'));
network.registerErrorCode('NO_PREFIX', _('The tunnel link has no IPv6 prefix yet'));
network.registerErrorCode('INVALID_OPTION', _('An option of this interface has an invalid value'));
network.registerErrorCode('NFT_FAILED', _('Applying the nftables rules failed; retrying'));
network.registerErrorCode('ADDR_FAILED', _('Adding the CE IPv6 address to the tunnel link failed; retrying'));
network.registerErrorCode('UPDATE_FAILED', _('netifd did not accept the tunnel update; retrying'));

/* Linux limits device names to 15 characters (IFNAMSIZ - 1). */
var IFNAME_MAX = 15;

/* The handler accepts interface names of at most this many characters
 * (src/provision/netifd.rs, check_name). */
var NAME_MAX = 32;

/* Seconds between two looks at the live status while the dialog is open. */
var STATUS_INTERVAL = 10;

/* The status of every MAP-E interface: asked without a name, because for an
 * interface that is not known yet (configured, not applied) `mape status`
 * answers "no such interface", which here is no error. */
var callMapeStatus = rpc.declare({
	object: 'mape',
	method: 'status'
});

/* The interface's section as committed in /etc/config/network, without the
 * changes this session has staged (rpcd's `uci get` always applies them). */
var callMapeConfig = rpc.declare({
	object: 'mape',
	method: 'config',
	params: [ 'interface' ],
	expect: { values: {} }
});

/* The built-in ISPs (id, label as the ISP writes it) from mape's compiled table: the list
 * is never written here, so a new ISP in data/mape-rules-jp.json appears by itself. */
var callMapeIsps = rpc.declare({
	object: 'mape',
	method: 'isps',
	expect: { isps: [] }
});

/* The usage level `mape status` warns at (src/status, WARN_PERCENT). */
var WARN_PERCENT = 80;

/* Labels of the built-in ISPs by id, filled when the form loads the ISP list. */
var ispLabels = {};

/* The warnings `mape status` gives, in the user's language (the message that comes with each
 * is English and holds the numbers, which the rows above show too). Codes without a text here
 * (netifd's error codes such as NO_PREFIX) show their message. */
function warningText(code) {
	switch (code) {
	case 'INTERFACE_DOWN': return _('The interface is down');
	case 'TUNNEL_DOWN': return _('The tunnel device is missing or down');
	case 'TABLE_MISSING': return _('The nftables table of the port-set SNAT is missing (restart the interface)');
	case 'NO_MAPPING': return _('The mapping is unknown');
	case 'PORTS_HIGH': return _('%d%% or more of the ports are in use: new connections will start to fail').format(WARN_PERCENT);
	case 'DESTINATION_HIGH': return _('One destination uses %d%% or more of the ports it can have: more connections to it will fail').format(WARN_PERCENT);
	case 'STRAY_PORTS': return _('Some connections leave with a port outside the port sets (the BR drops them)');
	case 'CONNTRACK_HIGH': return _('The connection tracking table is %d%% full or more').format(WARN_PERCENT);
	case 'CONNTRACK_UNREADABLE': return _('The ports in use could not be counted (connection tracking unreadable)');
	case 'SNAT_FAILING': return _('New connections failed recently: no free port for their destination');
	}
	return null;
}

var EXPLICIT_FIELDS = [ 'ip6prefix', 'ip6prefixlen', 'ipaddr', 'ealen', 'psidlen', 'psid' ];

/* The options of OpenWrt's `map` page that describe the rule: kept on a
 * switch to mape only when its maptype was MAP-E. */
var MAP_RULE_FIELDS = [ 'peeraddr', 'ipaddr', 'ip4prefixlen', 'ip6prefix', 'ip6prefixlen',
                        'ealen', 'psidlen', 'offset', 'legacymap' ];
var RULE_KEYS = [ 'fmr', 'type', 'ipv6prefix', 'ipv4prefix', 'prefix6len', 'prefix4len',
                  'ealen', 'offset', 'psidlen', 'psid', 'br' ];

/* Set while one field re-validates its siblings, so that they do not start
 * another round. */
var revalidating = false;

function isEmpty(v) {
	return v == null || String(v).trim() === '';
}

/* A UCI integer as the handler gets it: netifd converts it with
 * strtol(..., 0), so "010" would be octal 8 and "1.5" would be dropped.
 * Only plain decimals are accepted. Returns a number, or null. */
function parseDecimal(v) {
	if (isEmpty(v))
		return null;

	v = String(v).trim();

	return /^(0|[1-9][0-9]*)$/.test(v) ? +v : NaN;
}

/* The value another field of the same section has right now (its input once
 * the form is rendered, its UCI value while it is being rendered). */
function sibling(opt, section_id, name) {
	var v = opt.section.formvalue(section_id, name);

	return Array.isArray(v) ? v.join(' ') : v;
}

function siblingInt(opt, section_id, name) {
	var n = parseDecimal(sibling(opt, section_id, name));

	return (n == null || isNaN(n)) ? null : n;
}

/* Re-run the validation of the named fields, after a field they depend on
 * changed. Does nothing while the form is still being rendered (LuCI has no
 * DOM root for the map yet then, and validates every field once anyway). */
function revalidate(opt, section_id, names) {
	if (revalidating || !opt.map || !opt.map.root)
		return;

	revalidating = true;

	try {
		for (var i = 0; i < names.length; i++) {
			var el = opt.section.getUIElement(section_id, names[i]);

			if (el && typeof(el.triggerValidation) == 'function')
				el.triggerValidation();
		}
	}
	finally {
		revalidating = false;
	}
}

function intRange(value, min, max) {
	var n = parseDecimal(value);

	if (n == null)
		return true;

	if (isNaN(n))
		return _('Expecting a plain decimal number (a leading 0 would be read as octal)');

	if (n < min || n > max)
		return _('Expecting a value between %d and %d').format(min, max);

	return true;
}

function hasRule(opt, section_id) {
	return !isEmpty(sibling(opt, section_id, 'rule'));
}

/* The PSID offset the handler uses when `offset` is empty: 4 with the
 * draft-03 interface ID (legacymap), 6 (RFC 7597) otherwise. */
function effectiveOffset(opt, section_id) {
	var off = siblingInt(opt, section_id, 'offset');

	if (off != null)
		return { value: off, dflt: false };

	return { value: (sibling(opt, section_id, 'legacymap') == '1') ? 4 : 6, dflt: true };
}

/* The PSID length the handler ends up with: an explicit psidlen > 0, else
 * the one the EA bits give (ealen - (32 - ip4prefixlen)), else unknown. */
function effectivePsidLen(opt, section_id) {
	var k = siblingInt(opt, section_id, 'psidlen'),
	    ea = siblingInt(opt, section_id, 'ealen'),
	    p4 = siblingInt(opt, section_id, 'ip4prefixlen');

	if (k != null && k > 0)
		return k;

	if (ea != null && ea > 0)
		return Math.max(0, ea - (32 - (p4 == null ? 32 : p4)));

	return null;
}

/* offset + PSID length must fit in the 16 port bits. */
function checkPortBits(opt, section_id) {
	var k = effectivePsidLen(opt, section_id),
	    off = effectiveOffset(opt, section_id);

	if (k == null || off.value > 15)
		return true;

	if (off.value + k > 16)
		return (off.dflt
			? _('PSID offset %d (the default) + PSID length %d exceed the 16 port bits')
			: _('PSID offset %d + PSID length %d exceed the 16 port bits')).format(off.value, k);

	return true;
}

/* The rule IPv6 prefix and the EA bits must end within the first 64 bits. */
function checkEaPastIid(opt, section_id) {
	var p6 = siblingInt(opt, section_id, 'ip6prefixlen'),
	    ea = siblingInt(opt, section_id, 'ealen');

	if (p6 == null || ea == null)
		return true;

	if (p6 + ea > 64)
		return _('IPv6 prefix length %d + EA-bits length %d exceed 64').format(p6, ea);

	return true;
}

/* An explicit psidlen must agree with the EA bits: with EA bits, PSID length
 * = ealen - (32 - ip4prefixlen); without, sharing needs a full IPv4 address
 * and an explicit PSID. */
function checkPsidLenConsistency(opt, section_id) {
	var k = siblingInt(opt, section_id, 'psidlen'),
	    ea = siblingInt(opt, section_id, 'ealen'),
	    p4 = siblingInt(opt, section_id, 'ip4prefixlen');

	if (k == null || k == 0 || ea == null)
		return true;

	p4 = (p4 == null) ? 32 : p4;

	if (ea > 0) {
		var derived = Math.max(0, ea - (32 - p4));

		if (k != derived)
			return _('PSID length %d contradicts EA-bits length %d with IPv4 prefix length %d, which give PSID length %d')
				.format(k, ea, p4, derived);
	}
	else {
		if (p4 < 32)
			return _('Port sharing without EA bits needs a full IPv4 address (IPv4 prefix length 32)');

		if (isEmpty(sibling(opt, section_id, 'psid')))
			return _('A PSID length without EA bits needs an explicit PSID');
	}

	return true;
}

/* Host bits set after the prefix length: the handler refuses these rather
 * than masking them (a typo would map to somebody else's address). */
function hostBitsSet(words, bits_per_word, prefixlen) {
	for (var i = 0; i < words.length; i++) {
		var first = i * bits_per_word,
		    keep = Math.min(Math.max(prefixlen - first, 0), bits_per_word),
		    mask = (keep == 0) ? 0 : ((0xffff << (bits_per_word - keep)) & ((1 << bits_per_word) - 1));

		if ((words[i] & ~mask & ((1 << bits_per_word) - 1)) != 0)
			return true;
	}

	return false;
}

/* Plain syntax check of a mapcalc/odhcp6c rule string, as far as the handler's
 * parser refuses it without knowing the prefix. */
function checkRuleString(value) {
	var rules = String(value).trim().split(/\s+/);

	for (var i = 0; i < rules.length; i++) {
		var fields = rules[i].split(',').filter(function(f) { return f !== '' }),
		    seen = {};

		for (var j = 0; j < fields.length; j++) {
			var eq = fields[j].indexOf('='),
			    key = (eq < 0) ? fields[j] : fields[j].substring(0, eq),
			    val = (eq < 0) ? '' : fields[j].substring(eq + 1);

			if (RULE_KEYS.indexOf(key) < 0)
				return _('Rule %d: unknown key "%s"').format(i + 1, key);

			if (key == 'type' && val != 'map-e')
				return _('Rule %d: only type=map-e is supported').format(i + 1);

			if (key == 'br' && !validation.parseIPv6(val))
				return _('Rule %d: br=%s is not an IPv6 address').format(i + 1, val);

			seen[key] = true;
		}

		if (!seen.ipv6prefix)
			return _('Rule %d: ipv6prefix is missing').format(i + 1);

		if (!seen.ipv4prefix)
			return _('Rule %d: ipv4prefix is missing').format(i + 1);
	}

	return true;
}

/* First failing check wins. */
function firstError(/* results... */) {
	for (var i = 0; i < arguments.length; i++)
		if (arguments[i] !== true)
			return arguments[i];

	return true;
}

/* The tunnel device the handler creates for an interface, as
 * src/render/netifd.rs (ifname_for) names it: `map-<iface>` when that fits
 * 15 bytes, else `map-<first 6 characters>_<4 hex digits>`, the hex digits
 * being the low 16 bits of the 32-bit FNV-1a hash of the whole name's bytes.
 * tests/luci checks both against each other for names of 10, 11, 12 and 32
 * characters. */
function ifnameFor(iface) {
	var full = 'map-' + iface,
	    bytes = unescape(encodeURIComponent(iface)),
	    h = 0x811c9dc5;

	if (unescape(encodeURIComponent(full)).length <= IFNAME_MAX)
		return full;

	for (var i = 0; i < bytes.length; i++)
		h = Math.imul(h ^ bytes.charCodeAt(i), 0x01000193) >>> 0;

	return 'map-%s_%s'.format(Array.from(iface).slice(0, 6).join(''), ('000' + (h & 0xffff).toString(16)).slice(-4));
}

/* --- status ------------------------------------------------------------- */

function portSetText(set) {
	return (set[0] == set[1]) ? String(set[0]) : '%d-%d'.format(set[0], set[1]);
}

/* "7488-7503, 11584-11599, 15680-15695, …, 64832-64847 (240 ports in 15 sets)" */
function compactPorts(mape) {
	var sets = Array.isArray(mape.port_sets) ? mape.port_sets : [],
	    count = (typeof(mape.port_count) == 'number') ? mape.port_count : null,
	    shown;

	if (count == null) {
		count = 0;
		for (var i = 0; i < sets.length; i++)
			count += sets[i][1] - sets[i][0] + 1;
	}

	if (sets.length == 0)
		return (mape.rule && mape.rule.psid_len == 0) ? _('all ports (no sharing)') : null;

	if (sets.length <= 4)
		shown = sets.map(portSetText).join(', ');
	else
		shown = sets.slice(0, 3).map(portSetText).join(', ') + ', …, ' + portSetText(sets[sets.length - 1]);

	return shown + ' ' + ((sets.length == 1)
		? _('(%d ports in 1 set)').format(count)
		: _('(%d ports in %d sets)').format(count, sets.length));
}

/* Why the live status could not be read, for people. */
function liveStatusError(err) {
	var msg = String((err && err.message) || err);

	if (/error -32002\b/.test(msg))
		return _('Access to the live status was denied: this login lacks the ACL group luci-proto-mape (/usr/share/rpcd/acl.d/luci-proto-mape.json)');

	if (/error -32000\b/.test(msg))
		return _('The live status service is not available: rpcd has not loaded /usr/libexec/rpcd/mape (restart rpcd)');

	return msg;
}

/* Asks the rpcd plugin for the live status of one interface. Resolves to
 * { entry: <the interface's object of `mape status --json`> | null } or
 * { error: <text> }; never rejects. */
function loadLiveStatus(iface) {
	return callMapeStatus().then(function(reply) {
		if (reply == null || typeof(reply) != 'object')
			return { error: _('The live status service gave no answer') };

		if (typeof(reply.error) == 'string')
			return { error: reply.error };

		var list = Array.isArray(reply.interfaces) ? reply.interfaces : [];

		for (var i = 0; i < list.length; i++)
			if (list[i] && list[i].interface == iface)
				return { entry: list[i] };

		return { entry: null };
	}, function(err) {
		return { error: liveStatusError(err) };
	});
}

/* Renders the `data.mape` object of the interface's ubus status as a
 * two-column table; every value row carries data-mape-field=<key>. `live` is
 * what loadLiveStatus() resolved to (ports in use, level and warnings of
 * `mape status`, schema in docs/), shown when present. */
function renderMapeStatus(mape, live) {
	var rows = [],
	    rule = (mape && mape.rule && typeof(mape.rule) == 'object') ? mape.rule : null,
	    entry = (live && live.entry && typeof(live.entry) == 'object') ? live.entry : null;

	function row(key, label, value) {
		if (value == null || value === '')
			return;

		rows.push(E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td left', 'style': 'width:33%' }, [ label ]),
			E('td', { 'class': 'td left', 'data-mape-field': key }, [ String(value) ])
		]));
	}

	if (mape != null && typeof(mape) == 'object') {
		row('isp', _('ISP'), mape.isp ? (ispLabels[mape.isp] || mape.isp) : _('explicit rule'));
		row('ipv4', _('IPv4 address'),
			(mape.ipv4 && mape.ipv4_prefix_len != null && mape.ipv4_prefix_len != 32)
				? '%s/%d'.format(mape.ipv4, mape.ipv4_prefix_len) : mape.ipv4);

		if (mape.psid != null)
			row('psid', _('PSID'), rule && rule.psid_len != null
				? _('%d (0x%x; PSID length %d, offset %d)').format(mape.psid, mape.psid, rule.psid_len, rule.psid_offset)
				: String(mape.psid));

		row('ports', _('Ports'), compactPorts(mape));
		row('ce', _('CE IPv6 address'), mape.ce);
		row('br', _('BR address'), mape.br);
		row('prefix', _('Delegated prefix'), mape.prefix);

		if (rule)
			row('rule', _('Rule'), _('%s → %s, EA-bits %d').format(rule.ipv6_prefix, rule.ipv4_prefix, rule.ea_len));

		row('iid', _('Interface ID'),
			(mape.iid_format == 'draft03') ? _('draft-03 (legacy)')
			: (mape.iid_format == 'rfc7597') ? 'RFC 7597' : mape.iid_format);

		if (Array.isArray(mape.warnings))
			for (var i = 0; i < mape.warnings.length; i++)
				row('warning', _('Warning'), mape.warnings[i]);
	}

	if (entry) {
		var levels = { ok: _('working'), warning: _('working, with warnings'), down: _('not working') };
		row('level', _('State'), levels[entry.level] || entry.level);

		var ports = (entry.ports && typeof(entry.ports) == 'object') ? entry.ports : null;
		if (ports && typeof(ports.in_use) == 'number') {
			var total = (typeof(entry.port_count) == 'number') ? entry.port_count : (mape ? mape.port_count : null);
			row('usage', _('Ports in use'),
				_('%d of %d (%d%%), %d flows from %d hosts').format(ports.in_use, total,
					(typeof(ports.usage_percent) == 'number') ? ports.usage_percent : 0,
					ports.connections || 0, ports.hosts || 0));
		}

		if (Array.isArray(entry.warnings))
			for (var j = 0; j < entry.warnings.length; j++)
				if (entry.warnings[j] && entry.warnings[j].code)
					row('live-warning', _('Warning'), '%s: %s'.format(entry.warnings[j].code,
						warningText(entry.warnings[j].code) || entry.warnings[j].message || ''));
	}

	if (live && live.error)
		row('live-error', _('Live status'), live.error);

	if (rows.length == 0 || mape == null || typeof(mape) != 'object')
		rows.unshift(E('tr', { 'class': 'tr' }, [
			E('td', { 'class': 'td left', 'colspan': 2 }, [
				E('em', {}, [ _('No MAP-E status yet: the interface is not up.') ]) ])
		]));

	return E('table', { 'class': 'table mape-status' }, rows);
}

/* The dialog's status box: the mapping from `data.mape`, the live part from
 * the rpcd plugin, refreshed every STATUS_INTERVAL seconds while the box is
 * in the document. */
function statusBox(proto, iface, live) {
	var box = E('div', { 'class': 'mape-status-box', 'data-mape-live': live ? (live.error ? 'error' : 'ok') : 'none' },
		[ renderMapeStatus(proto.getMapeStatus(), live) ]);

	var refresh = function() {
		if (!box.isConnected) {
			poll.remove(refresh);
			return Promise.resolve();
		}

		return loadLiveStatus(iface).then(function(l) {
			box.setAttribute('data-mape-live', l.error ? 'error' : 'ok');
			box.replaceChild(renderMapeStatus(proto.getMapeStatus(), l), box.firstChild);
		});
	};

	poll.add(refresh, STATUS_INTERVAL);

	return box;
}

/* After LuCI switched an interface from OpenWrt's `map` to `mape`, LuCI has
 * deleted every option the `map` page (and its common options) showed. The
 * committed configuration still has them: take over, as defaults of this
 * form, every option this form has a field for. The rule fields only when
 * the map type was MAP-E. Returns the names taken over. */
function takeOverMapOptions(s, section_id, committed) {
	if (committed == null || typeof(committed) != 'object' || committed.proto != 'map' ||
	    uci.get('network', section_id, 'proto') != 'mape')
		return [];

	var mapE = (committed.maptype == null || committed.maptype == 'map-e'),
	    taken = [];

	s.children.forEach(function(o) {
		var name = o.ucioption || o.option,
		    value = committed[name];

		if (name.charAt(0) == '_' || name == 'proto' || name == 'device' || name == 'isp' ||
		    (o.uciconfig && o.uciconfig != 'network') || (o.ucisection && o.ucisection != section_id) ||
		    value == null || uci.get('network', section_id, name) != null ||
		    (!mapE && MAP_RULE_FIELDS.indexOf(name) > -1))
			return;

		if (o instanceof form.Flag) {
			/* A Flag equal to its default is removed on save: show the
			 * committed state as the current one instead. */
			var cfgvalue = o.cfgvalue;
			o.cfgvalue = function(sid) {
				var v = cfgvalue.apply(this, arguments);
				return (arguments.length == 1 && sid == section_id && v == null) ? value : v;
			};
		}
		else {
			o.default = value;
		}

		taken.push(name);
	});

	if (taken.some(function(n) { return MAP_RULE_FIELDS.indexOf(n) > -1 })) {
		var isp = s.getOption('isp');
		if (isp && uci.get('network', section_id, 'isp') == null)
			isp.default = 'none';
	}

	return taken;
}

/* --- the protocol ------------------------------------------------------- */

return network.registerProtocol('mape', {
	getI18n: function() {
		return _('MAP-E (mape-rs)');
	},

	/* The tunnel device: netifd's l3_device while up, else the name the
	 * handler will give it (LuCI's base class would say "mape-<section>"). */
	getIfname: function() {
		return this._ubus('l3_device') || ifnameFor(this.sid);
	},

	/* LuCI >= 24.10 asks getPackageName(), older releases getOpkgPackage(). */
	getPackageName: function() {
		return 'mape-rs';
	},

	getOpkgPackage: function() {
		return 'mape-rs';
	},

	isFloating: function() {
		return true;
	},

	isVirtual: function() {
		return true;
	},

	getDevices: function() {
		return null;
	},

	getDevice: function() {
		return network.instantiateDevice(this.getIfname(), this);
	},

	containsDevice: function(ifname) {
		return (network.getIfnameOf(ifname) == this.getIfname());
	},

	/* Called by the "Add new interface" dialog after LuCI's own name check
	 * (which allows "mape-<name>" up to 15 characters, i.e. names of at most
	 * 10): any name the handler accepts works, long ones get a shortened
	 * tunnel device name (ifnameFor). */
	isCreateable: function(ifname) {
		if (ifname != null && String(ifname).length > NAME_MAX)
			return Promise.resolve(_('the handler accepts interface names of at most %d characters').format(NAME_MAX));

		return Promise.resolve(null);
	},

	/* An object under `data` of this interface's ubus status, or null. */
	getUbusDataObject: function(key) {
		var data = null;

		try {
			data = this._ubus('data');
		}
		catch (e) {
			/* network state not loaded */
		}

		return (data != null && typeof(data) == 'object' && data[key] != null && typeof(data[key]) == 'object')
			? data[key] : null;
	},

	/* `data.mape`: the mapping the handler reported at setup. */
	getMapeStatus: function() {
		return this.getUbusDataObject('mape');
	},

	renderMapeStatus: renderMapeStatus,

	loadLiveStatus: function() {
		return loadLiveStatus(this.sid);
	},

	renderFormOptions: function(s) {
		var proto = this, o;

		/* The status box. Its load() also takes over the settings of a
		 * `map` interface just switched to mape (see takeOverMapOptions):
		 * every option exists by then, and nothing is rendered yet. */
		o = s.taboption('general', form.DummyValue, '_mape_status', _('MAP-E status'));
		o.modalonly = true;
		o.load = function(section_id) {
			var opt = this;

			return Promise.all([
				loadLiveStatus(section_id),
				L.resolveDefault(callMapeConfig(section_id), null)
			]).then(function(res) {
				opt.taken = takeOverMapOptions(opt.section, section_id, res[1]);
				return res[0];
			});
		};
		o.cfgvalue = function(section_id, set_value) {
			if (arguments.length == 2)
				return form.DummyValue.prototype.cfgvalue.apply(this, arguments);

			var box = statusBox(proto, section_id, form.DummyValue.prototype.cfgvalue.call(this, section_id));

			if (this.taken && this.taken.length)
				box.appendChild(E('p', { 'class': 'cbi-value-description', 'data-mape-taken': this.taken.join(' ') }, [
					_('Taken over from the former "map" configuration (LuCI removes them on a protocol switch): %s. Save to keep them.')
						.format(this.taken.join(', '))
				]));

			return box;
		};
		o.write = o.remove = function() {};

		o = s.taboption('general', form.ListValue, 'isp', _('ISP'),
			_('With <em>Automatic</em> the MAP rule of a built-in ISP is looked up from the IPv6 prefix delegated on the tunnel link. Choose <em>None</em> to enter the rule yourself.'));
		o.default = 'auto';
		/* The choices come from mape itself when the form loads (see callMapeIsps). */
		o.load = function(section_id) {
			var self = this;
			return callMapeIsps().catch(function() { return []; }).then(function(isps) {
				self.value('auto', _('Automatic (by IPv6 prefix)'));
				(Array.isArray(isps) ? isps : []).forEach(function(i) {
					if (i && typeof(i.id) == 'string' && typeof(i.label) == 'string') {
						self.value(i.id, i.label);
						ispLabels[i.id] = i.label;
					}
				});
				self.value('none', _('None: explicit rule'));
				return form.ListValue.prototype.load.apply(self, [ section_id ]);
			});
		};

		o = s.taboption('general', widgets.NetworkSelect, 'tunlink', _('Tunnel link'),
			_('The IPv6 interface whose delegated prefix is used and over which the tunnel runs.'));
		o.nocreate = true;
		o.exclude = s.section;
		o.default = 'wan6';
		o.placeholder = 'wan6';

		/* Explicit rule, only for isp "none". */

		o = s.taboption('general', form.Value, 'peeraddr', _('BR address'),
			_('IPv6 address of the border relay (the tunnel peer).'));
		o.depends('isp', 'none');
		o.datatype = 'ip6addr("nomask")';
		o.validate = function(section_id, value) {
			if (!isEmpty(value))
				return true;

			var rule = sibling(this, section_id, 'rule');

			if (isEmpty(rule) || !/(^|[\s,])br=/.test(rule))
				return _('The tunnel needs a BR address (here or as br= in the rule)');

			return true;
		};

		o = s.taboption('general', form.Value, 'ipaddr', _('Rule IPv4 prefix'),
			_('The IPv4 prefix of the rule (not the address you get), e.g. <code>106.72.0.0</code>.'));
		o.depends('isp', 'none');
		o.datatype = 'ip4addr("nomask")';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'rule' ]);

			if (isEmpty(value))
				return hasRule(this, section_id) ? true : _('Required unless a rule string is given');

			var a = validation.parseIPv4(String(value).trim()),
			    len = siblingInt(this, section_id, 'ip4prefixlen');

			if (a && hostBitsSet(a, 8, (len == null) ? 32 : len))
				return _('Host bits are set after the IPv4 prefix length %d').format(len);

			return true;
		};

		o = s.taboption('general', form.Value, 'ip4prefixlen', _('Rule IPv4 prefix length'));
		o.depends('isp', 'none');
		o.datatype = 'range(0,32)';
		o.placeholder = '32';
		o.default = '32';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'ipaddr', 'psidlen', 'offset' ]);
			return intRange(value, 0, 32);
		};

		o = s.taboption('general', form.Value, 'ip6prefix', _('Rule IPv6 prefix'),
			_('The IPv6 prefix of the rule, e.g. <code>240b:10::</code>.'));
		o.depends('isp', 'none');
		o.datatype = 'ip6addr("nomask")';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'rule' ]);

			if (isEmpty(value))
				return hasRule(this, section_id) ? true : _('Required unless a rule string is given');

			var a = validation.parseIPv6(String(value).trim()),
			    len = siblingInt(this, section_id, 'ip6prefixlen');

			if (a && len != null && hostBitsSet(a, 16, len))
				return _('Host bits are set after the IPv6 prefix length %d').format(len);

			return true;
		};

		o = s.taboption('general', form.Value, 'ip6prefixlen', _('Rule IPv6 prefix length'));
		o.depends('isp', 'none');
		o.datatype = 'range(0,64)';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'ip6prefix', 'ealen', 'rule' ]);

			if (isEmpty(value))
				return hasRule(this, section_id) ? true : _('Required unless a rule string is given');

			return firstError(intRange(value, 0, 64), checkEaPastIid(this, section_id));
		};

		o = s.taboption('general', form.Value, 'ealen', _('EA-bits length'),
			_('Empty: derived from the length of the delegated prefix.'));
		o.depends('isp', 'none');
		o.datatype = 'range(0,48)';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'ip6prefixlen', 'psidlen', 'offset', 'rule' ]);
			return firstError(intRange(value, 0, 48), checkEaPastIid(this, section_id),
				isEmpty(value) ? true : checkPsidLenConsistency(this, section_id));
		};

		o = s.taboption('general', form.Value, 'psidlen', _('PSID length'),
			_('Empty or 0: derived from the EA-bits and the IPv4 prefix length.'));
		o.depends('isp', 'none');
		o.datatype = 'range(0,16)';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'psid', 'offset', 'ealen', 'rule' ]);
			return firstError(intRange(value, 0, 16), checkPortBits(this, section_id),
				checkPsidLenConsistency(this, section_id));
		};

		o = s.taboption('general', form.Value, 'psid', _('PSID'),
			_('Usually empty (taken from the prefix). Written <strong>left-aligned</strong> in 16 bits as in OpenWrt\'s <code>map</code>: PSID 212 with PSID length 8 is <code>54272</code> (212 × 2<sup>8</sup>).'));
		o.depends('isp', 'none');
		o.datatype = 'uinteger';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'rule' ]);

			var r = intRange(value, 0, 65535);

			if (r !== true || isEmpty(value))
				return r;

			var psid = parseDecimal(value),
			    k = siblingInt(this, section_id, 'psidlen');

			if (k == null || k == 0)
				return _('An explicit PSID needs a PSID length');

			if (k > 16)
				return true; /* reported on psidlen */

			var unit = Math.pow(2, 16 - k);

			if (psid % unit != 0)
				return (psid < Math.pow(2, k))
					? _('PSID %d is not left-aligned for PSID length %d: PSID %d is written %d')
						.format(psid, k, psid, psid * unit)
					: _('PSID %d is not left-aligned for PSID length %d: it must be a multiple of %d')
						.format(psid, k, unit);

			return true;
		};

		o = s.taboption('general', form.Value, 'offset', _('PSID offset'),
			_('Empty: 6 (RFC 7597), or 4 with the legacy interface ID.'));
		o.depends('isp', 'none');
		o.datatype = 'range(0,15)';
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'psidlen' ]);
			return firstError(intRange(value, 0, 15), checkPortBits(this, section_id));
		};

		o = s.taboption('general', form.Flag, 'legacymap', _('Legacy interface ID'),
			_('Use the draft-03 interface identifier (draft-ietf-softwire-map-03) instead of RFC 7597, as NTT-network ISPs need.'));
		o.depends('isp', 'none');
		o.onchange = function(ev, section_id) {
			revalidate(this, section_id, [ 'psidlen', 'offset' ]);
		};

		o = s.taboption('general', form.Value, 'rule', _('Rule string'),
			_('Optional, instead of the fields above: one or more mapcalc rules, e.g. <code>type=map-e,ipv6prefix=240b:10::,prefix6len=31,ipv4prefix=106.72.0.0,prefix4len=15,ealen=25,psidlen=8,offset=4,br=2404:9200:225:100::64</code>.'));
		o.depends('isp', 'none');
		o.validate = function(section_id, value) {
			revalidate(this, section_id, [ 'ip6prefix', 'ip6prefixlen', 'ipaddr', 'peeraddr' ]);

			if (isEmpty(value))
				return true;

			for (var i = 0; i < EXPLICIT_FIELDS.length; i++)
				if (!isEmpty(sibling(this, section_id, EXPLICIT_FIELDS[i])))
					return _('Give either the rule string or the rule fields (%s), not both')
						.format(EXPLICIT_FIELDS.join(', '));

			return checkRuleString(value);
		};

		/* Advanced */

		o = s.taboption('advanced', form.Value, 'mtu', _('Tunnel MTU'));
		o.placeholder = '1460';
		o.datatype = 'range(1280,9000)';
		o.validate = function(section_id, value) {
			return intRange(value, 1280, 9000);
		};

		o = s.taboption('advanced', form.Value, 'ttl', _('Tunnel TTL'));
		o.placeholder = '64';
		o.datatype = 'range(1,255)';
		o.validate = function(section_id, value) {
			return intRange(value, 1, 255);
		};

		o = s.taboption('advanced', form.Value, 'zone', _('Firewall zone'),
			_('Zone the tunnel is put in (sent to the firewall as a zone hint); <code>-</code> for none.'));
		o.placeholder = 'wan';
		o.validate = function(section_id, value) {
			if (isEmpty(value) || /^(-|[A-Za-z0-9_]+)$/.test(String(value).trim()))
				return true;

			return _('Expecting a firewall zone name');
		};

		o = s.taboption('advanced', form.Value, 'encaplimit', _('Encapsulation limit'),
			_('<code>ignore</code> sends no encapsulation-limit option (some BRs drop packets carrying it).'));
		o.placeholder = 'ignore';
		o.validate = function(section_id, value) {
			if (isEmpty(value) || String(value).trim() == 'ignore')
				return true;

			var r = intRange(value, 0, 255);

			return (r === true) ? true : _('Expecting "ignore" or a number from 0 to 255');
		};

		o = s.taboption('advanced', form.Value, 'ports_exclude', _('Ports kept out of SNAT'),
			_('Ports of your port sets that outgoing connections must not use, e.g. for port forwards: single ports or ranges, separated by spaces, e.g. <code>5000 5001-5010</code>.'));
		o.validate = function(section_id, value) {
			if (isEmpty(value))
				return true;

			var tokens = String(value).trim().split(/\s+/);

			for (var i = 0; i < tokens.length; i++) {
				var m = /^([0-9]+)(?:-([0-9]+))?$/.exec(tokens[i]),
				    lo = m ? +m[1] : NaN,
				    hi = m ? (m[2] != null ? +m[2] : lo) : NaN;

				if (!m || lo < 1 || hi > 65535 || lo > hi)
					return _('"%s" is not a port (1-65535) or a range N-M with N ≤ M').format(tokens[i]);
			}

			return true;
		};

		o = s.taboption('advanced', form.Flag, 'defaultroute', _('Default route'),
			_('Route all IPv4 traffic through the tunnel.'));
		o.default = o.enabled;
	}
});
