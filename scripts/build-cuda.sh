#!/usr/bin/env bash
# Builds `graft` with the `cuda` feature on a machine without a GPU or a system CUDA toolkit.
#
# The CUDA 13.0 compiler, headers and libraries come from NVIDIA's Python wheels, installed into
# a virtual environment (created if missing). The driver library libcuda.so is not in any wheel,
# so a link-time stub with the driver API's symbol names is generated; on the GPU machine the
# real driver's libcuda.so.1 is loaded instead. The result is copied to dist/graft-cuda
# (without debug info) and compressed to dist/graft-cuda.xz (what travels to the GPU machine).
#
# Usage: scripts/build-cuda.sh [--print-env]
#   --print-env   print the environment the build uses (as `export` lines) and exit
#
# Environment (all optional):
#   GRAFT_CUDA_VENV    virtual environment holding the toolchain (default: $HOME/.venvs/cuda)
#   CUDA_COMPUTE_CAP   GPU architecture the kernels are compiled for (default: 90 = H100/H200)
#   CARGO_BUILD_JOBS   parallel rustc jobs (cargo's default: all cores)
#
# See docs/gpu.md for the recipe, the versions and the known limits.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${GRAFT_CUDA_VENV:-$HOME/.venvs/cuda}"

# CUDA 13.0 exactly: the GPU machines' driver (580.x) loads PTX of CUDA <= 13.0 only, and a
# binary linked against 13.0 runs with any later 13.x runtime libraries.
CUDA_WHEELS=(
  nvidia-cuda-nvcc==13.0.88
  nvidia-nvvm==13.0.88
  nvidia-cuda-crt==13.0.88
  nvidia-cuda-cccl==13.0.85
  nvidia-cuda-runtime==13.0.96
  nvidia-cuda-nvrtc==13.0.88
  nvidia-cublas==13.0.2.14
  nvidia-curand==10.4.0.35
)
# cudarc's name for that toolkit version (its build script otherwise runs `nvcc --version`).
CUDARC_VERSION=13000

log() { echo "build-cuda: $*" >&2; }

install_toolchain() {
  if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    python3 -m venv "$VENV"
  fi
  local missing=0 wheel name want have
  for wheel in "${CUDA_WHEELS[@]}"; do
    name="${wheel%%==*}"; want="${wheel##*==}"
    have="$("$VENV/bin/python" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p')"
    [[ "$have" == "$want" ]] || missing=1
  done
  if [[ $missing == 1 ]]; then
    log "installing ${CUDA_WHEELS[*]}"
    "$VENV/bin/python" -m pip install -q "${CUDA_WHEELS[@]}"
  fi
}

# The wheels' common root: bin/nvcc, include/, lib/ (CUDA 13 wheels share `nvidia/cu13`).
cuda_root() {
  "$VENV/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13"))'
}

# cudarc's source, for the list of driver API symbols the stub must define.
cudarc_src() {
  local version
  version="$(awk '/^name = "cudarc"$/ {getline; gsub(/"/, "", $3); print $3}' Cargo.lock)"
  [[ -n "$version" ]] || { log "cudarc is not in Cargo.lock"; exit 1; }
  local dir
  for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$version"; do
    [[ -f "$dir/src/driver/sys/mod.rs" ]] && { echo "$dir"; return; }
  done
  cargo fetch >&2
  for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$version"; do
    [[ -f "$dir/src/driver/sys/mod.rs" ]] && { echo "$dir"; return; }
  done
  log "cudarc-$version source not found after cargo fetch"; exit 1
}

# A folder the linker searches (via LIBRARY_PATH): unversioned names for the wheels' libraries
# and the libcuda.so stub (soname libcuda.so.1, as the real driver's).
prepare_link_dir() {
  local root="$1" link="$VENV/graft-link"
  mkdir -p "$link"
  local lib
  for lib in cudart cublas cublasLt curand nvrtc; do
    local found=("$root"/lib/lib"$lib".so.[0-9]*)
    [[ -e "${found[0]}" ]] || { log "lib$lib.so.* missing in $root/lib"; exit 1; }
    ln -sfn "${found[0]}" "$link/lib$lib.so"
  done
  if [[ ! -f "$link/libcuda.so" ]]; then
    local src
    src="$(cudarc_src)"
    grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$src/src/driver/sys/mod.rs" | awk '{print $4}' | sort -u \
      | awk '{print "int " $1 "(void) { return 999; }"}' >"$link/cuda_stub.c"
    cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$link/cuda_stub.c"
    log "generated libcuda.so stub ($(wc -l <"$link/cuda_stub.c") symbols)"
  fi
  echo "$link"
}

install_toolchain
ROOT="$(cuda_root)"
LINK="$(prepare_link_dir "$ROOT")"
export PATH="$ROOT/bin:$PATH"
export CUDA_HOME="$ROOT" CUDA_ROOT="$ROOT" CUDA_PATH="$ROOT"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION="$CUDARC_VERSION"
export LIBRARY_PATH="$LINK${LIBRARY_PATH:+:$LIBRARY_PATH}"

if [[ "${1:-}" == "--print-env" ]]; then
  for v in PATH CUDA_HOME CUDA_ROOT CUDA_PATH CUDA_COMPUTE_CAP CUDARC_CUDA_VERSION LIBRARY_PATH; do
    printf 'export %s=%q\n' "$v" "${!v}"
  done
  exit 0
fi

log "nvcc: $(nvcc --version | sed -n 's/^Cuda compilation tools, //p')"
log "compute capability $CUDA_COMPUTE_CAP, cudarc CUDA version $CUDARC_CUDA_VERSION"
start=$(date +%s)
nice -n 10 cargo build --release --features cuda -p graft-cli
log "cargo build took $(( $(date +%s) - start ))s"

target_dir="$(cargo metadata --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
mkdir -p dist
objcopy --strip-debug "$target_dir/release/graft" dist/graft-cuda
# The binary holds the CUDA kernels (PTX and sm_90a code, ~50 MB); compressed it is ~9 MB, small
# enough to travel with the working tree. scripts/gpu-check.sh unpacks it.
xz -T0 -9 -c dist/graft-cuda >dist/graft-cuda.xz
log "wrote dist/graft-cuda ($(du -h dist/graft-cuda | cut -f1)) and dist/graft-cuda.xz ($(du -h dist/graft-cuda.xz | cut -f1))"
