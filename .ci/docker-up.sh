#!/usr/bin/env bash
# Installs and starts a Docker engine on this machine when there is none (no registry needed), plus the tools
# the forager needs: debootstrap (builds the base image without a registry) and bubblewrap (local sandbox).
set -euo pipefail
missing=()
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if docker info >/dev/null 2>&1; then exit 0; fi
# An engine killed with an earlier session leaves its pid file, which stops a new one: wait out a dying engine,
# then remove the file if none runs.
for _ in $(seq 20); do pgrep -x dockerd >/dev/null || break; sleep 0.5; done
pgrep -x dockerd >/dev/null || rm -f /var/run/docker.pid
nohup dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=overlay2 \
  >/tmp/dockerd.log 2>&1 &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "dockerd did not come up: see /tmp/dockerd.log" >&2
exit 1
