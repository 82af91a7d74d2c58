#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing, then Rust and Python tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/test-deps.sh
cargo fmt --check
# the committed PTX (what the CUDA build embeds) is what kernels.cu compiles to
python3 scripts/build-ptx.py --check
cargo clippy --all-targets -- -D warnings
# the CUDA code paths (fused-op kernels, page-locking) compile and lint without a GPU, in the
# build without microphone capture (no ALSA) that GPU servers use
cargo clippy --all-targets --no-default-features --features cuda --target-dir target/cuda -- -D warnings
cargo test
# the unit tests of the CUDA-only code (launch geometry), which need no GPU
cargo test --no-default-features --features cuda --target-dir target/cuda --lib
python3 -m pytest -q models/tests
