#!/usr/bin/env bash
# What `make test` needs from the machine besides Python packages, installed and started when
# missing (docs/tests.md): Debian packages (Chromium for the UI tests, the Prometheus tools and
# Pushgateway, Java for Spark), and PostgreSQL and Redis on 127.0.0.1. Installing needs root (as
# on this project's machines); without it, it stops with the exact command to run.
set -euo pipefail

APT_PACKAGES="chromium prometheus prometheus-pushgateway prometheus-alertmanager"
command -v java >/dev/null || APT_PACKAGES="$APT_PACKAGES default-jre-headless"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
# `make data` downloads python3-pattern (the labelled corpora): apt must know it.
need_update=""
[ -n "$missing" ] && need_update=1
apt-cache policy python3-pattern 2>/dev/null | grep -q 'Candidate: [0-9]' || need_update=1
if [ -n "$need_update" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "make test needs these Debian packages:${missing:- (only the package lists)}" >&2
    echo "run as root:  apt-get update && apt-get install -y --no-install-recommends$missing" >&2
    exit 1
  fi
  apt-get update -qq
  if [ -n "$missing" ]; then
    echo "installing Debian packages:$missing"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  fi
fi

# PostgreSQL and Redis on 127.0.0.1, started when not running (the machine's own commands).
if ! pg_isready -h 127.0.0.1 -p 5432 -q; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
