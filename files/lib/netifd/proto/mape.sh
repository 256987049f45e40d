#!/bin/sh
# netifd protocol handler for MAP-E (proto 'mape'), provided by mape-rs.
#
# netifd only discovers handlers as /lib/netifd/proto/*.sh and runs them as
#   mape.sh '' dump                       (once, at start-up: declare options)
#   mape.sh mape setup|teardown IFACE JSON [DEVICE]
# All the work (config validation, prefix discovery, mapping, the CE address, the nftables
# table, the notify_proto messages) is done by the binary, which speaks JSON natively; this
# file stays a one-line exec so no option value ever passes through shell parsing.
exec /usr/sbin/mape netifd "$@"
