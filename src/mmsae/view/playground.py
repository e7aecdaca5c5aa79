"""The steering playground: one prompt (and image) answered unsteered and with features clamped, added or
scaled, side by side, and the attribution of an output token's score to features, modalities and patches.

Both model endpoints need the launch token, run through the viewer's bounded job queue and are bounded per
request (MAX_FEATURES features, MAX_NEW_TOKENS new tokens). The library's ValueErrors (a feature out of
range, a token set that selects nothing, a target that is not one token) reach the user as they are."""

from __future__ import annotations

import base64

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..index import browse
from .data import png
from .forms import (
    MAX_FEATURES,
    MAX_NEW_TOKENS,
    MODES,
    TOKEN_SETS,
    parse_choice,
    parse_features,
    parse_int,
    parse_number,
    parse_token,
    read_image,
    read_prompt,
)
from .security import TOKEN_NEEDED, token_ok

TOP_FEATURES = 12  # rows of the attribution's feature table
TOP_POSITIONS = 8  # prompt tokens listed by |attribution|
DEFAULT_NEW_TOKENS = 12


def _prompt(image, text: str):
    from ..models import Prompt

    return Prompt([image] if image is not None else [], text)


def _tokens_of(adapter, ids_M) -> list[dict]:
    """The generated tokens up to the end (EOS, or the pad of a row that finished): each with its vocabulary
    entry (what the attribution's target field accepts as one token), its text, whether it is a special token
    (shown, but not part of the decoded answer) and the answer before it (what the attribution appends to the
    prompt to read the score at that token)."""
    tok = adapter.tokenizer
    gen = getattr(adapter.model, "generation_config", None)
    end = {tok.eos_token_id, tok.pad_token_id, getattr(gen, "pad_token_id", None)}
    eos = getattr(gen, "eos_token_id", None)
    end |= set(eos) if isinstance(eos, (list, tuple)) else {eos}
    special = set(tok.all_special_ids)
    ids = [int(i) for i in ids_M]
    out = []
    for k, i in enumerate(ids):
        if i in end:
            break
        piece = tok.convert_ids_to_tokens(i)
        out.append({"piece": piece, "text": piece if i in special else tok.decode([i]), "special": i in special,
                    "prefix": tok.decode(ids[:k], skip_special_tokens=True)})
    return out


def steer_job(runner, image, prompt: str, features: list[int], mode: str, value: float, tokens: str,
              max_new_tokens: int) -> dict:
    """Generate the unsteered and the steered answer (greedy, KV cache) in one batch of two."""
    from ..steer import steering
    from ..steer.run import MODES as KINDS
    from ..steer.run import generate_ids

    with runner.loaded() as (adapter, sae):
        layer = int(runner.layer)
        ops = [KINDS[mode](f, value, tokens=tokens) for f in features]
        one = adapter.encode([_prompt(image, prompt)], padding_side="left")
        with steering(adapter, sae, layer, ops, one):
            # entering validates the plan on the prompt alone (feature range, a token set that selects
            # nothing), so errors name "the batch", not row 1 of the pair below
            pass
        both = adapter.encode([_prompt(image, prompt)] * 2, padding_side="left")
        new_BM = generate_ids(adapter, sae, layer, both, [[], ops], max_new_tokens=max_new_tokens)
        texts = [t.strip() for t in adapter.tokenizer.batch_decode(new_BM, skip_special_tokens=True)]
        rows = [_tokens_of(adapter, new_BM[b]) for b in range(2)]
    return {"layer": layer, "prompt": prompt, "interventions": [op.to_dict() for op in ops],
            "unsteered": {"text": texts[0], "tokens": rows[0]}, "steered": {"text": texts[1], "tokens": rows[1]},
            "identical": texts[0] == texts[1]}


def attribute_job(runner, view, image, prompt: str, target: str, baseline: str | None) -> dict:
    """Attribute d (logit(target) − logit(baseline), or log p(target) without a baseline) at the prompt's last
    token to the active features, the modalities and the image's patches."""
    import math

    from ..attribute import ERROR, attribute

    metric = "logit_diff" if baseline is not None else "logprob"
    with runner.loaded() as (adapter, sae):
        layer = int(runner.layer)
        encoded = adapter.encode([_prompt(image, prompt)])
        attr = attribute(adapter, sae, layer, encoded, target, baseline, metric=metric)
        per = attr.per_feature(0).to_pylist()
        positions = attr.per_position(0).to_pylist()
        heatmap = png(attr.heatmap(0, 0, image)) if image is not None else None
    total = sum(abs(r["attribution"]) for r in per) or 1.0
    top = []
    with view.cursor() as con:
        for r in per[:TOP_FEATURES]:
            f = int(r["feature"])
            label = None
            if f != ERROR:
                named = [e.explanation for e in browse.feature_explanations(con, f) if e.status == "explained"]
                label = named[0] if named else None
            top.append({"feature": f, "attribution": r["attribution"], "share": abs(r["attribution"]) / total,
                        "n_positions": r["n_positions"], "explanation": label})
    read = int(attr.read_position[0])
    by_size = sorted(positions, key=lambda p: -abs(p["total"]))[:TOP_POSITIONS]
    return {"layer": layer, "prompt": prompt, "metric": metric, "target": target, "baseline": baseline,
            "value": float(attr.metric[0]), "position": read, "read_token": positions[read]["token"],
            "modality_share": attr.modality_share(0), "features": top, "n_features": len(per) - 1,
            "positions": [{k: p[k] for k in ("position", "modality", "token", "total")} for p in by_size
                          if math.isfinite(p["total"])],
            "heatmap": None if heatmap is None else "data:image/png;base64," + base64.b64encode(heatmap).decode()}


def playground_routes(cfg, token: str, view, runner, gate, page, with_token_cookie) -> list[Route]:
    meta = view.meta

    def playground(request: Request):
        redirect = with_token_cookie(request)
        if redirect is not None:
            return redirect
        q = request.query_params
        with view.cursor() as con:
            picks = browse.indexed_images(con)
        first = f"{picks[0][0]}:{picks[0][1]}" if picks else ""
        # prefilled from the query (a feature page's "steer this feature" link); checked when submitted
        prefill = {"features": q.get("feature", "")[:100], "mode": q.get("mode", "add"),
                   "value": q.get("value", "8")[:30], "tokens": q.get("tokens", "all"),
                   "sample": q.get("sample", first)[:30]}
        return page("playground.html", request, picks=picks, unavailable=runner.available(),
                    has_token=token_ok(request, token), prompt=meta.get("prompt") or "<image>",
                    max_mb=cfg.max_upload_bytes / 2**20, prefill=prefill, modes=MODES, token_sets=TOKEN_SETS,
                    max_features=MAX_FEATURES, max_new_tokens=MAX_NEW_TOKENS, default_new=DEFAULT_NEW_TOKENS)

    async def model_form(request: Request):
        """The request's form once it may run the model, or the JSON response that says why it may not."""
        if not token_ok(request, token):
            return None, JSONResponse({"error": TOKEN_NEEDED}, status_code=403)
        why = runner.available()
        if why:
            return None, JSONResponse({"error": why}, status_code=503)
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > cfg.max_upload_bytes + 65536:
            return None, JSONResponse({"error": f"the upload is {length} bytes; the limit is "
                                                f"{cfg.max_upload_bytes}"}, status_code=413)
        return await request.form(max_files=1, max_fields=16, max_part_size=cfg.max_upload_bytes + 1), None

    async def steer(request: Request):
        form, refused = await model_form(request)
        if refused is not None:
            return refused
        features = parse_features(form.get("features"), None)
        mode = parse_choice(form, "mode", MODES, "add")
        value = parse_number(form, "value", 8.0)
        tokens = parse_choice(form, "tokens", TOKEN_SETS, "all")
        n_new = parse_int(form, "max_new_tokens", DEFAULT_NEW_TOKENS, 1, MAX_NEW_TOKENS)
        image, shown = await read_image(form, view, cfg, required=False)
        prompt = read_prompt(form, meta.get("prompt") or "", image)
        result = await gate.run(steer_job, runner, image, prompt, features, mode, value, tokens, n_new)
        return JSONResponse({**result, "image": shown})

    async def attribute(request: Request):
        form, refused = await model_form(request)
        if refused is not None:
            return refused
        target = parse_token(form, "target", required=True)
        baseline = parse_token(form, "baseline", required=False)
        image, shown = await read_image(form, view, cfg, required=False)
        prompt = read_prompt(form, meta.get("prompt") or "", image)
        prefix = str(form.get("prefix") or "")[:2000]
        if prefix.strip():  # the answer generated before the chosen token: its score is read after it
            prompt = prompt.rstrip() + " " + prefix.strip()
        result = await gate.run(attribute_job, runner, view, image, prompt, target, baseline)
        return JSONResponse({**result, "image": shown})

    return [Route("/steer", playground), Route("/api/steer", steer, methods=["POST"]),
            Route("/api/attribute", attribute, methods=["POST"])]
