#!/usr/bin/env bash
# Create .venv and install robolearn with its test dependencies, from this repository's files alone.
# torch is installed first and pinned to the CPU build when one is available locally
# (torch==2.13.0 on our machines); any torch >= 2.4 that is already present is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
# Offscreen rendering on CPU machines (camera observations, eval videos) needs OSMesa.
if ! ldconfig -p 2>/dev/null | grep -q libOSMesa; then
    SUDO=""
    if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
    if command -v apt-get >/dev/null 2>&1; then
        $SUDO apt-get install -y -q libosmesa6 >/dev/null 2>&1 \
            || { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q libosmesa6 >/dev/null 2>&1; } \
            || echo "warning: could not install libosmesa6: camera rendering will be unavailable" >&2
    else
        echo "warning: no apt-get; install OSMesa (or use a GPU with MUJOCO_GL=egl) for camera rendering" >&2
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! python -c "import torch" >/dev/null 2>&1; then
    # The local CPU wheel where pip finds one (our machines); elsewhere the registry's build.
    python -m pip install -q "torch==2.13.0" || python -m pip install -q "torch>=2.4"
fi
python -m pip install -q -e ".[dev]"
python -c "import robolearn, torch, mujoco, robosuite, zarr; print('robolearn setup ok: torch', torch.__version__, '| mujoco', mujoco.__version__, '| zarr', zarr.__version__)"
