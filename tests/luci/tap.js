/*
 * The check helpers of the LuCI browser tests (driver.js, real/test.js): one "ok - …" /
 * "not ok - …" line per check, and the final "N passed, M failed" that tests/luci/run.sh adds up.
 */
'use strict';

let passed = 0, failed = 0;

function log(line) {
	console.log(`    ${line}`);
}

function check(name, cond, detail) {
	if (cond) {
		passed++;
		console.log(`ok - ${name}`);
	}
	else {
		failed++;
		console.log(`not ok - ${name}` + (detail !== undefined ? `\n    ${typeof detail == 'string' ? detail : JSON.stringify(detail)}` : ''));
	}
	return !!cond;
}

/* JSON with object keys sorted: objects (UCI sections) compare without regard to key order. */
function canon(v) {
	if (Array.isArray(v))
		return v.map(canon);
	if (v && typeof v == 'object')
		return Object.fromEntries(Object.keys(v).sort().map((k) => [ k, canon(v[k]) ]));
	return v;
}

function eq(name, actual, expected) {
	const a = JSON.stringify(canon(actual)), e = JSON.stringify(canon(expected));
	return check(name, a === e, `expected ${e}\n    got      ${a}`);
}

/* Runs the test's main promise to the end, prints the count, exits 1 on any failure. */
function finish(main) {
	main.catch((e) => {
		check('test driver ran to the end', false, String(e && e.stack || e));
	}).finally(() => {
		console.log(`${passed} passed, ${failed} failed`);
		process.exit(failed ? 1 : 0);
	});
}

module.exports = { log, check, eq, finish };
