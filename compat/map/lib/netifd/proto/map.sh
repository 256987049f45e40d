#!/bin/sh
# Package mape-rs-map: mape-rs answering as netifd protocol 'map' (replaces OpenWrt's `map`
# package, which it conflicts with; see docs/packaging.md).
#
# Why: odhcp6c's dhcpv6.script creates a dynamic `proto map` interface (rule=$MAPE from DHCPv6
# option 94) only when /lib/netifd/proto/map.sh exists. With this file, standards-based ISPs'
# DHCPv6-provisioned MAP-E, and existing `proto map` configurations, get mape-rs: every port
# set used, ICMP mapped, MSS clamped, prefix changes followed. Options keep their meaning.
[ "$2" = dump ] && exec /usr/sbin/mape netifd map dump
exec /usr/sbin/mape netifd "$@"
