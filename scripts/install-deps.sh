#!/usr/bin/env bash
# Installs what a fresh Debian bookworm machine lacks to build and test lbd,
# and mounts bpffs/tracefs. Idempotent; run as root. Used by .ci/run and
# `make demo`, so what CI tests is what a user runs.
set -euo pipefail
if command -v dpkg-query >/dev/null; then
  need=()
  # curl and iproute2 (ip netns exec) drive the demo lab; iperf3 its throughput benchmark;
  # qemu-system-x86 busybox-static xz-utils zstd: the kernel matrix (make test-kernels);
  # bird2: the router of the multi-node lab (BGP, ECMP; cmd/lbd edge test).
  # chromium: the web console's browser test (cmd/lbd, chromedp);
  # prometheus: its promtool checks and unit-tests deploy/prometheus's alert rules;
  # etcd-server (+ etcd-client for etcdctl): the fleet store (control/fleet tests start their own cluster).
  for p in clang-19 llvm-19 libbpf-dev iproute2 make git curl iperf3 qemu-system-x86 busybox-static xz-utils zstd bird2 chromium prometheus etcd-server etcd-client; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    # The lab runs its own BIRD in a router namespace: the package's
    # service must not start one in the host namespace (it would speak
    # BGP on the machine's interfaces). policy-rc.d keeps the package's
    # postinst from starting it (systemd or sysv alike); it is then
    # disabled and masked.
    # The same holds for prometheus (only its promtool is wanted) and
    # etcd-server (tests start their own members; a service would hold 2379).
    if [[ " ${need[*]} " == *" bird2 "* || " ${need[*]} " == *" prometheus "* || " ${need[*]} " == *" etcd-server "* ]] && [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
      chmod 755 /usr/sbin/policy-rc.d
      trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # Installed here for the lab (a BIRD someone runs on purpose is left alone).
    for svc in bird prometheus etcd; do
      pkg=$svc; [ "$svc" = bird ] && pkg=bird2; [ "$svc" = etcd ] && pkg=etcd-server
      [[ " ${need[*]} " == *" $pkg "* ]] || continue
      if [ -d /run/systemd/system ]; then
        systemctl disable --now "$svc.service" >/dev/null 2>&1 || true
        systemctl mask "$svc.service" >/dev/null 2>&1 || true
      else
        update-rc.d "$svc" disable >/dev/null 2>&1 || true
      fi
    done
  fi
elif command -v dnf >/dev/null; then
  # RPM distributions (the Vagrantfile's centos8 machine): building lbd
  # needs no clang (the BPF objects are committed); these run the lab.
  dnf install -y -q make git curl iproute iperf3 clang llvm libbpf-devel
fi
command -v go >/dev/null || export PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null || { echo "Go 1.26 is needed (https://go.dev/dl); put it on PATH" >&2; exit 1; }
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
go mod download
