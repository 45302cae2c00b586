"""The STRATO rank scheduler: function-preserving resizes, optimizer state transport, and a real Trainer run."""

from __future__ import annotations

import math

import pytest
import torch

from tiny import make_model_dir

from strato_peft.strato.layers import current_ranks, lora_layers
from strato_peft.strato.resize import delta_weight, grow_lora, set_module_rank, shrink_lora
from strato_peft.strato.scheduler import RankScheduler

MIXED = (2, 4, 8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sched_tiny")
    return {kind: make_model_dir(root, kind) for kind in ("llama", "gpt2")}


def _peft_model(path, randomise_b: bool = True, seed: int = 0):
    """Tiny base model + rsLoRA with mixed ranks on every linear layer (full names), B made non-zero."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from strato_peft.strato.sites import adaptable_sites

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    alloc = {s.name: MIXED[i % len(MIXED)] for i, s in enumerate(adaptable_sites(base))}
    cfg = LoraConfig(r=max(alloc.values()), lora_alpha=8.0, use_rslora=True, target_modules=sorted(alloc),
                     rank_pattern=dict(alloc), lora_dropout=0.0)
    model = get_peft_model(base, cfg)
    if randomise_b:
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_B["default"].weight.normal_(std=0.2)
    return model, alloc


def _ids(n=2, t=12, vocab=60, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(4, vocab, (n, t), generator=g)


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _site_cost(model):
    return {n: m.in_features + m.out_features for n, m in lora_layers(model).items()}


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_resizes_keep_function_and_truncate_to_best_rank_k(model_dirs, kind):
    model, alloc = _peft_model(model_dirs[kind])
    ids = _ids()
    ref = _logits(model, ids)
    names = list(alloc)

    # growth: function unchanged, scaling/rank/config updated
    for name in names[:3]:
        r = alloc[name]
        set_module_rank(model, name, r + 3)
        layer = lora_layers(model)[name]
        assert layer.r["default"] == r + 3
        assert layer.lora_A["default"].weight.shape[0] == r + 3 == layer.lora_B["default"].weight.shape[1]
        assert math.isclose(layer.scaling["default"], 8.0 / math.sqrt(r + 3))
        assert model.peft_config["default"].rank_pattern[name] == r + 3
    torch.testing.assert_close(_logits(model, ids), ref, atol=1e-5, rtol=1e-5)

    # shrink to the full rank: a pure re-parameterisation
    for name in names:
        layer = lora_layers(model)[name]
        before = delta_weight(layer)
        kept = shrink_lora(layer, "default", int(layer.r["default"]))
        assert kept == pytest.approx(1.0)
        torch.testing.assert_close(delta_weight(layer), before, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(_logits(model, ids), ref, atol=1e-4, rtol=1e-4)

    # shrink below: the best rank-k approximation of scaling * B @ A
    for name in names[:4]:
        layer = lora_layers(model)[name]
        r = int(layer.r["default"])
        k = max(1, r // 2 - 1)
        u, s, vh = torch.linalg.svd(delta_weight(layer).double())
        best = (u[:, :k] * s[:k]) @ vh[:k]
        kept = set_module_rank(model, name, k)
        assert kept == pytest.approx(float((s[:k] ** 2).sum() / (s ** 2).sum()), rel=1e-4)
        assert layer.r["default"] == k and math.isclose(layer.scaling["default"], 8.0 / math.sqrt(k))
        torch.testing.assert_close(delta_weight(layer).double(), best, atol=1e-5, rtol=1e-4)
        assert model.peft_config["default"].rank_pattern[name] == k
    assert model.peft_config["default"].rank_pattern == current_ranks(model)


def test_optimizer_state_is_transported(model_dirs):
    """Growth pads the moments; a full-rank re-parameterisation maps them exactly like the gradients."""
    model, alloc = _peft_model(model_dirs["llama"])
    ids = _ids()
    name = next(n for n, r in alloc.items() if r == 4)
    layer = lora_layers(model)[name]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.0, momentum=0.9)  # lr 0: the buffer is exactly the gradient

    def grads():
        model.train()
        model.zero_grad()
        model(input_ids=ids, labels=ids).loss.backward()

    grads()
    opt.step()
    old_a, old_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m_a, m_b = opt.state[old_a]["momentum_buffer"].clone(), opt.state[old_b]["momentum_buffer"].clone()
    c = math.sqrt(6 / 4)  # s_old / s_new for 4 -> 6 under rsLoRA
    grow_lora(layer, "default", 6, optimizer=opt)
    new_a, new_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert old_a not in opt.state and old_b not in opt.state
    torch.testing.assert_close(opt.state[new_a]["momentum_buffer"][:4], m_a)
    assert not opt.state[new_a]["momentum_buffer"][4:].any()
    torch.testing.assert_close(opt.state[new_b]["momentum_buffer"][:, :4], m_b / c)
    assert not opt.state[new_b]["momentum_buffer"][:, 4:].any()
    grads()  # the transported moments are the new parameters' gradients on the old components
    torch.testing.assert_close(new_a.grad[:4], m_a, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(new_b.grad[:, :4], m_b / c, atol=1e-6, rtol=1e-4)

    opt.state.clear()
    opt.step()  # fresh buffers = current gradients (lr 0)
    shrink_lora(layer, "default", 6, optimizer=opt)
    new_a, new_b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    m_a, m_b = opt.state[new_a]["momentum_buffer"].clone(), opt.state[new_b]["momentum_buffer"].clone()
    grads()
    torch.testing.assert_close(new_a.grad, m_a, atol=1e-6, rtol=1e-3)
    torch.testing.assert_close(new_b.grad, m_b, atol=1e-6, rtol=1e-3)

    ids_in_groups = {id(p) for g in opt.param_groups for p in g["params"]}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert ids_in_groups == trainable and {id(p) for p in opt.state} <= trainable


class _TokenData(torch.utils.data.Dataset):
    def __init__(self, n=64, t=16, vocab=60, seed=0):
        g = torch.Generator().manual_seed(seed)
        # a learnable pattern: every row counts up from a random start
        start = torch.randint(4, vocab - t, (n, 1), generator=g)
        self.ids = start + torch.arange(t)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def test_trainer_run_grows_shrinks_within_budget_and_reloads(model_dirs, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    path = model_dirs["llama"]
    model, alloc = _peft_model(path, randomise_b=False)  # peft's own init: B = 0
    per_rank = _site_cost(model)
    budget = sum(per_rank[n] * r for n, r in alloc.items())

    def fits(a):
        return sum(per_rank[n] * r for n, r in a.items()) <= budget

    sched = RankScheduler(fits, interval=5, warmup_steps=5, final_steps=10, grow_by=2, realloc_fraction=0.25,
                          min_score_ratio=1.0, max_rank=16)
    problems: list[str] = []
    losses: list[float] = []

    class Check(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
            opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
            in_groups = [p for g in opt.param_groups for p in g["params"]]
            trainable = [p for p in model.parameters() if p.requires_grad]
            if {id(p) for p in in_groups} != {id(p) for p in trainable} or len(in_groups) != len(trainable):
                problems.append(f"step {state.global_step}: param_groups differ from the trainable params")
            for p, st in opt.state.items():
                if not any(p is q for q in trainable):
                    problems.append(f"step {state.global_step}: stale optimizer state")
                for k, v in st.items():
                    if torch.is_tensor(v) and v.dim() and v.shape != p.shape:
                        problems.append(f"step {state.global_step}: state {k} shape {tuple(v.shape)} != {p.shape}")
            if not fits(current_ranks(model)):
                problems.append(f"step {state.global_step}: over budget")

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(logs["loss"])

    args = TrainingArguments(output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], max_steps=40,
                             per_device_train_batch_size=8, learning_rate=1e-2, logging_steps=5, save_strategy="no",
                             seed=0, disable_tqdm=True, dataloader_num_workers=0, warmup_steps=0)
    trainer = Trainer(model=model, args=args, train_dataset=_TokenData(), callbacks=[sched, Check()])
    trainer.train()

    assert not problems, problems[:5]
    assert losses and all(math.isfinite(x) for x in losses)
    assert sched.schedule == {"max_steps": 40, "warmup_steps": 5, "final_steps": 10, "interval": 5, "last_step": 30}

    # ranks changed both ways, only at scheduled steps, every change recorded and within the budget
    reasons = {e["reason"] for e in sched.history}
    assert reasons == {"grow", "shrink"}, sched.history
    assert {e["step"] for e in sched.history} <= {5, 10, 15, 20, 25, 30}
    ranks = dict(alloc)
    last_dir: dict[str, tuple[int, str]] = {}
    for step in sorted({e["step"] for e in sched.history}):
        for e in (e for e in sched.history if e["step"] == step):
            assert ranks[e["module"]] == e["old_rank"] != e["new_rank"]
            assert (e["new_rank"] > e["old_rank"]) == (e["reason"] == "grow")
            assert 1 <= e["new_rank"] <= 16 and math.isfinite(e["importance"])
            ranks[e["module"]] = e["new_rank"]
            prev = last_dir.get(e["module"])
            assert prev is None or prev[1] == e["reason"] or step - prev[0] > 5, ("changed back at once", e)
            last_dir[e["module"]] = (step, e["reason"])
        assert fits(ranks), step
    final = sched.final_ranks()
    assert ranks == final == current_ranks(model) == model.peft_config["default"].rank_pattern
    assert final != alloc
    assert sched.timeline[0] == {"step": 0, "total_rank": sum(alloc.values()),
                                 "lora_params": sum(per_rank[n] * r for n, r in alloc.items())}
    assert sched.timeline[-1]["total_rank"] == sum(final.values())
    logged = [h for h in trainer.state.log_history if "strato/total_rank" in h]
    assert logged and logged[-1]["strato/total_rank"] == sum(final.values())
    report = sched.report()
    assert report["history"] == sched.history and report["final_ranks"] == final

    # the saved adapter reloads with plain peft and computes the same logits
    ids = _ids(seed=3)
    want = _logits(model, ids)
    model.save_pretrained(tmp_path / "adapter")
    base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    reloaded = PeftModel.from_pretrained(base, tmp_path / "adapter")
    assert current_ranks(reloaded) == final
    torch.testing.assert_close(_logits(reloaded, ids), want, atol=1e-5, rtol=1e-5)


def test_config_defaults_are_fractions_of_the_run():
    sched = RankScheduler(lambda a: True)
    assert sched.resolve_schedule(1000) == {"max_steps": 1000, "warmup_steps": 100, "final_steps": 200,
                                            "interval": 100, "last_step": 800}
    assert [s for s in range(1001) if sched.is_reallocation_step(s)] == [100, 200, 300, 400, 500, 600, 700, 800]
    with pytest.raises(TypeError):
        RankScheduler(lambda a: True, intervall=5)
    with pytest.raises(ValueError):
        RankScheduler(lambda a: True, min_rank=0)
