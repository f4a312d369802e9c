#!/usr/bin/env bash
# Installs Debian's headless chromium (for the app's browser test) unless it is there. Needs root or sudo.
set -euo pipefail
if command -v chromium > /dev/null; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends chromium
