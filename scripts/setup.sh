#!/usr/bin/env bash
# Install what Baadal needs on a Debian 12 machine (as root) and build the venv in .venv.
# Safe to run again: apt and pip skip what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3-venv
  postgresql              # production database; the tests start a real server
  openssh-server          # remote commands are tested against a real sshd
  openssh-client
  iputils-ping
  iproute2
  libvirt-daemon-system   # hypervisor: libvirtd + QEMU (TCG here)
  libvirt-clients
  qemu-system-x86
  qemu-utils              # qemu-img for overlays, copies and extra disks
  libvirt-dev             # to build libvirt-python
  pkg-config
  gcc
  openvswitch-switch      # VM networking (userspace datapath)
  busybox-static          # the tiny bootable guest
  dnsmasq-base            # DHCP for VMs (the lab's DHCP server; no system service)
  iptables                # NAT box rules (public IPs, VNC)
  isc-dhcp-server         # the second DHCP backend: its files are checked with dhcpd -t
  rrdtool                 # usage history of hosts and VMs, and its graphs
  librrd-dev              # to build the rrdtool Python binding
  iperf3                  # throughput between hosts (host network graph)
  slapd                   # LDAP logins are tested against a real OpenLDAP server
  chromium                # browser tests (tests/web): Playwright drives Debian's Chromium
)

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/setup.sh: run as root (it installs Debian packages)" >&2
  exit 2
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# the tiny guest's kernel comes from the package index: make sure there is one
if [ "${#missing[@]}" -gt 0 ] || ! compgen -G "/var/lib/apt/lists/*_Packages" >/dev/null; then
  apt-get update -q
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  # packages must not start their services here (dhcpd has no config yet; Baadal starts
  # the daemons it needs itself): deny starts while installing, as Debian images do
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
echo "setup done: .venv/bin/baadal is ready"
