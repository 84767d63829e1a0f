#!/bin/sh
# lbd's postrm: on purge, remove the state (desired state and API token)
# that lbd created under /var/lib/lbd. /etc/lbd/lbd.yaml, a conffile, is
# removed by dpkg itself.
set -e
if [ "$1" = purge ]; then
	rm -rf /var/lib/lbd
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
