import pytest

from mmsae.explain import parse_answer


@pytest.mark.parametrize("text, status, explanation", [
    ("red", "explained", "red"),
    ("Explanation: striped texture.", "explained", "striped texture"),
    ("  \"Roof\"  ", "explained", "roof"),
    ("Unable to interpret", "uninterpretable", None),
    ("unable to interpret .", "uninterpretable", None),
    ("", "failed", None),
    (None, "failed", None),
    ("red\nblue", "failed", None),
    ("<unk> star", "failed", None),
    (" ".join(["word"] * 30), "failed", None),
])
def test_strict_parsing(text, status, explanation):
    p = parse_answer(text)
    assert p.status == status
    assert p.explanation == explanation
    if status == "failed":
        assert p.reason
