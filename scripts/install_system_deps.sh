#!/usr/bin/env bash
# System packages the project needs: Mesa EGL (headless MuJoCo rendering), ffmpeg-free video via
# OpenCV wheels, Chromium (browser tests, driven by playwright-core over CDP: no ChromeDriver), a C
# compiler + libc headers + the OpenXR headers (the scripted OpenXR runtime the tests build; pyopenxr
# ships its own OpenXR loader, so libopenxr-loader1 is not needed), Node.js/npm (playwright-core,
# iwer). Installs only what is missing; needs root.
set -euo pipefail
need=()
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }
for p in libegl1 libegl-mesa0 libgl1-mesa-dri libgles2 chromium gcc libc6-dev libopenxr-dev; do
  have_pkg "$p" || need+=("$p")
done
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "[setup] missing system packages: ${need[*]}" >&2
  echo "[setup] install them with: sudo apt-get install -y ${need[*]}" >&2
  exit 0
fi
echo "[setup] apt-get install ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
