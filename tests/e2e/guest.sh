#!/bin/bash
# In-guest entry of the end-to-end bed (run by tests/vm/vmrun.sh from tests/e2e/run.sh).
# The host copied the mape binary into the exchange folder; run it from tmpfs.
set -u
export PATH=/run/mape-vm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1
mkdir -p /tmp/mape-e2e
if [ -z "${MAPE_BIN:-}" ]; then
	cp "$MAPE_VM_OUT/mape" /tmp/mape-e2e/mape && chmod 755 /tmp/mape-e2e/mape || {
		echo "FAIL capabilities: no mape binary in the exchange folder" | tee -a "$MAPE_VM_OUT/results.txt"; exit 1; }
	export MAPE_BIN=/tmp/mape-e2e/mape
fi
exec /usr/bin/python3 "$(dirname "$0")/bed.py" "$@"
