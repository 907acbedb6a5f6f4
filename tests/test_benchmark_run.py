"""The benchmark harness (`python -m benchmarks.run` and its modules: flops, measure, variants, report) runs end to
end on tiny shapes and computes what it reports from the right numbers. Nothing here is timed or compared: the
timings are whatever the machine gives, the tests check structure, bookkeeping and arithmetic."""

import json
import math
import os

import jax
import pytest

from benchmarks import environment, flops, measure, report, run, variants

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
            assert row["info"]["path"] == "sequential" and row["info"]["unroll"] == 1
            assert row["info"]["matmul_dtype"] is None
        assert (row["in_loop_ceiling_gflops"] is None) == (row["cell"] == "mingru")
    rnnjax_info = {(r["cell"], r["mode"]): r["info"] for r in rows if r["framework"] == "rnnjax"}
    assert rnnjax_info["gru", "train"]["custom_backward"] is True  # the hand-written backward pass ran
    assert rnnjax_info["lstm", "train"]["custom_backward"] is True
    assert rnnjax_info["mingru", "train"]["custom_backward"] is False
    assert rnnjax_info["gru", "infer"]["custom_backward"] is None
    paths = results["environment"]["rnnjax_paths"]
    assert len(paths) == 6 and {"path", "custom_backward", "unroll", "matmul_dtype", "scan_mode"} <= set(paths[0])
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
    (["--preset", "parallel-scan", "--cells", "lstm"], "--preset parallel-scan fixes its variants"),
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
    scan = run.resolve(parser, parser.parse_args(["--preset", "parallel-scan"]))
    assert [shape[1] for shape in scan["shapes"]] == [256, 512, 1024, 2048, 4096]
    assert {shape[0] for shape in scan["shapes"]} == {16} and {shape[2:] for shape in scan["shapes"]} == {(128, 128)}
    groups, _ = run.plan(scan)
    assert [(e.cell, e.name) for e in groups[0].entries] == [
        ("mingru", "rnnjax[parallel]"), ("mingru", "rnnjax[sequential]"), ("gru", "rnnjax"), ("lstm", "rnnjax")]
    assert {group.step for group in groups} == {"train"}


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


# -- report -------------------------------------------------------------------------------------------------------
def test_crossover_on_synthetic_timings():
    lengths = (256, 512, 1024, 2048, 4096)
    slow = dict.fromkeys(lengths, 10.0)
    assert report.crossover(dict(zip(lengths, (20.0, 12.0, 9.0, 8.0, 5.0))), slow) == 1024
    assert report.crossover(dict(zip(lengths, (20.0, 12.0, 11.0, 10.5, 11.0))), slow) == "none"
    assert report.crossover(dict(zip(lengths, (5.0, 12.0, 9.0, 8.0, 5.0))), slow) == 1024  # must stay faster
    assert report.crossover(dict(zip(lengths, (1.0,) * 5)), slow) == 256


def synthetic_row(cell, variant, time_steps, median_ms, group, path="sequential", compile_s=1.0):
    return {"cell": cell, "variant": variant, "time": time_steps, "median_ms": median_ms, "group": group,
            "mode": "train", "batch": 2, "input_size": 3, "hidden_size": 3, "framework": "rnnjax",
            "info": {"path": path}, "compile_s": compile_s}


def test_scan_and_compile_summaries_on_synthetic_rows():
    rows = []
    for group, (t, parallel, sequential, gru) in enumerate([(4, 9.0, 3.0, 2.0), (8, 5.0, 6.0, 4.0),
                                                           (16, 4.0, 12.0, 8.0)]):
        rows += [synthetic_row("mingru", "rnnjax[parallel]", t, parallel, group, "parallel", compile_s=t / 4),
                 synthetic_row("mingru", "rnnjax[sequential]", t, sequential, group),
                 synthetic_row("gru", "rnnjax", t, gru, group)]
    rows.append(synthetic_row("lstm", "rnnjax", 16, 1.0, group=99))  # timed elsewhere: not compared
    (summary,) = report.scan_summaries(rows)
    assert summary["crossover"] == 8 and summary["crossover_against"] == "mingru rnnjax[sequential]"
    assert summary["crossover_vs"] == {"mingru rnnjax[sequential]": 8, "gru rnnjax": 16}
    assert summary["speedup_at_longest"] == pytest.approx({"mingru rnnjax[sequential]": 3.0, "gru rnnjax": 2.0})
    compile_times = {c["variant"]: c for c in report.compile_summaries(rows) if c["cell"] == "mingru"}
    assert compile_times["rnnjax[parallel]"]["compile_s"] == [1.0, 2.0, 4.0]
    assert compile_times["rnnjax[parallel]"]["max_over_min"] == 4.0


def test_parallel_scan_preset_on_tiny_lengths(tmp_path):
    # Inference steps keep the compiles cheap; the preset's own mode (train) is checked in test_resolve_...
    results = run.main(["--preset", "parallel-scan", "--shapes", "2,2,3,3", "2,4,3,3", "--mode", "infer",
                        "--unroll", "2", "--out", str(tmp_path), *TINY])
    rows = results["rows"]
    assert {r["info"]["unroll"] for r in rows} == {2}
    assert [(r["cell"], r["variant"], r["time"]) for r in rows] == [
        (cell, variant, t) for t in (2, 4) for cell, variant in [
            ("mingru", "rnnjax[parallel]"), ("mingru", "rnnjax[sequential]"), ("gru", "rnnjax"), ("lstm", "rnnjax")]]
    assert {r["variant"]: r["info"]["path"] for r in rows if r["cell"] == "mingru"} == {
        "rnnjax[parallel]": "parallel", "rnnjax[sequential]": "sequential"}
    assert {r["mode"] for r in rows} == {"infer"}
    (summary,) = results["summary"]["scan"]
    assert summary["crossover"] in (2, 4, "none") and summary["crossover_against"] == "mingru rnnjax[sequential]"
    assert set(summary["speedup_at_longest"]) == {"mingru rnnjax[sequential]", "gru rnnjax", "lstm rnnjax"}
    assert summary["longest"] == 4
    parallel_row = rows[0]
    assert set(parallel_row["speedup_vs"]) == {"mingru rnnjax[sequential]", "gru rnnjax", "lstm rnnjax"}
    assert {c["variant"] for c in results["summary"]["compile_vs_time"]} == {"rnnjax[parallel]",
                                                                            "rnnjax[sequential]", "rnnjax"}
    table = (tmp_path / "results.md").read_text()
    assert "Crossover vs mingru rnnjax[sequential]" in table and "| mingru rnnjax[parallel] (parallel" in table
    assert os.path.exists(tmp_path / "scan_mingru_infer_B2_D3_H3.png")


def test_cpu_isa_flags_reads_the_matmul_relevant_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 sha_ni\n")
    assert environment.cpu_isa_flags(str(cpuinfo)) == ["avx2", "fma", "avx512f", "avx512_bf16"]
    assert environment.cpu_isa_flags(str(tmp_path / "missing")) is None
