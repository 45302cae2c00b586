"""`strato run` (configs x seeds, skip finished runs, go on after a failure), --profile, and the end-to-end
workflow: two methods x two seeds of --fast-dev-run on a tiny model, then `strato compare` and `strato report`."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from strato_peft.cli import main


def write(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_yaml_dict()))
    return path


def test_two_methods_two_seeds_then_compare_and_report(make_config, tmp_path, capsys):
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    out = tmp_path / "results"
    write(cfg_dir / "a_lora.yaml", make_config("llama", "lora"))
    write(cfg_dir / "b_adalora.yaml", make_config("llama", "adalora"))
    argv = ["run", "--config-dir", str(cfg_dir), "--seeds", "42", "43", "--fast-dev-run", "--output-dir", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sweep: 4 done" in printed and "tiny-llama/sft/main/lambda0_rank4_seed43" in printed
    runs = sorted(p.name for p in (out / "tiny-llama" / "sft").iterdir())
    assert runs == ["adalora_r4_seed42", "adalora_r4_seed43", "lora_r4_seed42", "lora_r4_seed43"]
    tag = json.loads((out / "tiny-llama" / "sft" / "lora_r4_seed42" / "metrics.json").read_text())["run"]
    assert tag["experiment_tag"] == "tiny-llama/sft/main/lambda0_rank4_seed42"

    assert main(argv) == 0  # finished runs are skipped, not re-trained
    assert "sweep: 4 skipped" in capsys.readouterr().out

    assert main(["compare", str(out), "--baseline", "lora_r4"]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    rows = {c["name"]: c for c in comparison["configurations"]}
    assert rows["adalora_r4"]["n"] == 2 and rows["adalora_r4"]["vs_baseline"]["n"] == 2
    assert main(["report", str(out), "--baseline", "lora_r4"]) == 0
    assert "adalora_r4" in (out / "report.html").read_text()
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert plots == ["loss_curves.png", "pareto.png", "ranks_adalora_r4.png"]  # AdaLoRA's ranks vary by layer


def test_a_failing_config_does_not_stop_the_sweep(make_config, tmp_path, capsys):
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    write(cfg_dir / "a_good.yaml", make_config("llama", "lora"))
    bad = make_config("llama", "lora", task={"data_path": str(tmp_path / "missing.jsonl")})
    write(cfg_dir / "b_bad.yaml", bad)
    code = main(["run", "--config-dir", str(cfg_dir), "--seeds", "42", "--fast-dev-run",
                 "--output-dir", str(tmp_path / "results")])
    captured = capsys.readouterr()
    assert code == 1 and "sweep: 1 done, 1 failed" in captured.out and "missing.jsonl" in captured.err


def test_profile_writes_a_tensorboard_trace(make_config, tmp_path, capsys):
    path = write(tmp_path / "c.yaml", make_config("llama", "lora", training={"max_steps": 14}))
    assert main(["train", "--config", str(path), "--profile", "--output-dir", str(tmp_path / "r")]) == 0
    traces = list((tmp_path / "r").rglob("logs/profiler/epoch0/*.pt.trace.json"))
    assert len(traces) == 1 and traces[0].stat().st_size > 1000
