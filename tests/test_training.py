"""Training behaviour: bad inputs that need a model or data, output-folder rules, resume after SIGKILL,
AdaLoRA's rank re-allocation, padding-free batching, dry runs and the CLI entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from strato_peft.cli import main
from strato_peft.errors import DataError, OutputExistsError
from strato_peft.training.run import TrainOptions, train

REPO = Path(__file__).resolve().parent.parent


def write_cfg(path: Path, cfg) -> Path:
    path.write_text(yaml.safe_dump(cfg.to_yaml_dict()))
    return path


def cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line(err: str) -> str:
    """The single error line (progress bars from loading may precede it; nothing may follow it)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    return errors[0]


# ---- bad input that needs the model or the data -------------------------------------------------------------

def test_target_module_matching_nothing_lists_adaptable_modules(make_config, tmp_path, capsys):
    cfg = make_config("llama", "lora", peft={"target_modules": ["q_proj", "qkv_proj"]})
    code, _, err = cli(["train", "--config", str(write_cfg(tmp_path / "c.yaml", cfg))], capsys)
    line = one_line(err)
    assert code == 2 and "'qkv_proj'" in line and "q_proj" in line and "down_proj" in line
    assert not Path(cfg.logging.output_dir).exists()


@pytest.mark.parametrize("problem", ["missing", "empty", "columns"])
def test_bad_data_file(problem, make_config, tmp_path, capsys):
    path = tmp_path / "data.jsonl"
    if problem == "empty":
        path.write_text("")
    elif problem == "columns":
        path.write_text(json.dumps({"instruction": "x", "output": "y"}) + "\n")
    cfg = make_config("llama", "lora", task={"data_path": str(path)})
    code, _, err = cli(["train", "--config", str(write_cfg(tmp_path / "c.yaml", cfg))], capsys)
    line = one_line(err)
    assert code == 2 and str(path) in line
    assert {"missing": "not found", "empty": "no rows", "columns": "missing needed column"}[problem] in line
    if problem == "columns":
        assert "instruction" in line and "task.columns" in line
    assert not Path(cfg.logging.output_dir).exists()


def test_existing_run_is_never_overwritten_silently(make_config, tmp_path, capsys):
    cfg = make_config("llama", "lora")
    first = train(cfg)
    metrics_before = (first.run_dir / "metrics.json").read_bytes()
    path = write_cfg(tmp_path / "c.yaml", cfg)
    code, _, err = cli(["train", "--config", str(path)], capsys)
    assert code == 2 and "--overwrite" in one_line(err) and str(first.run_dir) in err
    assert (first.run_dir / "metrics.json").read_bytes() == metrics_before
    code, out, _ = cli(["train", "--config", str(path), "--overwrite"], capsys)
    assert code == 0 and str(first.run_dir) in out
    assert json.loads((first.run_dir / "metrics.json").read_text())["run"]["finished_at"]
    assert not list(first.run_dir.parent.glob(".*"))  # no staging or replaced folders left behind


def test_atomic_file_replaces_on_success_and_leaves_nothing_on_failure(tmp_path):
    """A failed write keeps the earlier file intact and leaves no temporary file behind."""
    from strato_peft.outputs import atomic_file, atomic_write_text

    target = tmp_path / "sub" / "out.bin"
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer failed")
    assert target.read_bytes() == b"first" and sorted(p.name for p in target.parent.iterdir()) == ["out.bin"]
    atomic_write_text(target, "second")
    assert target.read_text() == "second" and len(list(target.parent.iterdir())) == 1


def test_results_layout(make_config):
    cfg = make_config("llama", "lora")
    result = train(cfg)
    assert result.run_dir == Path(cfg.logging.output_dir) / "tiny-llama" / "sft" / "lora_r4_seed42"
    assert sorted(p.name for p in result.run_dir.iterdir()) == ["adapter", "config_used.yaml", "metrics.json"]
    m = result.metrics
    for key in ("trainable", "total"):
        assert m["params"][key] > 0
    assert m["cost"]["adapter_flops_per_token"] > 0 and m["cost"]["memory_estimate_bytes"] > 0
    assert m["train"]["tokens_per_second"] > 0 and m["wall_time_seconds"] > 0
    assert m["peak_memory"]["cpu_max_rss_bytes"] > 0 and m["platform"]["name"] == "cpu"
    assert m["versions"]["peft"] and m["versions"]["transformers"]
    assert m["data"]["n_eval"] == 8 and m["data"]["split_seed"] == 1234
    used = yaml.safe_load((result.run_dir / "config_used.yaml").read_text())
    assert used["peft"]["rank"] == 4 and used["training"]["max_steps"] == 3


def test_unfinished_run_needs_resume_or_overwrite(make_config):
    cfg = make_config("llama", "lora")
    from strato_peft.outputs import RunDirectory, run_dir_for

    run = RunDirectory(run_dir_for(cfg))
    run.staging.mkdir(parents=True)
    with pytest.raises(OutputExistsError, match="--resume"):
        train(cfg)


def test_split_is_reproducible_and_shared_across_seeds(make_config):
    from strato_peft.data import load_task_data

    a = load_task_data(make_config("llama", "lora").task, 42)
    b = load_task_data(make_config("llama", "lora").task, 43)
    assert a.eval == b.eval and a.info["heldout_fingerprint"] == b.info["heldout_fingerprint"]
    task = make_config("llama", "lora", task={"split_seed": None}).task
    assert load_task_data(task, 42).eval == load_task_data(task, 42).eval
    assert load_task_data(task, 42).eval != load_task_data(task, 7).eval


# ---- resume after SIGKILL ----------------------------------------------------------------------------------

KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, yaml
    from transformers import TrainerCallback
    from strato_peft.config import validate_config
    from strato_peft.training.run import TrainOptions, train

    class KillAfter(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == int(sys.argv[2]):
                os.kill(os.getpid(), signal.SIGKILL)

    cfg = validate_config(yaml.safe_load(open(sys.argv[1])))
    train(cfg, TrainOptions(extra_callbacks=[KillAfter()]))
    """
)


def test_resume_after_sigkill_matches_uninterrupted_run(make_config, tmp_path, capsys):
    training = {"max_steps": 8, "save_steps": 3, "logging_steps": 1}
    ref_cfg = make_config("llama", "lora", training=training, peft={"dropout": 0.1},
                          logging={"output_dir": str(tmp_path / "ref")})
    reference = train(ref_cfg).metrics

    cfg = make_config("llama", "lora", training=training, peft={"dropout": 0.1},
                      logging={"output_dir": str(tmp_path / "killed")})
    path = write_cfg(tmp_path / "killed.yaml", cfg)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), "5"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == -9, proc.stderr[-2000:]
    from strato_peft.outputs import RunDirectory, run_dir_for

    run = RunDirectory(run_dir_for(cfg))
    assert not run.final.exists() and run.latest_checkpoint().name == "checkpoint-3"

    code, _, err = cli(["train", "--config", str(path)], capsys)  # without --resume: refused
    assert code == 2 and "--resume" in err
    code, out, _ = cli(["train", "--config", str(path), "--resume"], capsys)
    assert code == 0
    resumed = json.loads((run.final / "metrics.json").read_text())
    assert resumed["run"]["resumed_from"] == "checkpoint-3"
    assert resumed["train"]["global_steps"] == 8
    ref_losses = [e["loss"] for e in reference["loss_curve"]]
    got_losses = [e["loss"] for e in resumed["loss_curve"]]
    assert got_losses == pytest.approx(ref_losses, rel=1e-5)
    assert resumed["final_eval"]["eval_loss"] == pytest.approx(reference["final_eval"]["eval_loss"], rel=1e-5)


# ---- AdaLoRA -----------------------------------------------------------------------------------------------

def test_adalora_ranks_change_during_training(make_config):
    cfg = make_config("llama", "adalora", peft={"rank": 2, "init_rank": 6, "adalora_tinit": 1, "adalora_tfinal": 2,
                                                "target_modules": ["q_proj", "v_proj", "up_proj"]},
                      training={"max_steps": 12, "learning_rate": 5e-3})
    result = train(cfg)
    model = result.model
    from peft.tuners.adalora import AdaLoraLayer

    ranks = {name: int((m.ranknum["default"]).item()) if hasattr(m, "ranknum") else None
             for name, m in model.named_modules() if isinstance(m, AdaLoraLayer)}
    assert ranks
    # the budget allocator masks singular values: count the non-zero entries of lora_E per module
    kept = [int((m.lora_E["default"] != 0).sum()) for m in model.modules() if isinstance(m, AdaLoraLayer)]
    assert sum(kept) < 6 * len(kept), kept  # pruned below the initial rank
    assert min(kept) != max(kept) or sum(kept) <= 2 * len(kept)
    saved = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
    assert saved["rank_pattern"], "the final rank pattern is saved with the adapter"


def test_adalora_callback_is_what_changes_ranks(make_config, monkeypatch):
    from strato_peft.methods import adalora

    calls = []
    monkeypatch.setattr(adalora.AdaLoraAllocationCallback, "on_optimizer_step",
                        lambda self, args, state, control, **kw: calls.append(state.global_step))
    cfg = make_config("llama", "adalora", peft={"rank": 2, "init_rank": 6, "adalora_tinit": 1, "adalora_tfinal": 2},
                      training={"max_steps": 6})
    model = train(cfg).model
    from peft.tuners.adalora import AdaLoraLayer

    kept = [int((m.lora_E["default"] != 0).sum()) for m in model.modules() if isinstance(m, AdaLoraLayer)]
    assert calls == list(range(6))
    assert all(k == 6 for k in kept)  # without update_and_allocate nothing is pruned: the known Trainer trap


# ---- padding-free batching ---------------------------------------------------------------------------------

def test_padding_free_loss_equals_padded_loss(make_config):
    runs = {}
    for pf in (True, False):
        cfg = make_config("llama", "lora", task={"padding_free": pf},
                          logging={"output_dir": str(Path(make_config().logging.output_dir) / f"pf{pf}")},
                          training={"max_steps": 2, "learning_rate": 1e-9})
        runs[pf] = train(cfg).metrics
    assert runs[True]["final_eval"]["eval_loss"] == pytest.approx(runs[False]["final_eval"]["eval_loss"], rel=1e-4)
    assert runs[True]["loss_curve"][0]["loss"] == pytest.approx(runs[False]["loss_curve"][0]["loss"], rel=1e-4)


# ---- dry run, CLI forms ------------------------------------------------------------------------------------

def test_dry_run_costs_llama2_7b_without_weights(capsys, tmp_path):
    code, out, _ = cli(["train", "--config", str(REPO / "configs" / "llama2_7b_mmlu_lora.yaml"), "--dry-run",
                        "--output-dir", str(tmp_path / "out")], capsys)
    assert code == 0
    # LoRA r=16 on q,v of Llama-2-7B: 32 layers x 2 modules x 16 x (4096 + 4096) = 8,388,608
    assert "8,388,608 / 6,746,804,224" in out
    assert "adapter FLOPs per token:  50,331,648" in out  # 6 x params
    assert "training memory estimate" in out
    assert not (tmp_path / "out").exists()


def test_fast_dev_run_and_main_py_form(make_config, tmp_path):
    cfg = make_config("gpt2", "lora", training={"max_steps": 50})
    path = write_cfg(tmp_path / "c.yaml", cfg)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, str(REPO / "main.py"), "--config", str(path), "--seed", "7",
                           "--fast-dev-run"], capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path(cfg.logging.output_dir) / "tiny-gpt2" / "sft" / "lora_r4_seed7"
    assert f"Results written to {run_dir}" in proc.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train"]["global_steps"] == 3 and metrics["run"]["fast_dev_run"] and metrics["run"]["seed"] == 7


def test_tensorboard_logs_written(make_config):
    cfg = make_config("llama", "lora", logging={"tensorboard": True})
    result = train(cfg)
    assert list((result.run_dir / "logs").glob("events.out.tfevents.*"))


def test_wandb_offline_needs_no_network(make_config, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = make_config("llama", "lora", logging={"wandb": True})
    result = train(cfg)
    assert list(result.run_dir.rglob("*.wandb"))


def test_platform_not_available_is_a_clear_error(make_config, tmp_path, capsys):
    cfg = make_config("llama", "lora")
    path = write_cfg(tmp_path / "c.yaml", cfg)
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli(["train", "--config", str(path), "--platform", "cuda"], capsys)
    assert code == 2 and "cuda" in one_line(err) and "cpu" in one_line(err)
    code, out, _ = cli(["train", "--config", str(path), "--platform", "cpu"], capsys)
    assert code == 0


@pytest.mark.parametrize("config", ["methods/qlora.yaml", "tasks/classification_tweet_minilm.yaml",
                                    "llama2_7b_mmlu_strato.yaml", "methods/adalora.yaml"])
def test_dry_run_examples(config, capsys):
    code, out, err = cli(["train", "--config", str(REPO / "configs" / config), "--dry-run"], capsys)
    assert code == 0, err
    assert "trainable / total params" in out and "adapter FLOPs per token" in out


def test_all_examples_too_long_is_a_clear_error_and_leaves_nothing(make_config, tmp_path, capsys):
    cfg = make_config("llama", "lora", task={"max_length": 9})
    code, _, err = cli(["train", "--config", str(write_cfg(tmp_path / "c.yaml", cfg))], capsys)
    assert code == 2 and "task.max_length" in one_line(err)
    out = Path(cfg.logging.output_dir)
    assert not out.exists() or not [p for p in out.rglob("*") if p.is_file()]
