"""The device check (`benchmarks/gpu_check.sh`) on CPU, where its GPU parts cannot run: the script's stages and
their arguments, the harness's gpu preset end to end at a tiny shape, and the parity stage with the GPU paths
emulated (cuDNN replaced by `lstm_ref`, Pallas interpreted) against torch on CPU. Nothing is timed."""

import json
import pathlib
import shlex
import subprocess

import pytest
from helpers import CLASSIC_PATH

from benchmarks import gpu_check, run
from rnnjax import _gpu

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ["--rounds", "1", "--repeats", "1", "--gemm-size", "32"]


def test_the_script_runs_parity_then_the_gpu_preset_in_both_dtypes(tmp_path):
    result = subprocess.run(["bash", str(ROOT / "benchmarks/gpu_check.sh"), "--dry-run", str(tmp_path)],
                            capture_output=True, text=True, check=True)
    stages = [line.removeprefix("== ").rsplit(" (timeout", 1) for line in result.stdout.splitlines()]
    assert sum(int(timeout.strip(" s)")) for _, timeout in stages) < 8 * 60  # the stages' budget fits 8 minutes
    commands = [shlex.split(command) for command, _ in stages]
    assert commands[1] == ["python", "-m", "benchmarks.gpu_check", "--out", f"{tmp_path}/parity"]
    harness = [command[3:] for command in commands if command[:3] == ["python", "-m", "benchmarks.run"]]
    assert len(harness) == 4
    parser = run.make_parser()
    configs = [run.resolve(parser, parser.parse_args(args)) for args in harness]
    assert [(c["dtype"], c["mode"]) for c in configs] == [(d, m) for d in ("float32", "bfloat16")
                                                         for m in ("train", "infer")]
    assert len({c["out"] for c in configs}) == 4 and not list(tmp_path.iterdir())  # a dry run writes nothing
    for config in configs:
        assert config["shapes"] == run.PRESETS["standard"]["shapes"] and config["cells"] == ["lstm", "gru"]
        assert config["compare"] == ["flax", "torch"] and config["backwards"] == ["auto", "autodiff"]
        assert config["gemm_size"] == 8192


def test_the_gpu_preset_runs_end_to_end(tmp_path):
    results = run.main(["--preset", "gpu", "--quick", "--cells", "gru", "--mode", "train", "--shapes", "2,3,4,5",
                        "--compare", "--out", str(tmp_path), *TINY])
    assert [(r["variant"], r["info"]["path"]) for r in results["rows"]] == [("rnnjax", CLASSIC_PATH),
                                                                           ("rnnjax[autodiff]", "sequential")]
    assert all(r["pct_of_gemm_ceiling"] > 0 for r in results["rows"])  # each variant's fraction of the ceiling
    assert (tmp_path / "results.md").exists() and (tmp_path / "results.json").exists()


def test_parity_stage_with_the_gpu_paths_emulated(tmp_path):
    pytest.importorskip("torch")
    backend = _gpu.backend
    results = gpu_check.main(["--out", str(tmp_path), "--tiny", "--emulate-gpu", "--variants", "lstm", "gru bf16"])
    assert [(r["variant"], r["path"]) for r in results["rows"]] == [("lstm", "cudnn"), ("gru bf16", "pallas")]
    assert results["ok"] and results["emulated"] and _gpu.backend is backend  # the emulation is undone
    assert set(results["rows"][0]["errors"]) == {"ys", "final_h", "final_c", "d_weight_ih", "d_weight_hh",
                                                 "d_bias_ih", "d_bias_hh", "d_xs", "d_initial_h", "d_initial_c"}
    assert json.loads((tmp_path / "parity.json").read_text())["rows"][1]["path"] == "pallas"
    assert "EMULATED" in (tmp_path / "parity.md").read_text()
