#!/usr/bin/env bash
# make release: the static, version-stamped lbd binary, its man pages and
# shell completions, a tarball and a .deb (nfpm, pinned in go.mod as a Go
# tool), all under dist/. VERSION, COMMIT and DATE come from the Makefile.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${VERSION:?}" "${LDFLAGS:?}"
export PATH="/usr/local/go/bin:$PATH"
ARCH="$(go env GOARCH)"
DIST="dist"
rm -rf "$DIST" && mkdir -p "$DIST/completions" "$DIST/man"

CGO_ENABLED=0 go build -trimpath -ldflags "$LDFLAGS" -o "$DIST/lbd" ./cmd/lbd
"$DIST/lbd" completion bash >"$DIST/completions/lbd.bash"
"$DIST/lbd" completion zsh >"$DIST/completions/_lbd"
"$DIST/lbd" completion fish >"$DIST/completions/lbd.fish"
"$DIST/lbd" gen-man "$DIST/man"
gzip -9n "$DIST"/man/*.1

# Tarball: lbd-VERSION-linux-ARCH/ with the binary, unit, example config,
# completions, man pages and the license.
name="lbd-${VERSION}-linux-${ARCH}"
stage="$DIST/$name"
mkdir -p "$stage"
cp "$DIST/lbd" LICENSE README.md docs/operations.md packaging/lbd.service packaging/lbd.yaml "$stage/"
cp -r "$DIST/completions" "$DIST/man" "$stage/"
tar -C "$DIST" --sort=name --owner=0 --group=0 --numeric-owner --mtime="${DATE:-@0}" -czf "$DIST/$name.tar.gz" "$name"
rm -rf "$stage"

# .deb: Debian versions start with a digit: v1.2.3 -> 1.2.3, and an
# untagged v0.0.0-abc1234 -> 0.0.0~gitabc1234 (sorts before 0.0.0).
deb_version="${VERSION#v}"
case "$deb_version" in
	0.0.0-*) deb_version="0.0.0~git${deb_version#0.0.0-}" ;;
esac
deb_version="${deb_version//-/\~}"
ARCH="$ARCH" DEB_VERSION="$deb_version" \
	go tool nfpm package --config packaging/nfpm.yaml --packager deb --target "$DIST/"
(cd "$DIST" && sha256sum ./*.tar.gz ./*.deb >SHA256SUMS)
ls -l "$DIST"
