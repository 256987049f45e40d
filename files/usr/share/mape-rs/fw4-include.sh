#!/bin/sh
# fw4 script include (added by /etc/uci-defaults/90-mape-rs): runs after every firewall start
# and reload. `fw4 flush` (firewall stop) deletes all nftables tables, our `mape_*` ones too;
# this restores the table of every mape interface that is up, from the state its setup saved.
# Idempotent: each table is replaced atomically.
[ -x /usr/sbin/mape ] && /usr/sbin/mape netifd reapply
exit 0
