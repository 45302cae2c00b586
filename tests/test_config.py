"""Config schema, overrides and the bad-input contract: exit code 2, one clear line, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from strato_peft.cli import main
from strato_peft.config import apply_overrides, load_config, validate_config
from strato_peft.config.schema import StratoConfig
from strato_peft.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def write(path: Path, data) -> Path:
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def assert_one_line_error(code, err, *needles):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_defaults_validate_and_document_every_field():
    cfg = StratoConfig()
    assert cfg.peft.method == "lora" and cfg.seed == 42
    for section in ("model", "peft", "task", "training", "device_info", "logging"):
        fields = type(getattr(cfg, section)).model_fields
        undocumented = [name for name, f in fields.items() if not f.description]
        assert not undocumented, (section, undocumented)


def test_overrides_parse_yaml_scalars():
    data = apply_overrides({}, ["peft.rank=16", "peft.target_modules=[q_proj, v_proj]", "training.learning_rate=1e-4"])
    cfg = validate_config(data)
    assert cfg.peft.rank == 16 and cfg.peft.target_modules == ["q_proj", "v_proj"]
    assert cfg.training.learning_rate == pytest.approx(1e-4)


def test_qlora_implies_4bit():
    assert validate_config({"peft": {"method": "qlora"}}).model.quantization == "4bit"


def test_every_shipped_config_validates():
    files = sorted((REPO / "configs").rglob("*.yaml"))
    assert len(files) >= 10
    for path in files:
        load_config(path)


@pytest.mark.parametrize(
    "content, needles",
    [
        ("model: [unclosed\n", ["YAML syntax error", "line"]),
        ({"peft": {"rnak": 8}}, ["unknown key", "peft.rnak"]),
        ({"training": {"batch_size": "eight"}}, ["training.batch_size"]),
        ({"peft": {"rank": 0}}, ["peft.rank", "greater than 0"]),
        ({"peft": {"rank": -3}}, ["peft.rank"]),
        ({"peft": {"method": "magic"}}, ["peft.method", "unknown method", "lora"]),
        ({"task": {"name": "jsonl", "data_path": "/nonexistent/data.jsonl"}}, ["task.data_path", "not found"]),
        ({"peft": {"method": "strato", "strato": {"low_budget_fill": "top_modules"}}},
         ["peft.strato", "needs init: gradient"]),
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, capsys, content, needles):
    cfg = write(tmp_path / "bad.yaml", content)
    out_dir = tmp_path / "out"
    code, _, err = run_cli(["train", "--config", str(cfg), "--output-dir", str(out_dir)], capsys)
    assert_one_line_error(code, err, *needles)
    assert not out_dir.exists()


def test_missing_config_file(tmp_path, capsys):
    code, _, err = run_cli(["validate", "--config", str(tmp_path / "nope.yaml")], capsys)
    assert_one_line_error(code, err, "config file not found", "nope.yaml")


def test_bad_override(capsys):
    code, _, err = run_cli(["validate", "--override", "peft.rank"], capsys)
    assert_one_line_error(code, err, "key.path=value")


def test_validate_prints_resolved_config(capsys):
    code, out, _ = run_cli(["validate", "--override", "peft.rank=4"], capsys)
    assert code == 0
    assert "rank: 4" in out and "OK:" in out


def test_peft_config_file_is_used_as_is(tmp_path, make_config):
    import json

    from strato_peft.methods.apply import load_peft_config_file

    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": 3, "lora_alpha": 6,
                                "target_modules": ["q_proj"], "lora_dropout": 0.0, "bias": "none"}))
    cfg = load_peft_config_file(path)
    assert cfg.r == 3 and cfg.target_modules == {"q_proj"}
    path.write_text(json.dumps({"peft_type": "NOPE"}))
    with pytest.raises(ConfigError, match="peft_type"):
        load_peft_config_file(path)


def test_generated_docs_are_up_to_date():
    """configs/base.yaml and the README's config reference are generated from the schema: regenerate with
    `python -m strato_peft.config.reference` after changing a field."""
    from strato_peft.config.reference import base_yaml, readme_with_reference

    assert (REPO / "configs" / "base.yaml").read_text() == base_yaml()
    readme = (REPO / "README.md").read_text()
    assert readme_with_reference(readme) == readme
    validate_config(yaml.safe_load(base_yaml()))
