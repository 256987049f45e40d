/*
 * Test instrumentation, loaded right after LuCI's cbi.js: wraps the global translation
 * functions _() and N_() to record every message id the page asked for and whether the
 * loaded catalogue (window.TR) had it. Changes no result.
 */
(function() {
	'use strict';

	var seen = window.__mapeI18n = {};

	function record(key, source, translated) {
		var k = trimws(key);

		if (!seen.hasOwnProperty(k))
			seen[k] = { source: source, translated: translated };
	}

	var tr = window._, ntr = window.N_;

	window._ = function(s, c) {
		var k = (c != null ? trimws(c) + '\u0001' : '') + trimws(s);
		record(k, s, !!(window.TR && TR[sfh(k)]));
		return tr.apply(this, arguments);
	};

	window.N_ = function(n, s, p, c) {
		var r = ntr.apply(this, arguments);
		record((c != null ? trimws(c) + '\u0001' : '') + s, s, r !== s && r !== p);
		return r;
	};
})();
