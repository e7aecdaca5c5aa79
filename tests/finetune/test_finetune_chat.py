"""Loss only on assistant tokens, on a hand-built batch; bad records become rejects with a reason."""

import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from mmsae.data import Reject
from mmsae.data.sources import Record
from mmsae.defaults import zoo_model_dir
from mmsae.finetune.chat import IGNORE, answer_loss_sum, collate, encode, messages_of
from mmsae.world import World


@pytest.fixture(scope="module")
def subject():
    path = zoo_model_dir("subject")
    return AutoModelForImageTextToText.from_pretrained(path).eval(), AutoProcessor.from_pretrained(path)


def _rec(rid, question, answer, image):
    return Record(rid, [image], "", meta={"conversations": [
        {"from": "human", "value": f"<image>\n{question}"}, {"from": "gpt", "value": answer}]})


def test_labels_keep_exactly_the_answer_tokens(subject):
    model, proc = subject
    tok, w = proc.tokenizer, World()
    recs = [_rec("a", "what is the background ?", "sand", w[0].pil),
            _rec("b", "how many objects are there ? is there a roof ?", "two", w[1].pil)]
    items = [encode(r, proc, None, 512) for r in recs]
    inputs, labels = collate(items, tok.pad_token_id)
    ids = inputs["input_ids"]
    # hand-built expectation: the answer word and </s> right after "assistant :", nothing else
    for i, (ans, it) in enumerate(zip(["sand", "two"], items)):
        want = tok(f" {ans} </s>", add_special_tokens=False)["input_ids"]
        kept = (labels[i] != IGNORE).nonzero().flatten().tolist()
        assert labels[i, kept].tolist() == want
        assert tok.convert_ids_to_tokens(ids[i, kept[0] - 2 : kept[0]].tolist()) == ["assistant", ":"]
        assert kept[-1] == it.length - 1  # no label on the padding after it
    image_id = tok.convert_tokens_to_ids("<image>")
    assert int((ids == image_id).sum()) == 2 * 64 and not (labels == image_id).any()
    assert (labels[inputs["attention_mask"] == 0] == IGNORE).all()
    with torch.no_grad():
        loss_sum, n = answer_loss_sum(model, inputs, labels)
        logits = model(**inputs).logits
    manual = sum(torch.nn.functional.cross_entropy(logits[i, p - 1 : p], labels[i, p : p + 1], reduction="sum")
                 for i in range(2) for p in (labels[i] != IGNORE).nonzero().flatten().tolist())
    assert n == 4 and torch.allclose(loss_sum, manual, atol=1e-4)


def test_world_text_and_model_template_agree(subject):
    _, proc = subject
    image = World()[0].pil
    from_meta = encode(_rec("a", "what is the background ?", "sand", image), proc, None, 512)
    from_text = encode(Record("t", [image], "<s> user : <image> what is the background ? assistant : sand </s>"),
                       proc, None, 512)
    assert torch.equal(from_meta.prompt["input_ids"], from_text.prompt["input_ids"])
    assert from_meta.answer == from_text.answer


def test_bad_records_are_rejected_with_a_reason(subject):
    _, proc = subject
    image = World()[0].pil
    with pytest.raises(Reject, match="no assistant turn"):
        messages_of(Record("q", [image], "", meta={"conversations": [{"from": "human", "value": "<image> hi"}]}))
    with pytest.raises(Reject, match="2 <image> placeholders for 1 images"):
        encode(_rec("p", "<image> what ?", "sky", image), proc, None, 512)
    with pytest.raises(Reject, match="exceeds max_length 40"):  # 64 image tokens: never truncated
        encode(_rec("long", "what is the background ?", "sand", image), proc, None, 40)
    with pytest.raises(Reject, match="processor rejected"):
        encode(_rec("tiny", "what ?", "sky", image.resize((1, 1)).crop((0, 0, 0, 0))), proc, None, 512)
