"""The benchmark harness (`python -m benchmarks.run` and its modules: flops, measure, variants, report) runs end to
end on tiny shapes and computes what it reports from the right numbers. Nothing here is timed or compared: the
timings are whatever the machine gives, the tests check structure, bookkeeping and arithmetic. The train-step and
parallel-scan presets have their own files beside this one."""

import json
import math
import os

import jax
import pytest
from helpers import CLASSIC_PATH

import rnnjax
from benchmarks import environment, flops, measure, run, variants

TINY = ["--rounds", "1", "--repeats", "1", "--gemm-size", "32"]
ENV_FIELDS = {"device_kind", "platform", "device_count", "versions", "python", "xla_flags", "cpu_model",
              "cpu_isa_flags", "threads", "load_average_at_start"}


def installed_peers(cell):
    return [name for peer in variants.PEERS if variants.available(peer) for name in variants.peer_names(cell, peer)]


# -- run: the CLI end to end --------------------------------------------------------------------------------------
def test_cli_end_to_end_train_and_infer(tmp_path, capsys):
    results = run.main(["--cells", "lstm", "gru", "mingru", "--shapes", "2,3,4,5", "--mode", "both", "--out",
                        str(tmp_path), *TINY])
    rows = results["rows"]
    for cell in ("lstm", "gru", "mingru"):
        for mode in ("train", "infer"):
            names = [r["variant"] for r in rows if (r["cell"], r["mode"]) == (cell, mode)]
            assert names == ["rnnjax"] + installed_peers(cell)
    for row in rows:
        assert row["median_ms"] > 0 and row["min_ms"] <= row["median_ms"] <= row["max_ms"]
        assert len(row["per_round_median_ms"]) == 1 and len(row["per_round_ms"][0]) == 1
        assert row["tokens_per_s"] == pytest.approx(3 * row["sequences_per_s"])
        assert row["flops"] == flops.step_flops(row["cell"], row["mode"], 2, 3, 4, 5)
        assert row["gflops"] == pytest.approx(row["flops"] / row["median_ms"] / 1e6)
        assert row["memory"]["peak"]["bytes"] > 0 and row["memory"]["peak"]["source"]
        if row["framework"] == "torch":
            assert row["compile_s"] is None and row["memory"]["compiled"] is None
        else:
            assert row["compile_s"] > 0 and row["memory"]["compiled"]["total_bytes"] > 0
        if row["framework"] == "rnnjax":
            peers = installed_peers(row["cell"])
            assert set(row["speedup_vs"]) == set(peers)
            for ratio in row["speedup_vs"].values():
                assert len(ratio["per_round"]) == 1 and ratio["median"] > 0
            # what rnnjax.unroll_path reports: the hand-written backward pass for LSTM/GRU, plain lax.scan else
            assert row["info"]["path"] == ("sequential" if row["cell"] == "mingru" else CLASSIC_PATH)
            assert row["info"]["unroll"] == 1 and row["info"]["matmul_dtype"] is None
            assert row["info"]["backward"] == "auto" and row["info"]["scan_mode"] == "auto"
            assert row["info"]["scan_space"] == ("log" if row["cell"] == "mingru" else None)
        assert (row["in_loop_ceiling_gflops"] is None) == (row["cell"] == "mingru")
    rnnjax_info = {(r["cell"], r["mode"]): r["info"] for r in rows if r["framework"] == "rnnjax"}
    assert rnnjax_info["gru", "train"]["custom_backward"] is True  # the hand-written backward pass ran
    assert rnnjax_info["lstm", "train"]["custom_backward"] is True
    assert rnnjax_info["mingru", "train"]["custom_backward"] is False
    assert rnnjax_info["gru", "infer"]["custom_backward"] is None
    paths = results["environment"]["rnnjax_paths"]
    assert len(paths) == 6
    assert {"path", "custom_backward", "unroll", "matmul_dtype", "scan_mode", "backward", "scan_space"} <= set(paths[0])
    assert {(s["cell"], s["variant"]) for s in results["skipped"]} >= {("mingru", "flax"), ("mingru", "torch")}

    assert ENV_FIELDS <= set(results["environment"])
    assert {"jax", "jaxlib", "flax", "optax", "torch"} <= set(results["environment"]["versions"])
    assert results["ceilings"]["gemm"]["gflops"] > 0 and len(results["ceilings"]["in_loop"]) == 2  # G = 4H, 3H
    assert results["flop_model"] == flops.MODEL
    host_memory = results["environment"]["host_memory"]
    assert host_memory["requested"] == "retain"
    assert host_memory["retained"] == (host_memory["glibc"] is not None)

    written = json.loads((tmp_path / "results.json").read_text())
    assert written["rows"][0]["variant"] == "rnnjax" and written["environment"]["platform"] == jax.devices()[0].platform
    table = (tmp_path / "results.md").read_text()
    assert "| cell | B,T,D,H | mode | variant |" in table and "| gru | 2,3,4,5 | train | rnnjax |" in table
    assert {"throughput_train.png", "throughput_infer.png"} <= set(os.listdir(tmp_path))
    if installed_peers("gru"):
        assert {"speedup_train.png", "speedup_infer.png"} <= set(os.listdir(tmp_path))
    assert all(os.path.getsize(path) > 0 for path in results["files"]["plots"])
    assert "| gru | 2,3,4,5 | infer | rnnjax |" in capsys.readouterr().out
    if host_memory["retained"]:
        assert "host memory: freed memory retained" in table


def test_host_memory_system_leaves_the_allocator_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(run.host_memory, "retain_freed_memory", lambda: pytest.fail("allocator changed"))
    results = run.main(["--cells", "gru", "--shapes", "2,3,4,5", "--mode", "infer", "--compare", "--host-memory",
                        "system", "--out", str(tmp_path), *TINY])
    assert results["environment"]["host_memory"]["requested"] == "system"
    assert results["environment"]["host_memory"]["retained"] is False
    assert "host memory: C allocator defaults" in (tmp_path / "results.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["--shapes", "1,2,3"], "expected B,T,D,H positive ints, got '1,2,3'"),
    (["--shapes", "2,0,3,4"], "expected B,T,D,H positive ints, got '2,0,3,4'"),
    (["--shapes", "a,b,c,d"], "expected B,T,D,H positive ints"),
    (["--cells", "lstm", "transformer"], "invalid choice: 'transformer'"),
    (["--compare", "keras"], "invalid choice: 'keras'"),
    (["--rounds", "0"], "expected a positive int, got '0'"),
    (["--scan-modes", "fast"], "invalid choice: 'fast'"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
    (["--backward", "manual"], "invalid choice: 'manual'"),
    (["--scan-space", "cubic"], "invalid choice: 'cubic'"),
    (["--preset", "parallel-scan", "--cells", "lstm"], "--preset parallel-scan fixes its variants"),
    (["--preset", "parallel-scan", "--backward", "autodiff"], "--preset parallel-scan fixes its variants"),
    (["--preset", "fast"], "invalid choice: 'fast'"),
])
def test_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit):
        run.main(argv)
    assert message in capsys.readouterr().err


def test_bfloat16_without_matmul_dtype_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(variants, "has_matmul_dtype", lambda: False)
    with pytest.raises(SystemExit):
        run.main(["--dtype", "bfloat16"])
    assert "needs rnnjax.make_cell(..., matmul_dtype=...)" in capsys.readouterr().err


def test_resolve_presets_quick_and_explicit_flags():
    parser = run.make_parser()
    standard = run.resolve(parser, parser.parse_args(["--preset", "standard"]))
    assert standard["shapes"] == run.PRESETS["standard"]["shapes"] and standard["mode"] == "both"
    quick = run.resolve(parser, parser.parse_args(["--quick", "--cells", "gru", "--repeats", "3"]))
    assert quick["cells"] == ["gru"] and quick["repeats"] == 3 and quick["rounds"] == run.QUICK["rounds"]
    assert quick["scan_modes"] == ["auto", "parallel"] and quick["backwards"] == ["auto"]
    # A preset in its quick form: the preset's variants at small shapes (--quick's scan modes do not leak in).
    quick_standard = run.resolve(parser, parser.parse_args(["--preset", "standard", "--quick"]))
    assert quick_standard["shapes"] == run.QUICK_PRESET_SHAPES["standard"] and quick_standard["scan_modes"] == ["auto"]
    assert quick_standard["rounds"] == run.QUICK["rounds"] and quick_standard["compare"] == ["flax", "torch"]
    assert set(run.QUICK_PRESET_SHAPES) == set(run.PRESETS)


def test_plan_names_scan_modes_and_peers():
    parser = run.make_parser()
    config = run.resolve(parser, parser.parse_args(["--cells", "lstm", "rnn_relu", "minlstm", "--mode", "infer",
                                                    "--scan-modes", "auto", "parallel", "auto"]))
    groups, skipped = run.plan(config)
    assert [g.entries[0].cell for g in groups] == ["lstm", "rnn_relu", "minlstm"]
    assert [e.name for e in groups[0].entries] == ["rnnjax[auto]", "rnnjax[parallel]"] + installed_peers("lstm")
    assert variants.peer_names("lstm", "flax") == ["flax[OptimizedLSTMCell]", "flax[LSTMCell]"]
    assert variants.peer_names("rnn_relu", "flax") == ["flax[SimpleCell]"]
    assert variants.peer_names("rnn_relu", "torch") == ["torch"] and variants.peer_names("mingru", "flax") == []
    assert {s["variant"] for s in skipped if s["cell"] == "minlstm"} == set(variants.PEERS)


def test_plan_tags_backward_passes_and_scan_spaces():
    parser = run.make_parser()
    config = run.resolve(parser, parser.parse_args(["--cells", "mingru", "gru", "--mode", "train", "--compare",
                                                    "--scan-modes", "sequential", "parallel", "--backward", "auto",
                                                    "autodiff", "--scan-space", "log", "linear"]))
    groups, _ = run.plan(config)
    mingru = [(e.name, e.scan_mode, e.backward, e.scan_space) for e in groups[0].entries]
    assert mingru == [  # the scan space varies only where a parallel scan may run
        ("rnnjax[sequential]", "sequential", "auto", "log"),
        ("rnnjax[sequential,autodiff]", "sequential", "autodiff", "log"),
        ("rnnjax[parallel]", "parallel", "auto", "log"), ("rnnjax[parallel,linear]", "parallel", "auto", "linear"),
        ("rnnjax[parallel,autodiff]", "parallel", "autodiff", "log"),
        ("rnnjax[parallel,autodiff,linear]", "parallel", "autodiff", "linear")]
    assert [(e.name, e.scan_space) for e in groups[1].entries] == [
        ("rnnjax[sequential]", None), ("rnnjax[sequential,autodiff]", None), ("rnnjax[parallel]", None),
        ("rnnjax[parallel,autodiff]", None)]
    assert run.tagged("rnnjax", []) == "rnnjax"
    assert run.tagged("rnnjax[parallel]", ["linear"]) == "rnnjax[parallel,linear]"


def test_rnnjax_variant_records_the_path_unroll_path_reports():
    # Nothing compiles here: paths come from shapes, and a refused path is a Skip before any compile.
    params = jax.eval_shape(lambda: rnnjax.make_cell("gru", 5).init(jax.random.key(0), 4))
    xs = jax.ShapeDtypeStruct((2, 3, 4), "float32")
    gru = rnnjax.make_cell("gru", 5)
    assert variants.rnnjax_paths(gru, params, xs, "auto") == {"path": CLASSIC_PATH, "custom_backward": True}
    assert variants.rnnjax_paths(gru, params, xs, "auto", "autodiff") == {"path": "sequential",
                                                                          "custom_backward": False}
    for spec, scan, backward, reason in [
        (variants.Spec("mingru", "train", 2, 3, 4, 5), "auto", "custom", "backward='custom' needs"),
        (variants.Spec("lstm", "train", 2, 3, 4, 5), "parallel", "auto", "scan='parallel' needs"),
    ]:
        with pytest.raises(variants.Skip, match=reason):
            variants.rnnjax_variant(spec, scan, backward=backward)
    assert variants.make_rnnjax_cell("mingru", 5, "float32", "linear").scan_space == "linear"
    assert not hasattr(variants.make_rnnjax_cell("lstm", 5, "float32", "linear"), "scan_space")


# -- flops --------------------------------------------------------------------------------------------------------
def test_flop_model_against_hand_computed_numbers():
    # LSTM at the notes' first shape: G = 4 * 256 = 1024.
    assert flops.step_flops("lstm", "infer", 32, 100, 128, 256) == 2 * 32 * 100 * 1024 * (128 + 256) == 2_516_582_400
    assert flops.step_flops("lstm", "train", 32, 100, 128, 256) == 2_516_582_400 + 2 * 32 * 100 * 1024 * (128 + 512)
    # ../shared/PERFORMANCE-NOTES.md: torch nn.LSTM inference at this shape, 14.9 ms = 169 GFLOP/s.
    assert flops.step_flops("lstm", "infer", 32, 100, 128, 256) / 14.9e-3 / 1e9 == pytest.approx(169, abs=0.5)
    # GRU, G = 15, 2*B*T*G = 180: forward 180 * (4 + 5) = 1620; backward dW_ih 180*4 + dW_hh 180*5 + dh 180*5.
    assert flops.step_flops("gru", "infer", 2, 3, 4, 5) == 1620
    assert flops.step_flops("gru", "train", 2, 3, 4, 5) == 1620 + 180 * 4 + 180 * 5 + 180 * 5 == 4140
    # minGRU, G = 10 from x only: forward 2*2*3*10*4 = 480, backward dW_ih only.
    assert flops.step_flops("mingru", "infer", 2, 3, 4, 5) == 480
    assert flops.step_flops("mingru", "train", 2, 3, 4, 5) == 960
    assert flops.step_flops("minlstm", "train", 2, 3, 4, 5) == 2 * (2 * 2 * 3 * 15 * 4) == 1440
    assert flops.step_flops("rnn_relu", "train", 1, 1, 1, 1) == 2 * 2 + 2 * 3


# -- measure ------------------------------------------------------------------------------------------------------
def test_interleaved_rounds_order_and_summaries():
    calls = []
    runs = {"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}
    seconds = measure.interleaved_rounds(runs, rounds=2, repeats=2, warmup=1)
    assert "".join(calls) == "aaabbbaaabbb"  # warm-up + 2 timed, variant after variant, per round
    assert [len(r) for r in seconds["a"]] == [2, 2]
    summary = measure.summarize([[0.001, 0.003], [0.002, 0.004]])
    assert summary["median_ms"] == pytest.approx(2.5) and summary["min_ms"] == pytest.approx(1.0)
    assert summary["per_round_median_ms"] == pytest.approx([2.0, 3.0])
    ratios = measure.ratios([4.0, 3.0, 1.0], [2.0, 3.0, 2.0])
    assert ratios["per_round"] == pytest.approx([2.0, 1.0, 0.5]) and ratios["median"] == pytest.approx(1.0)


def test_ceilings_and_memory_report_numbers():
    gemm = measure.gemm_ceiling(16, "float32", repeats=1)
    assert gemm["flops"] == 2 * 16**3 and gemm["gflops"] > 0
    loop = measure.in_loop_gemm_ceiling(2, 4, 12, 5, "bfloat16", repeats=1)
    assert loop["flops"] == 2 * 2 * 4 * 12 * 5 and loop["gflops"] > 0
    compiled = jax.jit(lambda x: x * 2).lower(jax.numpy.ones(8)).compile()
    memory = measure.compiled_memory(compiled)
    assert memory is None or memory["total_bytes"] >= 0
    assert measure.peak_memory()["bytes"] > 0


# -- variants -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("peer, cell", [("flax", "rnn_tanh"), ("flax", "lstm"), ("torch", "gru"), ("torch", "lstm")])
def test_peers_run_in_bfloat16(peer, cell):
    if not variants.available(peer):
        pytest.skip(f"{peer} is not installed")
    # Flax: an inference step (the dtype handling is the same, the compile cheaper); PyTorch: a training step.
    spec = variants.Spec(cell, "infer" if peer == "flax" else "train", 2, 3, 4, 5, dtype="bfloat16")
    try:
        variant = variants.peer_variant(spec, variants.peer_names(cell, peer)[0])
    except variants.Skip as skip:  # torch 2.13's CPU nn.LSTM cannot run under autocast: recorded as skipped
        assert (peer, cell) == ("torch", "lstm") and "autocast" in str(skip)
        return
    variant.run()
    if peer == "torch":
        assert variant.info["autocast"] == "bfloat16" and variant.info["output_dtype"] in ("float32", "bfloat16")
    else:
        assert variant.info["compute_dtype"] == "bfloat16"


def test_bfloat16_run_reports_finite_drift(tmp_path):
    if not variants.has_matmul_dtype():
        pytest.skip("this rnnjax has no make_cell(..., matmul_dtype=...) yet")
    # Peers in bfloat16: test_peers_run_in_bfloat16.
    results = run.main(["--cells", "lstm", "--shapes", "2,3,4,5", "--mode", "infer", "--dtype", "bfloat16",
                        "--compare", "--out", str(tmp_path), *TINY])
    (rnnjax_row,) = results["rows"]
    assert rnnjax_row["info"]["matmul_dtype"] == "bfloat16"
    drift = rnnjax_row["bf16_drift"]
    assert math.isfinite(drift["max_abs_diff"]) and 0 <= drift["relative"] < 0.1 and drift["max_abs_y"] > 0
    assert results["bf16_drift"] == [drift]
    assert "bfloat16 drift" in (tmp_path / "results.md").read_text()


# -- environment --------------------------------------------------------------------------------------------------
def test_cpu_isa_flags_reads_the_matmul_relevant_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 sha_ni\n")
    assert environment.cpu_isa_flags(str(cpuinfo)) == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert environment.cpu_isa_flags(str(tmp_path / "missing")) is None
