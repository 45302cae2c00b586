"""Data sources: packaged sets by short name, local JSONL/CSV with column mappings, datasets names, BIG-bench
tarballs, and the SFT formatting (chat template, loss on the response only, packing)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from strato_peft.config.schema import TaskConfig
from strato_peft.data import load_task_data
from strato_peft.data.sources import load_source
from strato_peft.errors import DataError
from strato_peft.training.run import train


@pytest.mark.parametrize("name, n, kind", [("gsm8k", 1319, "causal_lm"), ("mmlu", 14042, "causal_lm"),
                                           ("tweet-sentiment", 38158, "classification")])
def test_packaged_sources(name, n, kind):
    src = load_source(TaskConfig(name=name))
    assert len(src.rows) == n and src.natural_type == kind
    if kind == "classification":
        assert src.label_names == ["negative", "neutral", "positive"]
        assert {r["label"] for r in src.rows} == {0, 1, 2}
    else:
        assert src.rows[0]["prompt"] and src.rows[0]["response"]


def test_gsm8k_split_is_stated_and_seeded():
    data = load_task_data(TaskConfig(name="gsm8k"), run_seed=42)
    assert (len(data.train), len(data.eval)) == (1000, 319)
    again = load_task_data(TaskConfig(name="gsm8k"), run_seed=43)
    assert data.eval == again.eval  # split_seed, not the run seed, decides the held-out rows
    assert not {r["prompt"] for r in data.train} & {r["prompt"] for r in data.eval}
    mmlu = load_source(TaskConfig(name="mmlu")).rows
    assert all(r["response"] in "ABCD" for r in mmlu) and "A. " in mmlu[0]["prompt"]


def test_validation_size_scores_on_rows_outside_the_held_out_split_and_the_training_rows():
    from strato_peft.data.splits import split_rows

    rows = [{"i": i} for i in range(100)]
    train, held, info = split_rows(rows, TaskConfig(name="x", eval_size=20, train_size=30), 42)
    v_train, val, v_info = split_rows(rows, TaskConfig(name="x", eval_size=20, train_size=30, validation_size=25), 42)
    assert v_train == train and len(val) == 25 and info["scored_on"] == "held-out"
    assert v_info["scored_on"] == "validation" and v_info["heldout_fingerprint"] != info["heldout_fingerprint"]
    ids = lambda rs: {r["i"] for r in rs}  # noqa: E731
    assert not ids(val) & ids(held) and not ids(val) & ids(train)
    with pytest.raises(DataError, match="task.validation_size"):
        split_rows(rows, TaskConfig(name="x", eval_size=20, validation_size=80), 42)


def test_classification_labels_from_strings_and_label_names(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("t,y\nhello,b\nworld,a\nagain,b\n")
    src = load_source(TaskConfig(name="csv", type="classification", data_path=str(path),
                                 columns={"text": "t", "label": "y"}))
    assert src.label_names == ["a", "b"] and [r["label"] for r in src.rows] == [1, 0, 1]
    bad = TaskConfig(name="csv", type="classification", data_path=str(path), columns={"text": "t", "label": "y"},
                     label_names=["a", "c"])
    with pytest.raises(DataError, match="not in task.label_names"):
        load_source(bad)


def test_bigbench_task_from_tarball(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    task = {"examples": [{"input": f"q{i}", "target_scores": {"yes": 0, "no": 1}} for i in range(5)]
            + [{"input": "q5", "target": ["maybe"]}], "example_input_prefix": "Today I ",
            "example_output_prefix": ". Yesterday I "}
    tar_path = tmp_path / "bigbench-1.0.0.tar.gz"
    payload = json.dumps(task).encode()
    with tarfile.open(tar_path, "w:gz") as tf:
        info = tarfile.TarInfo("bigbench-1.0.0/bigbench/benchmark_tasks/toy_task/task.json")
        info.size = len(payload)
        tf.addfile(info, io.BytesIO(payload))
    monkeypatch.setenv("STRATO_BIGBENCH_TARBALL", str(tar_path))
    src = load_source(TaskConfig(name="bigbench:toy_task"))
    assert [r["response"] for r in src.rows] == ["no"] * 5 + ["maybe"]
    assert src.rows[0]["prompt"] == "Today I q0. Yesterday I"  # BIG-bench's own prefixes, stripped
    assert len(list((tmp_path / "cache" / "bigbench").glob("toy_task.*.json"))) == 1  # extracted once
    assert load_source(TaskConfig(name="bigbench:toy_task")).rows == src.rows
    with pytest.raises(DataError, match="no JSON task 'nope'"):
        load_source(TaskConfig(name="bigbench:nope"))
    monkeypatch.setenv("STRATO_BIGBENCH_TARBALL", str(tmp_path / "missing.tar.gz"))
    with pytest.raises(DataError, match="pip download"):
        load_source(TaskConfig(name="bigbench:toy_task"))


def test_datasets_name_loads_a_local_dataset_folder(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps({"q": f"x{i}", "a": f"y{i}"}) + "\n" for i in range(6)))
    src = load_source(TaskConfig(name=str(folder), columns={"prompt": "q", "response": "a"}))
    assert len(src.rows) == 6 and src.rows[0] == {"prompt": "x0", "response": "y0"}
    with pytest.raises(DataError, match="could not load data set"):
        load_source(TaskConfig(name=str(tmp_path / "nothing_here")))


def test_sft_chat_template_and_response_only_loss(make_config):
    """The model's chat template formats the prompt; labels cover the response tokens only."""
    from strato_peft.data import load_task_data
    from strato_peft.models import load_model, load_tokenizer
    from strato_peft.training.arguments import common_arguments
    from strato_peft.training.trainers import build_trainer
    from strato_peft.platform import resolve_platform

    cfg = make_config("llama", "lora")
    tok = load_tokenizer(cfg.model)
    data = load_task_data(cfg.task, cfg.seed)
    model = load_model(cfg.model, "causal_lm", None, "cpu", __import__("torch").float32)
    args = common_arguments(cfg, resolve_platform(), cfg.logging.output_dir, False, [])
    trainer, _ = build_trainer(cfg, "causal_lm", model, tok, data, args)
    ex = trainer.train_dataset[0]
    text = tok.decode(ex["input_ids"])
    assert text.startswith("<|user|> what is") and "<|assistant|> the answer is" in text
    completion = tok.decode([t for t, label in zip(ex["input_ids"], ex["labels"]) if label != -100])
    assert completion.startswith("the answer is") and completion.endswith("</s>") and "what is" not in completion


def test_packing_trains(make_config):
    cfg = make_config("llama", "lora", task={"packing": True})
    m = train(cfg).metrics
    assert m["train"]["global_steps"] == 3


def test_gradient_accumulation_and_checkpointing_train(make_config):
    cfg = make_config("llama", "lora", training={"gradient_accumulation_steps": 2, "gradient_checkpointing": True})
    m = train(cfg).metrics
    assert m["train"]["global_steps"] == 3 and m["loss_curve"]
