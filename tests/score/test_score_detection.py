import numpy as np
import pytest
from PIL import Image

from mmsae.llm import Completion
from mmsae.score import DetectionJudge, balanced_accuracy, detection_score
from mmsae.score.detection import yes_no
from mmsae.world import World
from score_fakes import OracleWorldJudge, image_bytes, message_image_and_text


class ImageOracle:
    """yes/no judge: 'yes' exactly for the images it was told activate (a perfect judge), or at random."""

    name = "fake"

    def __init__(self, positives, rng=None, fail_every: int | None = None):
        self.positive = {image_bytes(im) for im in positives}
        self.rng, self.fail_every, self.calls, self.texts = rng, fail_every, 0, []

    def complete_many(self, batch):
        out = []
        for messages in batch:
            self.calls += 1
            image, text = message_image_and_text(messages)
            self.texts.append(text)
            if self.fail_every and self.calls % self.fail_every == 0:
                out.append(Completion(None, "HTTP 500: boom"))
            elif self.rng is not None:
                out.append(Completion("Yes." if self.rng.random() < 0.5 else "no"))
            else:
                out.append(Completion("yes" if image_bytes(image) in self.positive else "No, it does not."))
        return out


def noise_images(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray((rng.random((8, 8, 3)) * 255).astype("uint8")) for _ in range(n)]


def test_balanced_accuracy_and_yes_no_parsing():
    assert balanced_accuracy([True, True, False, False], [True, False, False, False]) == 0.75
    assert balanced_accuracy([True, False], [False, True]) == 0.0
    assert yes_no("Yes, it does.") is True and yes_no(" no") is False and yes_no("maybe") is None and yes_no(None) is None


def test_a_perfect_judge_scores_one_and_a_coin_half():
    pos, neg = noise_images(5, 0), noise_images(5, 1)
    oracle = ImageOracle(pos)
    res = detection_score("red stars", pos, neg, DetectionJudge(oracle, "detect-yesno-v1"))
    assert res.bacc == 1.0 and (res.tp, res.fn, res.tn, res.fp, res.n_failed) == (5, 0, 5, 0, 0)
    assert all("red stars" in t for t in oracle.texts)  # the judge is told the explanation
    pos, neg = noise_images(300, 2), noise_images(300, 3)
    coin = detection_score("red stars", pos, neg, DetectionJudge(ImageOracle(pos, np.random.default_rng(0)),
                                                                 "detect-yesno-v1"))
    assert abs(coin.bacc - 0.5) < 0.06


def test_failed_answers_are_counted_and_left_out():
    pos, neg = noise_images(4, 0), noise_images(4, 1)
    res = detection_score("x", pos, neg, DetectionJudge(ImageOracle(pos, fail_every=4), "detect-yesno-v1"))
    assert res.n_failed == 2 and res.tp + res.fn + res.tn + res.fp == 6 and res.bacc == 1.0
    assert len(res.errors) == 2 and "HTTP 500" in res.errors[0]


def test_inventory_judge_detects_world_concepts_and_asks_each_image_once():
    world = World()
    scenes = [world[i] for i in range(40)]
    with_red = [s for s in scenes if "red" in s.concepts()][:4]
    without = [s for s in scenes if "red" not in s.concepts()][:4]
    oracle = OracleWorldJudge(scenes)
    judge = DetectionJudge(oracle, "detect-zoo-v1")
    assert judge.name == "oracle/detect-zoo-v1"
    keys_pos, keys_neg = [("p", s.index) for s in with_red], [("n", s.index) for s in without]
    res = detection_score("red", [s.pil for s in with_red], [s.pil for s in without], judge, keys_pos, keys_neg)
    assert res.bacc == 1.0 and res.n_failed == 0
    assert judge.inventory(keys_pos[0]) >= {"red", with_red[0].background}
    asked = oracle.asked
    # another explanation over the same images reuses the inventories: no new question
    bg = with_red[0].background
    res2 = detection_score(bg, [s.pil for s in with_red], [s.pil for s in without], judge, keys_pos, keys_neg)
    assert oracle.asked == asked
    truth = [bg == s.background for s in with_red + without]
    assert res2.tp + res2.fn == 4 and res2.bacc == balanced_accuracy([True] * 4 + [False] * 4, truth)
    # an explanation naming nothing the judge can check predicts nothing: chance, flagged
    res3 = detection_score("a blurry thing", [s.pil for s in with_red], [s.pil for s in without], judge, keys_pos, keys_neg)
    assert res3.bacc == 0.5 and res3.no_concepts
    with pytest.raises(ValueError, match="keys"):
        detection_score("red", [with_red[0].pil], [without[0].pil], judge, keys_pos[:1], None)


def test_unknown_template_is_named():
    with pytest.raises(ValueError, match="detect-yesno-v1"):
        DetectionJudge(ImageOracle([]), "no-such-template")


def test_zoo_subject_as_inventory_judge_detects_an_ideal_colour_feature():
    """The default judge on the embedded world: the zoo subject asked its trained closed questions."""
    from mmsae.llm import LocalChat
    from mmsae.score.local_judge import BatchedLocalJudge
    from mmsae.world import WorldConfig
    from mmsae.zoo import model_dir

    world = World(WorldConfig(seed=4242))  # scenes the subject never saw
    scenes = [world[i] for i in range(30)]
    pos = [s for s in scenes if "blue" in s.concepts()][:4]
    neg = [s for s in scenes if "blue" not in s.concepts()][:4]
    judge = DetectionJudge(BatchedLocalJudge(model_dir("subject"), batch=64), "detect-zoo-v1")
    res = detection_score("blue", [s.pil for s in pos], [s.pil for s in neg], judge,
                          [s.index for s in pos], [s.index for s in neg])
    assert res.n_failed == 0 and res.bacc >= 0.75, res
    # batching does not change the answers of one-at-a-time generation
    chats = [judge._messages(s.pil, q) for s in pos[:2] for q in ("what is the background ?", "is there a blue star ?",
                                                                   "where is the star ?")]
    one_by_one = LocalChat(model_dir("subject"), max_tokens=8).complete_many(chats)
    assert [c.text for c in judge.backend.complete_many(chats)] == [c.text for c in one_by_one]
