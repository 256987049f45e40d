#!/bin/bash
# In-guest entry of the end-to-end bed (run by tests/vm/vmrun.sh from tests/e2e/run.sh).
set -u
export PATH=/run/mape-vm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE=1
mkdir -p /tmp/mape-e2e
exec /usr/bin/python3 "$(dirname "$0")/bed.py" "$@"
