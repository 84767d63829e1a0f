#!/usr/bin/env bash
# CI: install the .deb that make release built, check what it installed
# (lbd version runs, the unit passes systemd-analyze verify, the man page
# and completions are there), then purge it and check nothing is left.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(ls dist/lbd_*.deb)
if dpkg -s lbd >/dev/null 2>&1; then
	echo "check-deb: an lbd package is installed already; not touching it" >&2
	exit 1
fi
fail() { echo "check-deb: $*" >&2; exit 1; }
# The purge removes /etc/lbd and /var/lib/lbd: never on a machine that has
# them already (someone's configuration or state).
for d in /etc/lbd /var/lib/lbd /usr/bin/lbd; do
	[ -e "$d" ] && fail "$d exists already; not installing over it"
done
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb" >/dev/null
trap 'DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -qq lbd >/dev/null 2>&1 || true' EXIT

/usr/bin/lbd version
/usr/bin/lbd version | grep -q "commit $(git rev-parse HEAD)" || fail "lbd version does not name commit $(git rev-parse HEAD)"
# Offline check of the installed unit (systemd need not be PID 1).
systemd-analyze verify /lib/systemd/system/lbd.service
files=$(dpkg -L lbd)
for f in /usr/bin/lbd /etc/lbd/lbd.yaml /lib/systemd/system/lbd.service /usr/share/man/man1/lbd-serve.1.gz \
	/usr/share/bash-completion/completions/lbd /usr/share/doc/lbd/LICENSE; do
	grep -qx "$f" <<<"$files" || fail "$f not in the package"
	[ -e "$f" ] || fail "$f not installed"
done
# The shipped config passes lbd serve --check once it names an interface.
/usr/bin/lbd serve --check --config /etc/lbd/lbd.yaml --interface lo
dpkg-query -W -f='${Conffiles}\n' lbd | grep -q /etc/lbd/lbd.yaml || fail "/etc/lbd/lbd.yaml is not a conffile"

DEBIAN_FRONTEND=noninteractive apt-get remove --purge -y -qq lbd >/dev/null
trap - EXIT
dpkg -s lbd >/dev/null 2>&1 && fail "lbd still installed after purge"
for f in $files; do
	[ -d "$f" ] && continue
	[ -e "$f" ] && fail "$f left behind after purge"
done
for d in /etc/lbd /usr/share/doc/lbd; do
	[ -e "$d" ] && fail "$d left behind after purge"
done
echo "check-deb: $deb installs, runs, verifies and purges cleanly"
