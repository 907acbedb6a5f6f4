#!/usr/bin/env bash
# The device check of issue 19, for one NVIDIA GPU with JAX's CUDA plugin, Flax and PyTorch with CUDA installed:
#
#     bash benchmarks/gpu_check.sh [OUT]          # default OUT: benchmarks/results/gpu-<timestamp>; under 8 minutes
#     bash benchmarks/gpu_check.sh --dry-run OUT  # print the stages without running them
#
# 1. parity (python -m benchmarks.gpu_check): every rnnjax GPU path (cudnn LSTM, Pallas LSTM/GRU, bfloat16
#    operands) and the XLA scan against torch cuDNN nn.LSTM/nn.GRU with the same weights: outputs, final states,
#    gradients of weights, inputs and initial states, on a padded batch, at full float32 precision;
# 2. the harness's gpu preset (the standard preset's four shapes, LSTM and GRU, training and inference steps) in
#    float32, then bfloat16: rnnjax on its GPU path, rnnjax[autodiff] (its own XLA scan), Flax
#    OptimizedLSTMCell/LSTMCell/GRUCell and torch cuDNN, with the GPU's GEMM ceiling measured in the same run and
#    every variant's fraction of it (results.md: "% of GEMM ceiling").
# Everything lands in OUT: parity/parity.{json,md}; float32-train/, float32-infer/, bfloat16-train/,
# bfloat16-infer/ (results.json, results.md, PNGs each); summary.md (every markdown report, one after the other).
# Each stage has its own timeout (30 + 90 + 4 x $GPU_CHECK_STAGE_S, default 85: 460 s in all), so a hung stage costs
# its budget and the next one still runs; the exit status is 1 if any stage failed or parity was off.
set -u
dry_run=0
if [ "${1:-}" = "--dry-run" ]; then dry_run=1; shift; fi
out="${1:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M%S)}"
cd "$(dirname "$0")/.."
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and torch share the one GPU
status=0

stage() {  # stage SECONDS COMMAND...
    local seconds=$1; shift
    echo "== $* (timeout ${seconds}s)"
    if [ "$dry_run" = 1 ]; then return 0; fi
    timeout "$seconds" "$@" || { echo "== failed with status $?: $*"; status=1; }
}

[ "$dry_run" = 1 ] || mkdir -p "$out"
stage 30 python -c "import jax, torch; d = jax.devices()[0]; print(d.platform, d.device_kind, jax.__version__, \
torch.__version__, torch.cuda.is_available()); assert d.platform == 'gpu' and torch.cuda.is_available()"
stage 90 python -m benchmarks.gpu_check --out "$out/parity"
for dtype in float32 bfloat16; do
    for mode in train infer; do  # four stages: a stage that runs out of time loses only its own rows
        stage "${GPU_CHECK_STAGE_S:-85}" python -m benchmarks.run --preset gpu --dtype "$dtype" --mode "$mode" \
            --out "$out/$dtype-$mode"
    done
done
if [ "$dry_run" = 0 ]; then
    cat "$out"/parity/parity.md "$out"/*-train/results.md "$out"/*-infer/results.md > "$out/summary.md" 2>/dev/null
    echo "== results in $out (summary.md)"
fi
exit $status
