"""Answer parsing of generative VLMs: a table of realistic answers, incl. the study's failure modes."""

from __future__ import annotations

import math

import pytest

from dermbench.paradigms.zeroshot.parsing import (
    TokenLogprob,
    label_probability,
    parse_answer,
    parse_confidence,
    score_answer,
)

B, M, U = 0, 1, None

# (answer text, expected label, expected status)
ANSWERS = [
    # one word, the study's requested format
    ("malignant", M, "text"),
    ("Benign", B, "text"),
    ("  MALIGNANT.\n", M, "text"),
    ("**Benign**", B, "text"),
    # JSON, as requested from servers, with fences and prose around
    ('{"label": "malignant", "confidence": 0.82}', M, "json"),
    ('```json\n{"label": "benign", "confidence": 0.9}\n```', B, "json"),
    ('Here is my answer:\n{"label": "Benign", "confidence": "high"}\nPlease consult a doctor.', B, "json"),
    ('{"reasoning": "asymmetric, several colours", "label": "malignant", "confidence": 70}', M, "json"),
    ('{"classification": "benign"}', B, "json"),
    ('{"label": "not malignant", "confidence": 0.6}', B, "json"),
    # negation
    ("The lesion is not malignant.", B, "text"),
    ("This appears to be a non-malignant nevus.", B, "text"),
    ("There are no signs of malignancy; regular pigment network.", B, "text"),
    ("This lesion is not benign.", M, "text"),
    ("It is unlikely to be malignant.", B, "text"),
    ("Non-cancerous seborrheic keratosis.", B, "text"),
    # extra prose, answer lines
    ("Based on the image, the lesion shows irregular borders and multiple colours. Answer: malignant", M, "text"),
    ("Classification: Benign\nReasoning: symmetric, uniform colour.", B, "text"),
    ("**Final answer:** malignant", M, "text"),
    ("The lesion is most likely melanoma given the blue-white veil.", M, "text"),
    ("This looks like a basal cell carcinoma.", M, "text"),
    # both labels named
    ("Benign or malignant? It is hard to tell from this image.", U, "ambiguous"),
    ("It could be benign or malignant.", U, "ambiguous"),
    ("While some features look benign, the irregular border and colour variation suggest it is malignant.",
     M, "text"),
    ("Although it could be malignant, it is most likely benign.", B, "text"),
    ("The lesion is benign, not malignant.", B, "text"),
    ("A: Asymmetry present. B: irregular border. C: multiple colours. D: >6mm. E: evolving.\n"
     "Considering benign versus malignant features, the lesion is consistent with malignancy.", M, "text"),
    # refusals and empties
    ("", U, "empty"),
    ("   \n ", U, "empty"),
    ("I'm sorry, but I can't provide a medical diagnosis. Please consult a dermatologist.", U, "refusal"),
    ("As an AI, I am unable to determine this.", U, "refusal"),
    ("The image shows a pigmented lesion on the back.", U, "no_label"),
    ("{}", U, "no_label"),
    ('{"label": "unknown"}', U, "no_label"),
    # refusal that still answers: the answer counts
    ("I cannot give a diagnosis, but this appears benign.", B, "text"),
    # confidence in prose
    ("Malignant. Confidence: 85%", M, "text"),
    # more of what models write
    ("Malignant (melanoma)", M, "text"),
    ("Benign nevus. No signs of melanoma.", B, "text"),
    ("Diagnosis: Basal cell carcinoma (malignant)", M, "text"),
    ("I cannot rule out malignancy; a biopsy is recommended.", M, "text"),
    ('{"reasoning": "symmetric", "label": "malignant", "confidence": 0.', M, "text"),  # cut off by max tokens
    ("Yes.", U, "no_label"),
]


@pytest.mark.parametrize("text,label,status", ANSWERS)
def test_parse_answer_table(text, label, status):
    parsed = parse_answer(text)
    assert parsed.label == label, (text, parsed)
    assert parsed.status == status, (text, parsed)


def test_table_is_large_enough():
    assert len(ANSWERS) >= 30


def test_always_the_same_word_is_parsed_but_not_informative():
    # The study's failure mode: a model that answers "malignant" to everything. Each answer parses,
    # and the scores make the constant behaviour visible (AUROC 0.5), not hidden.
    scores = [score_answer("Malignant", y) for y in (0, 1, 0, 1)]
    assert {s.p_malignant for s in scores} == {1.0}
    assert all(s.score_source == "label" for s in scores)


@pytest.mark.parametrize("value,expected", [(0.8, 0.8), ("80%", 0.8), (80, 0.8), ("high", 0.9),
                                            ("0.35", 0.35), (1, 1.0), ("banana", None), (-1, None),
                                            (None, None), (True, None), (250, None)])
def test_parse_confidence(value, expected):
    got = parse_confidence(value)
    assert (got is None and expected is None) or math.isclose(got, expected)


def test_score_sources_in_order_of_preference():
    tokens = [TokenLogprob('{"label": "', -0.01), TokenLogprob("mal", math.log(0.7),
                                                              (("mal", math.log(0.7)), ("ben", math.log(0.2)),
                                                               ("x", math.log(0.1)))),
              TokenLogprob('ignant"}', -0.01)]
    text = "".join(t.token for t in tokens)
    s = score_answer(text, 0, tokens=tokens)
    assert s.score_source == "logprobs" and math.isclose(s.p_malignant, 0.7 / 0.9)
    s = score_answer('{"label": "malignant", "confidence": 0.8}', 0)
    assert s.score_source == "confidence" and math.isclose(s.p_malignant, 0.8)
    s = score_answer('{"label": "benign", "confidence": 0.8}', 1)
    assert s.score_source == "confidence" and math.isclose(s.p_malignant, 0.2)
    s = score_answer("benign", 1)
    assert s.score_source == "label" and s.p_malignant == 0.0


def test_unparsed_and_failed_are_scored_wrong():
    for y in (0, 1):
        for s in (score_answer("I cannot help with that.", y), score_answer("", y),
                  score_answer(None, y, failed=True)):
            assert s.score_source == "scored_wrong"
            assert s.p_malignant == float(1 - y)
            assert s.label is None
    assert score_answer(None, 1, failed=True).parse_status == "failed"


def test_label_probability_pins_the_label_token_not_an_earlier_be():
    # "be" in the reasoning must not be read as the start of "benign".
    tokens = [TokenLogprob("It", -0.1), TokenLogprob(" may", -0.1),
              TokenLogprob(" be", -0.1, ((" be", -0.1), (" ben", -3.0))),
              TokenLogprob(" fine.", -0.1), TokenLogprob(" Answer:", -0.1),
              TokenLogprob(" benign", math.log(0.6), ((" benign", math.log(0.6)), (" malignant", math.log(0.4))))]
    text = "".join(t.token for t in tokens)
    parsed = parse_answer(text)
    assert parsed.label == 0
    assert math.isclose(label_probability(tokens, parsed.offset), 0.4)


def test_logprobs_of_a_negated_label_word_are_not_used():
    tokens = [TokenLogprob("Not", -0.1), TokenLogprob(" malignant", math.log(0.9),
                                                     ((" malignant", math.log(0.9)), (" benign", math.log(0.1))))]
    s = score_answer("Not malignant", 1, tokens=tokens)
    assert s.label == 0 and s.score_source == "label" and s.p_malignant == 0.0


def test_label_probability_without_label_token_is_none():
    assert label_probability([TokenLogprob("hello", -0.1)]) is None
