/*
 * Page-side hooks for driver.js. render() builds the interface edit dialog
 * the way LuCI's view/network/interfaces.js does for one interface: a
 * NamedSection with the "general" and "advanced" tabs, a protocol selector,
 * then protocol.renderFormOptions(s), then every protocol option made to
 * depend on the selected protocol. The driver then types into the rendered
 * inputs and reads back validation states and the UCI values save() writes.
 */
(function() {
'use strict';

var H = window.harness = { loadError: null };
var form, network, uci, dom;

H.ready = Promise.all([ L.require('form'), L.require('network'), L.require('uci'), L.require('dom') ])
	.then(function(mods) {
		form = mods[0];
		network = mods[1];
		uci = mods[2];
		dom = mods[3];

		/* two stock protocols, so the selector is not a one-item list */
		network.registerProtocol('static', { getI18n: function() { return 'Static address' } });
		network.registerProtocol('dhcpv6', { getI18n: function() { return 'DHCPv6 client' } });

		return L.require('protocol.mape');
	})
	.then(function(instance) {
		H.protoInstance = instance;
		return true;
	})
	.catch(function(e) {
		H.loadError = String((e && e.stack) || e);
		throw e;
	});

function snapshot(sid) {
	var s = uci.get('network', sid), rv = {};

	for (var k in s)
		if (s.hasOwnProperty(k) && k.charAt(0) != '.')
			rv[k] = s[k];

	return rv;
}

/* opts: { sid, uci: { option: value }, dump: [ interface dump entries ],
 *         live: reply of `mape status` (default: no interfaces),
 *         committed: the section `mape config` answers (default: none) } */
H.render = function(opts) {
	opts = opts || {};

	H.rpcCalls = [];
	L.stubRpc['mape.status'] = function(params) {
		H.rpcCalls.push([ 'mape.status', params ]);
		if (opts.live instanceof Error)
			throw opts.live;
		return opts.live || { version: 1, interfaces: [] };
	};
	L.stubRpc['mape.isps'] = function() {
		H.rpcCalls.push([ 'mape.isps', {} ]);
		return { isps: window.__MAPE_ISPS || [] };
	};
	L.stubRpc['mape.config'] = function(params) {
		H.rpcCalls.push([ 'mape.config', params ]);
		return opts.committed ? { values: opts.committed } : { error: 'config: no such interface' };
	};

	var sid = opts.sid || 'wanmap',
	    sections = {
		lan: { '.type': 'interface', proto: 'static' },
		wan: { '.type': 'interface', proto: 'dhcp' },
		wan6: { '.type': 'interface', proto: 'dhcpv6' }
	    };

	sections[sid] = Object.assign({ '.type': 'interface', proto: 'mape' }, opts.uci || {});
	uci.reset('network', sections);
	network.setInterfaceDump(opts.dump || []);

	return network.getNetwork(sid).then(function(ifc) {
		var m = new form.Map('network'),
		    s = m.section(form.NamedSection, sid, 'interface'),
		    protoval = uci.get('network', sid, 'proto');

		s.tab('general', _('General Settings'));
		s.tab('advanced', _('Advanced Settings'));

		var p = s.taboption('general', form.ListValue, 'proto', _('Protocol'));
		network.getProtocols().forEach(function(pr) { p.value(pr.getProtocol(), pr.getI18n()) });

		ifc.renderFormOptions(s);

		s.children.forEach(function(o) {
			if (o.option == 'proto')
				return;

			if (o.deps.length)
				o.deps.forEach(function(d) { d.proto = protoval });
			else
				o.depends('proto', protoval);
		});

		H.map = m;
		H.section = s;
		H.sid = sid;
		H.ifc = ifc;

		return m.render().then(function(node) {
			dom.content(document.getElementById('maincontent'), node);
			return s.children.map(function(o) { return o.option });
		});
	});
};

/* State of every option: visible, valid, validation error, input value. */
H.fields = function() {
	var rv = {};

	H.section.children.forEach(function(o) {
		var input = document.getElementById('widget.' + o.cbid(H.sid));

		rv[o.option] = {
			visible: o.isActive(H.sid),
			valid: o.isValid(H.sid),
			error: o.getValidationError(H.sid),
			value: o.formvalue(H.sid),
			placeholder: input ? input.getAttribute('placeholder') : null,
			choices: (input && input.tagName == 'SELECT')
				? Array.prototype.map.call(input.options, function(x) { return x.value }) : null
		};
	});

	return rv;
};

/* Map.save() as LuCI's dialog does; returns the UCI section afterwards. */
H.save = function() {
	var before = snapshot(H.sid);

	return H.map.save(null, true).then(function() {
		return { ok: true, values: snapshot(H.sid) };
	}, function(e) {
		return { ok: false, error: e.message, before: before };
	});
};

H.protocolInfo = function() {
	var p = network.getProtocol('mape', 'wanmap');

	return Promise.all([ p.isCreateable('wanmap'), p.isCreateable('wanmap_abcdefghijklmnopqrstuvwxy'),
		p.isCreateable('wanmap_abcdefghijklmnopqrstuvwxyz') ])
		.then(function(c) {
			return {
				i18n: p.getI18n(),
				packageName: p.getPackageName(),
				opkgPackage: p.getOpkgPackage(),
				floating: p.isFloating(),
				virtual: p.isVirtual(),
				ifname: p.getIfname(),
				device: p.getDevice().getName(),
				deviceType: p.getDevice().getType(),
				containsOwn: p.containsDevice('map-wanmap'),
				containsOther: p.containsDevice('mape-wanmap'),
				devices: p.getDevices(),
				virtualPattern: network.isVirtualIfname('map-wanmap'),
				createShort: c[0],
				create32: c[1],
				create33: c[2]
			};
		});
};

/* Translated texts for the given error codes of the interface. */
H.errorTexts = function(codes) {
	network.setInterfaceDump([ {
		interface: 'wanmap', proto: 'mape', up: false,
		errors: codes.map(function(c) { return { subsystem: 'mape', code: c } })
	} ]);

	return network.getProtocol('mape', 'wanmap').getErrors();
};

/* The device names mape.js gives interfaces that are down (no l3_device). */
H.ifnames = function(names) {
	network.setInterfaceDump([]);
	return names.map(function(n) { return network.getProtocol('mape', n).getIfname() });
};

/* The status table mape.js renders for a data.mape object and a live status
 * ({ entry } or { error }): field -> text. */
H.statusFor = function(mape, live) {
	var p = network.getProtocol('mape', 'wanmap'),
	    node = p.renderMapeStatus(mape, live),
	    rv = { html: node.outerHTML, text: node.textContent, fields: {} };

	Array.prototype.forEach.call(node.querySelectorAll('[data-mape-field]'), function(td) {
		var k = td.getAttribute('data-mape-field');
		rv.fields[k] = (rv.fields[k] != null) ? rv.fields[k] + '\n' + td.textContent : td.textContent;
	});

	return rv;
};

})();
