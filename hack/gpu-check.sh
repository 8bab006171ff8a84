#!/usr/bin/env bash
# The GPU check of issue 16: one command that fits one short window on a GPU machine.
#
#   bash hack/gpu-check.sh [--out DIR] [--wheels DIR] [--models DIR] [--budget SECONDS]   # on the GPU machine
#   bash hack/gpu-check.sh --cpu --out DIR                                 # the same stages on the tiny architecture, here
#
# On the GPU machine (Python 3.12 and torch, no network, none of the runner's
# other dependencies) it installs the carried wheels (hack/gpu-wheels.txt, got
# by hack/gpu-wheels.sh) with pip --no-deps --no-index --target, records the
# versions first (GPU, driver, torch, CUDA, diffusers, transformers, git
# commit), then runs each stage under its own timeout, all within --budget
# seconds (default 480; 900 with --cpu): sd-turbo 512x512 1 step stock vs optimized vs HTTP
# (jpeg and png), sd-turbo throughput at 1/16/32 clients with batching off and
# on (with the batch-size histogram), SDXL 1024x1024 30 steps stock vs
# optimized, the serving path on a stub pipeline, and FLUX.1-schnell 1024x1024
# 4 steps stock vs optimized (--cpu: the toy-size tiny-flux, also over HTTP), and the text encoder eager vs
# compiled vs a prompt-cache hit. Every figure line names the device. Everything is
# written under --out (default: $OUT). The runner runs as `python -m`: a
# --target install has no console scripts.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=gpu
OUT_DIR=${OUT:-}
WHEELS="$ROOT/hack/wheels"
MODELS=
BUDGET=
# The stages' runner processes listen on PORTS .. PORTS+9 (loopback only); two checks at once need two bases.
PORTS=${GPU_CHECK_PORTS:-8791}
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --out) OUT_DIR=${2:?--out needs a folder}; shift ;;
    --wheels) WHEELS=${2:?--wheels needs a folder}; shift ;;
    --budget) BUDGET=${2:?--budget needs seconds}; shift ;;
    --models) MODELS=${2:?--models needs a folder}; shift ;;
    --ports) PORTS=${2:?--ports needs the first of ten free ports}; shift ;;
    *) echo "gpu-check: unknown argument $1 (see the header of hack/gpu-check.sh)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT_DIR" ]; then
  echo "gpu-check: no output folder: set OUT or pass --out DIR" >&2
  exit 2
fi
# 8 minutes on the GPU machine; a loaded CPU here gets more.
[ -z "$BUDGET" ] && { [ "$MODE" = cpu ] && BUDGET=900 || BUDGET=480; }
case "$BUDGET" in ''|*[!0-9]*) echo "gpu-check: --budget must be whole seconds, got $BUDGET" >&2; exit 2 ;; esac
case "$PORTS" in ''|*[!0-9]*) echo "gpu-check: --ports must be a port number, got $PORTS" >&2; exit 2 ;; esac
if [ "$PORTS" -lt 1024 ] || [ "$PORTS" -gt 65526 ]; then echo "gpu-check: --ports must be 1024-65526 (ten ports from it), got $PORTS" >&2; exit 2; fi
mkdir -p "$OUT_DIR" || { echo "gpu-check: cannot create $OUT_DIR" >&2; exit 2; }
OUT_DIR=$(cd "$OUT_DIR" && pwd)
START=$(date +%s)
DEADLINE=$((START + BUDGET))
exec > >(tee -a "$OUT_DIR/gpu-check.log") 2>&1

if [ "$MODE" = cpu ]; then
  PY=${PYTHON:-"$ROOT/.venv/bin/python"}
else
  PY=${PYTHON:-python3}
  SITE="$OUT_DIR/site"
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    # "always" wheels replace what the machine has; "missing" ones only fill gaps (torch's own dependencies stay).
    mapfile -t PICKED < <("$PY" - "$WHEELS" "$ROOT/hack/gpu-wheels.txt" <<'PICK'
import sys, pathlib, re
from importlib import metadata
wheels, listing = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
norm = lambda name: re.sub(r"[-_.]+", "_", name).lower()
when = dict(line.split() for line in listing.read_text().splitlines() if line.strip() and not line.startswith("#"))
when = {norm(k): v for k, v in when.items()}
installed = {norm(d.metadata["Name"] or "") for d in metadata.distributions()}
for wheel in sorted(wheels.glob("*.whl")):
    name = norm(wheel.name.split("-")[0])
    if when.get(name, "always") == "always" or name not in installed:
        print(wheel)
PICK
)
    echo "gpu-check: installing ${#PICKED[@]} carried wheels into $SITE"
    if "$PY" -m pip --version >/dev/null 2>&1; then
      "$PY" -m pip install --quiet --no-deps --no-index --target "$SITE" "${PICKED[@]}" || { echo "gpu-check: pip could not install the wheels" >&2; exit 1; }
    else
      # No pip: a wheel is a zip whose top level belongs in site-packages.
      "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$SITE" "${PICKED[@]}" || exit 1
    fi
  fi
  export PYTHONPATH="$ROOT/runner/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# Everything the runner and the bench import, before any stage: a missing package is one line now, not a failed stage later.
if ! error=$("$PY" -c 'import kubediffusers.runner.app, kubediffusers.runner.server, kubediffusers.runner.dev.bench.cli, diffusers, transformers' 2>&1); then
  echo "gpu-check: the runner's dependencies are missing ($(echo "$error" | tail -1)): carry hack/wheels (bash hack/gpu-wheels.sh) or pass --wheels DIR" >&2
  exit 1
fi
BENCH=("$PY" -m kubediffusers.runner.dev.bench)
# The random checkpoints (GBs on the GPU): --models keeps them out of a folder that is fetched back.
MODELS=${MODELS:-"$OUT_DIR/models"}
WORK="$OUT_DIR/work"
mkdir -p "$MODELS" "$WORK"

# -- versions, first ---------------------------------------------------------
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  mode: $MODE"
  echo "git commit: $(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with local changes)')"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | sed 's/^/gpu: /'
  else
    echo "gpu: none (nvidia-smi not found)"
  fi
  timeout 60 "$PY" - <<'VERSIONS'
import platform
from importlib import metadata
import torch
print(f"python: {platform.python_version()}  platform: {platform.platform()}")
print(f"torch: {torch.__version__}  cuda: {torch.version.cuda}  cudnn: {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'n/a'}")
print(f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'}  capability: {torch.cuda.get_device_capability(0) if torch.cuda.is_available() else 'n/a'}")
for name in ("diffusers", "transformers", "accelerate", "huggingface_hub", "fastapi", "uvicorn", "pydantic", "pillow"):
    try:
        print(f"{name}: {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name}: not installed")
VERSIONS
} | tee "$OUT_DIR/versions.txt"

# -- stages --------------------------------------------------------------------
FAILED=0
stage() {  # stage NAME SECONDS COMMAND...: output to NAME.txt, killed at min(SECONDS, what is left of the budget)
  local name=$1 limit=$2
  shift 2
  local left=$((DEADLINE - $(date +%s)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 15 ]; then
    echo "== $name: skipped, the ${BUDGET} s budget is spent" | tee "$OUT_DIR/$name.txt"
    return
  fi
  echo "== $name (at most ${limit} s): $*"
  local started rc
  started=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT_DIR/$name.txt" 2>&1
  rc=$?
  grep -E '^\[|target|clients|img/s|ms/image|serving cost|encoders|  (png|jpeg|webp)' "$OUT_DIR/$name.txt" || tail -5 "$OUT_DIR/$name.txt"
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "== $name: TIMED OUT after ${limit} s (rc $rc); partial output in $OUT_DIR/$name.txt"
    FAILED=1
  elif [ "$rc" -ne 0 ]; then
    echo "== $name: FAILED (rc $rc); see $OUT_DIR/$name.txt"
    FAILED=1
  else
    echo "== $name: done in $(($(date +%s) - started)) s"
  fi
}

# The copy of a batch's pixels to the host that the runner starts and does not wait for
# (pipelines/postprocess.copy_to_host): equal to a synchronous copy, and how soon the call returns.
read -r -d '' COPY_CHECK <<'COPY'
import time
import numpy as np
import torch
from kubediffusers.runner.pipelines.postprocess import to_pixels
cuda = torch.cuda.is_available()
batch = torch.rand(16, 3, 512, 512, device="cuda" if cuda else "cpu")
def sync():
    if cuda:
        torch.cuda.synchronize()
def timed(call):
    sync()
    started = time.perf_counter()
    result = call()
    return result, (time.perf_counter() - started) * 1000
to_pixels(batch)  # warm-up: the pinned buffer, the kernels
pending, returned = timed(lambda: to_pixels(batch))
arrays = [p.array() for p in pending]
expected, blocking = timed(lambda: (batch.clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy())
same = all(np.array_equal(a, e) for a, e in zip(arrays, expected, strict=True))
name = torch.cuda.get_device_name(0) if cuda else "CPU"
print(f"[{name}] pixels of 16 512x512 images to the host: to_pixels returned in {returned:.2f} ms, a synchronous copy takes {blocking:.2f} ms; "
      f"the pixels are {'equal to' if same else 'DIFFERENT FROM'} the synchronous copy's")
raise SystemExit(0 if same else 1)
COPY
stage device-copy 60 "$PY" -c "$COPY_CHECK"

if [ "$MODE" = cpu ]; then
  # The tiny architecture, CPU-sized: the same stages and code paths, in a few minutes.
  COMMON=(--arch tiny-sd --model-dir "$MODELS" --work-dir "$WORK" --device cpu --preset cpu)
  stage sd-turbo 200 "${BENCH[@]}" arch "${COMMON[@]}" --size 64 --steps 1 --guidance-scale 0 --runs 5 --warmup-runs 1 \
    --modes stock optimized http --http-formats jpeg png --port $((PORTS + 0))
  stage sd-turbo-batching 180 "${BENCH[@]}" arch "${COMMON[@]}" --size 64 --steps 1 --guidance-scale 0 --runs 8 --modes \
    --batching --clients 1 4 --max-batch-size 4 --port $((PORTS + 2))
  stage sdxl 90 "${BENCH[@]}" arch "${COMMON[@]}" --size 64 --steps 2 --guidance-scale 7.5 --runs 3 --warmup-runs 1 --modes stock optimized --port $((PORTS + 4))
  stage serving-path 150 "${BENCH[@]}" output --runs 5 --clients 8 --max-batch-size 4 --port $((PORTS + 6))
else
  # reduce-overhead (CUDA graphs) instead of the gpu preset's max-autotune: autotuning alone would spend the window.
  COMMON=(--model-dir "$MODELS" --work-dir "$WORK" --device cuda --preset gpu --optimize compile_mode=reduce-overhead)
  stage sd-turbo 180 "${BENCH[@]}" arch --arch sd-turbo "${COMMON[@]}" --size 512 --steps 1 --guidance-scale 0 --runs 30 --warmup-runs 5 \
    --modes stock optimized http --http-formats jpeg png --profile --port $((PORTS + 0))
  stage sd-turbo-batching 100 "${BENCH[@]}" arch --arch sd-turbo --model-dir "$MODELS" --work-dir "$WORK" --device cuda --preset cpu \
    --size 512 --steps 1 --guidance-scale 0 --runs 64 --modes --batching --clients 1 16 32 --max-batch-size 32 --batch-window-ms 5 --port $((PORTS + 2))
  stage sdxl 150 "${BENCH[@]}" arch --arch sdxl "${COMMON[@]}" --size 1024 --steps 30 --guidance-scale 7.5 --runs 3 --warmup-runs 1 \
    --modes stock optimized --port $((PORTS + 4))
  stage serving-path 40 "${BENCH[@]}" output --runs 20 --port $((PORTS + 6))
fi
# FLUX.1-schnell (families.FAMILIES): 4 steps, no guidance, bfloat16, through the same stock / optimized / HTTP paths.
if [ "$MODE" = cpu ]; then
  stage flux-schnell 120 "${BENCH[@]}" arch --arch tiny-flux --model-dir "$MODELS" --work-dir "$WORK" --device cpu --preset cpu \
    --size 64 --steps 2 --runs 3 --warmup-runs 1 --modes stock optimized http --http-formats jpeg --port $((PORTS + 8))
else
  # No compile: compiling the 12B transformer alone would spend what is left of the window.
  stage flux-schnell 150 "${BENCH[@]}" arch --arch flux-schnell --model-dir "$MODELS" --work-dir "$WORK" --device cuda --preset cpu \
    --size 1024 --steps 4 --guidance-scale 0 --runs 3 --warmup-runs 1 --modes stock optimized --port $((PORTS + 8))
fi
# The prompt's text encoding alone (issue 16 point 2): eager vs compiled (compile_text_encoder) vs a prompt-cache hit;
# last, as the figures above are the targets'. sd-turbo's CLIP-H, the encoder the issue estimated launch-bound.
if [ "$MODE" = cpu ]; then
  stage text-encoder 120 "${BENCH[@]}" arch --arch tiny-sd --model-dir "$MODELS" --work-dir "$WORK" --device cpu --preset cpu \
    --size 64 --steps 1 --guidance-scale 7.5 --runs 3 --warmup-runs 1 --modes text-encoder
else
  stage text-encoder 90 "${BENCH[@]}" arch --arch sd-turbo "${COMMON[@]}" --size 512 --steps 1 --guidance-scale 0 --runs 30 --warmup-runs 5 \
    --modes text-encoder
fi
echo "gpu-check: finished in $(($(date +%s) - START)) s (budget ${BUDGET} s); figures in $OUT_DIR"
exit $FAILED
