#!/usr/bin/env bash
# Sets up .venv if needed, then runs the main job: `hf-rgbd demo`. Extra arguments go to the demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/hf-rgbd" demo "$@"
