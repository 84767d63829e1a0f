#!/bin/sh
# lbd's postinst: make systemd see the unit. The service is not enabled or
# started: it needs `interface:` in /etc/lbd/lbd.yaml first.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
