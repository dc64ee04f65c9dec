#!/usr/bin/env bash
# Installs the Debian packages the local stack runs (Redis, PostgreSQL, Prometheus with
# promtool, nginx, openssl, wrk, chromium) if any of their programs is missing. Idempotent.
set -euo pipefail

need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v prometheus >/dev/null || need+=(prometheus)
command -v promtool >/dev/null || need+=(prometheus)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v openssl >/dev/null || need+=(openssl)
# The workload benchmark's saturation load generator.
command -v wrk >/dev/null || need+=(wrk)
# Headless Chromium renders the demo report in its test (the plots are drawn by JavaScript).
command -v chromium >/dev/null || need+=(chromium)

if [ ${#need[@]} -eq 0 ]; then
  echo "[cricalgo setup] Debian packages present"
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
echo "[cricalgo setup] installing Debian packages: ${need[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
# The packages start their own daemons where a service manager exists; the local stack runs
# its own instances on free ports, so stop the packaged ones if they came up.
for svc in redis-server postgresql nginx prometheus; do
  $sudo service "$svc" stop >/dev/null 2>&1 || true
done
