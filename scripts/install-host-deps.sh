#!/usr/bin/env bash
# Debian packages the controller needs: a Python 3.11 venv for the toolchain, and podman + runc +
# debootstrap + iptables for the sandbox hosts. Installs only what is missing; fast when all is there.
set -euo pipefail

readonly PACKAGES=(python3 python3-venv podman runc fuse-overlayfs slirp4netns uidmap
  debootstrap iptables iproute2 openssh-client make git)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: error: missing Debian packages ${missing[*]}; install them as root: sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
[ -r /etc/debian_version ] || { echo "setup: error: this controller setup needs Debian 12 (apt-get); install ${missing[*]} by hand" >&2; exit 1; }
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
