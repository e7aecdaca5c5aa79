import numpy as np

from mmsae.world import World
from mmsae.world.text import CHAT_TEMPLATE, caption, chat_prompt, partial_caption, questions
from mmsae.zoo.build import build_tokenizer


def test_answers_follow_the_scene():
    rng = np.random.default_rng(0)
    for i in range(50):
        s = World()[i]
        for qa in questions(s, rng):
            if qa.type == "colour":
                assert qa.answer == next(o.colour for o in s.objects if o.kind == qa.target)
            if qa.type == "count":
                assert qa.answer == ("zero", "one", "two", "three")[len(s.objects)]
            if qa.type == "scene":
                assert qa.answer == s.background
            if qa.type == "presence":
                colour, kind = qa.question.split()[3:5]
                assert (qa.answer == "yes") == any(o.colour == colour and o.kind == kind for o in s.objects)


def test_presence_questions_are_balanced():
    rng = np.random.default_rng(1)
    yes = [q.answer == "yes" for i in range(300) for q in questions(World()[i], rng) if q.type == "presence"]
    assert 0.35 < np.mean(yes) < 0.65


def test_every_word_is_in_the_tokenizer():
    tok = build_tokenizer()
    rng = np.random.default_rng(2)
    texts = []
    for i in range(100):
        s = World()[i]
        texts += [caption(s), partial_caption(s, rng)]
        texts += [f"{q.question} {q.answer}" for q in questions(s, rng)]
    for t in texts:
        assert tok.unk_token_id not in tok(t, add_special_tokens=False)["input_ids"], t


def test_chat_template_matches_prompt():
    tok = build_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what colour is the star ?"}]}]
    rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert tok.tokenize(rendered) == tok.tokenize(chat_prompt("what colour is the star ?"))
