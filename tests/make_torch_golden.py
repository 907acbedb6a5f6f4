"""Generate PyTorch reference ("golden") data for rnnjax parity tests.

Each golden file holds, for one configuration of nn.RNN (tanh or relu),
nn.LSTM or nn.GRU, the torch parameters, inputs, initial states, outputs,
final states, a scalar loss and the gradients of that loss with respect to
the inputs, initial states and every parameter. The parity tests load these
files, so they run without torch installed.

Regenerate (torch is only needed for this step) from the repository root::

    pip install torch==2.13.0
    python tests/make_torch_golden.py
"""

import itertools
import pathlib
import zlib

import numpy as np

MODES = ("rnn_tanh", "rnn_relu", "lstm", "gru")
BATCH, TIME, INPUT_SIZE, HIDDEN_SIZE = 3, 5, 4, 6
# Contains TIME and 1 to hit both edge cases, and is unsorted on purpose so
# that enforce_sorted=False has to reorder the batch.
VARIABLE_LENGTHS = (5, 1, 3)
GOLDEN_DIR = pathlib.Path(__file__).parent / "golden" / "torch"

CASES = [
    (mode, num_layers, bidirectional, variable_lengths)
    for mode, num_layers, bidirectional, variable_lengths in itertools.product(
        MODES, (1, 2), (False, True), (False, True)
    )
]


def case_name(mode, num_layers, bidirectional, variable_lengths):
    """Return the file stem of a case, e.g. ``"lstm_l2_bi_varlen"``."""
    direction = "bi" if bidirectional else "uni"
    lengths = "varlen" if variable_lengths else "equal"
    return f"{mode}_l{num_layers}_{direction}_{lengths}"


def _make_module(mode, num_layers, bidirectional):
    """Build the torch module for ``mode`` with default init, no dropout."""
    from torch import nn

    common = dict(
        num_layers=num_layers, bias=True, batch_first=True, dropout=0.0, bidirectional=bidirectional
    )
    if mode in ("rnn_tanh", "rnn_relu"):
        return nn.RNN(INPUT_SIZE, HIDDEN_SIZE, nonlinearity=mode[len("rnn_"):], **common)
    if mode == "lstm":
        return nn.LSTM(INPUT_SIZE, HIDDEN_SIZE, **common)
    if mode == "gru":
        return nn.GRU(INPUT_SIZE, HIDDEN_SIZE, **common)
    raise ValueError(f"unknown mode {mode!r}")


def make_case(mode, num_layers, bidirectional, variable_lengths, seed=0):
    """Compute the golden arrays of one case as a dict of numpy arrays.

    The random state is derived from ``seed`` and the case name, so every case
    differs from the others yet is reproducible on its own.
    """
    import torch

    name = case_name(mode, num_layers, bidirectional, variable_lengths)
    # crc32 rather than hash(): Python string hashing is randomised per process.
    case_seed = zlib.crc32(f"{seed}:{name}".encode())
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    # fork_rng keeps the caller's global torch RNG untouched; module init
    # draws from the global RNG, so it has to be seeded there.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(case_seed)
        torch.use_deterministic_algorithms(True)
        try:
            return _compute_case(mode, num_layers, bidirectional, variable_lengths, case_seed)
        finally:
            torch.use_deterministic_algorithms(was_deterministic)


def _compute_case(mode, num_layers, bidirectional, variable_lengths, case_seed):
    """Run forward and backward for one case; see ``make_case``."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    module = _make_module(mode, num_layers, bidirectional)
    generator = torch.Generator().manual_seed(case_seed)

    def normal(*shape, scale=1.0):
        return scale * torch.randn(*shape, generator=generator, dtype=torch.float32)

    # Default init leaves b_ih and b_hh statistically alike and small; a clear,
    # distinct offset makes a dropped or merged bias (e.g. GRU's b_hn) visible.
    with torch.no_grad():
        for parameter_name, parameter in module.named_parameters():
            if parameter_name.startswith("bias"):
                parameter.add_(normal(*parameter.shape, scale=0.5))

    is_lstm = mode == "lstm"
    num_directions = 2 if bidirectional else 1
    state_shape = (num_layers * num_directions, BATCH, HIDDEN_SIZE)
    x = normal(BATCH, TIME, INPUT_SIZE).requires_grad_(True)
    lengths = torch.tensor(VARIABLE_LENGTHS if variable_lengths else (TIME,) * BATCH, dtype=torch.int64)
    h0 = normal(*state_shape, scale=0.5).requires_grad_(True)
    c0 = normal(*state_shape, scale=0.5).requires_grad_(True) if is_lstm else None
    loss_output_weight = normal(BATCH, TIME, num_directions * HIDDEN_SIZE)
    loss_h_weight = normal(*state_shape)
    loss_c_weight = normal(*state_shape) if is_lstm else None

    initial_state = (h0, c0) if is_lstm else h0
    if variable_lengths:
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        packed_output, final_state = module(packed, initial_state)
        output, _ = pad_packed_sequence(packed_output, batch_first=True, total_length=TIME)
    else:
        output, final_state = module(x, initial_state)
    h_n, c_n = final_state if is_lstm else (final_state, None)

    loss = (output * loss_output_weight).sum() + (h_n * loss_h_weight).sum()
    if is_lstm:
        loss = loss + (c_n * loss_c_weight).sum()
    loss.backward()

    def to_numpy(tensor):
        return tensor.detach().cpu().numpy().copy()

    # named_parameters covers every state_dict entry for these modules and
    # carries the gradients; assert it so a future torch change is noticed.
    parameters = dict(module.named_parameters())
    assert set(parameters) == set(module.state_dict()), "state_dict has non-parameter entries"
    case = {parameter_name: to_numpy(parameter) for parameter_name, parameter in parameters.items()}
    case.update(x=to_numpy(x), lengths=to_numpy(lengths), h0=to_numpy(h0))
    if is_lstm:
        case["c0"] = to_numpy(c0)
    case.update(output=to_numpy(output), h_n=to_numpy(h_n))
    if is_lstm:
        case["c_n"] = to_numpy(c_n)
    case.update(loss_output_weight=to_numpy(loss_output_weight), loss_h_weight=to_numpy(loss_h_weight))
    if is_lstm:
        case["loss_c_weight"] = to_numpy(loss_c_weight)
    case.update(loss=to_numpy(loss), grad_x=to_numpy(x.grad), grad_h0=to_numpy(h0.grad))
    if is_lstm:
        case["grad_c0"] = to_numpy(c0.grad)
    for parameter_name, parameter in parameters.items():
        case[f"grad_{parameter_name}"] = to_numpy(parameter.grad)
    case["torch_version"] = np.array(torch.__version__)
    return case


def load_case(name):
    """Read the golden file ``GOLDEN_DIR / f"{name}.npz"`` into a dict of arrays."""
    with np.load(GOLDEN_DIR / f"{name}.npz", allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def main():
    """Write every case in ``CASES`` to ``GOLDEN_DIR`` as a compressed npz file."""
    GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
    for mode, num_layers, bidirectional, variable_lengths in CASES:
        path = GOLDEN_DIR / f"{case_name(mode, num_layers, bidirectional, variable_lengths)}.npz"
        np.savez_compressed(path, **make_case(mode, num_layers, bidirectional, variable_lengths))
        print(path)


if __name__ == "__main__":
    main()
