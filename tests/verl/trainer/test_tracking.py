import json

import pytest

from verl.utils.tracking import Tracking, scrub_secrets


def test_scrub_secrets_hides_values_but_keeps_env_var_names():
    cfg = {"google": {"api_key_env": "SERPAPI_API_KEY", "api_key": "sk-123"}, "hf_token": "hf_abc",
           "nested": [{"password": "p"}], "lr": 1e-6}
    out = scrub_secrets(cfg)
    assert out["google"]["api_key_env"] == "SERPAPI_API_KEY"
    assert out["google"]["api_key"] == "***"
    assert out["hf_token"] == "***"
    assert out["nested"][0]["password"] == "***"
    assert out["lr"] == 1e-6
    assert "sk-123" not in json.dumps(out)


def test_jsonl_backend_writes_one_record_per_step(tmp_path, capsys):
    t = Tracking("p", "e", ["console", "jsonl"], config={}, log_dir=str(tmp_path))
    t.log({"a": 1.5, "b": "not-a-number", "c": float("nan")}, step=3)
    t.finish()
    rec = json.loads((tmp_path / "metrics.jsonl").read_text().strip())
    assert rec == {"step": 3, "a": 1.5, "c": None}
    assert "step:3" in capsys.readouterr().out


def test_unknown_backend_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="trainer.logger"):
        Tracking("p", "e", ["mlflowx"])
