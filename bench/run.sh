#!/usr/bin/env bash
# mape-rs benchmarks, one command:   sudo bench/run.sh
#
# Installs what it needs when missing (iproute2, nftables, conntrack, iperf3, python3; apt),
# builds the release binary (cargo build --release), then runs bench/bench.py on this machine's
# own kernel in network namespaces (LAN ns -> CE ns -> server ns): port utilisation, TCP
# throughput, connection rate and footprint, each as a ratio against a baseline measured in the
# same run. Prints the Markdown table and writes it to BENCHMARKS.md at the repository root
# (raw numbers: target/bench/last-run.json). About 6-8 minutes on a 2-core machine.
#
# Arguments are passed to bench/bench.py (e.g. --only util for a partial run, which prints JSON
# and leaves BENCHMARKS.md alone). Every namespace it creates is named mb<pid>-* and deleted on
# exit, even on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

if [ "$(id -u)" != 0 ]; then
	if command -v sudo >/dev/null; then exec sudo -E "$0" "$@"; fi
	echo "bench/run.sh: needs root (network namespaces, nftables)" >&2
	exit 1
fi

# --- tools -----------------------------------------------------------------------------------
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v iperf3 >/dev/null || need+=(iperf3)
command -v python3 >/dev/null || need+=(python3)
[ -x /usr/bin/time ] || need+=(time)
command -v iptables-restore >/dev/null || need+=(iptables)
if [ ${#need[@]} -gt 0 ]; then
	echo "== installing ${need[*]}" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "bench/run.sh: cargo not found (install Rust: https://rustup.rs)" >&2; exit 1; }

# --- the binary under test ---------------------------------------------------------------------
echo "== cargo build --release" >&2
cargo build --release --locked --quiet --bin mape
BIN=${CARGO_TARGET_DIR:-target}/release/mape

# --- run, and clean up whatever namespaces this run made ---------------------------------------
export MBENCH_RUN=$$
cleanup() {
	{ ip netns list 2>/dev/null || true; } | awk -v p="mb$MBENCH_RUN-" 'index($1, p) == 1 {print $1}' | while read -r n; do
		ip netns del "$n" 2>/dev/null || true
	done
}
trap cleanup EXIT

# In the background so that a signal to this script reaches bench.py at once (bash runs traps
# only between commands); bench.py kills its processes and deletes its namespaces on a signal.
python3 bench/bench.py --bin "$BIN" --out BENCHMARKS.md "$@" &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' INT TERM HUP
rc=0
wait "$pid" || rc=$?
while kill -0 "$pid" 2>/dev/null; do wait "$pid" || rc=$?; done
echo "== bench/run.sh: $(( $(date +%s) - start )) s in all (exit $rc)" >&2
exit "$rc"
