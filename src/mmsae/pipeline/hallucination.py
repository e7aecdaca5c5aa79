"""The hallucination study: the zoo subject's prior-driven "yes" (the Multimodal-SAE paper's "Bolivia" case)
found by attribution and cured by steering, measured on held-out cases against baselines.

The world's prior-bias slice: stars are nearly always yellow in training, so asked "is the star yellow ?" about a
star of another colour the subject often answers "yes". The study
1. makes `n_cases` fresh such cases and reads the subject's answer (the greedy first token after the prompt);
2. attributes logit(yes) − logit(no) to SAE features, positions and modalities for every case (one pass each
   batch) and compares the text share in hallucinated vs correct cases;
3. chooses an intervention on the calibration half only (damp the text features that push "yes", or boost the
   image features that push "no"; how many and how hard from a small grid) and applies it to the held-out half;
4. compares it with random features of equal norm (TopK decoder rows are unit norm), a difference-of-means vector
   (correct minus hallucinated residual at the answer position, as ActAdd/CAA) and a prompting baseline (ask the
   colour and answer yes iff it is the asked colour), and measures what the steering costs elsewhere: ordinary
   VQA accuracy (all question types, greedy generation) and the correctly answered slice cases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from ..models import Prompt
from ..world import World, WorldConfig
from ..world.text import chat_prompt, questions

YES, NO = "yes", "no"
MakeContext = Callable[[object], contextlib.AbstractContextManager]  # encoded batch -> steering context


@dataclass(frozen=True)
class StudySettings:
    n_cases: int = 400
    """Slice scenes drawn (each: one star, not of the prior colour); about a third are hallucinated."""
    n_control: int = 100
    """Control scenes: one star of the prior colour, same question, the right answer is "yes" (a steering that
    only teaches "no" fails these)."""
    n_vqa_scenes: int = 60
    """Scenes of ordinary VQA (every question type, ~11 questions each) per half, to measure the cost elsewhere."""
    seed: int = 2026
    """World seed of the study's fresh scenes (the zoo trained on seed 0, its evaluation used 10_000+)."""
    batch: int = 48
    m_grid: tuple[int, ...] = (2, 4, 8)
    """How many features pushing "yes" the damping touches (picked on the calibration half)."""
    damp_factors: tuple[float, ...] = (0.0, -1.0, -2.0, -2.5)
    """Factors their codes are scaled by: 0 removes them (the ablation attribution predicts), < 0 reverses them."""
    damp_tokens: tuple[str, ...] = ("text", "all")
    boost_m: tuple[int, ...] = (8, 32)
    """How many image features pushing "no" the boost touches."""
    boost_factors: tuple[float, ...] = (4.0,)
    """Boost factors tried for image features (Scale on image tokens)."""
    alpha_grid: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    """Multiples of the difference-of-means vector tried (AddVector on text tokens)."""
    cost_weight: float = 4.0
    """Selection objective: fixed rate − cost_weight × (accuracy lost on correct slice cases, on prior-colour
    control cases and on VQA first tokens)."""
    random_draws: int = 5
    exact_cases: int = 4
    """Hallucinated cases whose top-50 features are re-run zeroed to check the linear attribution."""


@dataclass
class Case:
    prompt: Prompt
    colour: str  # the star's true colour (never the prior colour)
    said_yes: bool = False  # the hallucination
    said_no: bool = False  # the right answer (a case may say neither)


@dataclass
class VQA:
    prompt: Prompt
    answer: str
    type: str


@dataclass
class Choice:
    kind: str  # "damp" | "boost_image" | "diffmeans"
    features: list[int]
    factor: float = 0.0
    tokens: str = "text"
    calib_fixed: float = 0.0
    calib_lost: float = 0.0  # accuracy lost on the calibration controls (correct slice, prior colour, VQA)
    calib_cost: float = 0.0  # cost_weight × calib_lost

    @property
    def objective(self) -> float:
        return self.calib_fixed - self.calib_cost

    def describe(self) -> str:
        if self.kind == "damp":
            how = "zero" if self.factor == 0 else f"scale by {self.factor:g}"
            return f"{how} the {len(self.features)} features pushing 'yes' on {self.tokens} tokens"
        if self.kind == "boost_image":
            return f"scale {len(self.features)} image features pushing 'no' ×{self.factor:g} on image tokens"
        return f"add {self.factor:g} × the difference-of-means vector on text tokens"


@dataclass
class StudyResult:
    settings: StudySettings
    n_cases: int
    hallucination_rate: float
    calib: list[Case]
    heldout: list[Case]
    text_share_hallucinated: float
    text_share_correct: float
    image_share_hallucinated: float
    image_share_correct: float
    error_share: float
    exact_pearson_top50: float
    exact_spearman_top50: float
    choice: Choice
    candidates: list[Choice]
    rates: dict[str, float] = field(default_factory=dict)  # held-out results per method
    example: dict = field(default_factory=dict)  # one attributed case for the figure


# ---- cases -------------------------------------------------------------------------------------------------
def slice_cases(n: int, seed: int, world_cfg: WorldConfig | None = None, *, prior_coloured: bool = False) -> list[Case]:
    """Scenes with exactly one star, of any colour but the prior one (or, with prior_coloured, of the prior
    colour: the controls); the question asks whether it has the prior colour."""
    base = world_cfg or WorldConfig()
    kind, prior = base.prior_kind, base.prior_colour
    world = World(WorldConfig(seed=seed, prior_strength=1.0 if prior_coloured else 0.0, forced=(("object", kind),)))
    out: list[Case] = []
    i = 0
    while len(out) < n:
        scene = world[i]
        i += 1
        stars = [o for o in scene.objects if o.kind == kind]
        if len(stars) == 1 and (stars[0].colour == prior) == prior_coloured:
            out.append(Case(Prompt([scene.pil], chat_prompt(f"is the {kind} {prior} ?")), stars[0].colour))
    return out


def vqa_items(n_scenes: int, seed: int) -> list[VQA]:
    """Ordinary VQA on fresh scenes of the training distribution: every question type each scene supports."""
    world, rng = World(WorldConfig(seed=seed)), np.random.default_rng(seed)
    return [VQA(Prompt([s.pil], chat_prompt(qa.question)), qa.answer, qa.type)
            for s in (world[i] for i in range(n_scenes)) for qa in questions(s, rng)]


# ---- reading the model -------------------------------------------------------------------------------------
def token_id(adapter, word: str) -> int:
    ids = adapter.tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"answer word {word!r} is not one token of the subject's tokenizer: {ids}")
    return int(ids[0])


def _nocontext(_enc) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


def encode_batches(adapter, prompts: Sequence[Prompt], batch: int = 48) -> list:
    """The prompts encoded (right padding) in batches of `batch`, as `first_tokens` runs them."""
    return [adapter.encode(prompts[lo : lo + batch]) for lo in range(0, len(prompts), batch)]


def first_tokens(adapter, prompts: Sequence[Prompt] | None, make_ctx: MakeContext = _nocontext, batch: int = 48,
                 encoded: list | None = None) -> np.ndarray:
    """The greedy first answer token of each prompt (right padding: every real position is as unpadded).
    `encoded` (from `encode_batches`) replaces `prompts` when the same prompts are run many times: a sweep
    of interventions then pays the processor once."""
    out = []
    for enc in encoded if encoded is not None else encode_batches(adapter, prompts, batch):
        last_B = enc.inputs["attention_mask"].sum(1) - 1
        with make_ctx(enc):
            logits_BSV = adapter.forward_logits(enc.inputs)
        out.append(logits_BSV[torch.arange(len(last_B)), last_B].argmax(-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def generated_answers(adapter, prompts: Sequence[Prompt], make_ctx: MakeContext = _nocontext, batch: int = 48,
                      max_new_tokens: int = 4) -> list[str]:
    """Greedy answers (KV-cached generate, left padding), steered inside `make_ctx` when given."""
    tok = adapter.tokenizer
    out: list[str] = []
    for lo in range(0, len(prompts), batch):
        enc = adapter.encode(prompts[lo : lo + batch], padding_side="left")
        with make_ctx(enc):
            ids_BS = adapter.generate(enc.inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        new_BS = ids_BS[:, enc.inputs["input_ids"].shape[1]:]
        out += [" ".join(tok.decode(row, skip_special_tokens=True).replace(" - ", "-").split()) for row in new_BS]
    return out


def answer_position_acts(adapter, layer: int, prompts: Sequence[Prompt], batch: int = 48) -> torch.Tensor:
    """acts_BD: the residual stream after block `layer` at each prompt's last real token."""
    rows = []
    for lo in range(0, len(prompts), batch):
        enc = adapter.encode(prompts[lo : lo + batch])
        acts_BSD = adapter.capture(enc.inputs, layer)
        last_B = enc.inputs["attention_mask"].sum(1) - 1
        rows.append(acts_BSD[torch.arange(len(last_B)), last_B].float().cpu())
    return torch.cat(rows)


def split_halves(cases: list, seed: int) -> tuple[list, list]:
    order = np.random.default_rng(seed).permutation(len(cases))
    half = len(cases) // 2
    return [cases[i] for i in order[:half]], [cases[i] for i in order[half:]]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.std(a) == 0 or np.std(b) == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    rank = lambda x: np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(float)  # noqa: E731
    return pearson(rank(a), rank(b))
