#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian 12 machine: the Debian packages
# (only when missing, after `apt-get update`) and the npm packages of the lock file.
set -euo pipefail
cd "$(dirname "$0")/.."

# libvirt-clients and libvirt's QEMU driver: the capabilities tests compare with `virsh capabilities`.
# qemu-block-extra: QEMU's iscsi and curl (http, https, ftp, ftps) drivers for network disks.
packages=(qemu-system-x86 qemu-utils qemu-block-extra busybox-static linux-image-cloud-amd64 util-linux iproute2 gcc
  ovmf libvirt-clients libvirt-daemon-driver-qemu)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# libvirt's QEMU driver resolves the user and group of its build (libvirt-qemu) even in embed mode.
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
getent group libvirt-qemu >/dev/null || "${sudo_cmd[@]}" groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
  "${sudo_cmd[@]}" useradd --system --no-create-home --home-dir /var/lib/libvirt \
    --shell /usr/sbin/nologin --gid libvirt-qemu libvirt-qemu

# `npm ci`: exactly the locked versions, every time. The lock holds every platform's optional
# packages with resolved and integrity; after changing package.json regenerate it with
# `bash scripts/lock.sh` (it runs `npm install --package-lock-only
# --omit-lockfile-registry-resolved=false` in a scratch copy), never through a node_modules that
# has only this platform's packages.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
