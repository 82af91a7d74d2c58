#!/usr/bin/env bash
# One device call (#3): time the Triton selective scan against the PyTorch one at the training
# shape (scan_check.py: parity + forward/backward), then spend the rest of the call on one more
# fine-tuning stage with whichever scan won (triton only if its parity holds and it is faster).
#   run: carry [".data/bundle", ".data/whl"], command: bash scripts/gpu/run-scan-train.sh
# Env: INIT (weights to continue), LR, SEED, BUDGET_S (whole call, default 560).
set -u
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-560}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .data/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 150 python3 scripts/gpu/scan_check.py --reps 5 2>&1 | tee $OUT/scan_kernel.txt
SCAN=$(python3 - "$OUT/scan_kernel.txt" <<'PY'
import re, sys
t = open(sys.argv[1]).read()
ms = dict(re.findall(r"^(\w+): forward\+backward ([\d.]+) ms", t, re.M))
ok = "off by" not in t and "triton rel err" in t and len(ms) == 2
print("triton" if ok and float(ms["triton"]) < float(ms["torch"]) else "torch")
PY
)
LEFT=$(( BUDGET_S - ($(date +%s) - T0) ))
MIN=$(python3 -c "print(round(($LEFT - 75) / 60, 2))")
echo "== scan $SCAN, ${LEFT}s left, training ${MIN} min"
INIT=${INIT:-models/weights/mambatag-default-1.3.0.safetensors}
python3 models/train.py --bundle .data/bundle --out /tmp/stage --minutes $MIN \
  --deadline-minutes $(python3 -c "print($MIN + 1.0)") --scan $SCAN \
  --init $INIT --lr ${LR:-5e-4} --warmup 30 --consist-w 3 --maxpool-w 0.5 --val-every 100000 \
  --val-scenes 16 --seed ${SEED:-5} --batch 32 > /tmp/stage.log 2>&1
grep -E '"step": (25|100|300|500|800|1200|1600|2000|3000)\b|"event": "(final|error|oom)"' /tmp/stage.log | cut -c1-300
tail -n 2 /tmp/stage.log | cut -c1-300
cp /tmp/stage.log $OUT/train.log
tar -C /tmp -czf $OUT/stage.tar.gz stage
ls -la $OUT
