"""The hallucination study's procedure (see `pipeline.hallucination` for the question and its parts): attribute,
choose an intervention on the calibration half, steer the held-out half, compare with baselines."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import numpy as np
import torch

from ..attribute import attribute
from ..models import Prompt
from ..models.table import MODALITIES
from ..steer import AddVector, Scale, steering
from ..world import WorldConfig
from ..world.text import chat_prompt
from .hallucination import (NO, YES, Case, Choice, StudyResult, StudySettings, answer_position_acts, encode_batches,
                            first_tokens, generated_answers, pearson, slice_cases, spearman, split_halves, token_id,
                            vqa_items)


def _modality_name(m) -> str:
    return m if isinstance(m, str) else MODALITIES[int(m)]


def attribute_cases(adapter, sae, layer: int, cases: list[Case], batch: int) -> dict:
    """Per case: modality shares of |attribution| and per-feature attribution summed over text / image tokens."""
    F = sae.cfg.n_latents
    text_CF, image_CF = np.zeros((len(cases), F)), np.zeros((len(cases), F))
    shares = []
    for lo in range(0, len(cases), batch):
        enc = adapter.encode([c.prompt for c in cases[lo : lo + batch]])
        att = attribute(adapter, sae, layer, enc, YES, NO)
        cols = att.table().to_pydict()
        for b, f, mod, a in zip(cols["example"], cols["feature"], cols["modality"], cols["attribution"]):
            if f < 0:
                continue
            name = _modality_name(mod)
            if name == "text":
                text_CF[lo + b, f] += a
            elif name == "image":
                image_CF[lo + b, f] += a
        shares += [att.modality_share(example=b) for b in range(len(enc.tables))]
    return {"text_CF": text_CF, "image_CF": image_CF, "shares": shares}


def exact_check(adapter, sae, layer: int, cases: list[Case]) -> tuple[float, float, dict]:
    """Pearson / Spearman of predicted vs exact effects of zeroing each of the top-50 features, pooled over cases;
    and the first case's attribution for the figure."""
    pred, exact, example = [], [], {}
    for i, case in enumerate(cases):
        enc = adapter.encode([case.prompt])
        att = attribute(adapter, sae, layer, enc, YES, NO, exact_top=50)
        cols = att.table().to_pydict()
        per_feature: dict[int, list[float]] = {}
        for f, a, e in zip(cols["feature"], cols["attribution"], cols["exact_effect"]):
            if f >= 0 and e == e:  # exact effect computed (not NaN)
                per_feature.setdefault(f, [0.0, e])[0] += a
        for a, e in per_feature.values():
            pred.append(a)
            exact.append(e)
        if i == 0:
            example = {"shares": att.modality_share(example=0), "heatmap": att.heatmap(0, 0, case.prompt.images[0]),
                       "image": case.prompt.images[0], "colour": case.colour,
                       "top": _pushing_yes(att.per_feature(example=0).to_pydict())}
    p, e = np.asarray(pred), np.asarray(exact)
    return pearson(p, e), spearman(p, e), example


def _pushing_yes(per_feature: dict, n: int = 5) -> list[tuple[int, float]]:
    """The n features whose removal lowers yes − no most (most negative −z·∂d/∂z), the error term left out."""
    pairs = [(f, a) for f, a in zip(per_feature["feature"], per_feature["attribution"]) if f >= 0]
    return sorted(pairs, key=lambda fa: fa[1])[:n]


def _interventions(choice: Choice, sae, vector_D: torch.Tensor | None) -> list:
    if choice.kind == "damp":
        return [Scale(f, choice.factor, tokens=choice.tokens) for f in choice.features]
    if choice.kind == "boost_image":
        return [Scale(f, choice.factor, tokens="image") for f in choice.features]
    return [AddVector(choice.factor * vector_D, tokens="text")]


class _Evaluator:
    """Answers of the slice and VQA sets under an intervention (None: unsteered)."""

    def __init__(self, adapter, sae, layer: int, batch: int):
        self.adapter, self.sae, self.layer, self.batch = adapter, sae, layer, batch
        self.yes, self.no = token_id(adapter, YES), token_id(adapter, NO)
        # the grid runs the same few sets (hallucinated, correct, control, VQA) under every candidate: each is
        # encoded once (the items are kept with their encodings, so their ids stay theirs)
        self._encoded: dict[tuple[int, ...], tuple[list, list]] = {}

    def _first(self, items: list, interventions) -> np.ndarray:
        key = tuple(map(id, items))
        if key not in self._encoded:
            self._encoded[key] = (items, encode_batches(self.adapter, [x.prompt for x in items], self.batch))
        return first_tokens(self.adapter, None, self.ctx(interventions), encoded=self._encoded[key][1])

    def ctx(self, interventions):
        if not interventions:
            return lambda _enc: contextlib.nullcontext()
        return lambda enc: steering(self.adapter, self.sae, self.layer, interventions, enc)

    def said_no(self, cases: list[Case], interventions=None) -> np.ndarray:
        return self._first(cases, interventions) == self.no

    def said_yes(self, cases: list[Case], interventions=None) -> np.ndarray:
        return self._first(cases, interventions) == self.yes

    def vqa_first_ok(self, items, first_ids: np.ndarray, interventions=None) -> np.ndarray:
        return self._first(items, interventions) == first_ids


def _rate(flags: np.ndarray) -> float:
    return float(flags.mean()) if len(flags) else float("nan")


def choose(ev: _Evaluator, settings: StudySettings, calib: list[Case], control: list[Case], att: dict,
           calib_idx: np.ndarray, vqa_calib, vqa_first: np.ndarray, vector_D: torch.Tensor) -> list[Choice]:
    """Every candidate of the grid scored on the calibration half only."""
    s = settings
    hall = [c for c in calib if c.said_yes]
    right = [c for c in calib if c.said_no]
    h_idx = calib_idx[[c.said_yes for c in calib]]
    # < 0: zeroing it lowers yes − no, it pushes "yes" (at text and image positions alike)
    yes_F = (att["text_CF"] + att["image_CF"])[h_idx].mean(0)
    image_F = att["image_CF"][calib_idx].mean(0)  # > 0: it pushes "no"
    # `right` are the cases the unsteered subject answered "no": their unsteered rate is 1 by definition
    base = (1.0, ev.said_yes(control).mean() if control else 1.0,
            ev.vqa_first_ok(vqa_calib, vqa_first).mean())
    damp = [int(f) for f in np.argsort(yes_F) if yes_F[f] < 0]
    boost = [int(f) for f in np.argsort(-image_F) if image_F[f] > 0]
    grid = [Choice("damp", damp[:m], factor, tokens) for m in s.m_grid if len(damp) >= m
            for factor in s.damp_factors for tokens in s.damp_tokens]
    grid += [Choice("boost_image", boost[:m], factor, "image") for m in s.boost_m if len(boost) >= m
             for factor in s.boost_factors]
    grid += [Choice("diffmeans", [], alpha) for alpha in s.alpha_grid]
    scored = []
    for ch in grid:
        ivs = _interventions(ch, ev.sae, vector_D)
        fixed = ev.said_no(hall, ivs).mean() if hall else 0.0
        now = (ev.said_no(right, ivs).mean() if right else 1.0, ev.said_yes(control, ivs).mean() if control else 1.0,
               ev.vqa_first_ok(vqa_calib, vqa_first, ivs).mean())
        lost = max(0.0, float(sum(b - n for b, n in zip(base, now))))
        scored.append(replace(ch, calib_fixed=float(fixed), calib_lost=lost, calib_cost=s.cost_weight * lost))
    return scored


def run_study(adapter, sae, layer: int, settings: StudySettings | None = None, progress=None) -> StudyResult:
    """The whole study on fresh world scenes; `progress(msg)` is told each step."""
    s = settings or StudySettings()
    say = progress or (lambda _msg: None)
    ev = _Evaluator(adapter, sae, layer, s.batch)
    cases = slice_cases(s.n_cases, s.seed)
    first_B = first_tokens(adapter, [c.prompt for c in cases], batch=s.batch)
    for c, t in zip(cases, first_B):
        c.said_yes, c.said_no = bool(t == ev.yes), bool(t == ev.no)
    say(f"{len(cases)} slice cases, {sum(c.said_yes for c in cases)} hallucinated")
    order = np.random.default_rng(s.seed).permutation(len(cases))
    half = len(cases) // 2
    calib_idx, held_idx = order[:half], order[half:]
    calib, held = [cases[i] for i in calib_idx], [cases[i] for i in held_idx]

    att = attribute_cases(adapter, sae, layer, cases, s.batch)
    share = lambda pick, key: float(np.mean([att["shares"][i][key] for i, c in enumerate(cases) if pick(c)]))  # noqa: E731
    say("attributed every case")
    pear, spear, example = exact_check(adapter, sae, layer, [c for c in calib if c.said_yes][: s.exact_cases])

    vqa_calib, vqa_held = split_halves(vqa_items(2 * s.n_vqa_scenes, s.seed + 1), s.seed + 1)
    control_calib, control_held = split_halves(slice_cases(s.n_control, s.seed + 3, prior_coloured=True), s.seed + 3)
    first_of = lambda items: np.array([adapter.tokenizer(v.answer, add_special_tokens=False)["input_ids"][0]  # noqa: E731
                                       for v in items])
    acts_BD = answer_position_acts(adapter, layer, [c.prompt for c in calib], s.batch)
    yes_B, no_B = torch.tensor([c.said_yes for c in calib]), torch.tensor([c.said_no for c in calib])
    vector_D = acts_BD[no_B].mean(0) - acts_BD[yes_B].mean(0)
    candidates = choose(ev, s, calib, control_calib, att, calib_idx, vqa_calib, first_of(vqa_calib), vector_D)
    sae_candidates = [c for c in candidates if c.kind != "diffmeans"]
    choice = max(sae_candidates, key=lambda c: c.objective)
    diffmeans = max((c for c in candidates if c.kind == "diffmeans"), key=lambda c: c.objective)
    say(f"chosen on the calibration half: {choice.describe()}")

    # held-out: the chosen SAE steering and its baselines
    hall, right = [c for c in held if c.said_yes], [c for c in held if c.said_no]
    ivs = _interventions(choice, sae, vector_D)
    rates = {"fixed": float(ev.said_no(hall, ivs).mean()) if hall else float("nan"),
             "slice_correct_kept": float(ev.said_no(right, ivs).mean()) if right else float("nan"),
             "control_yes_kept": _rate(ev.said_yes(control_held, ivs)),
             "control_yes_unsteered": _rate(ev.said_yes(control_held)),
             "diffmeans_fixed": float(ev.said_no(hall, _interventions(diffmeans, sae, vector_D)).mean()) if hall else float("nan")}
    rng = np.random.default_rng(s.seed + 2)
    pool_CF = att["text_CF"] + att["image_CF"] if choice.kind == "damp" else att["image_CF"]
    pool = np.flatnonzero(pool_CF[calib_idx].any(0))
    random_fixed = []
    for _ in range(s.random_draws):
        feats = [int(f) for f in rng.choice(pool, size=min(len(choice.features), len(pool)), replace=False)]
        random_fixed.append(ev.said_no(hall, _interventions(replace(choice, features=feats), sae, vector_D)).mean())
    rates["random_fixed"] = float(np.mean(random_fixed)) if hall else float("nan")
    kind, prior = WorldConfig().prior_kind, WorldConfig().prior_colour
    colour_prompts = [Prompt(c.prompt.images, chat_prompt(f"what colour is the {kind} ?")) for c in hall]
    colours = generated_answers(adapter, colour_prompts, batch=s.batch)
    rates["prompting_fixed"] = float(np.mean([a != prior for a in colours])) if hall else float("nan")
    say("steered the held-out half and its baselines")

    answers0 = generated_answers(adapter, [v.prompt for v in vqa_held], batch=s.batch)
    answers1 = generated_answers(adapter, [v.prompt for v in vqa_held], ev.ctx(ivs), s.batch)
    acc0 = float(np.mean([a == v.answer for a, v in zip(answers0, vqa_held)]))
    acc1 = float(np.mean([a == v.answer for a, v in zip(answers1, vqa_held)]))
    rates.update({"vqa_accuracy": acc0, "vqa_accuracy_steered": acc1, "vqa_questions": len(vqa_held),
                  "heldout_hallucinated": len(hall), "heldout_correct": len(right), "heldout_control": len(control_held)})
    return StudyResult(
        settings=s, n_cases=len(cases), hallucination_rate=float(np.mean([c.said_yes for c in cases])),
        calib=calib, heldout=held,
        text_share_hallucinated=share(lambda c: c.said_yes, "text"), text_share_correct=share(lambda c: c.said_no, "text"),
        image_share_hallucinated=share(lambda c: c.said_yes, "image"), image_share_correct=share(lambda c: c.said_no, "image"),
        error_share=share(lambda c: True, "error"), exact_pearson_top50=pear, exact_spearman_top50=spear,
        choice=choice, candidates=candidates, rates=rates, example=example)
