"""The results table of the benchmarks: met computation, shortfall text, table and notes layout,
measurement files, and the row-module harness. No timing is asserted."""

import json

import pytest

from benchmarks.bench_memory import loglog_slope
from benchmarks.bench_search_fanout import ideal_turn_s
from benchmarks.common import (Measurement, Recorder, RowSpec, Target, format_number, read_measurements,
                               render_notes, render_results, render_table, row_main, write_measurements)


@pytest.mark.parametrize(
    "target, value, met",
    [
        (Target("<=", 1.2), 1.2, True),
        (Target("<=", 1.2), 1.2000001, False),
        (Target("<=", 1.2), 0.9, True),
        (Target(">=", 5.0), 5.0, True),
        (Target(">=", 5.0), 4.99, False),
        (Target(">=", 5.0), None, False),
        (Target(">=", 5.0), float("nan"), False),
        (Target("<=", 0.1), float("inf"), False),
        (Target("within", 0.75, 1.33), 0.75, True),
        (Target("within", 0.75, 1.33), 1.33, True),
        (Target("within", 0.75, 1.33), 0.7499, False),
        (Target("within", 0.75, 1.33), 1.3301, False),
        (Target("within", 0.75, 1.33), float("nan"), False),
        (Target("measured"), 0.37, True),
        (Target("measured"), None, False),
        (Target("measured"), float("nan"), False),
    ],
)
def test_met(target, value, met):
    assert target.met(value) is met


def test_target_rejects_bad_spec():
    with pytest.raises(ValueError, match="op"):
        Target("<", 1.0)
    with pytest.raises(ValueError, match="bound"):
        Target("<=")
    with pytest.raises(ValueError, match="bound"):
        Target(">=", float("nan"))
    with pytest.raises(ValueError, match="upper"):
        Target("within", 1.0)
    with pytest.raises(ValueError, match="upper"):
        Target("within", 1.0, 0.5)


def test_within_target_text_and_shortfall():
    t = Target("within", 0.75, 1.33)
    assert t.describe() == "0.75 – 1.33"
    assert t.shortfall(1.0) is None
    assert t.shortfall(1.5) == f"misses by {format_number(0.17)} (13%)"
    assert t.shortfall(0.6) == f"misses by {format_number(0.15)} (20%)"


def test_shortfall_says_by_how_much():
    # 1.5 against <= 1.2: 0.3 over, 25 % of the bound
    assert Target("<=", 1.2).shortfall(1.5) == "misses by 0.3 (25%)"
    # 4 against >= 5: 1 short, 20 %
    assert Target(">=", 5.0).shortfall(4.0) == "misses by 1 (20%)"
    assert Target(">=", 5.0).shortfall(6.0) is None
    assert Target("measured").shortfall(1.0) is None
    assert Target("<=", 1.0).shortfall(None) is None


def test_format_number():
    assert format_number(1.07123) == "1.07"
    assert format_number(10.6963) == "10.7"
    assert format_number(1234.5) == "1,234"
    assert format_number(0) == "0"
    assert format_number(0.001234) == "1.23e-03"
    assert format_number(None) == "n/a"


SPECS = [
    RowSpec("1a", "fan-out ÷ ideal", Target("<=", 1.2), "client overhead"),
    RowSpec("1b", "original ÷ ours", Target(">=", 5.0)),
    RowSpec("2b", "vLLM ÷ HF", Target("measured")),
    RowSpec("3", "overhead | share", Target("<=", 0.1)),
]


def _parse(table: str) -> list[list[str]]:
    rows = []
    for line in table.splitlines():
        assert line.startswith("| ") and line.endswith(" |"), line
        # split on unescaped pipes only
        cells, cur, i, body = [], "", 0, line[2:-2]
        while i < len(body):
            if body[i] == "\\" and i + 1 < len(body) and body[i + 1] == "|":
                cur += "|"
                i += 2
                continue
            if body.startswith(" | ", i):
                cells.append(cur)
                cur = ""
                i += 3
                continue
            cur += body[i]
            i += 1
        cells.append(cur)
        rows.append(cells)
    return rows


def test_table_columns_values_and_met():
    measured = {
        "1a": Measurement("1a", value=1.5, note="slow"),
        "1b": Measurement("1b", value=10.7),
        "2b": Measurement("2b", value=1.3, shown="0.61 / 0.95 / 1.30"),
        # "3" has no measurement at all
    }
    rows = _parse(render_table(SPECS, measured))
    assert rows[0] == ["metric", "value", "target", "met"]
    assert rows[1] == ["---", "---", "---", "---"]
    body = rows[2:]
    assert len(body) == len(SPECS)
    assert body[0] == ["1a. fan-out ÷ ideal", "1.5 (misses by 0.3 (25%))", "≤ 1.2", "no"]
    assert body[1] == ["1b. original ÷ ours", "10.7", "≥ 5", "yes"]
    assert body[2] == ["2b. vLLM ÷ HF", "0.61 / 0.95 / 1.30", "measured (no target)", "yes"]
    assert body[3][0] == "3. overhead | share"  # the pipe is escaped, so the row keeps 4 cells
    assert body[3][1] == "n/a (not measured)"
    assert body[3][3] == "no"


def test_unmeasured_row_shows_reason_and_is_not_met():
    measured = {"1a": Measurement("1a", error="timed out after 240 s")}
    body = _parse(render_table(SPECS[:1], measured))[2:]
    assert body == [["1a. fan-out ÷ ideal", "n/a (timed out after 240 s)", "≤ 1.2", "no"]]


def test_notes_explain_misses_only():
    measured = {
        "1a": Measurement("1a", value=1.5, note="Ours 3 s vs ideal 2 s."),
        "1b": Measurement("1b", value=10.0, note="Original 64 s."),
        "2b": Measurement("2b", error="vLLM did not run"),
    }
    notes = render_notes(SPECS[:3], measured).splitlines()
    assert notes[0] == "- **1a**: Ours 3 s vs ideal 2 s. Why the target is missed: client overhead"
    assert notes[1] == "- **1b**: Original 64 s."
    assert notes[2] == "- **2b**: Not measured: vLLM did not run."


def test_results_file_has_command_machine_and_one_table():
    text = render_results(SPECS, {"1b": Measurement("1b", value=6.0)}, {"CPU": "test cpu, 2 logical cores"},
                          "make bench", "2026-01-01 00:00 UTC", 90.0)
    assert "`make bench`" in text
    assert "- CPU: test cpu, 2 logical cores" in text
    assert "1.5 min" in text
    assert text.count("| metric | value | target | met |") == 1
    assert sum(1 for line in text.splitlines() if line.startswith("| ")) == 2 + len(SPECS)


def test_measurements_round_trip(tmp_path):
    path = tmp_path / "m.json"
    write_measurements(path, [Measurement("1a", value=1.1, details={"x": [1, 2]}), Measurement("1b", error="boom")])
    got = read_measurements(path)
    assert got["1a"].value == 1.1 and got["1a"].details == {"x": [1, 2]}
    assert got["1b"].value is None and got["1b"].error == "boom"
    assert read_measurements(tmp_path / "missing.json") == {}
    (tmp_path / "bad.json").write_text(json.dumps({"key": "1a"}))
    with pytest.raises(ValueError, match="JSON list"):
        read_measurements(tmp_path / "bad.json")


def test_recorder_rejects_unknown_rows(tmp_path):
    rec = Recorder(SPECS[:1], tmp_path / "r.json")
    with pytest.raises(KeyError, match="unknown row"):
        rec(Measurement("9z", value=1.0))


def test_row_main_turns_a_crash_into_na_rows(tmp_path):
    def measure(ctx, record):
        record(Measurement("1a", value=1.1))
        raise RuntimeError("server went away")

    out = tmp_path / "out.json"
    assert row_main(SPECS[:2], measure, ["--workdir", str(tmp_path / "w"), "--out", str(out)]) == 0
    got = read_measurements(out)
    assert got["1a"].value == 1.1
    assert got["1b"].value is None and got["1b"].error == "RuntimeError: server went away"


def test_row_main_marks_rows_a_module_skipped(tmp_path):
    out = tmp_path / "out.json"
    row_main(SPECS[:2], lambda ctx, record: record(Measurement("1b", value=7.0)),
             ["--workdir", str(tmp_path), "--out", str(out)])
    got = read_measurements(out)
    assert got["1a"].error == "the module did not measure this row"
    assert got["1b"].value == 7.0


def test_ideal_turn_is_rounds_times_latency():
    assert ideal_turn_s(320, 320, 2.0) == 2.0
    assert ideal_turn_s(320, 64, 2.0) == 10.0  # 5 rounds
    assert ideal_turn_s(321, 320, 1.5) == 3.0  # a second, partial round


def test_loglog_slope():
    # y = 3 x exactly linear -> 1; y = 5 (constant) -> 0; y = x^2 -> 2
    assert loglog_slope([1, 2, 4], [3, 6, 12]) == pytest.approx(1.0)
    assert loglog_slope([1, 2, 4], [5, 5, 5]) == pytest.approx(0.0)
    assert loglog_slope([1, 2, 4], [1, 4, 16]) == pytest.approx(2.0)
    # y = 2 + x at 1, 2, 4 -> logs (ln3, ln4, ln6) over (0, ln2, 2 ln2): the middle point has zero
    # weight, so the slope is (ln6 - ln3) * ln2 / (2 ln2^2) = 1/2 exactly.
    assert loglog_slope([1, 2, 4], [3, 4, 6]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        loglog_slope([2, 2], [1, 3])


def test_plan_memory_row_takes_the_phase_farther_from_one():
    from benchmarks.bench_plan_memory import worst_ratio

    # |log 0.8| = 0.223 > |log 1.2| = 0.182: the under-prediction is the worse one
    assert worst_ratio({"update": 1.2, "log-prob": 0.8}) == ("log-prob", 0.8)
    assert worst_ratio({"update": 1.3, "log-prob": 0.8}) == ("update", 1.3)


def test_logprob_memory_row_compares_two_ways_of_the_same_numbers():
    """Row 10 divides the chunked path's memory by the plain one's: both must compute the same
    log-probs and entropy (float64 reference: log_softmax of the tempered logits)."""
    import torch

    from benchmarks.bench_logprob_memory import chunked_log_probs_and_entropy, plain_log_probs_and_entropy

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 50, generator=gen) * 3  # float32, as the row runs it
    labels = torch.randint(0, 50, (7,), generator=gen)
    ref = torch.log_softmax(logits.double() / 0.7, -1)
    ref_lp, ref_ent = ref.gather(-1, labels[:, None]).squeeze(-1), -(ref.exp() * ref).sum(-1)
    for lp, ent in (plain_log_probs_and_entropy(logits.clone(), labels, 0.7),
                    chunked_log_probs_and_entropy(logits.clone(), labels, 0.7)):
        assert torch.allclose(lp.double(), ref_lp, atol=1e-5) and torch.allclose(ent.double(), ref_ent, atol=1e-5)


def test_rows_sort_by_number_then_letter():
    from benchmarks.run import row_order

    keys = ["10", "1b", "9", "2a", "1a", "7c"]
    specs = [RowSpec(k, k, Target(">=", 1.0)) for k in keys]
    assert [s.key for s in sorted(specs, key=row_order)] == ["1a", "1b", "2a", "7c", "9", "10"]


def test_rollout_rows_get_a_resolved_rollout_config():
    """The engines take a plain dict: the device profile's dtype must be a value, not an interpolation."""
    from benchmarks.bench_rollout import rollout_config

    cfg = rollout_config("unused", "cpu")
    assert cfg["dtype"] == "float32"  # the device profiles: verl/trainer/config/device/{cpu,cuda}.yaml
    assert rollout_config("unused", "cuda")["dtype"] == "bfloat16"
    assert not [k for k, v in cfg.items() if isinstance(v, str) and "${" in v]


def test_update_efficiency_helpers_run():
    """Row 4's batch and matmul reference, on sizes a test can afford: shapes by hand, a positive rate."""
    from benchmarks.bench_update_efficiency import matmul_rate, synthetic_batch

    batch = synthetic_batch(vocab=50, rows=2, seq_len=8, prompt_len=3)
    assert tuple(batch.batch["input_ids"].shape) == (2, 8) and tuple(batch.batch["responses"].shape) == (2, 5)
    assert (batch.batch["responses"] == batch.batch["input_ids"][:, 3:]).all()
    assert matmul_rate("float32", n=32, repeats=1) > 0
