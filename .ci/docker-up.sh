#!/usr/bin/env bash
# Installs and starts a Docker engine on this machine when there is none (no registry needed).
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
nohup dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=overlay2 \
  >/tmp/dockerd.log 2>&1 &
for _ in $(seq 60); do docker info >/dev/null 2>&1 && exit 0; sleep 1; done
echo "dockerd did not come up: see /tmp/dockerd.log" >&2
exit 1
