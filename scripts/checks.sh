# shellcheck shell=bash
# The check helpers of scripts/check-dist.sh and tests/pkg/run.sh: one `ok`/`FAIL` line per
# check, `N passed, M failed` at the end, exit status 1 when anything failed.
pass=0
fail=0
ok() { pass=$((pass + 1)); printf 'ok   %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf 'FAIL %s\n' "$*"; }
check() { # check <description> <command...>
	local d=$1
	shift
	if "$@" >/dev/null 2>&1; then ok "$d"; else bad "$d"; fi
}
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
}
