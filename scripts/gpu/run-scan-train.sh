#!/usr/bin/env bash
# One device call (#3): time the Triton selective scan against the PyTorch one at the training
# shape (scan_check.py: parity + forward/backward), then spend the rest of the call on one more
# fine-tuning stage with whichever scan won (triton only if its parity holds and it is faster).
#   run: carry [".data/bundle", ".data/whl"], command: bash scripts/gpu/run-scan-train.sh
# Env: BUDGET_S (whole call, default 560); INIT, LR, SEED (default 5), EXTRA as run-stage.sh,
# which runs the stage.
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
echo "== scan $SCAN"
BUDGET_S=$(( BUDGET_S - ($(date +%s) - T0) )) SCAN=$SCAN SEED=${SEED:-5} exec bash scripts/gpu/run-stage.sh
