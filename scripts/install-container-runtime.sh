#!/usr/bin/env bash
# Installs Debian's container runtime (Docker engine, containerd, runc, the CNI plugins) and
# debootstrap if any is missing, and starts dockerd when no engine answers. Idempotent.
# dockerd runs with overlay2 and the cgroupfs driver (the machines mount cgroup v1 only and
# have no systemd); its log is /var/log/cricalgo-dockerd.log.
set -euo pipefail

sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  echo "[cricalgo setup] installing Debian packages: ${need[*]}"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# A docker client may exist without a Debian engine; the engine is what must answer.
docker=/usr/bin/docker
if $docker info >/dev/null 2>&1; then
  exit 0
fi
echo "[cricalgo setup] starting dockerd (overlay2, cgroupfs)"
$sudo sh -c 'nohup dockerd --storage-driver=overlay2 --exec-opt native.cgroupdriver=cgroupfs \
  >>/var/log/cricalgo-dockerd.log 2>&1 &'
for _ in $(seq 1 120); do
  if $docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "dockerd did not answer within 120 s; see /var/log/cricalgo-dockerd.log" >&2
exit 1
