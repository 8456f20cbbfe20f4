#!/usr/bin/env bash
# One-shot check of the cuda and int8 backends on a GPU machine, in under 5 minutes:
#   bash benchmarks/gpu_check.sh
# Uses $VENV (default .venv-gpu, created with --system-site-packages so a preinstalled CUDA
# torch is reused), installs what is missing (needs a package index only for that), builds the
# 76M-parameter seeded benchmark model in a temporary folder, then runs `modelmgr run` with
# --backend cuda, --backend int8 and auto, and prints the GPU memory each one used against
# modelmgr's estimate. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv-gpu}
PY=${PYTHON:-python3}
STEP_TIMEOUT=${STEP_TIMEOUT:-150}

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    "$PY" -m venv --system-site-packages "$VENV"
fi
V="$VENV/bin/python"

echo "== packages"
if ! "$V" -c "import torch" 2>/dev/null; then
    # Only where no torch exists at all: the default Linux wheel from PyPI is the CUDA build.
    "$V" -m pip install --quiet "torch>=2.1"
fi
if ! "$V" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$V" -c "import torch; print(f'torch {torch.__version__}: torch.cuda.is_available() is False (CUDA build: {torch.version.cuda})')"
    echo "no usable CUDA device here: nothing to check" >&2
    exit 1
fi
for module in transformers accelerate bitsandbytes safetensors tokenizers pluggy click platformdirs; do
    "$V" -c "import $module" 2>/dev/null || missing="${missing:-} $module"
done
if [ -n "${missing:-}" ]; then
    echo "installing:$missing"
    "$V" -m pip install --quiet $missing
fi
# Editable installs register the entry points (the backends are found through them);
# no build isolation, so no index is needed for setuptools.
"$V" -m pip install --quiet --no-deps --no-build-isolation -e . -e plugins/example
"$V" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'torch {torch.__version__}, {torch.cuda.device_count()} x {p.name}, {p.total_memory / 1e9:.1f} GB')"

MODEL=$(mktemp -d /tmp/modelmgr-gpu-check-XXXXXX)
trap 'rm -rf "$MODEL"' EXIT
export MODELMGR_CONFIG="$MODEL/config.toml" HF_HOME="$MODEL/hf"
: > "$MODELMGR_CONFIG"

echo "== building the benchmark model"
timeout "$STEP_TIMEOUT" "$V" -c "
import sys; from pathlib import Path
sys.path.insert(0, 'benchmarks')
from bench_run import build_bench_model
build_bench_model(Path('$MODEL/llama'))
" 2>&1 | grep -v -e 'Writing model shards' -e 'Loading weights' || true
test -f "$MODEL/llama/model.safetensors"

echo "== modelmgr backends"
"$V" -m modelmgr backends
echo "== modelmgr show"
"$V" -m modelmgr show "$MODEL/llama"

for backend in cuda int8 auto; do
    echo "== modelmgr run --backend $backend"
    timeout "$STEP_TIMEOUT" "$V" -m modelmgr run "$MODEL/llama" "Tell me about the river." \
        --backend "$backend" --temperature 0 --max-new-tokens 64 --json
done

echo "== GPU memory per backend (fresh process each)"
for backend in cuda int8; do
    timeout "$STEP_TIMEOUT" "$V" - "$MODEL/llama" "$backend" <<'EOF'
import sys

import torch

from modelmgr.backends import GenerationSettings, plan_load
from modelmgr.chat import complete
from modelmgr.config import load_config

path, backend = sys.argv[1], sys.argv[2]
torch.cuda.init()
free_before = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
plan = plan_load(path, config=load_config(), backend=backend)
loaded = plan.load()
reply = complete(plan.backend, loaded, [{"role": "user", "content": "Tell me about the river."}],
                 GenerationSettings(max_new_tokens=64, temperature=0))
free_after = sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count()))
print(f"{backend:5} on {loaded.device} ({loaded.dtype}): allocated {torch.cuda.memory_allocated() / 1e6:.0f} MB, "
      f"peak allocated {torch.cuda.max_memory_allocated() / 1e6:.0f} MB, device memory taken {(free_before - free_after) / 1e6:.0f} MB "
      f"(CUDA context included), estimate {plan.selection.fit.needed / 1e6:.0f} MB; "
      f"load {loaded.load_seconds:.2f} s, first token {reply.time_to_first_token * 1000:.0f} ms, {reply.tokens_per_second:.0f} tokens/s")
EOF
done
echo "== all GPU checks passed"
