"""STRATO-PEFT's own pieces on tiny random models: sensitivity map, knapsack solver, plain-adapter export, and the
method end to end (search -> rsLoRA training -> plain peft adapter + strato_plan.json)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from strato_peft.strato.archive import GoExploreArchive, ProbeOutcome
from strato_peft.strato.sites import ModuleSite, adaptable_sites
from strato_peft.strato.solvers import AllocationProblem, get_solver
from strato_peft.strato.solvers.knapsack import greedy, uniform_fill


def tiny_llama(seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(cfg)


def random_batches(n: int, seed: int = 0, batch: int = 4, length: int = 12):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(0, 64, (batch, length), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


# --- sensitivity map -------------------------------------------------------------------------------------------

def test_sensitivity_is_the_spectrum_of_the_mean_gradient_and_restores_grad_flags():
    from strato_peft.strato.sensitivity import build_sensitivity

    model = tiny_llama()
    model.model.embed_tokens.weight.requires_grad_(False)
    sites = adaptable_sites(model)
    batches = random_batches(3)
    smap = build_sensitivity(model, batches, sites, max_rank=8)
    assert set(smap.spectra) == {s.name for s in sites} and smap.info["batches"] == 3
    # direct computation for one module
    name = "model.layers.1.mlp.down_proj"
    w = model.get_submodule(name).weight
    model.eval()
    grads = []
    for b in batches:
        model.zero_grad()
        model(**b).loss.backward()
        grads.append(w.grad.clone())
    expected = torch.linalg.svdvals(torch.stack(grads).mean(0))[:8]
    torch.testing.assert_close(torch.tensor(smap.spectra[name]), expected, rtol=1e-4, atol=1e-7)
    # value: v(0) = 0, non-decreasing and concave in r
    vals = [smap.value(name, r) for r in range(0, 9)]
    gains = [b - a for a, b in zip(vals, vals[1:])]
    assert vals[0] == 0 and all(g >= 0 for g in gains) and all(x >= y - 1e-12 for x, y in zip(gains, gains[1:]))
    assert model.model.embed_tokens.weight.requires_grad is False
    assert all(p.requires_grad for n, p in model.named_parameters() if "embed" not in n)


def test_top_svd_randomized_path_matches_the_exact_one_and_leaves_the_rng_alone():
    from strato_peft.strato.sensitivity import top_svd

    g = torch.Generator().manual_seed(0)
    u0, _ = torch.linalg.qr(torch.randn(300, 12, generator=g))
    v0, _ = torch.linalg.qr(torch.randn(400, 12, generator=g))
    mat = u0 @ torch.diag(torch.logspace(1, -1, 12)) @ v0.T + 1e-4 * torch.randn(300, 400, generator=g)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    u, s, vh = top_svd(mat, 4, exact_up_to=0)  # 4 + 16 oversampling << 300: randomized
    assert torch.equal(torch.get_rng_state(), before)
    exact = torch.linalg.svd(mat, full_matrices=False)
    assert u.shape == (300, 4) and s.shape == (4,) and vh.shape == (4, 400)
    torch.testing.assert_close(s, exact.S[:4], rtol=1e-4, atol=1e-6)
    # the same subspaces (singular vectors up to sign)
    torch.testing.assert_close((vh @ exact.Vh[:4].T).abs(), torch.eye(4), atol=1e-3, rtol=0)
    torch.testing.assert_close((u.T @ exact.U[:, :4]).abs(), torch.eye(4), atol=1e-3, rtol=0)
    small = top_svd(mat[:40, :50], 4, exact_up_to=0)  # 40 <= 4 x 20: the exact SVD
    torch.testing.assert_close(small[1], torch.linalg.svdvals(mat[:40, :50])[:4])


def test_sensitivity_cache_is_reused_and_keyed_by_data(tmp_path):
    from strato_peft.strato.sensitivity import load_or_build

    model = tiny_llama()
    sites = adaptable_sites(model)
    first = load_or_build(tmp_path, {"model": "m"}, model, random_batches(2), sites, 4)
    again = load_or_build(tmp_path, {"model": "m"}, model, random_batches(2), sites, 4)
    other = load_or_build(tmp_path, {"model": "m"}, model, random_batches(2, seed=1), sites, 4)
    assert first.info["cached"] is False and again.info["cached"] is True and other.info["cached"] is False
    assert again.spectra == first.spectra and other.spectra != first.spectra
    assert len(list(tmp_path.glob("*.json"))) == 2
    assert set(again.directions) == set(first.directions) == {s.name for s in sites}
    for name, v in first.directions.items():
        torch.testing.assert_close(again.directions[name], v)
    # an entry whose vectors are missing is rebuilt, not half-loaded
    next(tmp_path.glob("*.safetensors")).unlink()
    rebuilt = [load_or_build(tmp_path, {"model": "m"}, model, random_batches(2, seed=s), sites, 4) for s in (0, 1)]
    assert sorted(m.info["cached"] for m in rebuilt) == [False, True]


def test_update_spectra_are_the_singular_values_of_each_modules_output_change_over_real_tokens():
    """The r x r moment shortcut equals the direct SVD of s * B A X over the unpadded tokens, per module; padded
    positions do not count; the directions are an orthonormal basis of B A's row space; the model is left as it was
    (train mode, no hooks)."""
    from peft import LoraConfig, get_peft_model

    from strato_peft.strato.layers import lora_layers
    from strato_peft.strato.update_map import update_spectra

    model = get_peft_model(tiny_llama(), LoraConfig(r=3, lora_alpha=6, target_modules=["q_proj", "down_proj"]))
    g = torch.Generator().manual_seed(1)
    for layer in lora_layers(model).values():  # a trained-looking update: B != 0
        layer.lora_B["default"].weight.data = torch.randn(layer.lora_B["default"].weight.shape, generator=g)
    batches = random_batches(2)
    batches[1]["attention_mask"][:, 8:] = 0  # padding at the end of the second batch
    inputs: dict[str, list[torch.Tensor]] = {}
    layers = lora_layers(model)
    handles = [layer.register_forward_hook(lambda m, i, o, n=n: inputs.setdefault(n, []).append(i[0].detach()))
               for n, layer in layers.items()]
    model.train()
    spectra, directions, tokens = update_spectra(model, batches)
    for h in handles:
        h.remove()
    assert model.training and tokens == 4 * 12 + 4 * 8
    assert all(not layer.lora_A["default"]._forward_hooks for layer in layers.values())
    for name, layer in layers.items():
        x = torch.cat([xs[m.bool()] for xs, m in zip(inputs[name], (b["attention_mask"] for b in batches))])
        dw = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
        expected = torch.linalg.svdvals(x @ dw.T.detach()) / math.sqrt(tokens)
        torch.testing.assert_close(torch.tensor(spectra[name]), expected[:3], rtol=1e-4, atol=1e-6)
        v = directions[name]
        torch.testing.assert_close(v @ v.T, torch.eye(3), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(dw.detach() @ v.T @ v, dw.detach(), rtol=1e-4, atol=1e-5)  # B A's row space


@pytest.mark.parametrize("kind,task", [("llama", "causal_lm"), ("bert", "classification")])
def test_update_map_trains_a_uniform_lora_measures_it_and_leaves_the_model_and_rng_alone(kind, task, make_config,
                                                                                         one_thread, tmp_path,
                                                                                         monkeypatch):
    """map_estimator 'update': the plan's map comes from a trained LoRA of map_rank on every candidate (its spectra
    have map_rank values; an untrained one would be all zeros), it is cached with the training in its key (another
    lr is another entry), the base model's weights and modules are unchanged, and the search draws no random number
    the training would have drawn."""
    from strato_peft.data import load_task_data
    from strato_peft.models import load_model, load_tokenizer
    from strato_peft.platform import resolve_platform
    from strato_peft.strato.planner import make_plan
    from strato_peft.training.seed import preserved_rng

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    strato = {"map_estimator": "update", "map_rank": 2, "sensitivity_batches": 2, "min_map_gain": 0.0}
    cfg = make_config(kind, "strato", task, peft={"budget": 0.5, "strato": strato}, training={"batch_size": 2})
    data = load_task_data(cfg.task, cfg.seed)
    model = load_model(cfg.model, task, 2 if task == "classification" else None, "cpu", torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = {n: type(m) for n, m in model.named_modules()}
    tokenizer, platform = load_tokenizer(cfg.model), resolve_platform("cpu")
    torch.manual_seed(7)
    with preserved_rng():
        plan = make_plan(cfg, model, tokenizer, data, platform, total_steps=20)
    draw = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(draw, torch.rand(1))
    assert plan.sensitivity["estimator"].startswith("singular values of the output change of LoRA r2 trained 2 steps")
    assert plan.sensitivity["cached"] is False
    sites = adaptable_sites(model)
    totals = plan.sensitivity["per_module_total"]
    assert set(totals) == {s.name for s in sites} and sum(v > 0 for v in totals.values()) > len(sites) // 2
    assert set(plan.directions) == {s.name for s in sites}
    assert plan.budget.usage(plan.predicted)["params"] <= 1.0 + 1e-9
    after = model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before) and {n: type(m) for n, m in model.named_modules()} == types
    again = make_plan(cfg, model, tokenizer, data, platform, total_steps=20)
    assert again.sensitivity["cached"] is True and again.allocation == plan.allocation
    other = make_config(kind, "strato", task, peft={"budget": 0.5, "strato": strato},
                        training={"batch_size": 2, "learning_rate": 5e-3})
    assert make_plan(other, model, tokenizer, data, platform, total_steps=20).sensitivity["cached"] is False
    # the map values ranks up to the rank it trained and no module gets more; by default that rank is the reference
    # rank (4) or, at a budget whose uniform LoRA has a higher rank (2x r4: rank 8), that one
    assert max(plan.allocation.values()) <= 2
    wide = make_config(kind, "strato", task, peft={"budget": 2.0, "strato": {**strato, "map_rank": None}},
                       training={"batch_size": 2})
    plan = make_plan(wide, model, tokenizer, data, platform, total_steps=20)
    assert plan.sensitivity["rank"] == 8 and max(plan.allocation.values()) <= 8


# --- gradient-aligned start -------------------------------------------------------------------------------------

def _first_b_gradients(model, batches):
    """The gradient norm of every LoRA B at the start (B = 0): how much of the weight gradient LoRA can use."""
    from strato_peft.strato.layers import lora_layers

    model.zero_grad()
    model.eval()
    for b in batches:
        model(**b).loss.backward()
    return {n: float(m.lora_B["default"].weight.grad.norm()) for n, m in lora_layers(model).items()}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gradient_init_aligns_a_with_the_gradient_and_keeps_outputs(arch):
    """A's rows = the map's top input directions at peft's row norm, B = 0 (outputs unchanged), and the first
    gradient of B then carries the top-r singular values of the weight gradient: more than a random A captures."""
    from peft import LoraConfig, get_peft_model

    from strato_peft.strato.layers import lora_layers
    from strato_peft.strato.init import apply_init
    from strato_peft.strato.sensitivity import build_sensitivity

    if arch == "llama":
        model = tiny_llama()
    else:
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=2, n_head=4, n_positions=64))
    sites = adaptable_sites(model)
    batches = random_batches(2)
    smap = build_sensitivity(model, batches, sites, max_rank=8)
    model.eval()
    with torch.no_grad():
        before = model(**batches[0]).logits
    r = 3
    scale = 2.0 / math.sqrt(r)
    wrapped = {}
    for init in ("kaiming", "gradient"):
        torch.manual_seed(1)
        m = get_peft_model(copy.deepcopy(model), LoraConfig(r=r, lora_alpha=2.0, use_rslora=True, lora_dropout=0.0,
                                                      target_modules=[s.name for s in sites]))
        norms = {n: float(layer.lora_A["default"].weight.detach().norm(dim=1).pow(2).mean().sqrt())
                 for n, layer in lora_layers(m).items()}
        summary = apply_init(m, init, smap.directions)
        assert summary["init"] == init
        if init == "gradient":
            assert summary["modules"] == len(sites) and summary["rows"] == r * len(sites)
            for n, layer in lora_layers(m).items():
                a = layer.lora_A["default"].weight
                torch.testing.assert_close(a.norm(dim=1), torch.full((r,), norms[n]), rtol=1e-4, atol=1e-6)
                # rows span the stored top-r directions
                torch.testing.assert_close(a / norms[n], smap.directions[n][:r], rtol=1e-4, atol=1e-5)
                assert not layer.lora_B["default"].weight.any()
        m.eval()
        with torch.no_grad():
            torch.testing.assert_close(m(**batches[0]).logits, before)
        wrapped[init] = (m, norms)
    grads = {init: _first_b_gradients(m, batches) for init, (m, _) in wrapped.items()}
    for n in grads["gradient"]:
        # |dL/dB| = scale * rho * sqrt(sum of the top r squared singular values of the summed weight gradient)
        expected = scale * wrapped["gradient"][1][n] * math.sqrt(smap.value(n, r)) * len(batches)
        assert grads["gradient"][n] == pytest.approx(expected, rel=1e-3)
        assert grads["gradient"][n] >= grads["kaiming"][n] * 0.999
    assert sum(grads["gradient"].values()) > 1.2 * sum(grads["kaiming"].values())


def test_gradient_init_leaves_modules_below_min_rank_at_peft_init():
    """``init_min_rank`` 2 (the default): rank-1 modules keep peft's random A, rank >= 2 ones get the directions."""
    from peft import LoraConfig, get_peft_model

    from strato_peft.config import validate_config
    from strato_peft.strato.init import apply_init
    from strato_peft.strato.layers import lora_layers
    from strato_peft.strato.sensitivity import build_sensitivity

    model = tiny_llama()
    sites = adaptable_sites(model)
    smap = build_sensitivity(model, random_batches(2), sites, max_rank=4)
    one, two = "model.layers.0.mlp.down_proj", "model.layers.1.self_attn.q_proj"
    torch.manual_seed(1)
    m = get_peft_model(model, LoraConfig(r=1, lora_alpha=2.0, use_rslora=True, target_modules=[one, two],
                                         rank_pattern={two: 2}))
    layers = lora_layers(m)
    a_one = layers[one].lora_A["default"].weight.detach().clone()
    default_min = validate_config({"peft": {"method": "strato"}}).peft.strato.init_min_rank
    summary = apply_init(m, "gradient", smap.directions, default_min)
    assert default_min == 2 and summary["modules"] == 1 and summary["kaiming_modules"] == 1
    torch.testing.assert_close(layers[one].lora_A["default"].weight, a_one)  # untouched
    a_two = layers[two].lora_A["default"].weight
    torch.testing.assert_close(a_two / a_two.norm(dim=1, keepdim=True), smap.directions[two][:2], rtol=1e-4, atol=1e-5)
    assert apply_init(m, "gradient", smap.directions, 1)["modules"] == 2


def test_gradient_init_rejects_directions_of_another_shape():
    from peft import LoraConfig, get_peft_model

    from strato_peft.strato.init import apply_init

    model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["model.layers.0.mlp.down_proj"]))
    with pytest.raises(ValueError, match="down_proj have 7 inputs"):
        apply_init(model, "gradient", {"model.layers.0.mlp.down_proj": torch.zeros(2, 7)})
    with pytest.raises(ValueError, match="strato.init"):
        apply_init(model, "svd", {})


# --- knapsack solver --------------------------------------------------------------------------------------------

def synthetic_problem(value_scale: dict[str, float], budget_params: int, d: int = 16, layers: int = 3,
                      max_rank: int = 6, archive=None, max_probes: int = 0) -> AllocationProblem:
    sites = [ModuleSite(f"layers.{i}.{k}", k, i, d, d) for i in range(layers) for k in value_scale]

    def value(site: ModuleSite, r: int) -> float:  # concave: geometric singular-value decay
        return value_scale[site.kind] * (1 + 0.3 * site.layer) * sum(0.6 ** i for i in range(r))

    def usage(site: ModuleSite, r: int) -> dict[str, float]:
        return {"params": r * (site.d_in + site.d_out) / budget_params}

    return AllocationProblem(sites, value, usage, {"params": 1.0}, max_rank, archive, max_probes, seed=0)


def brute_force(problem: AllocationProblem) -> float:
    best = 0.0
    for ranks in itertools.product(range(problem.max_rank + 1), repeat=len(problem.sites)):
        alloc = {s.name: r for s, r in zip(problem.sites, ranks) if r}
        if problem.fits(alloc):
            best = max(best, problem.surrogate(alloc))
    return best


def test_greedy_is_optimal_for_concave_values_at_equal_unit_costs():
    problem = synthetic_problem({"q": 1.0, "v": 3.0}, budget_params=7 * 32, layers=2, max_rank=4)
    alloc = greedy(problem, problem.value)
    assert problem.fits(alloc)
    assert problem.surrogate(alloc) == pytest.approx(brute_force(problem))
    assert sum(alloc.values()) == 7  # spends the whole budget


def test_a_uniform_floor_keeps_the_budgets_lora_and_places_only_the_leftover():
    """rank_floor: uniform. 6 sites of 32 params per rank, a budget of 9 rank units: the uniform LoRA is rank 1
    (6 units) and the greedy places the 3 left over where the map values them most; a budget of 12 units is rank 2
    exactly, so nothing is left and the knapsack trains that LoRA (map gain 0: the gate stays closed)."""
    from strato_peft.strato.planner import map_gain

    problem = synthetic_problem({"q": 0.2, "v": 3.0}, budget_params=9 * 32)
    free = greedy(problem, problem.value)
    assert set(free) < {s.name for s in problem.sites}  # without a floor the map drops the q modules
    problem.floor = uniform_fill(problem)
    assert set(problem.floor.values()) == {1} and len(problem.floor) == 6
    floored = greedy(problem, problem.value)
    assert problem.fits(floored) and sum(floored.values()) == 9
    assert all(floored[n] >= 1 for n in problem.floor)  # every module keeps LoRA r1's rank
    assert {n: r for n, r in floored.items() if r > 1} == {"layers.0.v": 2, "layers.1.v": 2, "layers.2.v": 2}
    assert map_gain(problem) > 0 and problem.surrogate(floored) < problem.surrogate(free)
    exact = synthetic_problem({"q": 0.2, "v": 3.0}, budget_params=12 * 32)
    exact.floor = uniform_fill(exact)
    assert greedy(exact, exact.value) == exact.floor == {s.name: 2 for s in exact.sites}
    assert map_gain(exact) == pytest.approx(0.0)
    assert get_solver("knapsack")(exact).allocation == exact.floor


def test_an_integer_floor_keeps_rank_k_everywhere_and_the_map_places_the_rest():
    """rank_floor: k. 6 sites of 32 params per rank, a budget of 12 units (LoRA r2 exactly): floor 1 keeps rank 1 on
    every site and the greedy places the 6 units left where the map values them most (the v sites, which it values
    15x the q sites), and the knapsack trains that. With the q sites valued like the v sites the rest goes one unit
    to each site: the uniform r2, LoRA's own shape at this cost."""
    from strato_peft.strato.planner import apply_rank_floor, map_gain

    cfg = SimpleNamespace(peft=SimpleNamespace(strato=SimpleNamespace(rank_floor=1)))
    problem = synthetic_problem({"q": 0.2, "v": 3.0}, budget_params=12 * 32)
    apply_rank_floor(cfg, problem)
    assert problem.floor == {s.name: 1 for s in problem.sites}
    floored = greedy(problem, problem.value)
    assert problem.fits(floored) and sum(floored.values()) == 12 and min(floored.values()) == 1
    assert all(floored[f"layers.{i}.q"] == 1 for i in range(3)) and sum(floored[f"layers.{i}.v"] for i in range(3)) == 9
    assert map_gain(problem) > 0 and get_solver("knapsack")(problem).allocation == floored
    alike = synthetic_problem({"q": 1.0, "v": 1.0}, budget_params=12 * 32)
    apply_rank_floor(cfg, alike)
    assert get_solver("knapsack")(alike).allocation == {s.name: 2 for s in alike.sites}


def test_an_integer_floor_that_does_not_fit_the_budget_names_the_field():
    from strato_peft.errors import ConfigError
    from strato_peft.strato.planner import apply_rank_floor

    problem = synthetic_problem({"q": 1.0, "v": 1.0}, budget_params=11 * 32)
    with pytest.raises(ConfigError, match=r"peft\.strato\.rank_floor: rank 2 on all 6 candidate modules uses "
                                          r"params 1\.091x of the budget"):
        apply_rank_floor(SimpleNamespace(peft=SimpleNamespace(strato=SimpleNamespace(rank_floor=2))), problem)


def test_a_narrow_module_caps_its_rank_at_its_smaller_side_in_the_floor_and_the_greedy():
    """A 2 -> 16 module cannot hold a rank above 2: a floor of 4 gives it 2, and the greedy, with budget to spare and
    the map valuing it most, grows it no further (the wide modules reach max_rank)."""
    from strato_peft.strato.planner import apply_rank_floor

    narrow = ModuleSite("layers.0.narrow", "narrow", 0, 2, 16)
    assert narrow.rank_limit() == 2 and narrow.rank_limit(6) == 2 and ModuleSite("w", "w", 0, 16, 16).rank_limit(6) == 6
    problem = synthetic_problem({"q": 1.0}, budget_params=10_000, layers=2)
    problem.sites = [*problem.sites, narrow]
    problem.value = lambda site, r: (10.0 if site.kind == "narrow" else 1.0) * sum(0.6 ** i for i in range(r))
    apply_rank_floor(SimpleNamespace(peft=SimpleNamespace(strato=SimpleNamespace(rank_floor=4))), problem)
    assert problem.floor == {"layers.0.q": 4, "layers.1.q": 4, "layers.0.narrow": 2}
    assert greedy(problem, problem.value) == {"layers.0.q": 6, "layers.1.q": 6, "layers.0.narrow": 2}


def test_knapsack_beats_uniform_and_probes_choose_through_the_archive():
    calls = []

    def probe(alloc):
        calls.append(dict(alloc))
        return ProbeOutcome(score=-1.0 / (1 + sum(alloc.values())))

    problem = synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=18 * 32)
    archive = GoExploreArchive(problem.sites, probe)
    problem.archive, problem.max_probes = archive, 2
    result = get_solver("knapsack")(problem)
    assert problem.fits(result.allocation)
    assert problem.surrogate(result.allocation) > problem.surrogate(uniform_fill(problem))
    assert result.probes == len(calls) == 2 and len(result.candidates) >= 2
    assert sum(1 for c in result.candidates if "score" in c) == 2
    # two probes: the map's pick against the uniform LoRA it must beat (not two variants of the map)
    assert [c["label"] for c in result.candidates if "score" in c] == ["greedy value^1", "uniform"]
    # the same problem again: every candidate's cell is archived, nothing is re-run
    again = get_solver("knapsack")(problem)
    assert again.probes == 0 and again.reused == 2 and len(calls) == 2
    assert again.allocation == result.allocation


def test_share_values_rank_by_how_spread_a_modules_gradient_is_not_how_large():
    from strato_peft.strato.sensitivity import SensitivityMap

    smap = SensitivityMap({"layers.0.q": [10.0, 2.0, 1.0, 1.0], "layers.0.v": [1.0, 1.0, 1.0, 1.0]})
    assert smap.share("layers.0.q", 4) == pytest.approx(1.0) and smap.share("layers.0.v", 1) == pytest.approx(0.25)
    assert smap.share("layers.0.q", 1) == pytest.approx(100 / 106)
    assert SensitivityMap({"m": [0.0, 0.0]}).share("m", 2) == 0.0  # no gradient: no value, not a division by 0
    problem = synthetic_problem({"q": 1.0, "v": 1.0}, budget_params=4 * 32, layers=1, max_rank=4)
    by_gradient = greedy(problem, lambda site, r: smap.value(site.name, r))
    by_share = greedy(problem, lambda site, r: smap.share(site.name, r))
    # the large rank-1-ish gradient takes the rank under 'gradient'; under 'share' its first direction is enough
    assert by_gradient["layers.0.q"] > by_share["layers.0.q"] == 1
    assert by_share["layers.0.v"] == 3


def test_without_probes_knapsack_trains_the_candidate_the_map_values_most():
    """Costs per rank differ (a: 32 params, b: 96), so the greedy spends everything on a (value 3.4) while rank 1 on
    both, the uniform LoRA, is valued 3.5: without probes the solver must not take the greedy's pick on trust."""
    sites = [ModuleSite("layers.0.a", "a", 0, 16, 16), ModuleSite("layers.0.b", "b", 0, 48, 48)]
    values = {"a": [0.0, 1.0, 1.9, 2.7, 3.4], "b": [0.0, 2.5, 2.6, 2.7, 2.8]}
    problem = AllocationProblem(sites, lambda site, r: values[site.kind][r],
                                lambda site, r: {"params": r * (site.d_in + site.d_out) / 128}, {"params": 1.0}, 4,
                                None, 0, seed=0)
    assert greedy(problem, problem.value) == {"layers.0.a": 4}
    result = get_solver("knapsack")(problem)
    assert result.allocation == uniform_fill(problem) == {"layers.0.a": 1, "layers.0.b": 1}
    assert result.details["chosen"] == "uniform" and result.probes == 0


def test_map_gain_is_the_maps_relative_preference_over_uniform():
    from strato_peft.strato.planner import map_gain

    flat = synthetic_problem({"q": 1.0, "v": 1.0}, budget_params=12 * 32)
    flat.value = lambda site, r: sum(0.6 ** i for i in range(r))  # the same value everywhere: uniform is best
    assert map_gain(flat) == pytest.approx(0.0, abs=1e-12)
    skewed = synthetic_problem({"q": 0.2, "v": 3.0}, budget_params=12 * 32)
    expected = skewed.surrogate(greedy(skewed, skewed.value)) / skewed.surrogate(uniform_fill(skewed)) - 1
    assert map_gain(skewed) == pytest.approx(expected) and map_gain(skewed) > 0.2
    assert map_gain(synthetic_problem({"q": 1.0}, budget_params=8)) is None  # no uniform LoRA fits


@pytest.mark.parametrize("budget_units,expected", [(5, 1), (9, 1), (17, 1), (18, 2), (40, 4)])
def test_budget_rank_is_the_uniform_rank_that_fills_the_budget_and_one_below_it(budget_units, expected):
    from strato_peft.strato.planner import budget_rank

    assert budget_rank(synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=budget_units * 32)) == expected


def test_uniform_solver_is_the_uniform_lora_that_fills_the_budget_without_probes():
    problem = synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=18 * 32)
    problem.archive = GoExploreArchive(problem.sites, lambda a: pytest.fail("the uniform solver must not probe"))
    problem.max_probes = 3
    result = get_solver("uniform")(problem)
    assert result.allocation == uniform_fill(problem) and len(set(result.allocation.values())) == 1
    assert problem.fits(result.allocation) and result.probes == 0
    assert not problem.fits({n: r + 1 for n, r in result.allocation.items()})


def test_top_modules_fill_puts_the_start_rank_where_the_map_values_it_most_per_cost():
    from strato_peft.strato.solvers.knapsack import top_modules_fill

    # 9 sites of 32 params per rank unit; 12 units fit: uniform rank 1 everywhere, or rank 2 on 6 of the 9 sites
    problem = synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=12 * 32)
    assert set(uniform_fill(problem).values()) == {1}
    alloc = top_modules_fill(problem, 2)
    assert set(alloc.values()) == {2} and len(alloc) == 6 and problem.fits(alloc)
    ranked = sorted(problem.sites, key=lambda s: problem.value(s, 2), reverse=True)  # equal costs: by value
    assert set(alloc) == {s.name for s in ranked[:6]}
    assert all(not problem.fits({**alloc, s.name: 2}) for s in problem.sites if s.name not in alloc)
    # a site of 4x the cost, valued above every o and q site at rank 2: a ranking by value alone would take it
    # (with the three v sites it fills 14 units), a ranking by value per unit of cost does not
    problem = synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=14 * 32)
    wide = ModuleSite("layers.9.wide", "wide", 9, 16, 112)
    raw = problem.value
    problem.value = lambda s, r: 12.5 * raw(problem.sites[0], r) if s is wide else raw(s, r)
    problem.sites.append(wide)
    by_value = sorted(problem.sites, key=lambda s: problem.value(s, 2), reverse=True)
    assert [s.kind for s in by_value[:4]] == ["v", "v", "v", "wide"]
    alloc = top_modules_fill(problem, 2)
    assert wide.name not in alloc and len(alloc) == 7 and problem.fits(alloc)
    assert sum(s.kind == "o" for s in problem.sites if s.name in alloc) == 3


def test_breadth_solver_gives_rank_one_to_the_best_modules_before_rank_two_anywhere():
    from strato_peft.strato.solvers.breadth import level_fill

    # 9 sites of 32 params per rank unit. 5 units: the greedy piles rank on the v sites (the map's largest values);
    # the level fill puts rank 1 on the 5 sites of best value per cost and leaves 4 without an adapter
    problem = synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=5 * 32)
    assert max(greedy(problem, problem.value).values()) > 1
    result = get_solver("breadth")(problem)
    assert set(result.allocation.values()) == {1} and len(result.allocation) == 5 and result.probes == 0
    ranked = sorted(problem.sites, key=lambda s: problem.value(s, 1), reverse=True)
    assert set(result.allocation) == {s.name for s in ranked[:5]}
    # 12 units: every site at rank 1 (the uniform LoRA), then rank 2 on the 3 sites whose second unit is worth most
    problem = synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=12 * 32)
    alloc = level_fill(problem)
    assert len(alloc) == 9 and sorted(alloc.values()) == [1] * 6 + [2] * 3 and problem.fits(alloc)
    assert {n for n, r in alloc.items() if r == 2} == {f"layers.{i}.v" for i in range(3)}
    # nothing fits: a clear error, not an empty adapter
    with pytest.raises(ValueError, match="breadth: rank 1 on any one"):
        get_solver("breadth")(synthetic_problem({"q": 1.0}, budget_params=8))


def test_layers_solver_fills_whole_blocks_by_their_summed_value():
    """Blocks of 3 sites (96 params per rank unit). The map values q near zero, yet the layers solver gives q its
    block's rank: 8 units fit two whole blocks at rank 1 (the deeper two, valued most), and the 2 units left go to the
    third block's sites of most value (v, o), not to nothing; module by module (breadth) 6 units go to v and o
    everywhere and none to q."""
    from strato_peft.strato.solvers.breadth import layer_groups

    problem = synthetic_problem({"q": 0.001, "v": 3.0, "o": 1.0}, budget_params=8 * 32)
    result = get_solver("layers")(problem)
    assert result.allocation == {**{f"layers.{i}.{k}": 1 for i in (1, 2) for k in ("q", "v", "o")},
                                 "layers.0.v": 1, "layers.0.o": 1}
    assert result.solver == "layers" and result.probes == 0
    breadth = get_solver("breadth")(synthetic_problem({"q": 0.001, "v": 3.0, "o": 1.0}, budget_params=6 * 32))
    assert not any(n.endswith(".q") for n in breadth.allocation) and len(breadth.allocation) == 6
    # 13 units: every block at rank 1 (9), then rank 2 on the deepest block (3 more); of the next block's 3 the
    # one unit left goes to its v
    alloc = get_solver("layers")(synthetic_problem({"q": 0.001, "v": 3.0, "o": 1.0}, budget_params=13 * 32)).allocation
    assert sorted(alloc.values()) == [1] * 5 + [2] * 4 and {n for n, r in alloc.items() if r == 2} == {
        *(f"layers.2.{k}" for k in ("q", "v", "o")), "layers.1.v"}
    # a site outside the blocks is a block of its own
    sites = [ModuleSite("enc.0.a", "a", 0, 4, 4), ModuleSite("enc.0.b", "b", 0, 4, 4), ModuleSite("pooler", "p", None,
                                                                                                    4, 4)]
    assert [[s.name for s in g] for g in layer_groups(sites)] == [["enc.0.a", "enc.0.b"], ["pooler"]]


@pytest.mark.parametrize("budget_units,expected", [(12, "top modules at rank 2"), (18, "uniform")])
def test_uniform_solver_goes_sparse_only_below_its_min_rank(budget_units, expected):
    problem = synthetic_problem({"q": 0.2, "v": 3.0, "o": 1.0}, budget_params=budget_units * 32)
    result = get_solver("uniform")(problem, min_rank=2)
    assert result.details["chosen"] == expected and problem.fits(result.allocation)
    assert set(result.allocation.values()) == {2}
    assert len(result.allocation) == (6 if budget_units == 12 else 9)
    assert get_solver("uniform")(problem).allocation == uniform_fill(problem)  # min_rank 1: LoRA's own shape


def test_archive_cells_are_coarse_and_starts_prefer_good_rarely_visited_cells():
    problem = synthetic_problem({"q": 1.0, "v": 1.0}, budget_params=10_000)
    archive = GoExploreArchive(problem.sites, lambda a: ProbeOutcome(score=float(sum(a.values()))))
    a = {s.name: 5 for s in problem.sites}
    b = dict(a, **{problem.sites[0].name: 6})   # same log2 bucket: same cell
    c = {s.name: 1 for s in problem.sites}
    assert archive.cell(a) == archive.cell(b) != archive.cell(c)
    archive.evaluate(a)
    archive.evaluate(b)
    archive.evaluate(c)
    assert archive.n_probes == 2 and archive.reused == 1 and archive.best().allocation == a
    starts = archive.starts(200, random.Random(0))
    assert starts.count(a) > starts.count(c)


# --- export ------------------------------------------------------------------------------------------------------

def test_export_is_a_plain_peft_adapter_with_one_global_scale(tmp_path):
    from peft import PeftModel, get_peft_model
    from safetensors.torch import load_file

    from strato_peft.strato.export import check_patterns, export_plain_adapter, training_lora_config

    model = tiny_llama()
    alloc = {"model.layers.0.self_attn.q_proj": 3, "model.layers.1.self_attn.q_proj": 1,
             "model.layers.1.mlp.down_proj": 5}
    peft_model = get_peft_model(model, training_lora_config(alloc, alpha=4.0, dropout=0.0, task_type="CAUSAL_LM"))
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_()
    ids = torch.randint(0, 64, (2, 10))
    peft_model.eval()
    with torch.no_grad():
        before = peft_model(input_ids=ids).logits
    exported = export_plain_adapter(peft_model, tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert sorted(cfg["target_modules"]) == sorted(alloc) and cfg["rank_pattern"] == alloc
    assert cfg["use_rslora"] is False and cfg["lora_alpha"] == cfg["r"] == 5
    assert all(cfg["alpha_pattern"][n] / r == 1.0 for n, r in alloc.items())
    assert exported["rank_pattern"] == alloc

    reloaded = PeftModel.from_pretrained(tiny_llama(), tmp_path / "adapter").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, before, rtol=1e-5, atol=1e-5)
    merged = PeftModel.from_pretrained(tiny_llama(), tmp_path / "adapter").merge_and_unload()
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, before, rtol=1e-4, atol=1e-4)
    # a server that applies one global lora_alpha / r and ignores the patterns computes the same weights
    tensors = load_file(tmp_path / "adapter" / "adapter_model.safetensors")
    base = tiny_llama()
    for name in alloc:
        a = tensors[f"base_model.model.{name}.lora_A.weight"]
        b = tensors[f"base_model.model.{name}.lora_B.weight"]
        delta = (cfg["lora_alpha"] / cfg["r"]) * b @ a
        expected = merged.get_submodule(name).weight - base.get_submodule(name).weight
        torch.testing.assert_close(delta, expected, rtol=1e-4, atol=1e-5)
    # a pattern key that selects several modules (or none) is refused
    with pytest.raises(ValueError, match="selects"):
        check_patterns(reloaded, {"q_proj": 2})
    with pytest.raises(ValueError, match="no module"):
        check_patterns(reloaded, {"model.layers.0.mlp.up_proj": 2})


# --- the method end to end ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,task,scheduler,solver,min_gain,fraction,init,map_value", [
    ("llama", "causal_lm", True, "knapsack", 0.0, 1.0, "gradient", "gradient"),
    ("bert", "classification", False, "knapsack", 0.0, 1.0, None, "share"),
    ("gpt2", "causal_lm", False, "ppo", 0.0, 1.0, "gradient", "gradient"),
    ("bert", "classification", False, "ppo", 1e9, 1.0, None, "gradient"),
    ("llama", "causal_lm", False, "knapsack", 0.0, 0.15, None, "share")])
def test_strato_run_searches_trains_and_exports_a_plain_adapter(kind, task, scheduler, solver, min_gain, fraction,
                                                                init, map_value, make_config, tiny_root, monkeypatch,
                                                                tmp_path):
    """min_gain 1e9: the map never separates enough to search, so the uniform LoRA trains and no probe runs; fraction
    0.15: two 2-step probes do not fit in 15% of 12 steps, so no search either."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from strato_peft.training.run import train

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    cfg = make_config(kind, "strato", task, peft={"budget": 0.5, "solver": solver,
                                                  "strato": {"max_probes": 2, "probe_steps": 2, "ppo_timesteps": 512,
                                                                             "sensitivity_batches": 2,
                                                                             "scheduler": scheduler,
                                                                             "scheduler_interval": 2,
                                                                             "min_map_gain": min_gain,
                                                                             "max_search_fraction": fraction,
                                                                             "map_value": map_value,
                                                                             **({"init": init} if init else {})}},
                      training={"max_steps": 12})
    result = train(cfg)
    adapter = result.run_dir / "adapter"
    plan = json.loads((adapter / "strato_plan.json").read_text())
    conf = json.loads((adapter / "adapter_config.json").read_text())
    assert "strato" not in json.dumps(conf).lower()  # a plain peft LoRA config
    assert plan["search"]["sensitivity_seconds"] > 0 and plan["search"]["map_gain"] is not None
    assert plan["search"]["map_value"] == map_value
    if min_gain == 0 and fraction == 1.0:
        assert plan["search"]["searched"] is True and plan["search"]["probes"] == 2
        assert plan["search"]["skipped"] is None
    else:
        assert plan["search"]["searched"] is False and plan["search"]["probes"] == 0
        assert ("min_map_gain" if min_gain else "max_search_fraction") in plan["search"]["skipped"]
        sites = adaptable_sites(result.model)
        assert set(plan["allocation"]) == {s.name for s in sites} and set(plan["allocation"].values()) == {2}
    assert plan["final_ranks"] == conf["rank_pattern"]
    # rsLoRA scale = LoRA's at the uniform rank that fills the budget (0.5 x r=4 on every module: r=2)
    assert plan["rslora_alpha"] == pytest.approx(8 / math.sqrt(2))
    assert all(u <= 1.0 + 1e-9 for u in plan["budget_usage"].values())
    lora_params = sum(r * (s.d_in + s.d_out) for s in adaptable_sites(result.model)
                      for n, r in conf["rank_pattern"].items() if n == s.name)
    assert lora_params <= plan["budget"]["limits"]["params"]
    if scheduler:  # the schedule is logged and replays from the searched allocation to the exported ranks
        assert plan["scheduler"]["history"], "the scheduler changed no rank in 12 steps"
        ranks = dict(plan["allocation"])
        for event in plan["scheduler"]["history"]:
            assert ranks[event["module"]] == event["old_rank"]
            ranks[event["module"]] = event["new_rank"]
        assert ranks == conf["rank_pattern"]
    else:
        assert conf["rank_pattern"] == plan["allocation"]
        assert lora_params == plan["predicted_cost"]["params"]
    assert result.metrics["strato"]["modules"] == len(plan["allocation"]) and plan["solver"] == solver
    start = result.metrics["strato"]["init"]
    if init == "gradient":  # the gradient-aligned A on every chosen module of rank >= init_min_rank (2, the
        # default; this allocation is rank 2 everywhere, so every module), peft's A on the others
        aligned = {n: r for n, r in plan["allocation"].items() if r >= 2}
        assert start == {"init": "gradient", "min_rank": 2, "modules": len(aligned), "rows": sum(aligned.values()),
                         "kaiming_modules": len(plan["allocation"]) - len(aligned)}
        assert start["modules"] > 0
    else:  # the default: peft's own random A
        assert start == {"init": "kaiming"}

    cls = AutoModelForSequenceClassification if task == "classification" else AutoModelForCausalLM
    kwargs = {"num_labels": 2} if task == "classification" else {}
    reloaded = PeftModel.from_pretrained(cls.from_pretrained(tiny_root / kind, **kwargs), adapter).eval()
    from tiny import make_tokenizer

    enc = make_tokenizer(kind)(["what is two plus three"], return_tensors="pt")
    result.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**enc).logits, result.model(**enc).logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fill", ["uniform", "top_modules"])
def test_low_budget_fill_decides_what_trains_where_the_uniform_rank_is_below_the_start(fill, make_config,
                                                                                       monkeypatch, tmp_path):
    """0.25 x LoRA r=4 = rank 1 on every module, below init_min_rank 2; the search is skipped (min_map_gain)."""
    from strato_peft.training.run import train

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    cfg = make_config("llama", "strato", "causal_lm", peft={"budget": 0.25, "strato": {
        "sensitivity_batches": 2, "scheduler": False, "min_map_gain": 1e9, "low_budget_fill": fill,
        "init": "gradient"}},
        training={"max_steps": 4})
    result = train(cfg)
    plan = json.loads((result.run_dir / "adapter" / "strato_plan.json").read_text())
    sites = adaptable_sites(result.model)
    start = result.metrics["strato"]["init"]
    assert plan["search"]["searched"] is False and all(u <= 1.0 + 1e-9 for u in plan["budget_usage"].values())
    assert plan["rslora_alpha"] == pytest.approx(8.0)  # LoRA's scale at the budget's uniform rank (1)
    if fill == "uniform":  # LoRA r=1's shape; the gradient start applies nowhere
        assert set(plan["allocation"]) == {s.name for s in sites} and set(plan["allocation"].values()) == {1}
        assert start["modules"] == 0 and start["kaiming_modules"] == len(sites)
    else:  # rank 2 on about half the modules (as many as fit), every one of them started along the gradient
        assert set(plan["allocation"].values()) == {2} and len(sites) // 3 < len(plan["allocation"]) < len(sites)
        assert plan["search"]["candidates"][0]["label"] == "top modules at rank 2"
        assert start["modules"] == len(plan["allocation"]) and start["kaiming_modules"] == 0
        assert plan["budget_usage"]["params"] > 0.9


def test_probes_train_on_the_same_first_rows_their_steps_use(make_config, tiny_root, monkeypatch):
    """A probe tokenizes only steps x batch rows, the same rows for every candidate; so does the sensitivity pass."""
    import strato_peft.strato.probe as probe_mod
    from strato_peft.data import load_task_data

    cfg = make_config("llama", "strato", training={"batch_size": 2, "gradient_accumulation_steps": 2})
    data = load_task_data(cfg.task, cfg.seed)
    seen, eval_sizes = [], []

    class Fake:
        def __init__(self, rows):
            self.rows = rows

        def train(self):
            pass

        def evaluate(self):
            return {"eval_loss": 1.5}

        def get_train_dataloader(self):
            return iter([{"input_ids": torch.ones(2, 3)}] * 10)

    def fake_trainer(cfg_, model, tok, data_, platform, workdir, steps, callbacks=()):
        seen.append([r["prompt"] for r in data_.train])
        eval_sizes.append(len(data_.eval))
        return Fake(data_.train)

    monkeypatch.setattr(probe_mod, "_trainer", fake_trainer)
    probe = probe_mod.make_probe(cfg, tiny_llama(), None, data, None, steps=2, alpha=4.0)
    site = adaptable_sites(tiny_llama())[0]
    out = [probe({site.name: 2}), probe({site.name: 4})]
    assert [o.score for o in out] == [-1.5, -1.5]
    assert seen[0] == seen[1] == [r["prompt"] for r in data.train[:8]]  # 2 steps x batch 2 x accumulation 2
    batches = probe_mod.sensitivity_batches(cfg, None, None, data, None, n=3)
    assert len(batches) == 3 and seen[2] == [r["prompt"] for r in data.train[:12]]
    assert eval_sizes[2] == 1  # the map's pass reads no eval rows: it does not tokenize the whole held-out set


@pytest.mark.parametrize("kind,task", [("llama", "causal_lm"), ("bert", "classification")])
def test_a_probe_leaves_the_base_model_exactly_as_it_was(kind, task, make_config, one_thread):
    """Probes put LoRA into the base model and take it out again: same modules, same weights, same grad flags,
    and the same score when repeated (nothing leaks from one probe into the next)."""
    from strato_peft.data import load_task_data
    from strato_peft.models import load_model, load_tokenizer
    from strato_peft.platform import resolve_platform
    from strato_peft.strato.probe import make_probe, validation_split

    cfg = make_config(kind, "strato", task, training={"batch_size": 2})
    data = load_task_data(cfg.task, cfg.seed)
    model = load_model(cfg.model, task, 2 if task == "classification" else None, "cpu", torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = {n: type(m) for n, m in model.named_modules()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    probe_data, _ = validation_split(data, 4, cfg.seed)
    probe = make_probe(cfg, model, load_tokenizer(cfg.model), probe_data, resolve_platform("cpu"), 2, 4.0)
    alloc = {s.name: 2 for s in adaptable_sites(model)[:3]}
    first, second = probe(alloc), probe(alloc)
    assert first.score == pytest.approx(second.score, abs=1e-6)
    assert {n: type(m) for n, m in model.named_modules()} == types
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


@pytest.mark.parametrize("kind,task", [("bert", "classification"), ("llama", "causal_lm")])
def test_strato_training_the_uniform_lora_trains_exactly_the_lora_of_that_seed(kind, task, make_config, tmp_path,
                                                                                monkeypatch, one_thread):
    """The search (map batches, probes, PPO) draws no number the training would have drawn: with the uniform
    allocation and no scheduler, STRATO's losses and its adapter's update (scale * B @ A, per module) are exactly
    those of LoRA at the same rank and seed, so any difference between the two arms is the allocation's or the
    scheduler's, never a different random draw."""
    from safetensors.torch import load_file

    from strato_peft.training.run import train

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    training = {"max_steps": 6, "save_steps": 100}
    lora = train(make_config(kind, "lora", task, peft={"target_modules": "all-linear", "dropout": 0.1},
                             training=training))
    strato = train(make_config(kind, "strato", task, training=training,
                               peft={"budget": 1.0, "solver": "uniform", "dropout": 0.1,
                                     "strato": {"scheduler": False, "sensitivity_batches": 2}}))

    def losses(result):
        return [row["loss"] for row in result.metrics["loss_curve"] if "loss" in row]

    def updates(result):
        conf = json.loads((result.run_dir / "adapter" / "adapter_config.json").read_text())
        weights = load_file(str(result.run_dir / "adapter" / "adapter_model.safetensors"))
        out = {}
        for key, a in weights.items():
            if ".lora_A." in key:
                name = key.split("base_model.model.", 1)[1].split(".lora_A.", 1)[0]
                scale = conf["alpha_pattern"].get(name, conf["lora_alpha"]) / conf["rank_pattern"].get(name, conf["r"])
                out[name] = scale * weights[key.replace(".lora_A.", ".lora_B.")] @ a
        return out

    assert len(losses(lora)) == 6 and losses(strato) == losses(lora)
    want, got = updates(lora), updates(strato)
    assert set(got) == set(want) and all(w.abs().max() > 0 for w in want.values())  # trained, not the B = 0 start
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("solver", ["breadth", "layers"])
def test_level_fill_run_below_uniform_rank_one_exports_rank_one_on_the_maps_modules(solver, make_config, tiny_root,
                                                                                    monkeypatch, tmp_path):
    """At 0.1x of LoRA r4 (0.4 rank units per module) no uniform LoRA fits: the breadth (layers) solver trains rank 1
    on the modules (blocks) the map values most per cost and the adapter lists those alone."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from strato_peft.training.run import train

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    cfg = make_config("bert", "strato", "classification", training={"max_steps": 4},
                      peft={"budget": 0.1, "solver": solver,
                            "strato": {"scheduler": False, "sensitivity_batches": 2}})
    result = train(cfg)
    adapter = result.run_dir / "adapter"
    plan = json.loads((adapter / "strato_plan.json").read_text())
    conf = json.loads((adapter / "adapter_config.json").read_text())
    sites = adaptable_sites(result.model)
    assert plan["solver"] == solver and plan["search"]["probes"] == 0
    # below LoRA r1's cost the rsLoRA scale is LoRA r1's (alpha / 1), not the reference rank's (alpha / sqrt(4))
    assert plan["rslora_alpha"] == pytest.approx(cfg.peft.alpha)
    assert set(plan["allocation"].values()) == {1} and 0 < len(plan["allocation"]) < len(sites)
    assert conf["rank_pattern"] == plan["allocation"] and sorted(conf["target_modules"]) == sorted(plan["allocation"])
    assert all(u <= 1.0 + 1e-9 for u in plan["budget_usage"].values())
    base = AutoModelForSequenceClassification.from_pretrained(str(tiny_root / "bert"))
    loaded = PeftModel.from_pretrained(base, str(adapter))
    assert sum(p.numel() for n, p in loaded.named_parameters() if "lora_" in n) == plan["predicted_cost"]["params"]


def test_preserved_rng_undoes_every_draw_inside_it():
    import numpy as np

    from strato_peft.training.seed import preserved_rng, seed_everything

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(1))

    seed_everything(3)
    expected = draws()
    seed_everything(3)
    with preserved_rng():
        draws()
        torch.manual_seed(99)  # even a reseed inside (a probe seeds itself) leaves the outside stream alone
    assert draws() == expected


def test_strato_dry_run_prints_the_budget(make_config, tmp_path, capsys):
    import yaml

    from strato_peft.cli import main

    cfg = make_config("llama", "strato", peft={"budget": 0.5})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_yaml_dict()))
    assert main(["train", "--config", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "STRATO budget:" in out and "0.5 x LoRA r=4 on all-linear" in out and "of the budget" in out


@pytest.mark.parametrize("peft,needle", [
    ({"budget": 0.0001}, "peft.budget"),
    ({"lambda": {"latency": 1.0}}, "peft.lambda"),
])
def test_strato_bad_budget_is_a_one_line_error(make_config, peft, needle):
    from strato_peft.errors import ConfigError
    from strato_peft.training.run import dry_run

    with pytest.raises(ConfigError, match=needle):
        dry_run(make_config("llama", "strato", peft=peft))


def test_rank_floor_places_the_leftover_in_the_dry_run_and_is_refused_with_ppo(make_config):
    from strato_peft.errors import ConfigError
    from strato_peft.training.run import dry_run

    # 0.375 x LoRA r4 = 1.5 rank units per module: rank 1 on each of the 14 modules, the rest placed on top
    floored = make_config("llama", "strato", peft={"budget": 0.375, "strato": {"rank_floor": "uniform"}})
    plan = dry_run(floored)["strato"]
    assert plan["modules"] == 14 and plan["total_rank"] > 14 and plan["budget_usage"]["params"] <= 1.0
    with pytest.raises(ConfigError, match="rank_floor"):
        dry_run(make_config("llama", "strato", peft={"budget": 0.375, "solver": "ppo",
                                                     "strato": {"rank_floor": "uniform"}}))
    # an integer floor: rank 1 fits 0.375 x LoRA r4 (1.5 units a module), rank 2 does not, and is refused by name
    plan = dry_run(make_config("llama", "strato", peft={"budget": 0.375, "strato": {"rank_floor": 1}}))["strato"]
    assert plan["modules"] == 14 and plan["total_rank"] > 14
    with pytest.raises(ConfigError, match=r"rank_floor: rank 2 on all 14 candidate modules uses params 1\.333x"):
        dry_run(make_config("llama", "strato", peft={"budget": 0.375, "strato": {"rank_floor": 2}}))


@pytest.mark.parametrize("floor, needle", [(0, "got 0"), (True, "got True"), ("2", "got '2'"),
                                           (64, "above max_rank 32")])
def test_a_bad_rank_floor_is_refused_at_load(make_config, floor, needle):
    from strato_peft.errors import ConfigError

    with pytest.raises(ConfigError, match=rf"peft\.strato.*{needle}"):
        make_config("llama", "strato", peft={"budget": 0.5, "strato": {"rank_floor": floor}})


@pytest.mark.parametrize("min_gain", [0.0, 1e9])
def test_rank_floor_in_the_search_places_the_leftover_only_where_the_map_gate_opens(min_gain, make_config,
                                                                                   monkeypatch, tmp_path):
    """The real search (map from data): with the gate open the floor (rank 1 everywhere at 0.375 x LoRA r4) keeps
    every module and the map places the leftover on top; with the gate closed the uniform LoRA trains alone and the
    leftover stays unspent, as without the floor (the map cannot tell where it would help)."""
    from strato_peft.training.run import search_plan

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    cfg = make_config("llama", "strato", peft={"budget": 0.375, "strato": {
        "rank_floor": "uniform", "min_map_gain": min_gain, "max_probes": 2, "probe_steps": 2,
        "max_search_fraction": 1.0, "sensitivity_batches": 2}}, training={"max_steps": 12})
    plan = search_plan(cfg)
    ranks = plan["allocation"]
    assert len(ranks) == 14 and min(ranks.values()) == 1 and plan["search"]["rank_floor"] == "uniform"
    assert plan["search"]["searched"] is (min_gain == 0.0) and plan["budget_usage"]["params"] <= 1.0 + 1e-9
    if min_gain:
        assert set(ranks.values()) == {1}
    else:
        assert sum(ranks.values()) > 14 and plan["budget_usage"]["params"] > 1.25 / 1.5


def test_probe_allowance_caps_the_probes_at_a_fraction_of_the_run():
    """Probes together stay within max_search_fraction of the run's steps, and never above max_probes."""
    from strato_peft.strato.planner import probe_allowance

    assert probe_allowance(3, 10, 126, 0.15) == 1      # 18 steps: one 10-step probe (the benchmark's addition run)
    assert probe_allowance(3, 10, 188, 0.15) == 2      # 28 steps: two (tweets)
    assert probe_allowance(3, 50, 1000, 0.15) == 3     # 150 steps: three, the configured maximum
    assert probe_allowance(3, 50, 10_000, 0.15) == 3
    assert probe_allowance(0, 10, 1000, 1.0) == 0


def test_config_accepts_exactly_the_registered_solvers():
    """One registration line per solver: the config's choices and the registry must not drift apart."""
    import typing

    from strato_peft.config.schema import PeftConfigSection
    from strato_peft.strato.solvers import available_solvers

    literal = next(a for a in typing.get_args(PeftConfigSection.model_fields["solver"].annotation) if a is not type(None))
    assert sorted(typing.get_args(literal)) == sorted(available_solvers())


def test_strato_plan_is_the_search_train_runs_without_training(make_config, tmp_path, monkeypatch, capsys):
    """`strato plan` runs the search `strato train` runs (same data, map, probes, seed) and writes that plan; it trains
    nothing and writes no run folder; it refuses another method and an existing --output without --overwrite."""
    import yaml

    from strato_peft.cli import main
    from strato_peft.training.run import train

    monkeypatch.setenv("STRATO_CACHE", str(tmp_path / "cache"))
    cfg = make_config("llama", "strato", peft={"budget": 0.5, "strato": {
        "max_probes": 2, "probe_steps": 2, "sensitivity_batches": 2, "min_map_gain": 0.0, "scheduler": False,
        "max_search_fraction": 1.0}},
        training={"max_steps": 12})
    path, out = tmp_path / "c.yaml", tmp_path / "plan.json"
    path.write_text(yaml.safe_dump(cfg.to_yaml_dict()))
    assert main(["plan", "--config", str(path), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "searched" in printed and f"Plan written to {out}" in printed
    plan = json.loads(out.read_text())
    assert plan["search"]["searched"] is True and plan["search"]["probes"] == 2
    assert not (tmp_path / "results").exists()  # nothing trained, no run folder
    trained = json.loads((train(cfg).run_dir / "adapter" / "strato_plan.json").read_text())
    assert plan["allocation"] == trained["allocation"] and plan["rslora_alpha"] == trained["rslora_alpha"]
    probed = [(r["cell"], r["score"]) for r in plan["search"]["archive"]["records"]]
    assert len(probed) == 2 and probed == [(r["cell"], r["score"]) for r in trained["search"]["archive"]["records"]]

    assert main(["plan", "--config", str(path), "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    lora = tmp_path / "lora.yaml"
    lora.write_text(yaml.safe_dump(make_config("llama", "lora").to_yaml_dict()))
    assert main(["plan", "--config", str(lora)]) == 2
    assert "peft.method" in capsys.readouterr().err
