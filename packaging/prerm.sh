#!/bin/sh
# lbd's prerm: stop the service on removal (not on upgrade: the new
# package restarts it). Stopping keeps the XDP program forwarding; run
# `lbd cleanup` to detach it.
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
	systemctl stop lbd.service || true
	systemctl disable lbd.service || true
fi
