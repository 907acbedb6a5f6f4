"""The benchmark script runs end to end on a tiny shape (it must not rot); nothing here is timed or compared."""

from benchmarks import train_step


def test_train_step_benchmark_reports_every_available_peer(capsys):
    results = train_step.main(["--cells", "lstm", "gru", "--shapes", "2,3,4,5", "--rounds", "1", "--repeats", "1"])
    peers = [name for name in train_step.PEERS if train_step.available(name)]
    assert "rnnjax" in peers
    assert [(row["cell"], row["shape"]) for row in results["rows"]] == [("lstm", "2,3,4,5"), ("gru", "2,3,4,5")]
    for row in results["rows"]:
        assert set(row["median_ms"]) == set(peers)
        assert all(value > 0 for value in row["median_ms"].values())
        if "torch" in peers:
            assert set(row["speedup_vs_torch_per_round"]) == set(peers) - {"torch"}
        assert len(row["custom_backward_speedup_per_round"]) == 1
    assert capsys.readouterr().out.count('"cell"') == 2
