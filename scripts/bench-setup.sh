#!/usr/bin/env bash
# Installs what `npm run bench` needs besides the test set-up: libvirt's QEMU driver and its Python
# binding (the libvirt contender), strace, and the `libvirt-qemu` user and group that libvirt's
# embedded mode looks up even when it runs QEMU as root. Debian packages only when missing, after
# `apt-get update`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

packages=(qemu-system-x86 libvirt-daemon-driver-qemu python3-libvirt python3)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench-setup: installing ${missing[*]}"
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# libvirt's QEMU driver resolves the configured user and group of its build (libvirt-qemu) at
# start, even in embed mode with user = "root" in qemu.conf.
getent group libvirt-qemu >/dev/null || "${sudo_cmd[@]}" groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  "${sudo_cmd[@]}" useradd --system --no-create-home --home-dir /var/lib/libvirt \
    --shell /usr/sbin/nologin --gid libvirt-qemu libvirt-qemu
