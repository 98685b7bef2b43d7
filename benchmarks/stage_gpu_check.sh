#!/usr/bin/env bash
# Stage what benchmarks/gpu_check.py needs on the one-GPU check machine into .gpucheck/
# (git-ignored through .git/info/exclude; never committed):
#   .gpucheck/wheels/  DeepSpeed (built here from its sdist, no ops compiled), pydantic and
#                      pydantic-core, annotated-types, typing-inspection, typing-extensions,
#                      platformdirs, hjson, tomli-w: cp312 manylinux / pure-Python wheels
#   .gpucheck/src/     mamba-ssm's Python sources from its PyPI sdist (no CUDA build)
# Needs network here and nothing on the GPU machine. docs/gpu-check.md gives the command
# that runs the check with these. Usage: benchmarks/stage_gpu_check.sh [PYTHON]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-${PYTHON:-python3}}
STAGE=.gpucheck
LIMIT_MIB=60  # the device tool carries 64 MiB in all, the repository included
DEEPSPEED=deepspeed==0.19.8
MAMBA=mamba-ssm
MAMBA_VERSION=2.3.2.post1
# one version of each: pydantic-core must be the one this pydantic pins
WHEELS=(pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0
        typing-inspection==0.4.5 typing_extensions==4.16.0 platformdirs==4.14.8
        hjson==3.1.0 tomli_w==1.2.0)

exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$STAGE/" "$exclude" 2>/dev/null || echo "/$STAGE/" >> "$exclude"
rm -rf "$STAGE"
mkdir -p "$STAGE/wheels" "$STAGE/src"

echo "== DeepSpeed: PyPI has only its sdist; build the pure-Python wheel here (DS_BUILD_OPS=0)"
DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps "$DEEPSPEED" -w "$STAGE/wheels"

echo "== wheels for Python 3.12 on x86-64 Linux"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d "$STAGE/wheels" "${WHEELS[@]}"

echo "== $MAMBA $MAMBA_VERSION Python sources"
# through pip and its configured index (mirrors and offline indexes work too), which checks
# the file's hash; its setup.py wants CUDA to prepare metadata unless told to skip the build,
# and it imports torch, so it runs against this environment's torch (no build isolation)
MAMBA_SKIP_CUDA_BUILD=TRUE "$PY" -m pip download -q --no-deps --no-binary=:all: \
    --no-build-isolation "$MAMBA==$MAMBA_VERSION" -d "$STAGE/sdist"
"$PY" - "$MAMBA" "$MAMBA_VERSION" "$STAGE" <<'PYEOF'
import sys, tarfile
name, version, stage = sys.argv[1:4]
want = f"{name.replace('-', '_')}-{version}.tar.gz"
with tarfile.open(f"{stage}/sdist/{want}") as tar:
    members = [m for m in tar.getmembers()
               if "/mamba_ssm/" in m.name and m.name.endswith(".py") and m.isfile()]
    for m in members:
        m.name = m.name.split("/", 1)[1]  # drop mamba_ssm-<version>/
    tar.extractall(f"{stage}/src", members=members)
print(f"{len(members)} files from {want}")
PYEOF
rm -rf "$STAGE/sdist"

size=$(du -sm "$STAGE" | cut -f1)
echo "== staged: $(ls "$STAGE/wheels" | wc -l) wheels, ${size} MiB in $STAGE"
ls -1 "$STAGE/wheels"
if [ "$size" -gt "$LIMIT_MIB" ]; then
    echo "error: $STAGE is ${size} MiB, over the ${LIMIT_MIB} MiB the device tool can carry" >&2
    exit 1
fi
