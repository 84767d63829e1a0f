#!/bin/sh
# /init of the test VM (busybox sh, PID 1), built into the initramfs by
# internal/vmtest. Mounts the pseudo filesystems, loads /lib/modules/order,
# mounts the host's 9p shares (src: the repository, read-only; tests: the
# test binaries, read-only; out: this kernel's results, read-write), runs
# /out/guest.sh (written by the host for this run), reports its status as
# "VMTEST_EXIT=<rc>" on the console and on the second serial port, and
# powers off. A panic or a dead init ends qemu at once (panic=-1,
# -no-reboot), which the host sees as a missing VMTEST_EXIT.
export PATH=/bin HOME=/root TMPDIR=/tmp
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /tmp
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
for m in $(cat /lib/modules/order); do
	insmod /lib/modules/$m.ko || echo "VMTEST: insmod $m failed"
done
ip link set lo up
rc=125
ok=1
for share in src tests out; do
	mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 $share /$share ||
		{ echo "VMTEST: 9p mount of $share failed"; ok=0; }
done
if [ $ok = 1 ]; then
	sh /out/guest.sh
	rc=$?
fi
echo "VMTEST_EXIT=$rc"
echo "VMTEST_EXIT=$rc" >/dev/ttyS1
sync
poweroff -f
