#!/usr/bin/env bash
# Run a command inside a throwaway VM whose kernel has Soft-RoCE (rdma_rxe), so
# the verbs transport can be tested on hosts whose own kernel has no RDMA
# subsystem.
#
#   ci/softroce-vm.sh [--build DIR] [--timeout S] [-- CMD ...]
#
# The VM boots Debian's stock kernel (linux-image-amd64, fetched with
# `apt-get download` into a cache and unpacked, never installed) with a tiny
# busybox initramfs. Its init mounts the host's / read-only over virtio-9p,
# puts a tmpfs overlay on top (so the guest may write anywhere; the writes are
# thrown away), mounts the build directory read-write at its own path, and runs
# CMD chrooted into that tree, in the host's current directory. CMD defaults to
# `ci/softroce.sh DIR`. The VM has no network device: CMD makes its own
# (veth pair + rxe). Guest output streams to stdout; the script exits with
# CMD's status (124 when a time limit hit, 125 when the VM itself failed).
#
# The guest has fresh tmpfs on /tmp, /run and /var/tmp: host files there are
# not visible, except this source tree and the build directory, which are
# shared at their own paths wherever they are (a CI clone may be in /tmp).
#
# Kernel 6.1's rxe works in the initial network namespace only. One rxe
# device talking to itself (loopback) needs nothing; two rxe devices on the
# two ends of one veth pair reach each other only when local traffic is
# policy-routed across the wire ("ip rule add pref 10 iif veth0 lookup local",
# the same for veth1, "ip rule add pref 20 lookup 100", the local rule moved
# from pref 0 to 1000, table 100 routing each peer's address out of the
# other veth, accept_local=1, rp_filter=0).
#
# Environment: TQRDMA_VM_CACHE (default /var/cache/tqrdma-vm), TQRDMA_VM_MEM
# (default 3G), TQRDMA_VM_ACCEL (kvm or tcg; default kvm when hardware-backed),
# TQRDMA_VM_KERNEL_PKG (default: what linux-image-amd64 depends on).
# Variables named TQRDMA_* and CI are passed to CMD.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build="" timeout_s="" cmd=()
while [ $# -gt 0 ]; do
  case $1 in
    --build) build=$(realpath "$2"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --) shift; cmd=("$@"); break ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "softroce-vm: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
done
if [ ${#cmd[@]} -eq 0 ]; then
  [ -n "$build" ] || { echo "softroce-vm: give --build DIR or a command after --" >&2; exit 2; }
  cmd=("$root/ci/softroce.sh" "$build")
fi
[ -z "$build" ] || [ -d "$build" ] || { echo "softroce-vm: no such build dir: $build" >&2; exit 2; }
[ -z "$timeout_s" ] || [ "$timeout_s" -gt 0 ] 2>/dev/null || { echo "softroce-vm: --timeout wants seconds" >&2; exit 2; }

cache=$(realpath -m "${TQRDMA_VM_CACHE:-/var/cache/tqrdma-vm}")
# The guest loads its modules from the cache through the host-root share, and
# has its own tmpfs on these.
case $cache/ in /tmp/*|/run/*|/var/tmp/*|/dev/*|/proc/*|/sys/*)
  echo "softroce-vm: TQRDMA_VM_CACHE=$cache is hidden from the guest; pick another" >&2; exit 2 ;;
esac
mem=${TQRDMA_VM_MEM:-3G}

# qemu, busybox for the initramfs, kmod (depmod here, modprobe in the guest,
# which runs the host's userland), and the verbs tools for poking at rxe.
"$root/ci/install-deps.sh" qemu-system-x86 busybox-static kmod ibverbs-utils rdmacm-utils

# --- kernel: download and unpack once, reuse after ------------------------
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock -w 600 9 || { echo "softroce-vm: cache $cache stays locked" >&2; exit 125; }
if [ ! -e "$cache/current/ok" ]; then
  pkg=${TQRDMA_VM_KERNEL_PKG:-}
  resolve() { apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1; }
  [ -n "$pkg" ] || pkg=$(resolve)
  [ -n "$pkg" ] || { apt-get update -qq; pkg=$(resolve); }  # empty apt lists on a fresh machine
  [ -n "$pkg" ] || { echo "softroce-vm: cannot resolve linux-image-amd64" >&2; exit 125; }
  echo "softroce-vm: fetching guest kernel $pkg into $cache"
  rm -rf "$cache"/.dl.*  # left by an interrupted run; we hold the lock
  tmp=$(mktemp -d "$cache/.dl.XXXXXX")
  # APT::Sandbox::User=root: the _apt user may not write into the cache dir.
  (cd "$tmp" && apt-get download -qq -o APT::Sandbox::User=root "$pkg")
  dpkg-deb -x "$tmp"/*.deb "$tmp/x"
  rm -f "$tmp"/*.deb
  kver=$(ls "$tmp/x/lib/modules")
  # The .deb has no modules.dep: it is made by a postinst we never run.
  depmod -b "$tmp/x" "$kver"
  touch "$tmp/x/ok"
  rm -rf "${cache:?}/$kver"
  mv "$tmp/x" "$cache/$kver"
  rmdir "$tmp"
  ln -sfn "$kver" "$cache/current"
fi
kdir=$(realpath "$cache/current")
kver=$(basename "$kdir")
exec 9>&-  # unlock; qemu need not inherit it

# --- per-run scratch: initramfs and the results share --------------------
work=$(mktemp -d /tmp/tqrdma-vm.XXXXXX)
# timeout(1) puts qemu in a process group of its own, out of reach of a ^C
# or a kill of this script: stop it by its pid file.
# shellcheck disable=SC2317  # (run by the trap)
stop_vm() {
  local pid
  pid=$(cat "$work/qemu.pid" 2>/dev/null) || return 0
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = qemu-system-x86 ] && kill "$pid" 2>/dev/null
  return 0
}
trap 'stop_vm; rm -rf "$work"' EXIT
trap 'echo "softroce-vm: interrupted" >&2; exit 130' INT TERM HUP
results=$work/results  # shared read-write with the guest: rc, cmd.sh
mkdir -p "$results" "$work/initramfs"/{bin,sbin,mod,proc,sys,dev,lower,newroot,rw,results}

ir=$work/initramfs
cp /bin/busybox "$ir/bin/busybox"
# Only what it takes to mount the host root; everything else is modprobed
# later from the unpacked package, bind-mounted over /lib/modules in the guest.
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe -d "$kdir" -S "$kver" --show-depends "$m" | sed -n 's/^insmod \([^ ]*\).*/\1/p'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$ir/mod/"
  basename "$ko" >>"$ir/mod/order"
done

# The kernel runs its module loader (usermode helper) in the initramfs' root,
# not in the chroot: forward to the host's modprobe inside the chroot.
cat >"$ir/sbin/modprobe" <<'EOF'
#!/bin/busybox sh
exec /bin/busybox chroot /newroot /sbin/modprobe "$@"
EOF

{
  echo '#!/bin/busybox sh'
  echo '# PID 1 stays here (in the initramfs) so it can always report and power off.'
  printf 'kver=%q kdir=%q src=%q build=%q\n' "$kver" "$kdir" "$root" "$build"
} >"$ir/init"
cat >>"$ir/init" <<'EOF'
/bin/busybox --install -s /bin
export PATH=/bin:/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fail() { echo "softroce-vm guest: $*"; poweroff -f; }
while read -r ko; do insmod "/mod/$ko" || fail "insmod $ko"; done </mod/order
o9p=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$o9p,ro,cache=loose" hostroot /lower || fail "mount host root"
mount -t 9p -o "$o9p,cache=mmap" results /results || fail "mount results"
mount -t tmpfs -o mode=755 rw /rw && mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot || fail "overlay"
n=/newroot
mount -t proc proc $n/proc; mount -t sysfs sys $n/sys; mount -t devtmpfs dev $n/dev
mkdir -p $n/dev/pts $n/dev/shm; mount -t devpts devpts $n/dev/pts; mount -t tmpfs shm $n/dev/shm
for d in /tmp /run /var/tmp; do mount -t tmpfs -o mode=1777 tmp $n$d; done
mkdir -p $n/run/tqrdma-vm "$n/lib/modules/$kver"
mount --bind /results $n/run/tqrdma-vm
mount --bind "$n$kdir/lib/modules/$kver" "$n/lib/modules/$kver" || fail "modules"
mkdir -p "$n$src"
mount -t 9p -o "$o9p,ro,cache=loose" src "$n$src" || fail "mount source tree"
if [ -n "$build" ]; then
  mkdir -p "$n$build"
  mount -t 9p -o "$o9p,cache=mmap" build "$n$build" || fail "mount build dir"
fi
echo /sbin/modprobe >/proc/sys/kernel/modprobe
hostname softroce-vm; ip link set lo up
chroot $n /sbin/modprobe -a rdma_rxe rdma_ucm ib_umad veth || fail "modprobe rdma_rxe"
up=$(cut -d. -f1 /proc/uptime)
limit=$(( $(cat /results/limit) - up ))  # the host's clock started before boot
[ $limit -ge 10 ] || limit=10              # the host's own limit still holds
echo "softroce-vm: guest up after $(cut -d' ' -f1 /proc/uptime)s, running the command (limit ${limit}s)"
timeout -s KILL "$limit" chroot $n /bin/bash /run/tqrdma-vm/cmd.sh </dev/null
rc=$?
if [ $rc -eq 137 ] && [ $(( $(cut -d. -f1 /proc/uptime) - up )) -ge $limit ]; then
  echo "softroce-vm: command killed after ${limit}s"; rc=124
fi
echo $rc >/results/rc
sync
[ -n "$build" ] && umount "$n$build"
umount "$n$src"
umount /results
poweroff -f
EOF
chmod +x "$ir/init" "$ir/sbin/modprobe"
(cd "$ir" && find . | busybox cpio -o -H newc --quiet) >"$work/initramfs.cpio"

# --- the command, as a script on the results share -----------------------
{
  echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb'
  for name in $(compgen -e); do
    case $name in TQRDMA_*|CI) printf 'export %s=%q\n' "$name" "${!name}" ;; esac
  done
  # The host's cwd when it exists in the guest (it does unless elsewhere under /tmp).
  printf 'cd %q 2>/dev/null || cd %q\n' "$PWD" "$root"
  printf 'exec'; printf ' %q' "${cmd[@]}"; echo
} >"$results/cmd.sh"

# --- accelerator and time limit ------------------------------------------
# KVM only when it is hardware-backed (kvm_intel/kvm_amd): some sandboxes
# offer a /dev/kvm from kvm_pvm, which boots a stock kernel only by emulating
# it, far slower than TCG. TQRDMA_VM_ACCEL=kvm|tcg overrides.
accel=${TQRDMA_VM_ACCEL:-}
if [ -z "$accel" ]; then
  accel=tcg
  if [ -w /dev/kvm ] && { [ -d /sys/module/kvm_intel ] || [ -d /sys/module/kvm_amd ]; }; then
    accel=kvm
  fi
fi
cpu=max; [ "$accel" = kvm ] && cpu=host
# TCG is roughly an order of magnitude slower; give it more time by default.
[ -n "$timeout_s" ] || { [ "$accel" = kvm ] && timeout_s=900 || timeout_s=3600; }
# The guest stops its command a little earlier (counting its boot), so it
# can still report.
echo $((timeout_s >= 80 ? timeout_s - 20 : timeout_s * 3 / 4)) >"$results/limit"

# multidevs=remap: / spans several host filesystems. qemu wants commas in
# option values doubled.
shares=(-fsdev "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"
        -device "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"
        -fsdev "local,id=results,path=${results//,/,,},security_model=none"
        -device "virtio-9p-pci,fsdev=results,mount_tag=results"
        -fsdev "local,id=src,path=${root//,/,,},security_model=none,readonly=on"
        -device "virtio-9p-pci,fsdev=src,mount_tag=src")
[ -z "$build" ] || shares+=(-fsdev "local,id=build,path=${build//,/,,},security_model=none"
                           -device "virtio-9p-pci,fsdev=build,mount_tag=build")

echo "softroce-vm: booting $kver ($accel, ${mem} RAM, 2 vCPUs, limit ${timeout_s}s)"
start=$SECONDS
# -nic none: no way out of the VM. stdin from /dev/null keeps qemu off the tty.
# In the background so that a signal reaches the traps at once.
{
  timeout -k 10 "$timeout_s" qemu-system-x86_64 \
    -accel "$accel" -cpu "$cpu" -smp 2 -m "$mem" -M pc -nodefaults -no-user-config \
    -display none -vga none -serial stdio -no-reboot -nic none -pidfile "$work/qemu.pid" \
    -kernel "$kdir/boot/vmlinuz-$kver" -initrd "$work/initramfs.cpio" \
    -append "console=ttyS0 quiet panic=-1 rdinit=/init" \
    "${shares[@]}" </dev/null
  { echo $? >"$work/qemu.rc"; } 2>/dev/null  # gone if we were interrupted
} | sed -u 's/\r$//; /\] reboot: Power down$/d' &
wait $!
qemu_rc=$(cat "$work/qemu.rc" 2>/dev/null || echo 125)
if [ -s "$results/rc" ]; then
  rc=$(cat "$results/rc")
  echo "softroce-vm: command exited $rc ($((SECONDS - start))s in the VM)"
  exit "$rc"
fi
if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
  echo "softroce-vm: VM timed out after ${timeout_s}s" >&2
  exit 124
fi
echo "softroce-vm: VM ended (qemu status $qemu_rc) without reporting a result" >&2
exit 125
