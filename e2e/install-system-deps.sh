#!/usr/bin/env bash
# Installs the Debian packages the tests need: Prometheus (which brings promtool), shellcheck, which
# actionlint runs on the workflows' scripts, openssl (the tests of an authenticated Prometheus make their
# certificates with it), and tmux, with which `make record` captures a terminal session.
# A quick no-op when they are already on PATH. The package's own daemon is kept from starting
# (and stopped, should it start anyway) because the test harness runs Prometheus itself on a
# free loopback port; a stray server on :9090 would only confuse people and tests.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 \
   && command -v shellcheck >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 \
   && command -v tmux >/dev/null 2>&1; then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo
else
  SUDO=
fi

# policy-rc.d exit code 101 tells invoke-rc.d/deb-systemd-invoke not to start services.
policy=/usr/sbin/policy-rc.d
placed_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod 0755 "$policy"
  placed_policy=1
fi
cleanup() {
  if [[ $placed_policy -eq 1 ]]; then
    $SUDO rm -f "$policy"
  fi
}
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus shellcheck openssl tmux >/dev/null

# Belt and braces: if a daemon came up anyway, stop it and keep it from starting at boot.
if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
  $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
if [[ -x /etc/init.d/prometheus ]]; then
  $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
  if command -v update-rc.d >/dev/null 2>&1; then
    $SUDO update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
fi

command -v prometheus >/dev/null
command -v promtool >/dev/null
command -v shellcheck >/dev/null
command -v openssl >/dev/null
command -v tmux >/dev/null
echo "installed: $(prometheus --version 2>&1 | head -n1)"
