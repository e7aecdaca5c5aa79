"""`Attribution`: the rows of one attribution pass and the views the studies read.

One row per (example, real position, active feature) plus one error row (feature −1) per real position;
padding positions have no rows. Rows hold the linear estimate `attribution` (−z·∂d/∂z, or the error's
−e·∂d/∂e) and `exact_effect`: the true change of d when the row's feature is zeroed at every position of
its example (a per-feature number, repeated on each of that feature's rows; NaN where not computed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmsae.models.table import IMAGE, MODALITIES

ERROR = -1  # the feature id of error-term rows
SHARE_KEYS = ("text", "image", "special", "error")
SIGNS = ("abs", "positive", "negative")


@dataclass
class Attribution:
    """Per-example attribution rows; see the module docstring for what a row is."""

    example_R: np.ndarray  # int32
    feature_R: np.ndarray  # int64, −1 for the error term
    position_R: np.ndarray  # int32 table position (0 = the example's first real token)
    modality_R: np.ndarray  # int8 codes into MODALITIES, the position's modality
    token_R: np.ndarray  # str, the position's token
    attribution_R: np.ndarray  # float64
    exact_effect_R: np.ndarray  # float64, NaN where not computed
    metric: np.ndarray  # float64 [B]: the clean d of each example
    metric_name: str
    read_position: np.ndarray  # int64 [B]: table position d is read at
    target: np.ndarray  # int64 [B]
    baseline: np.ndarray | None  # int64 [B]
    tables: list = field(repr=False, default_factory=list)  # TokenTable per example (boxes for heatmaps)
    ig_steps: int = 0

    # -- construction ----------------------------------------------------------------------------------
    @classmethod
    def from_pass(cls, adapter, encoded, readout, codes, attr_TK, error_T, d_B, ig_steps: int) -> Attribution:
        from .readout import real_mask

        B, S, _ = codes.shape
        mask_BS = real_mask(encoded)
        values_BSK = codes.values_TK.detach().float().reshape(B, S, -1).cpu().numpy()
        idx_BSK = codes.idx_TK.reshape(B, S, -1).cpu().numpy()
        attr_BSK = attr_TK.detach().reshape(B, S, -1).double().cpu().numpy()
        error_BS = error_T.detach().reshape(B, S).double().cpu().numpy()
        ids_BS = encoded.inputs["input_ids"].cpu().numpy()
        parts: dict[str, list] = {k: [] for k in ("example", "feature", "position", "modality", "token", "attr")}
        for b in range(B):
            cols = np.flatnonzero(mask_BS[b])
            first = int(cols[0])
            table = encoded.tables[b]
            pieces = np.array(adapter.tokenizer.convert_ids_to_tokens(ids_BS[b, cols].tolist()), dtype=object)
            # each position: its active features, then its error row (a last column that is always kept)
            n = len(cols)
            keep_NM = np.concatenate([values_BSK[b, cols] != 0, np.ones((n, 1), bool)], 1)
            feat_NM = np.concatenate([idx_BSK[b, cols], np.full((n, 1), ERROR)], 1)
            attr_NM = np.concatenate([attr_BSK[b, cols], error_BS[b, cols][:, None]], 1)
            rep = keep_NM.sum(1)
            col_R = np.repeat(cols, rep)
            parts["example"].append(np.full(len(col_R), b, np.int32))
            parts["feature"].append(feat_NM[keep_NM].astype(np.int64))
            parts["position"].append((col_R - first).astype(np.int32))
            parts["modality"].append(table.modality[col_R].astype(np.int8))
            parts["token"].append(np.repeat(pieces, rep))
            parts["attr"].append(attr_NM[keep_NM].astype(np.float64))
        cat = {k: np.concatenate(v) for k, v in parts.items()}
        return cls(cat["example"], cat["feature"], cat["position"], cat["modality"], cat["token"], cat["attr"],
                   np.full(len(cat["attr"]), np.nan), d_B.double().cpu().numpy(), readout.metric,
                   readout.position_B.copy(), readout.target_B.copy(),
                   None if readout.baseline_B is None else readout.baseline_B.copy(), list(encoded.tables), ig_steps)

    def set_exact(self, features: list[list[int]], effects: list[np.ndarray]) -> None:
        """Record the exact effect of zeroing features[b][j] (at every position of example b) on its rows."""
        for b, (fs, es) in enumerate(zip(features, effects)):
            for f, e in zip(fs, es):
                self.exact_effect_R[(self.example_R == b) & (self.feature_R == int(f))] = e

    # -- views ---------------------------------------------------------------------------------------------
    @property
    def n_examples(self) -> int:
        return len(self.metric)

    def _check_example(self, example: int | None, allow_none: bool = True) -> None:
        if example is None and allow_none:
            return
        if isinstance(example, bool) or not isinstance(example, (int, np.integer)) or not 0 <= example < self.n_examples:
            raise ValueError(f"example must be in 0..{self.n_examples - 1}, got {example!r}")

    def _rows(self, example: int | None) -> np.ndarray:
        self._check_example(example)
        return np.ones(len(self.example_R), bool) if example is None else self.example_R == example

    def table(self):
        """pyarrow table: example, feature, position, modality, token, attribution, exact_effect."""
        import pyarrow as pa

        return pa.table({
            "example": pa.array(self.example_R, pa.int32()),
            "feature": pa.array(self.feature_R, pa.int64()),
            "position": pa.array(self.position_R, pa.int32()),
            "modality": pa.array(np.asarray(MODALITIES, dtype=object)[self.modality_R], pa.string()),
            "token": pa.array(self.token_R.astype(object), pa.string()),
            "attribution": pa.array(self.attribution_R, pa.float64()),
            "exact_effect": pa.array(self.exact_effect_R, pa.float64()),
        })

    def per_feature(self, example: int | None = None):
        """pyarrow table feature, attribution, exact_effect, n_positions: attribution summed over positions
        (and over examples when `example` is None), largest |attribution| first. The error term is feature
        −1. exact_effect is the example's exact effect; summed over examples when None, NaN unless every
        example the feature is active in has one."""
        import pyarrow as pa

        rows = self._rows(example)
        feats, inv = np.unique(self.feature_R[rows], return_inverse=True)
        attr = np.bincount(inv, weights=self.attribution_R[rows], minlength=len(feats))
        count = np.bincount(inv, minlength=len(feats))
        # one exact value per (example, feature): take it from the feature's first row in each example
        ex, fe, eff = self.example_R[rows], self.feature_R[rows], self.exact_effect_R[rows]
        _, first = np.unique(np.stack([ex, fe], 1), axis=0, return_index=True)
        exact = np.zeros(len(feats))
        np.add.at(exact, np.searchsorted(feats, fe[first]), eff[first])  # NaN anywhere -> NaN
        order = np.lexsort((feats, -np.abs(attr)))
        return pa.table({"feature": pa.array(feats[order], pa.int64()), "attribution": attr[order],
                         "exact_effect": exact[order], "n_positions": pa.array(count[order], pa.int64())})

    def top_features(self, example: int, n: int) -> list[int]:
        """The n features (error excluded) of an example with the largest |per-feature attribution|."""
        per = self.per_feature(example)
        feats = per.column("feature").to_numpy()
        return [int(f) for f in feats[feats != ERROR][:n]]

    def per_position(self, example: int):
        """pyarrow table position, modality, token, features, error, total for one example: the summed
        attribution of the position's active features, its error term, and both together."""
        import pyarrow as pa

        self._check_example(example, allow_none=False)
        rows = self.example_R == example
        pos = self.position_R[rows]
        is_err = self.feature_R[rows] == ERROR
        n = int(pos.max()) + 1
        feat = np.bincount(pos, weights=np.where(is_err, 0.0, self.attribution_R[rows]), minlength=n)
        err = np.bincount(pos, weights=np.where(is_err, self.attribution_R[rows], 0.0), minlength=n)
        at = np.flatnonzero(is_err)  # one error row per position: its modality and token
        order = np.argsort(pos[at])
        mod = self.modality_R[rows][at][order]
        return pa.table({"position": pa.array(np.arange(n), pa.int32()),
                         "modality": pa.array(np.asarray(MODALITIES, dtype=object)[mod], pa.string()),
                         "token": pa.array(self.token_R[rows][at][order].astype(object), pa.string()),
                         "features": feat, "error": err, "total": feat + err})

    def modality_share(self, example: int | None = None) -> dict[str, float]:
        """Shares of the total |attribution| over the rows of `example` (all examples when None):
        "text", "image", "special" sum |attribution| of the feature rows at positions of that modality
        (special: BOS/EOS, image start/end/newline and other structural tokens); "error" sums the error
        rows of every position, whatever its modality. The four sum to 1 (all 0.0 when every row is 0)."""
        rows = self._rows(example)
        mag = np.abs(self.attribution_R[rows])
        is_err = self.feature_R[rows] == ERROR
        total = float(mag.sum())
        out = {}
        for code, name in enumerate(MODALITIES):
            out[name] = float(mag[(~is_err) & (self.modality_R[rows] == code)].sum())
        out["error"] = float(mag[is_err].sum())
        return {k: (out[k] / total if total > 0 else 0.0) for k in SHARE_KEYS}

    def patch_values(self, example: int, image_index: int, feature: int | None = None,
                     include_error: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """(boxes_N4, attribution_N) for the image tokens of one image of an example: the summed attribution
        of all features at each patch (plus its error term when include_error), or of one feature's rows."""
        self._check_example(example, allow_none=False)
        table = self.tables[example]
        images = sorted(set(table.image_index[table.modality == IMAGE].tolist()))
        if image_index not in images:
            raise ValueError(f"example {example} has image_index {images or 'none'} among its image tokens, "
                             f"got {image_index!r}")
        first = int(np.flatnonzero(table.position == 0)[0])
        cols = np.flatnonzero((table.modality == IMAGE) & (table.image_index == image_index))
        rows = self.example_R == example
        if feature is not None:
            rows &= self.feature_R == int(feature)
        elif not include_error:
            rows &= self.feature_R != ERROR
        pos = self.position_R[rows]
        n = len(table) - first
        per_pos = np.bincount(pos, weights=self.attribution_R[rows], minlength=n)
        return table.box[cols], per_pos[cols - first]

    def heatmap(self, example: int, image_index: int, image, *, feature: int | None = None,
                include_error: bool = True, sign: str = "abs", alpha: float = 0.5, cmap: str = "inferno",
                vmax: float | None = None):
        """PIL image: the per-patch attribution (`patch_values`) painted on the original image through the
        token table's boxes. sign: "abs" paints |attribution|, "positive" only patches that push d up,
        "negative" only those that push it down (their magnitude)."""
        from mmsae.viz.maps import heatmap_overlay

        if sign not in SIGNS:
            raise ValueError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
        boxes_N4, value_N = self.patch_values(example, image_index, feature, include_error)
        paint_N = {"abs": np.abs(value_N), "positive": np.clip(value_N, 0, None),
                   "negative": np.clip(-value_N, 0, None)}[sign]
        return heatmap_overlay(image, boxes_N4, paint_N, alpha=alpha, cmap=cmap, vmax=vmax)
