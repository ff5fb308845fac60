#!/usr/bin/env bash
# Regenerates test/fixtures/xml/virt-install/: the domain XML that Debian's virt-install (package
# `virtinst`) writes for typical x86_64 guests, in two forms per case:
#   NAME.xml          `virt-install --print-xml --dry-run …` as is;
#   NAME.dumpxml.xml  the same after `virsh define` and `virsh dumpxml --inactive` (libvirt's
#                     canonical form: addresses, implicit controllers and inputs, audio…).
# Both are our own output. virt-install needs a libvirt connection: the script runs it and virsh as
# an unprivileged user against that user's session daemon (libvirtd --session, started on demand,
# exits by itself when idle), with every directory in a scratch dir removed at the end. Image paths
# are written as /var/lib/virtkit-test/…, which the tests map to files of their own.
#
# Usage: scripts/virt-install-fixtures.sh [USER]   (as root; USER defaults to the first uid ≥ 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
out=test/fixtures/xml/virt-install
command -v virt-install >/dev/null || { echo "virt-install is missing: apt-get install -y virtinst" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (virt-install runs as an unprivileged user)" >&2; exit 1; }
user=${1:-$(getent passwd | awk -F: '$3 >= 1000 && $3 < 65534 { print $1; exit }')}
[ -n "$user" ] || { echo "no unprivileged user found; pass one" >&2; exit 1; }

scratch=$(mktemp -d /tmp/virt-install-fixtures.XXXXXX)
cleanup() {
  run virsh --connect qemu:///session list --all --name 2>/dev/null | while read -r n; do
    [ -n "$n" ] && run virsh --connect qemu:///session undefine --nvram "$n" >/dev/null 2>&1
  done || true
  rm -rf "$scratch"
}
trap cleanup EXIT
img=$scratch/img
mkdir -p "$img" "$scratch/run"
chmod 700 "$scratch/run"
chown -R "$user" "$scratch"
run() {
  runuser -u "$user" -- env HOME="$scratch" XDG_RUNTIME_DIR="$scratch/run" XDG_CONFIG_HOME="$scratch/config" \
    XDG_CACHE_HOME="$scratch/cache" XDG_DATA_HOME="$scratch/data" timeout 120 "$@"
}
run truncate -s 10M "$img/install.iso"
run qemu-img create -q -f qcow2 "$img/existing.qcow2" 64M
run truncate -s 64M "$img/existing.raw"

mkdir -p "$out"
rm -f "$out"/*.xml
n=0
# case NAME ARGS…: one virt-install invocation (name, uuid and MAC fixed so the output is stable).
case_() {
  local name=$1
  shift
  n=$((n + 1))
  local uuid mac
  uuid=$(printf '6a3c8a1e-5d3b-4a7b-9a37-%012x' "$n")
  mac=$(printf '52:54:00:00:00:%02x' "$n")
  local args=("$@")
  # A --network option of the case gets the fixed MAC.
  for i in "${!args[@]}"; do
    if [ "${args[$i]}" = --network ] && [ "${args[$((i + 1))]}" != none ]; then
      args[$((i + 1))]="${args[$((i + 1))]},mac=$mac"
    fi
  done
  run virt-install --connect qemu:///session --print-xml 1 --dry-run --name "$name" --metadata "uuid=$uuid" \
    "${args[@]}" >"$scratch/$name.xml"
  run virsh --connect qemu:///session define "$scratch/$name.xml" >/dev/null
  run virsh --connect qemu:///session dumpxml --inactive "$name" >"$scratch/$name.dumpxml.xml"
  run virsh --connect qemu:///session undefine --nvram "$name" >/dev/null
  for f in "$name.xml" "$name.dumpxml.xml"; do
    sed -e "s#$img#/var/lib/virtkit-test#g" -e "s#$scratch/data/libvirt/qemu/nvram#/var/lib/virtkit-test/nvram#g" \
      "$scratch/$f" >"$out/$f"
  done
  echo "  $name"
}

disk="--disk path=$img/existing.qcow2"
raw="--disk path=$img/existing.raw,format=raw"
new="--disk path=$img/NEW.qcow2,size=1,format=qcow2"
echo "virt-install $(virt-install --version) → $out"
case_ linux-q35-user --memory 1024 --vcpus 2 --osinfo linux2022 $disk --import --network user --graphics none
case_ linux-q35-vnc --memory 1024 --vcpus 2 --osinfo linux2022 $disk --import --network user --graphics vnc
case_ linux-q35-vnc-listen --memory 1024 --osinfo linux2022 $disk --import --network user \
  --graphics vnc,listen=127.0.0.1
case_ linux-q35-novideo --memory 512 --osinfo linux2022 $disk --import --network none --graphics none \
  --video none --rng none --memballoon none --channel none --console none
case_ linux-pc --memory 1024 --vcpus 1 --osinfo linux2022 --machine pc $disk --import --network user \
  --graphics none
case_ linux-pc-vnc --memory 1024 --osinfo linux2022 --machine pc $disk --import --network user --graphics vnc
case_ linux-host-passthrough --memory 2048 --vcpus 4,sockets=1,cores=2,threads=2 --osinfo linux2022 \
  --cpu host-passthrough $disk --import --network user --graphics none
case_ linux-cpu-model --memory 1024 --vcpus 2 --osinfo linux2022 --cpu Skylake-Client,-hle,+vmx $disk --import \
  --network user --graphics none
case_ linux-raw-sata --memory 1024 --osinfo linux2022 $raw,bus=sata --import --network user --graphics none
case_ linux-scsi --memory 1024 --osinfo linux2022 $disk,bus=scsi --import --network user --graphics none
case_ linux-usb-disk --memory 1024 --osinfo linux2022 $disk --disk path=$img/existing.raw,format=raw,bus=usb \
  --import --network user --graphics none
case_ linux-two-disks-cache --memory 1024 --osinfo linux2022 $disk,cache=none,io=native,discard=unmap \
  $raw,cache=writeback,readonly=on --import --network user --graphics none
case_ linux-cdrom-install --memory 2048 --osinfo debian11 $new --cdrom $img/install.iso --network user \
  --graphics vnc
case_ linux-cdrom-empty --memory 1024 --osinfo linux2022 $disk --disk device=cdrom,bus=sata --import \
  --network user --graphics none
case_ linux-ethernet --memory 1024 --osinfo linux2022 $disk --import --network type=ethernet,target.dev=vktap0 \
  --graphics none
case_ linux-e1000 --memory 1024 --osinfo linux2022 $disk --import --network user,model=e1000 --graphics none
case_ linux-uefi --memory 1024 --osinfo linux2022 --boot uefi $disk --import --network user --graphics none
case_ linux-kernel-boot --memory 512 --osinfo linux2022 \
  --boot kernel=$img/vmlinuz,initrd=$img/initrd.img,kernel_args="console=ttyS0" $disk --import \
  --network none --graphics none
case_ linux-serial-file --memory 512 --osinfo linux2022 $disk --import --network user --graphics none \
  --serial file,path=$img/serial.log
case_ linux-watchdog --memory 1024 --osinfo linux2022 $disk --import --network user --graphics none \
  --watchdog i6300esb,action=reset
case_ linux-numa --memory 2048 --vcpus 4 --osinfo linux2022 \
  --cpu host-passthrough,cell0.cpus=0-1,cell0.memory=1048576,cell1.cpus=2-3,cell1.memory=1048576 $disk --import \
  --network user --graphics none
case_ linux-events --memory 1024 --osinfo linux2022 $disk --import --network user --graphics none \
  --events on_crash=restart,on_poweroff=destroy,on_reboot=restart
case_ linux-virtio-video --memory 1024 --osinfo linux2022 $disk --import --network user --graphics vnc \
  --video virtio --input type=tablet,bus=virtio
case_ linux-iothread --memory 1024 --vcpus 2 --osinfo linux2022 --iothreads 1 $disk,driver.iothread=1 --import \
  --network user --graphics none
case_ linux-hugepages --memory 1024 --osinfo linux2022 --memorybacking hugepages=on $disk --import \
  --network user --graphics none
case_ linux-sysinfo --memory 1024 --osinfo linux2022 \
  --sysinfo system.manufacturer=virtkit,system.product=test,system.serial=1234 $disk --import --network user \
  --graphics none
case_ win10 --memory 4096 --vcpus 2 --osinfo win10 $new --cdrom $img/install.iso --network user --graphics vnc
case_ win10-uefi --memory 4096 --vcpus 2 --osinfo win10 --boot uefi $new --cdrom $img/install.iso \
  --network user --graphics vnc
case_ win2k22 --memory 4096 --vcpus 4 --osinfo win2k22 $new --cdrom $img/install.iso --network user \
  --graphics vnc
case_ win7-pc --memory 2048 --osinfo win7 --machine pc $new --cdrom $img/install.iso --network user \
  --graphics vnc
case_ win11-notpm --memory 4096 --vcpus 2 --osinfo win11 --tpm none $new --cdrom $img/install.iso \
  --network user --graphics vnc
case_ fedora-kvm-like --memory 2048 --vcpus 2 --osinfo fedora37 $new --cdrom $img/install.iso --network user \
  --graphics none --console pty,target_type=virtio
case_ ubuntu --memory 2048 --vcpus 2 --osinfo ubuntu22.04 $disk --import --network user --graphics vnc \
  --sound none
case_ freebsd --memory 1024 --osinfo freebsd13.1 $disk --import --network user --graphics none
case_ generic --memory 512 --osinfo generic $disk --import --network user --graphics none
echo "$n cases"
