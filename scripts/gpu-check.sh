#!/usr/bin/env bash
# Every GPU check of the project in one run (for a short-lived GPU machine): results land in $OUT.
#   - building llama-7b in fp16 directly on the GPU takes seconds;
#   - the smoke profile (llama-7b: dense, llm-pruner, flap, depth; in 12, out 128; M 1 and 64, eager);
#   - the measurement-overhead check at the smoke shape;
#   - one static-cache (compiled) point of the depth-pruned model.
# Usage: OUT=gpu-out bash scripts/gpu-check.sh
set -uo pipefail
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
pip install --no-deps --no-build-isolation -e . >"$OUT/install.log" 2>&1 || export PYTHONPATH=$PWD
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
python - >"$OUT/versions.txt" 2>&1 <<'PY'
import time, torch, transformers
from pruned_perf.llama.models import build_model
print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)
start = time.perf_counter()
model = build_model("llama-7b", "cuda", torch.float16)
torch.cuda.synchronize()
print(f"built llama-7b fp16 on the GPU in {time.perf_counter() - start:.1f} s,",
      f"{torch.cuda.memory_allocated() / 2**30:.1f} GiB allocated")
PY
python -m pytest perf/ -p no:cacheprovider --pp-profile smoke --benchmark-json "$OUT/smoke.json" \
    --pp-log "$OUT/smoke.jsonl" --pp-cache-dir "$OUT/plans" -q 2>&1 | tail -40 >"$OUT/smoke.txt"
pruned-perf report "$OUT/smoke.json" >"$OUT/smoke.md" 2>&1
pruned-perf plot "$OUT/smoke.json" --out "$OUT/smoke.png" >>"$OUT/smoke.md" 2>&1
pruned-perf overhead --model llama-7b --input-tokens 12 --output-tokens 128 --rounds 6 >"$OUT/overhead.txt" 2>&1
python -m pytest perf/ -p no:cacheprovider --pp-profile smoke --pp-methods depth --pp-batch 1 \
    --pp-backend static --benchmark-json "$OUT/static.json" --pp-log "$OUT/static.jsonl" \
    --pp-cache-dir "$OUT/plans" -q 2>&1 | tail -20 >"$OUT/static.txt"
cat "$OUT"/versions.txt "$OUT"/smoke.md "$OUT"/overhead.txt "$OUT"/static.txt
