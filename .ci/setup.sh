#!/usr/bin/env bash
# What `make demo` and `make test` need beyond the venv, brought up once and then found in about a second:
#   a running Docker engine, debootstrap (the registry-free base image), bubblewrap (the local sandbox), and the
#   forager's base image (built once, ~2 min; then found by its recipe hash, or re-imported from the tarball cache
#   in ~/.cache/cwm-toolkit/forager).
# Where something cannot be had (no root to install a package, an engine that will not start) it stops here with one
# line naming what is missing and the command that fixes it, so no Docker test is skipped deep in a log.
# Usage: bash .ci/setup.sh [VENV]   (VENV defaults to .venv; its cwm-forager builds the base image)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv}
say() { echo "setup: $*"; }
stop() { echo "setup: $*" >&2; exit 1; }

# Root runs commands itself; a user with passwordless sudo runs them through it; anyone else is told what to run.
if [ "$(id -u)" -eq 0 ]; then as_root=(); elif sudo -n true 2>/dev/null; then as_root=(sudo -n); else as_root=(none); fi

missing=()
command -v dockerd >/dev/null 2>&1 || docker info >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ]; then
  fix="sudo apt-get install -y ${missing[*]} && sudo bash .ci/setup.sh"
  command -v apt-get >/dev/null 2>&1 || stop "missing ${missing[*]} and no apt-get here: install them with your package manager, then rerun"
  [ "${as_root[0]-}" = none ] && stop "missing ${missing[*]} (not root, no passwordless sudo): run \`$fix\`"
  say "installing ${missing[*]} (apt-get)"
  "${as_root[@]}" apt-get update -qq || stop "apt-get update failed (no network to the Debian mirror?): run \`$fix\` and read its error"
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null \
    || stop "apt-get could not install ${missing[*]}: run \`$fix\` and read its error"
fi

if ! docker info >/dev/null 2>&1; then
  if pgrep -x dockerd >/dev/null && [ "${as_root[0]-}" = none ]; then
    stop "a Docker engine runs but this user cannot reach it: run \`sudo usermod -aG docker $USER\` and log in again"
  fi
  [ "${as_root[0]-}" = none ] && stop "no Docker engine running (not root, no passwordless sudo): run \`sudo bash .ci/setup.sh\`"
  say "starting the Docker engine (.ci/docker-up.sh)"
  "${as_root[@]}" bash .ci/docker-up.sh >/dev/null || stop "the Docker engine did not start: see /tmp/dockerd.log, then rerun \`sudo bash .ci/setup.sh\`"
  docker info >/dev/null 2>&1 || stop "the Docker engine runs but this user cannot reach it: run \`sudo usermod -aG docker $USER\` and log in again"
fi

[ -x "$venv/bin/cwm-forager" ] || stop "$venv/bin/cwm-forager not found: run \`make $venv/.installed\` first"
# Its progress (a first bootstrap takes minutes) shows as it comes; the last line it prints is the image's tag.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
"$venv/bin/cwm-forager" base-image | tee "$log" | sed -u '/^cwm-forager-base:/d' \
  || stop "the forager base image could not be built (above); rerun \`bash .ci/setup.sh\`"
base=$(tail -n 1 "$log")
say "Docker $(docker version --format '{{.Server.Version}}'), debootstrap, bubblewrap, base image $base: ready"
