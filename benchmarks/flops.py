"""The FLOP model of the benchmark harness: GEMM FLOPs only (elementwise gate math, the scan and the optimizer are
not counted), for one step over one batch of sequences `[B, T, D]` -> `[B, T, H]`.

With G = gates * H the width of the stacked gates (lstm 4, gru 3, rnn_tanh/rnn_relu 1; mingru 2 and minlstm 3,
computed from x only, so the minimal cells have no recurrent GEMM):

    forward   = 2*B*T*G*(D + H)                      classic cells: input projection + recurrent GEMM
              = 2*B*T*G*D                            minimal cells: input projection only
    backward  = dW_ih 2*B*T*G*D + dW_hh 2*B*T*G*H + dh 2*B*T*G*H     (minimal cells: dW_ih only)
    training  = forward + backward                   (no input gradient: the step differentiates params only)
    inference = forward

Achieved GFLOP/s = flops / median step time, the same count for every variant of a cell (Flax computes the input
projection inside its loop, PyTorch in one GEMM: the same products either way).
"""

from __future__ import annotations

# mode -> (gates, has a recurrent GEMM)
GATES = {
    "lstm": (4, True),
    "gru": (3, True),
    "rnn_tanh": (1, True),
    "rnn_relu": (1, True),
    "mingru": (2, False),
    "minlstm": (3, False),
}

MODEL = {
    "counts": "GEMM FLOPs only (elementwise gate math, scans and the optimizer excluded); G = gates * H",
    "gates": {mode: gates for mode, (gates, _) in GATES.items()},
    "forward": "2*B*T*G*(D+H) (mingru, minlstm: 2*B*T*G*D, gates from x only)",
    "backward": "dW_ih 2*B*T*G*D + dW_hh 2*B*T*G*H + dh 2*B*T*G*H (mingru, minlstm: dW_ih only); no input gradient",
    "train": "forward + backward",
    "infer": "forward",
}


def gate_width(mode: str, hidden_size: int) -> int:
    """G = gates * H, the output width of the stacked-gate GEMMs."""
    return GATES[mode][0] * hidden_size


def has_recurrent_gemm(mode: str) -> bool:
    return GATES[mode][1]


def forward_flops(mode: str, batch: int, time: int, input_size: int, hidden_size: int) -> int:
    width = gate_width(mode, hidden_size)
    inner = input_size + hidden_size if has_recurrent_gemm(mode) else input_size
    return 2 * batch * time * width * inner


def backward_flops(mode: str, batch: int, time: int, input_size: int, hidden_size: int) -> int:
    width = gate_width(mode, hidden_size)
    inner = input_size + 2 * hidden_size if has_recurrent_gemm(mode) else input_size
    return 2 * batch * time * width * inner


def step_flops(mode: str, step: str, batch: int, time: int, input_size: int, hidden_size: int) -> int:
    """GEMM FLOPs of one "train" or "infer" step."""
    forward = forward_flops(mode, batch, time, input_size, hidden_size)
    if step == "infer":
        return forward
    return forward + backward_flops(mode, batch, time, input_size, hidden_size)
