/*
 * Minimal stand-ins for the parts of LuCI that protocol/mape.js uses, written
 * for this test from LuCI's documented behaviour (luci.js, baseclass, dom,
 * ui.js, validation.js, form.js, network.js, tools/widgets.js):
 *
 *  - L.require() loads a class file the way luci.js does: it reads the quoted
 *    'require x [as y]' directives at the top, loads those modules, runs the
 *    file as the body of function(window, document, L, <deps>) and
 *    instantiates the class it returns;
 *  - E() / dom.append(): strings inside child arrays become text nodes, a bare
 *    string child becomes innerHTML;
 *  - ui widgets render real <input>/<select> elements (id "widget.<cbid>"
 *    inside a frame <div id="<cbid>">) and validate on the same DOM events as
 *    LuCI (text fields: keyup/blur; selects: change/click/blur; checkboxes:
 *    click/blur), datatype first, then the option's validate() hook;
 *  - form: Map/NamedSection/tabs, depends() with LuCI's dependency
 *    evaluation (inactive options count as empty; every widget change
 *    re-checks dependencies and re-validates the active options), and
 *    parse() writing into a UCI stand-in with LuCI's rules (hidden options
 *    removed, empty values removed, Flag equal to its default removed);
 *  - network: registerProtocol / registerPatternVirtual / registerErrorCode
 *    with LuCI's semantics (the first text registered for a code stays) and a
 *    Protocol base class reading a settable `network.interface dump`;
 *  - rpc.declare(): answers from L.stubRpc['<object>.<method>'](params) (a
 *    function returning the reply, or throwing like a JSON-RPC error), with
 *    LuCI's `expect` handling; unknown objects fail like uhttpd's -32000;
 *  - poll: add()/remove() keep a queue (poll.queue) that nothing runs.
 *
 * Nothing here is LuCI's code; only what mape.js touches is covered.
 */
(function(window, document) {
'use strict';

/* ---- String.prototype.format: the subset of cbi.js's printf LuCI code uses ---- */

if (!String.prototype.format) {
	String.prototype.format = function() {
		var args = arguments, i = 0;

		return this.replace(/%(-?\d*)(?:\.(\d+))?([%sdxXfhq])/g, function(m, width, prec, conv) {
			if (conv == '%')
				return '%';

			var a = args[i++];

			switch (conv) {
			case 's': return String(a);
			case 'd': return String(Math.trunc(+a));
			case 'x': return (Math.trunc(+a) >>> 0).toString(16);
			case 'X': return (Math.trunc(+a) >>> 0).toString(16).toUpperCase();
			case 'f': return (prec != null) ? (+a).toFixed(+prec) : String(+a);
			case 'h': return String(a).replace(/[&<>"']/g, function(c) { return '&#' + c.charCodeAt(0) + ';' });
			case 'q': return '"' + String(a) + '"';
			}
		});
	};
}

window._ = function(s) { return s };

/* ---- baseclass (LuCI.baseclass) ---- */

var Class = Object.assign(function() {}, {
	extend: function(properties) {
		var props = {
			__base__: { value: this.prototype },
			__name__: { value: properties.__name__ || 'anonymous' }
		};

		var ClassConstructor = function() {
			if (!(this instanceof ClassConstructor))
				throw new TypeError('Constructor must not be called without "new"');

			if (Object.getPrototypeOf(this).hasOwnProperty('__init__')) {
				if (typeof(this.__init__) != 'function')
					throw new TypeError('Class __init__ member is not a function');

				this.__init__.apply(this, arguments);
			}
			else {
				this.super('__init__', arguments);
			}
		};

		for (var key in properties)
			if (!props[key] && properties.hasOwnProperty(key))
				props[key] = { value: properties[key], writable: true };

		ClassConstructor.prototype = Object.create(this.prototype, props);
		ClassConstructor.prototype.constructor = ClassConstructor;
		Object.assign(ClassConstructor, this);
		ClassConstructor.displayName = props.__name__.value;

		return ClassConstructor;
	},

	singleton: function(properties /*, ... */) {
		return Class.extend(properties).instantiate(Class.prototype.varargs(arguments, 1));
	},

	instantiate: function(args) {
		return new (Function.prototype.bind.apply(this, [ null ].concat(args)))();
	},

	call: function(self, method) {
		return this.prototype[method].apply(self, Class.prototype.varargs(arguments, 2));
	},

	isSubclass: function(classValue) {
		return (classValue != null && typeof(classValue) == 'function' &&
			classValue.prototype instanceof this);
	},

	prototype: {
		varargs: function(args, offset /*, ... */) {
			return Array.prototype.slice.call(arguments, 2)
				.concat(Array.prototype.slice.call(args, offset));
		},

		/* As baseclass: look the member up starting above the class of
		 * `this` (or above the level of a super call in progress). */
		super: function(key, callArgs) {
			if (key == null)
				return null;

			var slot = '__super_' + key,
			    from = this[slot],
			    ctx;

			for (ctx = Object.getPrototypeOf(from ? from : Object.getPrototypeOf(this));
			     ctx != null && !ctx.hasOwnProperty(key);
			     ctx = Object.getPrototypeOf(ctx)) {}

			if (ctx == null)
				return null;

			var res = ctx[key];

			if (arguments.length > 1) {
				if (typeof(res) != 'function')
					throw new ReferenceError(key + ' is not a function in base class');

				if (typeof(callArgs) != 'object')
					callArgs = this.varargs(arguments, 1);

				Object.defineProperty(this, slot, { value: ctx, writable: true, configurable: true });

				try {
					res = res.apply(this, callArgs);
				}
				finally {
					if (from)
						this[slot] = from;
					else
						delete this[slot];
				}
			}

			return res;
		},

		toString: function() {
			return '[object ' + (this.__name__ || 'Class') + ']';
		}
	}
});

/* ---- dom + E() ---- */

var instances = new WeakMap();

function isNode(e) {
	return e != null && typeof(e) == 'object' && typeof(e.nodeType) == 'number';
}

var dom = Class.singleton({
	__name__: 'LuCI.dom',

	elem: function(e) {
		return isNode(e) && (e.nodeType === 1 || e.nodeType === 11);
	},

	append: function(node, children) {
		if (!this.elem(node))
			return null;

		if (Array.isArray(children)) {
			for (var i = 0; i < children.length; i++)
				if (isNode(children[i]))
					node.appendChild(children[i]);
				else if (children[i] !== null && children[i] !== undefined)
					node.appendChild(document.createTextNode('' + children[i]));

			return node.lastChild;
		}
		else if (typeof(children) === 'function') {
			return this.append(node, children(node));
		}
		else if (isNode(children)) {
			return node.appendChild(children);
		}
		else if (children !== null && children !== undefined) {
			node.innerHTML = '' + children;
			return node.lastChild;
		}

		return null;
	},

	content: function(node, children) {
		if (!this.elem(node))
			return null;

		while (node.firstChild)
			node.removeChild(node.firstChild);

		return this.append(node, children);
	},

	attr: function(node, key, val) {
		if (!this.elem(node))
			return null;

		var attr = null;

		if (typeof(key) === 'object' && key !== null)
			attr = key;
		else if (typeof(key) === 'string')
			attr = {}, attr[key] = val;

		for (key in attr) {
			if (!attr.hasOwnProperty(key) || attr[key] == null)
				continue;

			if (typeof(attr[key]) === 'function')
				node.addEventListener(key, attr[key]);
			else if (typeof(attr[key]) === 'object')
				node.setAttribute(key, JSON.stringify(attr[key]));
			else
				node.setAttribute(key, attr[key]);
		}
	},

	create: function() {
		var html = arguments[0],
		    attr = arguments[1],
		    data = arguments[2],
		    elem;

		if (!(attr instanceof Object) || Array.isArray(attr) || isNode(attr))
			data = attr, attr = null;

		if (Array.isArray(html)) {
			elem = document.createDocumentFragment();
			this.append(elem, html);
			return elem;
		}

		elem = isNode(html) ? html : document.createElement(html);

		this.attr(elem, attr);
		this.append(elem, data);

		return elem;
	},

	matches: function(node, selector) {
		return this.elem(node) && node.nodeType === 1 ? node.matches(selector) : false;
	},

	parent: function(node, selector) {
		if (this.elem(node) && node.closest)
			return node.closest(selector);

		return null;
	},

	bindClassInstance: function(node, inst) {
		instances.set(node, inst);
	},

	findClassInstance: function(node) {
		var inst = null;

		do {
			inst = instances.get(node) || null;
			node = node.parentNode;
		}
		while (!(inst instanceof Class) && node != null);

		return inst;
	},

	callClassMethod: function(node, method /*, ... */) {
		var inst = this.findClassInstance(node);

		if (inst == null || typeof(inst[method]) != 'function')
			return null;

		return inst[method].apply(inst, inst.varargs(arguments, 2));
	}
});

window.E = function() {
	return dom.create.apply(dom, arguments);
};

/* ---- L ---- */

var modules = {},   /* name -> module instance */
    loading = {};   /* name -> Promise */

var L = window.L = {
	env: { base_url: '/luci-static/resources' },
	Class: Class,
	dom: dom,

	bind: function(fn, self /*, ... */) {
		return Function.prototype.bind.apply(fn, [ self ].concat(Array.prototype.slice.call(arguments, 2)));
	},

	isObject: function(val) {
		return (val != null && typeof(val) == 'object');
	},

	toArray: function(val) {
		if (val == null)
			return [];
		else if (Array.isArray(val))
			return val;
		else if (typeof(val) == 'object')
			return [ val ];

		var s = String(val).trim();

		return (s != '') ? s.split(/\s+/) : [];
	},

	resolveDefault: function(value, defvalue) {
		return Promise.resolve(value).catch(function() { return defvalue });
	},

	error: function(type, fmt /*, ... */) {
		var msg = (fmt || '').format.apply(fmt || '', Array.prototype.slice.call(arguments, 2)),
		    e = new Error(msg);

		e.name = type || 'Error';
		throw e;
	},

	raise: function() {
		return this.error.apply(this, arguments);
	},

	hasSystemFeature: function() {
		return false;
	},

	/* luci.js's directive scanner: quoted strings at the top of the file,
	 * comments skipped, until the first string that is not a directive. */
	scanRequires: function(source) {
		var requirematch = /^require[ \t]+(\S+)(?:[ \t]+as[ \t]+([a-zA-Z_]\S*))?$/,
		    strictmatch = /^use[ \t]+strict$/,
		    out = [];

		for (var i = 0, off = -1, prev = -1, quote = -1, comment = -1, esc = false; i < source.length; i++) {
			var chr = source.charCodeAt(i);

			if (esc) {
				esc = false;
			}
			else if (comment != -1) {
				if ((comment == 47 && chr == 10) || (comment == 42 && prev == 42 && chr == 47))
					comment = -1;
			}
			else if ((chr == 42 || chr == 47) && prev == 47) {
				comment = chr;
			}
			else if (chr == 92) {
				esc = true;
			}
			else if (chr == quote) {
				var s = source.substring(off, i), m = requirematch.exec(s);

				if (m)
					out.push({ dep: m[1], as: m[2] || m[1].replace(/[^a-zA-Z0-9_]/g, '_') });
				else if (!strictmatch.exec(s))
					break;

				off = -1;
				quote = -1;
			}
			else if (quote == -1 && (chr == 34 || chr == 39)) {
				off = i + 1;
				quote = chr;
			}

			prev = chr;
		}

		return out;
	},

	define: function(name, instance) {
		modules[name] = instance;
	},

	require: function(name) {
		if (modules[name] != null)
			return Promise.resolve(modules[name]);

		if (loading[name] != null)
			return loading[name];

		var url = L.env.base_url + '/' + name.replace(/\./g, '/') + '.js';

		return (loading[name] = fetch(url, { cache: 'no-store' }).then(function(res) {
			if (!res.ok)
				L.error('NetworkError', 'HTTP error %d while loading class file "%s"', res.status, url);

			return res.text();
		}).then(function(source) {
			var reqs = L.scanRequires(source);

			return Promise.all(reqs.map(function(r) { return L.require(r.dep) })).then(function(deps) {
				var params = [ 'window', 'document', 'L' ].concat(reqs.map(function(r) { return r.as })),
				    factory = Function.apply(null, params.concat([ source + '\n//# sourceURL=' + url ])),
				    cls = factory.apply(factory, [ window, document, L ].concat(deps));

				if (!Class.isSubclass(cls))
					L.error('TypeError', '"%s" factory yields invalid constructor', name);

				return (modules[name] = new cls());
			});
		}));
	}
};

L.define('baseclass', Class);
L.define('dom', dom);

/* ---- uci: an in-memory configuration ---- */

var uci = Class.singleton({
	__name__: 'LuCI.uci',

	__init__: function() {
		this.state = {};
	},

	reset: function(config, sections) {
		this.state[config] = {};

		for (var sid in sections)
			this.state[config][sid] = Object.assign({ '.name': sid, '.anonymous': false }, sections[sid]);
	},

	load: function() {
		return Promise.resolve();
	},

	save: function() {
		return Promise.resolve();
	},

	get: function(conf, sid, opt) {
		var c = this.state[conf], s = c ? c[sid] : null;

		if (s == null)
			return null;

		if (opt == null)
			return s;

		return s.hasOwnProperty(opt) ? s[opt] : null;
	},

	set: function(conf, sid, opt, val) {
		var s = this.get(conf, sid);

		if (s == null)
			return;

		if (val == null || val === '' || (Array.isArray(val) && val.length == 0))
			delete s[opt];
		else
			s[opt] = Array.isArray(val) ? val.slice() : String(val);
	},

	unset: function(conf, sid, opt) {
		return this.set(conf, sid, opt, null);
	},

	sections: function(conf, type) {
		var c = this.state[conf] || {}, rv = [];

		for (var sid in c)
			if (type == null || c[sid]['.type'] == type)
				rv.push(c[sid]);

		return rv;
	}
});

L.define('uci', uci);

/* ---- validation ---- */

function parseIPv4(s) {
	var m = (typeof(s) == 'string') ? /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(s) : null;

	if (!m || +m[1] > 255 || +m[2] > 255 || +m[3] > 255 || +m[4] > 255)
		return null;

	return [ +m[1], +m[2], +m[3], +m[4] ];
}

function parseIPv6(s) {
	if (typeof(s) != 'string')
		return null;

	var m = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(s);

	if (m) {
		var v4 = parseIPv4(m[2]);

		if (!v4)
			return null;

		s = m[1] + (v4[0] * 256 + v4[1]).toString(16) + ':' + (v4[2] * 256 + v4[3]).toString(16);
	}

	var halves = s.split('::');

	if (halves.length > 2)
		return null;

	function words(str) {
		if (str === '')
			return [];

		var w = str.split(':'), rv = [];

		for (var i = 0; i < w.length; i++) {
			if (!/^[0-9a-fA-F]{1,4}$/.test(w[i]))
				return null;

			rv.push(parseInt(w[i], 16));
		}

		return rv;
	}

	var head = words(halves[0]), tail = (halves.length == 2) ? words(halves[1]) : [];

	if (head == null || tail == null)
		return null;

	if (halves.length == 1)
		return (head.length == 8) ? head : null;

	if (head.length + tail.length > 7)
		return null;

	while (head.length + tail.length < 8)
		head.push(0);

	return head.concat(tail);
}

/* The datatypes LuCI's validation.js offers, as far as mape.js and the test
 * page use them; descriptions as LuCI words them ("Expecting: …"). */
var types = {
	'string': function() { return true },
	integer: function() { return this.assert(/^-?[0-9]+$/.test(this.value), _('integer')) },
	uinteger: function() { return this.assert(/^[0-9]+$/.test(this.value), _('positive integer value')) },
	float: function() { return this.assert(/^-?[0-9]+(\.[0-9]+)?$/.test(this.value), _('decimal value')) },
	range: function(min, max) {
		var v = +this.value;
		return this.assert(/^-?[0-9]+(\.[0-9]+)?$/.test(this.value) && v >= +min && v <= +max,
			_('value between %f and %f').format(min, max));
	},
	min: function(min) {
		return this.assert(/^-?[0-9]+(\.[0-9]+)?$/.test(this.value) && +this.value >= +min, _('value greater or equal to %f').format(min));
	},
	max: function(max) {
		return this.assert(/^-?[0-9]+(\.[0-9]+)?$/.test(this.value) && +this.value <= +max, _('value smaller or equal to %f').format(max));
	},
	ip4addr: function(nomask) {
		var m = nomask ? /^(\d+\.\d+\.\d+\.\d+)$/.exec(this.value)
		               : /^(\d+\.\d+\.\d+\.\d+)(?:\/(\d{1,2}))?$/.exec(this.value);
		return this.assert(m && parseIPv4(m[1]) && (m[2] == null || +m[2] <= 32),
			nomask ? _('valid IPv4 address') : _('valid IPv4 address or network'));
	},
	ip6addr: function(nomask) {
		var m = nomask ? /^([0-9a-fA-F:.]+)$/.exec(this.value)
		               : /^([0-9a-fA-F:.]+)(?:\/(\d{1,3}))?$/.exec(this.value);
		return this.assert(m && parseIPv6(m[1]) && (m[2] == null || +m[2] <= 128),
			nomask ? _('valid IPv6 address') : _('valid IPv6 address or prefix'));
	},
	or: function() {
		var errors = [];
		for (var i = 0; i < arguments.length; i += 2) {
			if (typeof(arguments[i]) != 'function') {
				if (arguments[i] == this.value)
					return this.assert(true);
				errors.push('"%s"'.format(arguments[i]));
				i--;
			}
			else if (arguments[i].apply(this, arguments[i + 1])) {
				return this.assert(true);
			}
			else {
				errors.push(this.error);
			}
		}
		return this.assert(false, _('One of the following: %s').format('\n - ' + errors.join('\n - ')));
	},
	and: function() {
		for (var i = 0; i < arguments.length; i += 2) {
			if (typeof(arguments[i]) != 'function') {
				if (arguments[i] != this.value)
					return this.assert(false, '"%s"'.format(arguments[i]));
				i--;
			}
			else if (!arguments[i].apply(this, arguments[i + 1])) {
				return false;
			}
		}
		return this.assert(true);
	}
};

/* "range(0,32)", 'ip6addr("nomask")', 'or("ignore",range(0,255))' ->
 * [ fn, [ args… ] ], nested calls as [ fn, args ] pairs like LuCI's compiler. */
function compileDatatype(code) {
	var pos = 0;

	function ws() { while (pos < code.length && /\s/.test(code[pos])) pos++ }

	function term() {
		ws();

		var m;

		if ((m = /^"((?:[^"\\]|\\.)*)"|^'((?:[^'\\]|\\.)*)'/.exec(code.substring(pos)))) {
			pos += m[0].length;
			return { lit: (m[1] != null ? m[1] : m[2]) };
		}

		if ((m = /^-?[0-9]+(?:\.[0-9]+)?/.exec(code.substring(pos)))) {
			pos += m[0].length;
			return { lit: +m[0] };
		}

		if ((m = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(code.substring(pos)))) {
			pos += m[0].length;

			var name = m[0], args = [];

			if (!types.hasOwnProperty(name))
				throw new SyntaxError('Unknown datatype "' + name + '"');

			ws();

			if (code[pos] == '(') {
				pos++;
				ws();

				while (code[pos] != ')') {
					var t = term();

					if (t.fn)
						args.push(t.fn, t.args);
					else
						args.push(t.lit);

					ws();

					if (code[pos] == ',')
						pos++;
					else if (code[pos] != ')')
						throw new SyntaxError('Unexpected "' + code[pos] + '" in datatype "' + code + '"');
				}

				pos++;
			}

			return { fn: types[name], args: args };
		}

		throw new SyntaxError('Cannot parse datatype "' + code + '"');
	}

	var t = term();

	if (!t.fn)
		throw new SyntaxError('Datatype "' + code + '" is no function');

	return [ t.fn, t.args ];
}

var Validator = Class.extend({
	__name__: 'Validation',

	__init__: function(field, type, optional, vfunc) {
		this.field = field;
		this.optional = optional;
		this.vfunc = vfunc;
		this.vstack = compileDatatype(type);
	},

	assert: function(condition, message) {
		if (!condition) {
			this.field.classList.add('cbi-input-invalid');
			this.error = message;
			return false;
		}

		this.field.classList.remove('cbi-input-invalid');
		this.error = null;
		return true;
	},

	validate: function() {
		/* element is detached: LuCI skips it */
		if (!this.field.closest('body') && !this.field.closest('[data-field]'))
			return true;

		this.field.classList.remove('cbi-input-invalid');
		this.value = (this.field.value != null) ? this.field.value : '';
		this.error = null;

		var valid;

		if (this.value.length === 0)
			valid = this.assert(this.optional, _('non-empty value'));
		else
			valid = this.vstack[0].apply(this, this.vstack[1]);

		if (valid !== true) {
			var message = _('Expecting: %s').format(this.error);
			this.field.setAttribute('data-tooltip', message);
			this.field.setAttribute('data-tooltip-style', 'error');
			this.field.dispatchEvent(new CustomEvent('validation-failure', { bubbles: true, detail: { message: message } }));
			return false;
		}

		if (typeof(this.vfunc) == 'function')
			valid = this.vfunc(this.value);

		if (valid !== true) {
			this.assert(false, valid);
			this.field.setAttribute('data-tooltip', valid);
			this.field.setAttribute('data-tooltip-style', 'error');
			this.field.dispatchEvent(new CustomEvent('validation-failure', { bubbles: true, detail: { message: valid } }));
			return false;
		}

		this.field.removeAttribute('data-tooltip');
		this.field.removeAttribute('data-tooltip-style');
		this.field.dispatchEvent(new CustomEvent('validation-success', { bubbles: true }));
		return true;
	}
});

var validation = Class.singleton({
	__name__: 'LuCI.validation',
	parseIPv4: parseIPv4,
	parseIPv6: parseIPv6,
	types: types,
	compile: compileDatatype,
	create: function(field, type, optional, vfunc) {
		return new Validator(field, type, optional, vfunc);
	}
});

L.define('validation', validation);

/* ---- ui ---- */

var UIElement = Class.extend({
	__name__: 'UIElement',

	getValue: function() {
		if (dom.matches(this.node, 'select') || dom.matches(this.node, 'input'))
			return this.node.value;

		return null;
	},

	setValue: function(value) {
		if (dom.matches(this.node, 'select') || dom.matches(this.node, 'input'))
			this.node.value = value;
	},

	setPlaceholder: function(value) {
		var node = this.node.querySelector('input,textarea');

		if (node)
			node.setAttribute('placeholder', value);
	},

	isChanged: function() {
		return (this.node ? this.node.getAttribute('data-changed') : null) == 'true';
	},

	isValid: function() {
		return (this.validState !== false);
	},

	getValidationError: function() {
		return this.validationError || '';
	},

	triggerValidation: function() {
		if (typeof(this.vfunc) != 'function')
			return false;

		var wasValid = this.isValid();

		this.vfunc();

		return (wasValid != this.isValid());
	},

	registerEvents: function(targetNode, synevent, events) {
		var dispatch = [];

		for (var i = 0; i < events.length; i++)
			dispatch.push(events[i]);

		var self = this;

		for (var j = 0; j < dispatch.length; j++)
			targetNode.addEventListener(dispatch[j], function(ev) {
				self.node.dispatchEvent(new CustomEvent(synevent, {
					bubbles: true,
					detail: { instance: self, element: targetNode, event: ev }
				}));
			});
	},

	setUpdateEvents: function(targetNode /*, ... */) {
		var datatype = this.options.datatype,
		    optional = this.options.hasOwnProperty('optional') ? this.options.optional : true,
		    validate = this.options.validate,
		    events = this.varargs(arguments, 1),
		    self = this;

		this.registerEvents(targetNode, 'widget-update', events);

		if (!datatype && !validate)
			return;

		this.vfunc = ui.addValidator.apply(ui, [ targetNode, datatype || 'string', optional, validate ].concat(events));

		this.node.addEventListener('validation-success', function() {
			self.validState = true;
			self.validationError = '';
		});

		this.node.addEventListener('validation-failure', function(ev) {
			self.validState = false;
			self.validationError = ev.detail.message;
		});
	},

	setChangeEvents: function(targetNode /*, ... */) {
		var self = this,
		    events = this.varargs(arguments, 1);

		for (var i = 0; i < events.length; i++)
			targetNode.addEventListener(events[i], function() { self.node.setAttribute('data-changed', true) });

		this.registerEvents(targetNode, 'widget-change', events);
	},

	render: function() {}
});

var UITextfield = UIElement.extend({
	__name__: 'UITextfield',

	__init__: function(value, options) {
		this.value = value;
		this.options = Object.assign({ optional: true }, options);
	},

	render: function() {
		var frameEl = E('div', { 'id': this.options.id }),
		    inputEl = E('input', {
			'id': this.options.id ? 'widget.' + this.options.id : null,
			'name': this.options.name || this.options.id,
			'type': 'text',
			'class': 'cbi-input-text',
			'placeholder': this.options.placeholder,
			'disabled': this.options.disabled ? '' : null
		    });

		if (this.value != null)
			inputEl.value = Array.isArray(this.value) ? this.value.join(' ') : this.value;

		frameEl.appendChild(inputEl);

		return this.bind(frameEl);
	},

	bind: function(frameEl) {
		var inputEl = frameEl.querySelector('input');

		this.node = frameEl;
		this.setUpdateEvents(inputEl, 'keyup', 'blur');
		this.setChangeEvents(inputEl, 'change');
		dom.bindClassInstance(frameEl, this);

		return frameEl;
	},

	getValue: function() {
		return this.node.querySelector('input').value;
	},

	setValue: function(value) {
		this.node.querySelector('input').value = (value != null) ? value : '';
	}
});

var UISelect = UIElement.extend({
	__name__: 'UISelect',

	__init__: function(value, choices, options) {
		if (!L.isObject(choices))
			choices = {};

		this.values = L.toArray(value);
		this.choices = choices;
		this.options = Object.assign({ multiple: false, widget: 'select', orientation: 'horizontal' }, options);
	},

	render: function() {
		var frameEl = E('div', { 'id': this.options.id }),
		    keys = Object.keys(this.choices),
		    selectEl = E('select', {
			'id': this.options.id ? 'widget.' + this.options.id : null,
			'name': this.options.name || this.options.id,
			'class': 'cbi-input-select',
			'disabled': this.options.disabled ? '' : null
		    });

		if (this.options.sort === true)
			keys.sort();
		else if (Array.isArray(this.options.sort))
			keys = this.options.sort;

		if (this.options.optional)
			selectEl.appendChild(E('option', { 'value': '' }, [ this.options.placeholder || _('-- Please choose --') ]));

		for (var i = 0; i < keys.length; i++) {
			var opt = E('option', { 'value': keys[i] }, [ this.choices[keys[i]] || keys[i] ]);

			if (this.values.indexOf(keys[i]) > -1)
				opt.setAttribute('selected', '');

			selectEl.appendChild(opt);
		}

		frameEl.appendChild(selectEl);

		return this.bind(frameEl);
	},

	bind: function(frameEl) {
		var selectEl = frameEl.querySelector('select');

		this.node = frameEl;
		this.setUpdateEvents(selectEl, 'change', 'click', 'blur');
		this.setChangeEvents(selectEl, 'change');
		dom.bindClassInstance(frameEl, this);

		return frameEl;
	},

	getValue: function() {
		return this.node.querySelector('select').value;
	},

	setValue: function(value) {
		this.node.querySelector('select').value = value;
	}
});

var UICheckbox = UIElement.extend({
	__name__: 'UICheckbox',

	__init__: function(value, options) {
		this.value = value;
		this.options = Object.assign({ value_enabled: '1', value_disabled: '0' }, options);
	},

	render: function() {
		var id = 'cb%08x'.format(Math.random() * 0xffffffff),
		    frameEl = E('div', { 'id': this.options.id, 'class': 'cbi-checkbox' }),
		    inputEl = E('input', {
			'id': this.options.id ? 'widget.' + this.options.id : id,
			'name': this.options.name || this.options.id,
			'type': 'checkbox',
			'value': this.options.value_enabled,
			'disabled': this.options.disabled ? '' : null
		    });

		inputEl.checked = (this.value == this.options.value_enabled);
		frameEl.appendChild(inputEl);
		frameEl.appendChild(E('label', { 'for': inputEl.id }));

		return this.bind(frameEl);
	},

	bind: function(frameEl) {
		var inputEl = frameEl.querySelector('input[type="checkbox"]');

		this.node = frameEl;
		this.setUpdateEvents(inputEl, 'click', 'blur');
		this.setChangeEvents(inputEl, 'change');
		dom.bindClassInstance(frameEl, this);

		return frameEl;
	},

	isChecked: function() {
		return this.node.querySelector('input[type="checkbox"]').checked;
	},

	getValue: function() {
		return this.isChecked() ? this.options.value_enabled : this.options.value_disabled;
	},

	setValue: function(value) {
		this.node.querySelector('input[type="checkbox"]').checked = (value == this.options.value_enabled);
	}
});

var UIHiddenfield = UIElement.extend({
	__name__: 'UIHiddenfield',

	__init__: function(value, options) {
		this.value = value;
		this.options = Object.assign({}, options);
	},

	render: function() {
		var hiddenEl = E('input', { 'id': this.options.id, 'type': 'hidden' });

		hiddenEl.value = (this.value != null && typeof(this.value) != 'object') ? this.value : '';
		this.node = hiddenEl;
		dom.bindClassInstance(hiddenEl, this);

		return hiddenEl;
	}
});

var ui = Class.singleton({
	__name__: 'LuCI.ui',

	AbstractElement: UIElement,
	Textfield: UITextfield,
	Select: UISelect,
	Checkbox: UICheckbox,
	Hiddenfield: UIHiddenfield,

	addValidator: function(field, type, optional, vfunc /*, ... */) {
		if (type == null)
			return;

		var events = this.varargs(arguments, 4);

		if (events.length == 0)
			events.push('blur', 'keyup');

		var v = validation.create(field, type, optional, vfunc),
		    fn = v.validate.bind(v);

		for (var i = 0; i < events.length; i++)
			field.addEventListener(events[i], fn);

		fn();

		return fn;
	},

	showModal: function(title, children) {
		var m = document.getElementById('modal') || document.body.appendChild(E('div', { 'id': 'modal' }));
		dom.content(m, [ E('h4', {}, [ title ]) ].concat(L.toArray(children)));
		return m;
	},

	hideModal: function() {
		var m = document.getElementById('modal');
		if (m)
			dom.content(m, null);
	},

	addNotification: function(title, children) {
		return this.showModal(title, children);
	}
});

L.define('ui', ui);

/* ---- form ---- */

function isEqual(x, y) {
	if (typeof(y) == 'object' && y instanceof RegExp)
		return (x == null) ? false : y.test(x);

	if (x != null && y != null && typeof(x) != typeof(y))
		return false;

	if ((x == null && y != null) || (x != null && y == null))
		return false;

	if (Array.isArray(x)) {
		if (x.length != y.length)
			return false;

		for (var i = 0; i < x.length; i++)
			if (!isEqual(x[i], y[i]))
				return false;
	}
	else if (typeof(x) == 'object') {
		for (var k in x)
			if (x.hasOwnProperty(k) && (!y.hasOwnProperty(k) || !isEqual(x[k], y[k])))
				return false;

		for (var k2 in y)
			if (y.hasOwnProperty(k2) && !x.hasOwnProperty(k2))
				return false;
	}
	else if (x != y) {
		return false;
	}

	return true;
}

function isContained(x, y) {
	if (Array.isArray(x)) {
		for (var i = 0; i < x.length; i++)
			if (x[i] == y)
				return true;
	}
	else if (L.isObject(x)) {
		if (x.hasOwnProperty(y) && x[y] != null)
			return true;
	}
	else if (typeof(x) == 'string') {
		return (x.indexOf(y) > -1);
	}

	return false;
}

var CBIAbstractElement = Class.extend({
	__init__: function(title, description) {
		this.title = title || '';
		this.description = description || '';
		this.children = [];
	},

	append: function(obj) {
		this.children.push(obj);
	},

	loadChildren: function(section_id) {
		return Promise.all(this.children.map(function(c) { return c.load(section_id) }));
	},

	renderChildren: function(tab_name /*, ... */) {
		var tasks = [], index = 0;

		for (var i = 0, child; (child = this.children[i]) != null; i++) {
			if (tab_name && child.tab != tab_name)
				continue;

			tasks.push(child.render.apply(child, this.varargs(arguments, 1, index++)));
		}

		return Promise.all(tasks);
	},

	stripTags: function(s) {
		if (typeof(s) == 'string' && !s.match(/[<>]/))
			return s;

		var x = E('div', {}, s);
		return x.textContent || x.innerText || '';
	},

	titleFn: function(attr) {
		var s = this[attr];

		if (typeof(s) == 'function')
			s = s.apply(this, this.varargs(arguments, 1));

		return (s != null) ? this.stripTags(String(s)).trim() : null;
	}
});

var CBIMap = CBIAbstractElement.extend({
	__name__: 'CBI.Map',

	__init__: function(config /*, ... */) {
		this.super('__init__', this.varargs(arguments, 1));

		this.config = config;
		this.parsechain = [ config ];
		this.data = uci;
	},

	findElements: function(/* ... */) {
		var q = null;

		if (arguments.length == 1)
			q = arguments[0];
		else if (arguments.length == 2)
			q = '[%s="%s"]'.format(arguments[0], arguments[1]);
		else
			L.error('InternalError', 'Expecting one or two arguments to findElements()');

		return this.root.querySelectorAll(q);
	},

	findElement: function(/* ... */) {
		var res = this.findElements.apply(this, arguments);
		return res.length ? res[0] : null;
	},

	section: function(cbiClass /*, ... */) {
		if (!CBIAbstractSection.isSubclass(cbiClass))
			L.error('TypeError', 'Class must be a descendent of CBIAbstractSection');

		var obj = cbiClass.instantiate(this.varargs(arguments, 1, this));
		this.append(obj);
		return obj;
	},

	load: function() {
		return this.data.load(this.parsechain).then(L.bind(function() {
			return Promise.all(this.children.map(function(s) { return s.load() }));
		}, this));
	},

	parse: function() {
		var tasks = [];

		for (var i = 0; i < this.children.length; i++)
			tasks.push(this.children[i].parse());

		return Promise.all(tasks);
	},

	save: function(cb, silent) {
		this.checkDepends();

		return this.parse()
			.then(cb)
			.then(this.data.save.bind(this.data))
			.catch(function(e) {
				if (!silent)
					ui.showModal(_('Save error'), [ E('p', {}, [ e.message ]) ]);

				return Promise.reject(e);
			});
	},

	render: function() {
		return this.load().then(L.bind(this.renderContents, this));
	},

	renderContents: function() {
		var mapEl = E('div', { 'id': 'cbi-' + this.config, 'class': 'cbi-map' });

		if (this.title)
			mapEl.appendChild(E('h2', {}, [ this.title ]));

		return this.renderChildren(null).then(L.bind(function(nodes) {
			dom.append(mapEl, nodes);

			this.root = mapEl;
			this.checkDepends();

			dom.bindClassInstance(mapEl, this);

			return mapEl;
		}, this));
	},

	lookupOption: function(name, section_id, config_name) {
		var id, elem, sid, inst;

		if (name.indexOf('.') > -1)
			id = 'cbid.%s'.format(name);
		else
			id = 'cbid.%s.%s.%s'.format(config_name || this.config, section_id, name);

		elem = this.findElement('data-field', id);
		sid = elem ? id.split(/\./)[2] : null;
		inst = elem ? dom.findClassInstance(elem) : null;

		return (inst instanceof CBIAbstractValue) ? [ inst, sid ] : null;
	},

	isDependencySatisfied: function(depends, config_name, section_id) {
		var def = false;

		if (!Array.isArray(depends) || !depends.length)
			return true;

		for (var i = 0; i < depends.length; i++) {
			var istat = true,
			    reverse = depends[i]['!reverse'],
			    contains = depends[i]['!contains'];

			for (var dep in depends[i]) {
				if (dep == '!reverse' || dep == '!contains') {
					continue;
				}
				else if (dep == '!default') {
					def = true;
					istat = false;
				}
				else {
					var res = this.lookupOption(dep, section_id, config_name),
					    val = (res && res[0].isActive(res[1])) ? res[0].formvalue(res[1]) : null;

					var equal = contains
						? isContained(val, depends[i][dep])
						: isEqual(val, depends[i][dep]);

					istat = (istat && (reverse ? !equal : equal));
				}
			}

			if (istat ^ def)
				return true;
		}

		return false;
	},

	checkDepends: function(ev, n) {
		var changed = false;

		for (var i = 0, s; (s = this.children[i]) != null; i++)
			if (s.checkDepends(ev, n))
				changed = true;

		if (changed && (n || 0) < 10)
			this.checkDepends(ev, (n || 10) + 1);
	}
});

var CBIAbstractSection = CBIAbstractElement.extend({
	__name__: 'CBI.AbstractSection',

	__init__: function(map, sectionType /*, ... */) {
		this.super('__init__', this.varargs(arguments, 2));

		this.sectiontype = sectionType;
		this.map = map;
		this.config = map.config;
		this.optional = true;
		this.addremove = false;
		this.dynamic = false;
	},

	cfgsections: function() {
		L.error('InternalError', 'Not implemented');
	},

	filter: function() {
		return true;
	},

	load: function() {
		var section_ids = this.cfgsections(), tasks = [];

		for (var i = 0; i < section_ids.length; i++)
			tasks.push(this.loadChildren(section_ids[i]).then(L.bind(function(section_id, values) {
				for (var j = 0; j < values.length; j++)
					this.children[j].cfgvalue(section_id, values[j]);
			}, this, section_ids[i])));

		return Promise.all(tasks);
	},

	parse: function() {
		var section_ids = this.cfgsections(), tasks = [];

		for (var i = 0; i < section_ids.length; i++)
			for (var j = 0; j < this.children.length; j++)
				tasks.push(this.children[j].parse(section_ids[i]));

		return Promise.all(tasks);
	},

	tab: function(name, title, description) {
		if (this.tabs && this.tabs[name])
			throw 'Tab already declared';

		var entry = { name: name, title: title, description: description, children: [] };

		this.tabs = this.tabs || [];
		this.tabs.push(entry);
		this.tabs[name] = entry;

		this.tab_names = this.tab_names || [];
		this.tab_names.push(name);
	},

	option: function(cbiClass /*, ... */) {
		if (!CBIAbstractValue.isSubclass(cbiClass))
			L.error('TypeError', 'Class must be a descendent of CBIAbstractValue');

		var obj = cbiClass.instantiate(this.varargs(arguments, 1, this.map, this));
		this.append(obj);
		return obj;
	},

	taboption: function(tabName /*, ... */) {
		if (!this.tabs || !this.tabs[tabName])
			L.error('ReferenceError', 'Associated tab not declared');

		var obj = this.option.apply(this, this.varargs(arguments, 1));
		obj.tab = tabName;
		this.tabs[tabName].children.push(obj);
		return obj;
	},

	cfgvalue: function(section_id, option) {
		var rv = (arguments.length == 1) ? {} : null;

		for (var i = 0, o; (o = this.children[i]) != null; i++)
			if (rv)
				rv[o.option] = o.cfgvalue(section_id);
			else if (o.option == option)
				return o.cfgvalue(section_id);

		return rv;
	},

	formvalue: function(section_id, option) {
		var rv = (arguments.length == 1) ? {} : null;

		for (var i = 0, o; (o = this.children[i]) != null; i++) {
			var func = this.map.root ? o.formvalue : o.cfgvalue;

			if (rv)
				rv[o.option] = func.call(o, section_id);
			else if (o.option == option)
				return func.call(o, section_id);
		}

		return rv;
	},

	getUIElement: function(section_id, option) {
		var rv = (arguments.length == 1) ? {} : null;

		for (var i = 0, o; (o = this.children[i]) != null; i++)
			if (rv)
				rv[o.option] = o.getUIElement(section_id);
			else if (o.option == option)
				return o.getUIElement(section_id);

		return rv;
	},

	getOption: function(option) {
		var rv = (arguments.length == 0) ? {} : null;

		for (var i = 0, o; (o = this.children[i]) != null; i++)
			if (rv)
				rv[o.option] = o;
			else if (o.option == option)
				return o;

		return rv;
	},

	renderUCISection: function(section_id) {
		if (!this.tabs)
			return this.renderChildren(null, section_id, false).then(function(nodes) { return E(nodes) });

		var tasks = [];

		for (var i = 0; i < this.tab_names.length; i++)
			tasks.push(this.renderChildren(this.tab_names[i], section_id, false));

		return Promise.all(tasks).then(L.bind(function(tabs) {
			var containerEls = E([]);

			for (var i = 0; i < tabs.length; i++) {
				var tab_name = this.tab_names[i], tab = this.tabs[tab_name];

				containerEls.appendChild(E('fieldset', {
					'id': 'container.%s.%s.%s'.format(this.uciconfig || this.map.config, section_id, tab_name),
					'class': 'cbi-tab',
					'data-tab': tab_name,
					'data-tab-title': tab.title
				}, [ E('legend', {}, [ tab.title ]) ].concat(tabs[i])));
			}

			return containerEls;
		}, this));
	},

	checkDepends: function(ev, n) {
		var changed = false, sids = this.cfgsections();

		for (var i = 0, sid; (sid = sids[i]) != null; i++) {
			for (var j = 0, o; (o = this.children[j]) != null; j++) {
				var isActive = o.isActive(sid),
				    isSatisfied = o.checkDepends(sid);

				if (isActive != isSatisfied) {
					o.setActive(sid, !isActive);
					isActive = !isActive;
					changed = true;
				}

				if (!n && isActive)
					o.triggerValidation(sid);
			}
		}

		return changed;
	}
});

var CBINamedSection = CBIAbstractSection.extend({
	__name__: 'CBI.NamedSection',

	__init__: function(map, section_id /*, ... */) {
		this.super('__init__', this.varargs(arguments, 2, map));
		this.section = section_id;
	},

	cfgsections: function() {
		return [ this.section ];
	},

	render: function() {
		var section_id = this.section;

		return this.renderUCISection(section_id).then(L.bind(function(nodes) {
			var sectionEl = E('div', {
				'id': 'cbi-%s-%s'.format(this.config, section_id),
				'class': 'cbi-section',
				'data-section-id': section_id
			});

			if (this.title)
				sectionEl.appendChild(E('h3', {}, [ this.title ]));

			sectionEl.appendChild(E('div', { 'class': 'cbi-section-node', 'id': 'cbi-%s-%s'.format(this.config, section_id) }, nodes));
			dom.bindClassInstance(sectionEl, this);

			return sectionEl;
		}, this));
	}
});

var CBIAbstractValue = CBIAbstractElement.extend({
	__name__: 'CBI.AbstractValue',

	__init__: function(map, section, option /*, ... */) {
		this.super('__init__', this.varargs(arguments, 3));

		this.section = section;
		this.option = option;
		this.map = map;
		this.config = map.config;

		this.deps = [];
		this.initial = {};
		this.rmempty = true;
		this.default = null;
		this.size = null;
		this.optional = false;
		this.retain = false;
	},

	depends: function(field, value) {
		var deps;

		if (typeof(field) === 'string')
			deps = {}, deps[field] = value;
		else
			deps = field;

		this.deps.push(deps);
	},

	transformDepList: function(section_id) {
		var deps = [];

		for (var i = 0; i < this.deps.length; i++) {
			var dep = {};

			for (var k in this.deps[i])
				if (this.deps[i].hasOwnProperty(k))
					dep[(k.charAt(0) === '!') ? k : (k.indexOf('.') !== -1)
						? 'cbid.' + k
						: 'cbid.%s.%s.%s'.format(this.config, section_id, k)] = this.deps[i][k];

			deps.push(dep);
		}

		return deps;
	},

	transformChoices: function() {
		if (!Array.isArray(this.keylist) || this.keylist.length == 0)
			return null;

		var choices = {};

		for (var i = 0; i < this.keylist.length; i++)
			choices[this.keylist[i]] = this.vallist[i];

		return choices;
	},

	checkDepends: function(section_id) {
		return this.map.isDependencySatisfied(this.deps, this.config, section_id);
	},

	cbid: function(section_id) {
		if (section_id == null)
			L.error('TypeError', 'Section ID required');

		return 'cbid.%s.%s.%s'.format(this.uciconfig || this.section.uciconfig || this.map.config, section_id, this.option);
	},

	load: function(section_id) {
		if (section_id == null)
			L.error('TypeError', 'Section ID required');

		return this.map.data.get(this.uciconfig || this.section.uciconfig || this.map.config,
			this.ucisection || section_id, this.ucioption || this.option);
	},

	getUIElement: function(section_id) {
		var node = this.map.findElement('id', this.cbid(section_id)),
		    inst = node ? dom.findClassInstance(node) : null;

		return (inst instanceof UIElement) ? inst : null;
	},

	cfgvalue: function(section_id, set_value) {
		if (section_id == null)
			L.error('TypeError', 'Section ID required');

		if (arguments.length == 2) {
			this.data = this.data || {};
			this.data[section_id] = set_value;
		}

		return this.data ? this.data[section_id] : null;
	},

	formvalue: function(section_id) {
		var elem = this.getUIElement(section_id);
		return elem ? elem.getValue() : null;
	},

	textvalue: function(section_id) {
		var cval = this.cfgvalue(section_id);

		if (cval == null)
			cval = this.default;

		if (Array.isArray(cval))
			cval = cval.join(' ');

		return (cval != null) ? '%h'.format(cval) : null;
	},

	validate: function(section_id, value) {
		return true;
	},

	isValid: function(section_id) {
		var elem = this.getUIElement(section_id);
		return elem ? elem.isValid() : true;
	},

	getValidationError: function(section_id) {
		var elem = this.getUIElement(section_id);
		return elem ? elem.getValidationError() : '';
	},

	isActive: function(section_id) {
		var field = this.map.findElement('data-field', this.cbid(section_id));
		return (field != null && !field.classList.contains('hidden'));
	},

	setActive: function(section_id, active) {
		var field = this.map.findElement('data-field', this.cbid(section_id));

		if (field && field.classList.contains('hidden') == active) {
			field.classList[active ? 'remove' : 'add']('hidden');
			return true;
		}

		return false;
	},

	triggerValidation: function(section_id) {
		var elem = this.getUIElement(section_id);
		return elem ? elem.triggerValidation() : true;
	},

	parse: function(section_id) {
		var active = this.isActive(section_id);

		if (active && !this.isValid(section_id)) {
			var title = this.stripTags(this.title).trim(),
			    error = this.getValidationError(section_id);

			return Promise.reject(new TypeError(
				_('Option "%s" contains an invalid input value.').format(title || this.option) + ' ' + error));
		}

		if (active) {
			var cval = this.cfgvalue(section_id),
			    fval = this.formvalue(section_id);

			if (fval == null || fval == '') {
				if (this.rmempty || this.optional)
					return Promise.resolve(this.remove(section_id));

				return Promise.reject(new TypeError(
					_('Option "%s" must not be empty.').format(this.stripTags(this.title).trim() || this.option)));
			}
			else if (this.forcewrite || !isEqual(cval, fval)) {
				return Promise.resolve(this.write(section_id, fval));
			}
		}
		else if (!this.retain) {
			return Promise.resolve(this.remove(section_id));
		}

		return Promise.resolve();
	},

	write: function(section_id, formvalue) {
		return this.map.data.set(this.uciconfig || this.section.uciconfig || this.map.config,
			this.ucisection || section_id, this.ucioption || this.option, formvalue);
	},

	remove: function(section_id) {
		return this.map.data.unset(this.uciconfig || this.section.uciconfig || this.map.config,
			this.ucisection || section_id, this.ucioption || this.option);
	},

	render: function(option_index, section_id, in_table) {
		return Promise.resolve(this.cfgvalue(section_id))
			.then(L.bind(this.renderWidget, this, section_id, option_index))
			.then(L.bind(this.renderFrame, this, section_id, in_table, option_index));
	},

	renderFrame: function(section_id, in_table, option_index, nodes) {
		var optionEl = E('div', {
			'class': 'cbi-value',
			'id': 'cbi-%s-%s-%s'.format(this.config, section_id, this.option),
			'data-name': this.option,
			'data-field': this.cbid(section_id),
			'data-widget': this.__name__
		});

		if (typeof(this.title) === 'string' && this.title !== '')
			optionEl.appendChild(E('label', {
				'class': 'cbi-value-title',
				'for': 'widget.' + this.cbid(section_id)
			}, [ this.stripTags(this.title) ]));

		var fieldEl = optionEl.appendChild(E('div', { 'class': 'cbi-value-field' }));

		if (nodes)
			fieldEl.appendChild(nodes);

		if (typeof(this.description) === 'string' && this.description !== '')
			dom.append(fieldEl, E('div', { 'class': 'cbi-value-description' }, this.description.trim()));

		if (this.deps.length)
			optionEl.classList.add('hidden');

		optionEl.addEventListener('widget-change', L.bind(this.map.checkDepends, this.map));
		optionEl.addEventListener('widget-change', L.bind(this.handleValueChange, this, section_id, {}));

		dom.bindClassInstance(optionEl, this);

		return optionEl;
	},

	handleValueChange: function(section_id, state, ev) {
		if (typeof(this.onchange) != 'function')
			return;

		var value = this.formvalue(section_id);

		if (isEqual(value, state.previousValue))
			return;

		state.previousValue = value;
		this.onchange.call(this, ev, section_id, value);
	}
});

var CBIValue = CBIAbstractValue.extend({
	__name__: 'CBI.Value',

	value: function(key, val) {
		this.keylist = this.keylist || [];
		this.keylist.push(String(key));

		this.vallist = this.vallist || [];
		this.vallist.push(dom.elem(val) ? val : String(val != null ? val : key));
	},

	renderWidget: function(section_id, option_index, cfgvalue) {
		var value = (cfgvalue != null) ? cfgvalue : this.default;

		return new UITextfield(value, {
			id: this.cbid(section_id),
			optional: this.optional || this.rmempty,
			datatype: this.datatype,
			placeholder: this.placeholder,
			validate: L.bind(this.validate, this, section_id)
		}).render();
	}
});

var CBIListValue = CBIValue.extend({
	__name__: 'CBI.ListValue',

	__init__: function() {
		this.super('__init__', arguments);
		this.widget = 'select';
		this.deplist = [];
	},

	renderWidget: function(section_id, option_index, cfgvalue) {
		return new UISelect((cfgvalue != null) ? cfgvalue : this.default, this.transformChoices(), {
			id: this.cbid(section_id),
			size: this.size,
			sort: this.keylist,
			optional: this.optional,
			placeholder: this.placeholder,
			validate: L.bind(this.validate, this, section_id)
		}).render();
	}
});

var CBIFlagValue = CBIValue.extend({
	__name__: 'CBI.FlagValue',

	__init__: function() {
		this.super('__init__', arguments);

		this.enabled = '1';
		this.disabled = '0';
		this.default = this.disabled;
	},

	renderWidget: function(section_id, option_index, cfgvalue) {
		return new UICheckbox((cfgvalue != null) ? cfgvalue : this.default, {
			id: this.cbid(section_id),
			value_enabled: this.enabled,
			value_disabled: this.disabled,
			validate: L.bind(this.validate, this, section_id)
		}).render();
	},

	formvalue: function(section_id) {
		var elem = this.getUIElement(section_id),
		    checked = elem ? elem.isChecked() : false;

		return checked ? this.enabled : this.disabled;
	},

	textvalue: function(section_id) {
		var cval = this.cfgvalue(section_id);

		if (cval == null)
			cval = this.default;

		return (cval == this.enabled) ? _('Yes') : _('No');
	},

	parse: function(section_id) {
		if (this.isActive(section_id)) {
			var fval = this.formvalue(section_id);

			if (!this.isValid(section_id)) {
				var title = this.stripTags(this.title).trim();
				return Promise.reject(new TypeError(
					_('Option "%s" contains an invalid input value.').format(title || this.option)));
			}

			if (fval == this.default && (this.optional || this.rmempty))
				return Promise.resolve(this.remove(section_id));

			return Promise.resolve(this.write(section_id, fval));
		}
		else if (!this.retain) {
			return Promise.resolve(this.remove(section_id));
		}

		return Promise.resolve();
	}
});

var CBIDummyValue = CBIValue.extend({
	__name__: 'CBI.DummyValue',

	renderWidget: function(section_id, option_index, cfgvalue) {
		var value = (cfgvalue != null) ? cfgvalue : this.default,
		    hiddenEl = new UIHiddenfield(value, { id: this.cbid(section_id) }),
		    outputEl = E('div');

		dom.append(outputEl, this.rawhtml ? value : [ value ]);

		return E([ outputEl, hiddenEl.render() ]);
	},

	remove: function() {},
	write: function() {}
});

var form = Class.singleton({
	__name__: 'LuCI.form',

	Map: CBIMap,
	AbstractSection: CBIAbstractSection,
	NamedSection: CBINamedSection,
	AbstractValue: CBIAbstractValue,
	Value: CBIValue,
	ListValue: CBIListValue,
	Flag: CBIFlagValue,
	DummyValue: CBIDummyValue
});

L.define('form', form);

/* ---- network ---- */

var proto_errors = {
	CONNECT_FAILED: _('Connection attempt failed'),
	INVALID_ADDRESS: _('IP address is invalid'),
	NO_DEVICE: _('Network device is not present')
};

var iface_patterns_virtual = [],
    _protocols = {},
    _state = null;

function isVirtualIfname(ifname) {
	for (var i = 0; i < iface_patterns_virtual.length; i++)
		if (iface_patterns_virtual[i].test(ifname))
			return true;

	return false;
}

var Device = Class.extend({
	__name__: 'LuCI.network.Device',

	__init__: function(ifname, network) {
		this.ifname = ifname;
		this.network = network;
	},

	getName: function() {
		return this.ifname;
	},

	getType: function() {
		return isVirtualIfname(this.ifname) ? 'tunnel' : 'ethernet';
	}
});

function ifnameOf(obj) {
	if (obj instanceof Protocol)
		return obj.getIfname();
	else if (obj instanceof Device)
		return obj.getName();
	else if (typeof(obj) == 'string')
		return obj.replace(/:.+$/, '');

	return null;
}

var Protocol = Class.extend({
	__name__: 'LuCI.network.Protocol',

	__init__: function(name) {
		this.sid = name;
	},

	_get: function(opt) {
		var val = uci.get('network', this.sid, opt);
		return Array.isArray(val) ? val.join(' ') : (val || '');
	},

	/* Reads the interface's entry of `network.interface dump`; like LuCI
	 * it fails when the network state was never loaded. */
	_ubus: function(field) {
		for (var i = 0; i < _state.ifaces.length; i++) {
			if (_state.ifaces[i].interface != this.sid)
				continue;

			return (field != null ? _state.ifaces[i][field] : _state.ifaces[i]);
		}
	},

	get: function(opt) {
		return uci.get('network', this.sid, opt);
	},

	set: function(opt, val) {
		return uci.set('network', this.sid, opt, val);
	},

	getIfname: function() {
		return this.isFloating() ? this._ubus('l3_device') : (this._ubus('device') || this._ubus('l3_device'));
	},

	getProtocol: function() {
		return null;
	},

	getI18n: function() {
		return _('Unknown');
	},

	getName: function() {
		return this.sid;
	},

	getOpkgPackage: function() {
		return null;
	},

	isCreateable: function(ifname) {
		return Promise.resolve(null);
	},

	isInstalled: function() {
		return true;
	},

	isVirtual: function() {
		return false;
	},

	isFloating: function() {
		return false;
	},

	isUp: function() {
		return (this._ubus('up') == true);
	},

	getErrors: function() {
		var errors = this._ubus('errors'), rv = null;

		if (Array.isArray(errors)) {
			for (var i = 0; i < errors.length; i++) {
				if (!L.isObject(errors[i]) || typeof(errors[i].code) != 'string')
					continue;

				rv = rv || [];
				rv.push(proto_errors[errors[i].code] || _('Unknown error (%s)').format(errors[i].code));
			}
		}

		return rv;
	},

	getDevice: function() {
		if (this.isVirtual())
			return new Device('%s-%s'.format(this.getProtocol(), this.sid), this);

		return null;
	},

	getDevices: function() {
		return null;
	},

	containsDevice: function(ifname) {
		ifname = ifnameOf(ifname);
		return (ifname != null && this.isVirtual() && '%s-%s'.format(this.getProtocol(), this.sid) == ifname);
	},

	renderFormOptions: function(section) {}
});

var network = Class.singleton({
	__name__: 'LuCI.network',

	Protocol: Protocol,
	Device: Device,

	/* test hook: what `ubus call network.interface dump` returns */
	setInterfaceDump: function(ifaces) {
		_state = { ifaces: Array.isArray(ifaces) ? ifaces : [] };
	},

	isVirtualIfname: isVirtualIfname,

	registerProtocol: function(protoname, methods) {
		var proto = Protocol.extend(Object.assign({
			getI18n: function() {
				return protoname;
			},

			isFloating: function() {
				return false;
			},

			isVirtual: function() {
				return false;
			},

			renderFormOptions: function(section) {}
		}, methods, {
			__init__: function(name) {
				this.sid = name;
			},

			getProtocol: function() {
				return protoname;
			}
		}));

		_protocols[protoname] = proto;

		return proto;
	},

	registerPatternVirtual: function(pat) {
		iface_patterns_virtual.push(pat);
	},

	registerErrorCode: function(code, message) {
		if (typeof(code) == 'string' && typeof(message) == 'string' && !proto_errors.hasOwnProperty(code)) {
			proto_errors[code] = message;
			return true;
		}

		return false;
	},

	getProtocol: function(protoname, netname) {
		var v = _protocols[protoname];
		return (v != null) ? new v(netname || '__dummy__') : null;
	},

	getProtocols: function() {
		var rv = [];

		for (var protoname in _protocols)
			rv.push(new _protocols[protoname]('__dummy__'));

		return rv;
	},

	instantiateNetwork: function(name, proto) {
		if (name == null)
			return null;

		proto = (proto == null) ? uci.get('network', name, 'proto') : proto;

		var protoClass = _protocols[proto] || Protocol;
		return new protoClass(name);
	},

	instantiateDevice: function(name, network) {
		return new Device(name, network);
	},

	getIfnameOf: function(obj) {
		return ifnameOf(obj);
	},

	getNetwork: function(name) {
		var s = uci.get('network', name);
		return Promise.resolve((s != null && s['.type'] == 'interface') ? this.instantiateNetwork(name) : null);
	},

	getNetworks: function() {
		var rv = uci.sections('network', 'interface').map(L.bind(function(s) {
			return this.instantiateNetwork(s['.name']);
		}, this));

		rv.sort(function(a, b) { return a.getName() > b.getName() ? 1 : -1 });

		return Promise.resolve(rv);
	}
});

network.setInterfaceDump([]);
L.define('network', network);

/* ---- rpc: declare() answered by L.stubRpc ---- */

L.stubRpc = {};

L.define('rpc', Class.singleton({
	__name__: 'LuCI.rpc',

	declare: function(options) {
		return function() {
			var params = {}, args = arguments;

			(options.params || []).forEach(function(p, i) { params[p] = args[i] });

			return new Promise(function(resolve) {
				var fn = L.stubRpc[options.object + '.' + options.method];

				if (typeof(fn) != 'function')
					throw new Error('RPCError: RPC call to %s/%s failed with error -32000: Object not found'
						.format(options.object, options.method));

				var ret = fn(params);

				for (var key in (options.expect || {})) {
					if (ret != null && key != '')
						ret = ret[key];

					var want = options.expect[key];
					if (ret == null || Object.prototype.toString.call(ret) != Object.prototype.toString.call(want))
						ret = want;
					break;
				}

				resolve(ret);
			});
		};
	}
}));

/* ---- poll: a queue nothing runs ---- */

L.define('poll', Class.singleton({
	__name__: 'LuCI.poll',
	queue: [],
	add: function(fn, interval) {
		if (this.queue.some(function(e) { return e.fn === fn }))
			return false;
		this.queue.push({ fn: fn, i: interval });
		return true;
	},
	remove: function(fn) {
		var n = this.queue.length;
		this.queue = this.queue.filter(function(e) { return e.fn !== fn });
		return this.queue.length != n;
	}
}));

/* ---- tools.widgets: NetworkSelect ---- */

var CBINetworkSelect = CBIListValue.extend({
	__name__: 'CBI.NetworkSelect',

	load: function(section_id) {
		return network.getNetworks().then(L.bind(function(networks) {
			this.networks = networks;
			return this.super('load', [ section_id ]);
		}, this));
	},

	filter: function(section_id, value) {
		return true;
	},

	renderWidget: function(section_id, option_index, cfgvalue) {
		var value = (cfgvalue != null) ? cfgvalue : this.default,
		    choices = {};

		for (var i = 0; i < this.networks.length; i++) {
			var name = this.networks[i].getName();

			if (name == this.exclude || !this.filter(section_id, name))
				continue;

			if (name == 'loopback' && !this.loopback)
				continue;

			choices[name] = name;
		}

		/* LuCI's dropdown lets a nocreate widget only pick existing networks */
		return new UISelect(value, choices, {
			id: this.cbid(section_id),
			sort: true,
			optional: this.optional || this.rmempty,
			placeholder: _('unspecified'),
			validate: L.bind(this.validate, this, section_id)
		}).render();
	}
});

L.define('tools.widgets', Class.singleton({
	__name__: 'LuCI.tools.widgets',
	NetworkSelect: CBINetworkSelect
}));

})(window, document);
