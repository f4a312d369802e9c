#!/usr/bin/env bash
# Sets up .venv if needed, then runs the main job: `hf-rgbd demo` (report, plots, results.json and models in
# demo_output/ unless --output-dir says otherwise). Extra arguments go to the demo.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/hf-rgbd" demo --output-dir "$root/demo_output" "$@"
