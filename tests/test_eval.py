"""Evaluation: log-likelihood scoring, batched generation, MMLU/GSM8K/classification/perplexity on tiny models,
answer extraction, pass@k, eval_results.json rules and the bad-input contract of `strato eval`."""

from __future__ import annotations

import itertools
import json
import math
from math import comb
from pathlib import Path

import numpy as np
import pytest
import torch

import strato_peft.eval  # noqa: F401  registers tasks
from strato_peft.cli import main
from strato_peft.eval.base import EvalOptions
from strato_peft.eval.class_metrics import PRIOR_MARGIN, classification_scores, prior_warning
from strato_peft.eval.generation import GenerationConfig, generate
from strato_peft.eval.gsm8k import extract_answer, reference_answer
from strato_peft.eval.humaneval import pass_at_k
from strato_peft.eval.mmlu import CATEGORY_OF, build_prompt, pick_shots, prompt_parts, shot_order
from strato_peft.eval.runner import evaluate
from strato_peft.eval.scoring import loglikelihood, prefix_loglikelihood, split_tokens
from strato_peft.eval.target import load_eval_target
from strato_peft.training.run import TrainOptions, train


@pytest.fixture(scope="module")
def llama_run(tiny_root, tmp_path_factory):
    """A trained tiny Llama LoRA run (SFT) to evaluate."""
    from strato_peft.config import validate_config

    out = tmp_path_factory.mktemp("evalruns")
    cfg = validate_config({
        "model": {"name": "tiny-llama", "path": str(tiny_root / "llama")},
        "peft": {"method": "lora", "rank": 4, "alpha": 8},
        "task": {"name": "jsonl", "data_path": str(tiny_root / "sft.jsonl"),
                 "columns": {"prompt": "question", "response": "answer"}, "max_length": 64, "eval_size": 8},
        "training": {"batch_size": 4, "max_steps": 2, "save_steps": 2},
        "logging": {"output_dir": str(out), "tensorboard": False},
    })
    return train(cfg).run_dir


def cli(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
    return lines[-1]


# ---- scoring and generation ---------------------------------------------------------------------------------

def test_loglikelihood_matches_direct_computation(llama_run):
    target = load_eval_target(str(llama_run))
    model, tok = target.model, target.tokenizer
    requests = [("what is two plus", " three"), ("what is two plus", " four"), ("the movie is", " good day"),
                ("what is", " the answer is five")]
    got = loglikelihood(model, tok, requests, batch_size=3)
    for (ctx, cont), res in zip(requests, got):
        c_ids, x_ids = split_tokens(tok, ctx, cont)
        ids = torch.tensor([c_ids + x_ids])
        with torch.no_grad():
            lp = torch.log_softmax(model(input_ids=ids).logits.float(), -1)[0]
        expected = sum(float(lp[len(c_ids) - 1 + j, t]) for j, t in enumerate(x_ids))
        assert res.logprob == pytest.approx(expected, abs=1e-4)


def _check_prefix_path(model, tok):
    prefixes = ["what is two", "the movie is good", "what is tw"]  # 'tw' + 'o plus': tokens merge at the cut
    suffixes = [" plus three", " plus three equals", " plus", " day and the food is bad bad awful", "o plus"]
    requests = [(p, s, c) for p in prefixes for s in suffixes for c in (" five", " good", " the answer")]
    got = prefix_loglikelihood(model, tok, requests, batch_size=3)
    expected = loglikelihood(model, tok, [(p + s, c) for p, s, c in requests], batch_size=4)
    for g, e in zip(got, expected):
        assert g.logprob == pytest.approx(e.logprob, abs=1e-4) and g.is_greedy == e.is_greedy


def test_prefix_loglikelihood_equals_loglikelihood(llama_run, monkeypatch):
    import strato_peft.eval.scoring as scoring

    target = load_eval_target(str(llama_run))  # a peft (LoRA) model on the tiny Llama
    cached, plain = [], []
    real_cached, real_plain = scoring._score_after_prefixes, scoring.loglikelihood
    monkeypatch.setattr(scoring, "_score_after_prefixes",
                        lambda m, t, groups, *a: (cached.append(len(groups)), real_cached(m, t, groups, *a))[1])
    monkeypatch.setattr(scoring, "loglikelihood",
                        lambda m, t, reqs, **kw: (plain.append(len(reqs)), real_plain(m, t, reqs, **kw))[1])
    _check_prefix_path(target.model, target.tokenizer)
    # plain: the 15 two-token ' the answer' requests, and the 3 x 2 other ones whose suffix merges with the prefix
    assert cached == [3] and plain == [21]
    _check_prefix_path(target.model.get_base_model(), target.tokenizer)


def test_batched_left_padded_generation_equals_one_at_a_time(llama_run):
    target = load_eval_target(str(llama_run))
    prompts = ["what is two plus three", "the", "what is the answer is good bad fine", "one two"]
    gen = GenerationConfig(max_new_tokens=6)
    batched = generate(target.model, target.tokenizer, prompts, gen, batch_size=4)
    single = generate(target.model, target.tokenizer, prompts, gen, batch_size=1)
    assert batched == single


# ---- tasks on a tiny model ----------------------------------------------------------------------------------

def test_mmlu_zero_and_few_shot(llama_run):
    target = load_eval_target(str(llama_run))
    for shots in (0, 2):
        res = strato_peft.eval.get_task("mmlu").run(target, EvalOptions(limit=12, shots=shots, log_samples=True))
        assert res.n == 12 and 0.0 <= res.metrics["accuracy"] <= 1.0
        assert sum(c["n"] for c in res.metrics["per_category"].values()) == 12
        assert all(s["prediction"] in "ABCD" for s in res.samples)
        assert res.details["shots"] == shots


def test_mmlu_shots_are_fixed_per_subject_and_never_the_question():
    from strato_peft.data.sources import load_mmlu_rows

    rows = load_mmlu_rows()
    subject = [i for i, r in enumerate(rows) if r["topic"] == "virology"]
    order = shot_order(rows, subject, seed=0)
    assert sorted(order) == subject and order == shot_order(rows, subject, seed=0) != shot_order(rows, subject, 1)
    fixed = [rows[j] for j in order[:5]]
    for asked in subject:
        shots = pick_shots(rows, order, asked, 5)
        assert len(shots) == 5 and all(s["topic"] == "virology" for s in shots)
        assert rows[asked] not in shots
        if asked not in order[:5]:
            assert shots == fixed
        else:  # a fixed shot asked itself: the other four and the sixth of the order
            assert shots == [rows[j] for j in order[:6] if j != asked]
    assert pick_shots(rows, order, subject[0], 0) == []
    assert len(CATEGORY_OF) == 57


def test_mmlu_prompt_parts_join_to_the_prompt_and_share_a_prefix_per_subject():
    from strato_peft.data.sources import load_mmlu_rows

    rows = load_mmlu_rows()
    subject = [i for i, r in enumerate(rows) if r["topic"] == "astronomy"]
    order = shot_order(rows, subject, seed=0)
    others = [i for i in subject if i not in order[:3]]
    parts = [prompt_parts(rows[i], pick_shots(rows, order, i, 3)) for i in others]
    assert len({shared for shared, _ in parts}) == 1
    for i, (shared, own) in zip(others, parts):
        prompt = build_prompt(rows[i], pick_shots(rows, order, i, 3))
        assert shared + own == prompt and prompt.endswith("Answer:") and prompt.count("Answer:") == 4
        assert own.startswith("\n\n" + rows[i]["question"])


def test_gsm8k_on_tiny_model_scores_the_full_set_for_a_base_model(tiny_root):
    target = load_eval_target(model=str(tiny_root / "llama"))
    res = strato_peft.eval.get_task("gsm8k").run(target, EvalOptions(limit=4, max_new_tokens=4, log_samples=True))
    assert res.n == 4 and res.metrics["exact_match"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert "full packaged GSM8K" in res.details["split"] and len(res.samples) == 4


@pytest.mark.parametrize("text, expected", [
    ("so she has 5 + 3 = 8 apples.\n#### 8", "8"), ("The answer is $1,234.", "1234"), ("#### -7.50", "-7.5"),
    ("no numbers here", None), ("3 then 4 then 12.0", "12"),
])
def test_gsm8k_answer_extraction(text, expected):
    assert extract_answer(text) == expected


def test_gsm8k_reference_answers_are_numbers():
    from strato_peft.config.schema import TaskConfig
    from strato_peft.data.sources import load_source

    assert all(reference_answer(r["response"]) is not None for r in load_source(TaskConfig(name="gsm8k")).rows)


def test_classification_eval_on_its_held_out_split(make_config):
    run = train(make_config("bert", "lora", "classification")).run_dir
    path, content = evaluate(["classification"], EvalOptions(), checkpoint=str(run))
    m = content["tasks"]["classification"]["metrics"]
    assert content["tasks"]["classification"]["n"] == 8
    assert sum(map(sum, m["confusion_matrix"])) == 8 and len(m["confusion_matrix"]) == 2
    assert m["accuracy"] == pytest.approx(sum(m["confusion_matrix"][i][i] for i in range(2)) / 8)
    assert path == run / "eval_results.json"
    cm = np.array(m["confusion_matrix"])  # rows: labels, columns: predictions
    assert m["majority_baseline"] == cm.sum(1).max() / 8 and m["top_class_share"] == cm.sum(0).max() / 8
    stuck = m["accuracy"] <= m["majority_baseline"] + PRIOR_MARGIN
    assert ("warning" in content["tasks"]["classification"]) == stuck
    # training's own final eval carries the same check, in metrics.json and in `strato compare`'s run notes
    metrics = json.loads((run / "metrics.json").read_text())
    fe = metrics["final_eval"]
    assert (fe["eval_accuracy"] <= fe["eval_majority_baseline"] + PRIOR_MARGIN) == bool(metrics["warnings"])


def test_classification_scores_agree_with_sklearn_and_flag_the_class_prior():
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    labels, preds = [0, 0, 1, 2, 0, 1, 2, 2], [0, 1, 1, 2, 0, 0, 2, 1]
    s = classification_scores(labels, preds, 3)
    p, r, f1, _ = precision_recall_fscore_support(labels, preds, average="macro", zero_division=0)
    assert s["accuracy"] == accuracy_score(labels, preds) and (s["precision"], s["recall"], s["macro_f1"]) == \
        pytest.approx((p, r, f1))
    assert s["majority_baseline"] == 3 / 8 and s["top_class_share"] == 3 / 8 and prior_warning(s) is None
    # a classifier stuck at the most common label scores its share and gets the warning, with Trainer's prefix too
    stuck = classification_scores(labels, [0] * 8, 3)
    assert stuck["accuracy"] == stuck["majority_baseline"] == 3 / 8 and stuck["top_class_share"] == 1.0
    assert "class prior" in prior_warning(stuck) and "100.0% of rows" in prior_warning(stuck)
    assert "training.warmup_ratio" in prior_warning(stuck)  # the remedy that revived the benchmark's stuck runs
    assert prior_warning({f"eval_{k}": v for k, v in stuck.items()}, "eval_") == prior_warning(stuck)
    assert prior_warning({"eval_loss": 1.0}, "eval_") is None  # no accuracy, nothing to say


def test_perplexity_of_a_run(llama_run, tmp_path):
    _, content = evaluate(["perplexity"], EvalOptions(), checkpoint=str(llama_run), output_dir=str(tmp_path))
    m = content["tasks"]["perplexity"]["metrics"]
    assert math.isfinite(m["perplexity"]) and m["perplexity"] > 1 and m["tokens"] > 0
    assert content["tasks"]["perplexity"]["n"] == 8


def test_exact_match_scores_the_run_held_out_split_with_the_training_prompt(llama_run, tmp_path, monkeypatch):
    """The held-out prompts are rendered as in training; strict and normalized matches are counted exactly."""
    import strato_peft.eval.exact_match as em
    from strato_peft.data import load_task_data

    target = load_eval_target(checkpoint=str(llama_run), model=None)
    held = load_task_data(target.run_config.task, target.run_config.seed).eval
    seen = {}

    def fake_generate(model, tok, prompts, config, **kw):
        seen["prompts"], seen["budget"] = list(prompts), config.max_new_tokens
        refs = [str(r["response"]) for r in held]
        # first half right; one normalizes to the reference ("The X." vs "x"); the rest wrong
        outs = [f"  {r} " for r in refs[:4]] + [f"The {refs[4].upper()}."] + ["wrong"] * (len(refs) - 5)
        return [[o] for o in outs]

    monkeypatch.setattr(em, "generate", fake_generate)
    _, content = evaluate(["exact_match"], EvalOptions(), checkpoint=str(llama_run), output_dir=str(tmp_path))
    res = content["tasks"]["exact_match"]
    assert res["n"] == len(held) == 8
    assert res["metrics"]["exact_match"] == pytest.approx(4 / 8)
    assert res["metrics"]["exact_match_normalized"] == pytest.approx(5 / 8)
    chat = em.uses_chat_template(target.tokenizer, target.run_config.task)
    messages = [[{"role": "user", "content": r["prompt"]}] for r in held]
    assert chat and seen["prompts"] == [target.tokenizer.apply_chat_template(m, tokenize=False,
                                                                             add_generation_prompt=True)
                                        for m in messages]
    assert em.render_prompt(target.tokenizer, held[0], False, None) == f"{held[0]['prompt']}\n"
    assert seen["budget"] > 8


def test_exact_match_on_a_real_tiny_model_and_its_bad_input(llama_run, tiny_root, tmp_path, capsys):
    _, content = evaluate(["exact_match"], EvalOptions(limit=3), checkpoint=str(llama_run), output_dir=str(tmp_path))
    assert content["tasks"]["exact_match"]["n"] == 3
    assert 0.0 <= content["tasks"]["exact_match"]["metrics"]["exact_match"] <= 1.0
    code, _, err = cli(["eval", "--model", str(tiny_root / "llama"), "--tasks", "exact_match"], capsys)
    assert code == 2 and "exact_match needs --checkpoint" in error_line(err)


@pytest.mark.parametrize("text, expected", [("The Answer.", "answer"), ("  a  b,c ", "bc"), ("Yes!", "yes")])
def test_exact_match_normalization(text, expected):
    from strato_peft.eval.exact_match import normalize_answer

    assert normalize_answer(text) == expected


# ---- pass@k ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, c, k", [(1, 1, 1), (1, 0, 1), (10, 3, 1), (10, 3, 5), (20, 0, 10), (20, 15, 10)])
def test_pass_at_k_is_the_unbiased_estimator(n, c, k):
    brute = sum(1 for combo in itertools.combinations(range(n), k) if any(i < c for i in combo)) / comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(brute)


# ---- eval_results.json and bad input -----------------------------------------------------------------------

def test_results_accumulate_and_are_not_overwritten_silently(llama_run, tmp_path, capsys):
    args = ["eval", "--checkpoint", str(llama_run), "--limit", "4", "--output-dir", str(tmp_path)]
    code, out, _ = cli(args + ["--tasks", "mmlu", "--shots", "0"], capsys)
    assert code == 0 and "mmlu:" in out
    code, _, _ = cli(args + ["--tasks", "perplexity"], capsys)
    content = json.loads((tmp_path / "eval_results.json").read_text())
    assert set(content["tasks"]) == {"mmlu", "perplexity"}
    assert content["model"]["adapter"].endswith("adapter") and content["model"]["adapter_sha256"]
    before = (tmp_path / "eval_results.json").read_text()
    code, _, err = cli(args + ["--tasks", "mmlu"], capsys)
    assert code == 2 and "--overwrite" in error_line(err)
    assert (tmp_path / "eval_results.json").read_text() == before


@pytest.mark.parametrize("extra, needle", [
    (["--tasks", "nope"], "unknown task 'nope'"),
    (["--tasks", "mmlu", "--limit", "0"], "--limit"),
    (["--tasks", "mmlu", "--shots", "500"], "--shots 500"),
])
def test_bad_eval_options(llama_run, tmp_path, capsys, extra, needle):
    code, _, err = cli(["eval", "--checkpoint", str(llama_run), "--output-dir", str(tmp_path)] + extra, capsys)
    assert code == 2 and needle in error_line(err)
    assert not (tmp_path / "eval_results.json").exists()


def test_checkpoint_without_adapter_or_config(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = cli(["eval", "--checkpoint", str(tmp_path / "empty"), "--tasks", "mmlu"], capsys)
    assert code == 2 and "neither a run" in error_line(err)


def test_adapter_for_another_base_model(llama_run, tiny_root, capsys):
    code, _, err = cli(["eval", "--checkpoint", str(llama_run / "adapter"), "--model", str(tiny_root / "gpt2"),
                        "--tasks", "mmlu", "--limit", "2"], capsys)
    line = error_line(err)
    assert code == 2 and "trained on base model" in line and "gpt2" in line and "llama" in line


def test_scripts_eval_form(llama_run, tmp_path):
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(repo / "scripts" / "eval.py"), "--checkpoint", str(llama_run),
                           "--tasks", "perplexity", "--limit", "2", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "eval_results.json").read_text())["tasks"]["perplexity"]["n"] == 2


def test_training_config_can_name_eval_tasks(make_config, capsys, tmp_path):
    run = train(make_config("llama", "lora", task={"eval_tasks": ["perplexity", "mmlu"], "eval_limit": 4})).run_dir
    content = json.loads((run / "eval_results.json").read_text())
    assert set(content["tasks"]) == {"perplexity", "mmlu"} and content["tasks"]["mmlu"]["n"] == 4
    import yaml

    bad = make_config("llama", "lora", task={"eval_tasks": ["mmlu", "nope"]},
                      logging={"output_dir": str(tmp_path / "bad")})
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad.to_yaml_dict()))
    code, _, err = cli(["train", "--config", str(path)], capsys)
    assert code == 2 and "unknown task 'nope'" in error_line(err)
    assert not Path(bad.logging.output_dir).exists()


def test_final_eval_off_skips_the_trainers_pass_and_eval_tasks_still_score_the_run(make_config, monkeypatch):
    """training.final_eval: false: no trainer.evaluate() at the end (a forward over every eval row), the eval tasks
    still score the run; without eval tasks that setting is refused (the run would have no score)."""
    from transformers import Trainer

    from strato_peft.errors import ConfigError

    calls = []
    original = Trainer.evaluate
    monkeypatch.setattr(Trainer, "evaluate", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    result = train(make_config("llama", "lora", task={"eval_tasks": ["perplexity"], "eval_limit": 2},
                               training={"final_eval": False}))
    assert calls == [] and result.metrics["final_eval"] == {}
    assert json.loads((result.run_dir / "eval_results.json").read_text())["tasks"]["perplexity"]["n"] == 2
    on = train(make_config("llama", "lora", task={"eval_tasks": ["perplexity"], "eval_limit": 2},
                           logging={"run_name": "on"}))
    assert calls == [1] and "eval_loss" in on.metrics["final_eval"]
    with pytest.raises(ConfigError, match="training.final_eval"):
        make_config("llama", "lora", training={"final_eval": False})


def test_a_run_is_complete_only_with_its_eval_tasks(make_config, monkeypatch):
    """Evaluations run before the run folder is moved into place: an interrupted one leaves no complete run."""
    import strato_peft.eval.runner as runner
    from strato_peft.outputs import RunDirectory, run_dir_for

    cfg = make_config("llama", "lora", task={"eval_tasks": ["perplexity"], "eval_limit": 2})

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    run = RunDirectory(run_dir_for(cfg))
    assert not run.final.exists() and not run.is_complete()
    monkeypatch.undo()
    result = train(cfg, TrainOptions(overwrite=True))
    content = json.loads((result.run_dir / "eval_results.json").read_text())
    assert content["tasks"]["perplexity"]["n"] == 2 and run.is_complete()
    assert content["model"]["adapter"] == str(result.run_dir / "adapter")


def test_gsm8k_scores_exactly_the_held_out_split_of_a_gsm8k_run():
    from strato_peft.config import validate_config
    from strato_peft.data import load_task_data
    from strato_peft.eval.gsm8k import _rows_to_score
    from strato_peft.eval.target import EvalTarget

    cfg = validate_config({"task": {"name": "gsm8k", "eval_size": 100}})
    held, pool, split = _rows_to_score(EvalTarget(None, None, "causal_lm", {}, run_config=cfg))
    data = load_task_data(cfg.task, cfg.seed)
    assert held == data.eval and pool == data.train and len(held) == 100 and "held-out split" in split
