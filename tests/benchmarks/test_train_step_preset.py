"""`python -m benchmarks.run --preset train-step` (the former `benchmarks/train_step.py`): the LSTM/GRU training step
of rnnjax with its hand-written backward pass and with autodiff of the plain scan, against Flax and PyTorch, runs
end to end on a tiny shape. Nothing here is timed or compared: the tests check which variants ran and what the rows
and ratios hold."""

import json

from helpers import CLASSIC_PATH

from benchmarks import run, variants

TINY = ["--rounds", "1", "--repeats", "1", "--gemm-size", "32"]


def installed_peers(cell):
    return [name for peer in variants.PEERS if variants.available(peer) for name in variants.peer_names(cell, peer)]


def test_train_step_preset_resolves_to_the_former_script_and_its_quick_form():
    parser = run.make_parser()
    config = run.resolve(parser, parser.parse_args(["--preset", "train-step"]))
    assert config["cells"] == ["lstm", "gru"] and config["mode"] == "train"
    assert config["shapes"] == [(32, 100, 128, 256), (16, 400, 64, 128)]
    assert config["compare"] == ["flax", "torch"] and config["backwards"] == ["auto", "autodiff"]
    assert config["scan_modes"] == ["auto"]
    groups, _ = run.plan(config)
    assert [(g.entries[0].cell, g.shape) for g in groups] == [
        (cell, shape) for cell in ("lstm", "gru") for shape in config["shapes"]]
    assert [(e.name, e.backward) for e in groups[0].entries[:2]] == [("rnnjax", "auto"), ("rnnjax[autodiff]",
                                                                                         "autodiff")]
    quick = run.resolve(parser, parser.parse_args(["--preset", "train-step", "--quick"]))
    assert quick["shapes"] == run.QUICK_PRESET_SHAPES["train-step"] and quick["rounds"] == run.QUICK["rounds"]
    assert quick["backwards"] == ["auto", "autodiff"] and quick["scan_modes"] == ["auto"]
    # Explicit flags still win over the preset's.
    custom = run.resolve(parser, parser.parse_args(["--preset", "train-step", "--backward", "custom", "autodiff",
                                                    "--cells", "gru", "--compare"]))
    (group,) = run.plan(custom)[0][:1]
    assert [e.name for e in group.entries] == ["rnnjax[custom]", "rnnjax[autodiff]"]


def test_train_step_preset_reports_every_variant_and_the_custom_backward_ratio(tmp_path, capsys):
    results = run.main(["--preset", "train-step", "--quick", "--shapes", "2,3,4,5", "--out", str(tmp_path), *TINY])
    rows = results["rows"]
    for cell in ("lstm", "gru"):
        cell_rows = [r for r in rows if r["cell"] == cell]
        assert [r["variant"] for r in cell_rows] == ["rnnjax", "rnnjax[autodiff]"] + installed_peers(cell)
        assert {r["mode"] for r in cell_rows} == {"train"} and {r["shape"] for r in cell_rows} == {"2,3,4,5"}
        assert all(r["median_ms"] > 0 for r in cell_rows)
        fused, autodiff = cell_rows[:2]
        # The path is what rnnjax.unroll_path reports.
        assert (fused["info"]["path"], fused["info"]["custom_backward"], fused["info"]["backward"]) == (
            CLASSIC_PATH, True, "auto")
        assert (autodiff["info"]["path"], autodiff["info"]["custom_backward"], autodiff["info"]["backward"]) == (
            "sequential", False, "autodiff")
        # What the hand-written backward pass buys (the former custom_backward_speedup_per_round), and the ratio
        # to every peer (the former speedup_vs_torch_per_round among them), per round.
        assert set(fused["speedup_vs"]) == {"rnnjax[autodiff]", *installed_peers(cell)}
        ratio = fused["speedup_vs"]["rnnjax[autodiff]"]
        assert len(ratio["per_round"]) == 1 and ratio["per_round"][0] == autodiff["per_round_median_ms"][0] / \
            fused["per_round_median_ms"][0]
        assert f"{cell} train rnnjax vs rnnjax[autodiff]" in results["summary"]["median_speedups"]
    assert {p["variant"] for p in results["environment"]["rnnjax_paths"]} == {"rnnjax", "rnnjax[autodiff]"}
    assert results["config"]["preset"] == "train-step" and results["config"]["quick"] is True
    assert json.loads((tmp_path / "results.json").read_text())["rows"][1]["variant"] == "rnnjax[autodiff]"
    out = capsys.readouterr().out
    assert f"| lstm | 2,3,4,5 | train | rnnjax | {CLASSIC_PATH}, custom bwd |" in out
    assert "| gru | 2,3,4,5 | train | rnnjax[autodiff] | sequential, autodiff bwd |" in out
