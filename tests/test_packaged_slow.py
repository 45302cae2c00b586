"""Slow tests on the real packaged models and data (SmolLM2-135M, all-MiniLM-L6-v2, GSM8K, tweets)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from strato_peft.cli import main

pytestmark = pytest.mark.slow


def test_default_job_runs_on_real_smollm2(tmp_path, capsys):
    """`strato train` with no config (the README's default job), cut to a few steps."""
    code = main(["train", "--fast-dev-run", "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    run_dir = tmp_path / "smollm2-135m" / "gsm8k" / "lora_r8_seed42"
    assert f"Results written to {run_dir}" in out
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["params"]["trainable"] == 921_600  # r=8 on q,k,v,o of 30 layers: 30 x 8 x (2x(576+576) + 2x(576+192))
    assert all(math.isfinite(e["loss"]) for e in m["loss_curve"])
    assert 0 < m["final_eval"]["eval_loss"] < 5  # a pretrained model, not a random one (ln 49152 = 10.8)
    assert (run_dir / "adapter" / "adapter_model.safetensors").is_file()


def test_classification_on_real_minilm_and_tweets(tmp_path, capsys):
    repo = Path(__file__).resolve().parent.parent
    code = main(["train", "--config", str(repo / "configs" / "tasks" / "classification_tweet_minilm.yaml"),
                 "--fast-dev-run", "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    m = json.loads((tmp_path / "minilm-l6" / "tweet-sentiment" / "lora_r8_seed42" / "metrics.json").read_text())
    for key in ("eval_accuracy", "eval_macro_f1", "eval_precision", "eval_recall"):
        assert 0.0 <= m["final_eval"][key] <= 1.0
    assert m["data"]["n_eval"] == 8  # fast-dev-run keeps 8 of the 8,000 held-out tweets


@pytest.mark.parametrize("config,model,task", [("minilm_tweets.yaml", "minilm-l6", "tweet-sentiment"),
                                               ("smollm2_gsm8k.yaml", "smollm2-135m", "gsm8k")])
def test_strato_example_configs_on_packaged_models(config, model, task, tmp_path, capsys):
    """Each packaged model's STRATO example: sensitivity map, search (where the map separates allocations),
    training, plain adapter + plan."""
    repo = Path(__file__).resolve().parent.parent
    code = main(["train", "--config", str(repo / "configs" / "strato" / config), "--fast-dev-run",
                 "--output-dir", str(tmp_path)])
    assert code == 0, capsys.readouterr().err
    run_dir = next((tmp_path / model / task).glob("strato_*_seed42"))
    plan = json.loads((run_dir / "adapter" / "strato_plan.json").read_text())
    conf = json.loads((run_dir / "adapter" / "adapter_config.json").read_text())
    assert conf["peft_type"] == "LORA" and conf["use_rslora"] is False
    assert set(conf["rank_pattern"]) == set(conf["target_modules"]) and plan["final_ranks"] == conf["rank_pattern"]
    assert all(u <= 1.0 + 1e-9 for u in plan["budget_usage"].values())
    assert plan["sensitivity"]["batches"] >= 1 and plan["search"]["map_gain"] is not None
    # the search runs exactly when the map separates the allocations (strato.min_map_gain), spending the probes the
    # config allows (none by default: the map's pick); else the uniform LoRA trains
    search = plan["search"]
    assert search["searched"] == (search["map_gain"] >= search["min_map_gain"])
    if search["searched"]:
        assert search["probes"] == search["max_probes"]
        assert search["details"]["chosen"] == max(search["candidates"], key=lambda c: c["surrogate"])["label"]
    else:
        assert search["probes"] == 0 and len(set(plan["allocation"].values())) == 1
