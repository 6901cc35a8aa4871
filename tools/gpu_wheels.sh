#!/usr/bin/env bash
# Download, into .whl/ of the checkout (ignored by git), the wheels that benchmarks/gpu_run.py needs beyond what a
# GPU machine's image has (Python 3.12 with torch, timm, lightning, safetensors, pyyaml, tqdm, pillow, matplotlib,
# psutil, tensorboard) and that it cannot download there (no network): PyAV for the video files, pytest and its
# dependencies for the CUDA tests. Versions from constraints.txt where it pins them. Run on a machine with network,
# then pass `.whl` in the device run's carried paths; gpu_run.py installs them into /tmp/site with
# `pip install --no-index --no-deps --target /tmp/site`.
#
#     tools/gpu_wheels.sh            # then: du -sh .whl
set -euo pipefail
cd "$(dirname "$0")/.."

pinned() {  # the version constraints.txt pins for a package (case-insensitive), or nothing
    { grep -i "^$1==" constraints.txt || true; } | head -n 1 | cut -d= -f3
}

# package and fallback version (used when constraints.txt does not pin it: the versions tested with pytest 9.0.3)
PACKAGES=(
    "av 18.1.0"
    "pytest 9.0.3"
    "Pygments 2.20.0"
    "pluggy 1.6.0"
    "iniconfig 2.3.0"
)

mkdir -p .whl
for entry in "${PACKAGES[@]}"; do
    read -r name fallback <<<"$entry"
    version="$(pinned "$name")"
    version="${version:-$fallback}"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "$name==$version"
done
ls -l .whl
du -sh .whl
