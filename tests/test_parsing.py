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
    # review: yes/no answers after a label word, question echoes, schema echoes, JSON yes/no fields
    ("malignant: no", B, "text"),
    ("Malignant? No.", B, "text"),
    ("Malignant: false", B, "text"),
    ("Malignant: No. Benign: Yes.", B, "text"),
    ("Benign: no atypia seen", B, "text"),
    ("Malignant: 0.85", M, "text"),
    ("Benign - 0.9", B, "text"),
    ("Risk of malignancy: low", B, "text"),
    ("Low risk of malignancy.", B, "text"),
    ("High suspicion for malignancy.", M, "text"),
    ("Malignancy is ruled out.", B, "text"),
    ("Malignancy cannot be ruled out.", M, "text"),
    ("Not benign.", M, "text"),
    ("Benign vs malignant? Benign.", B, "text"),
    ("Is it benign or malignant? Malignant", M, "text"),
    ("Could this be malignant? Yes, likely.", M, "text"),
    ("Is this malignant?", U, "ambiguous"),
    ("Benign. Although some features could suggest malignancy, overall it looks benign.", B, "text"),
    ('{"label": "benign or malignant"}', U, "ambiguous"),
    ('{"label": "benign" or "malignant", "confidence": a number from 0 to 1}', U, "ambiguous"),
    ('{"is_malignant": false}', B, "json"),
    ('{"malignant": true}', M, "json"),
    ('Sure! {"label": "benign", "confidence": "85%"} Hope this helps.', B, "json"),
    # other languages are out of scope: unparsed, never a crash
    ("Es ist gutartig.", U, "no_label"),
    ("这是良性的", U, "no_label"),
]


@pytest.mark.parametrize("text,label,status", ANSWERS)
def test_parse_answer_table(text, label, status):
    parsed = parse_answer(text)
    assert parsed.label == label, (text, parsed)
    assert parsed.status == status, (text, parsed)


def test_table_covers_every_outcome_of_the_parser():
    # what the parser made of the table, not how long the table is: both labels from prose and
    # from JSON, and every way of not finding a label
    outcomes = {(parsed.status, parsed.label) for parsed in map(parse_answer, (text for text, _, _ in ANSWERS))}
    assert {("text", B), ("text", M), ("json", B), ("json", M)} <= outcomes
    assert {status for status, label in outcomes if label is None} == {"ambiguous", "empty", "refusal", "no_label"}


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


@pytest.mark.parametrize("label,confidence", [("malignant", 0.3), ("malignant", 0.5), ("benign", 0.5),
                                              ("benign", 0.2), ("benign", 0.0), ("malignant", 0.95)])
def test_a_stated_confidence_never_flips_the_answer_at_0_5(label, confidence):
    # review: '{"label": "benign", "confidence": 0.5}' gave p = 0.5, called malignant at p >= 0.5;
    # a low confidence (0.3) in "malignant" gave p = 0.3, called benign
    s = score_answer(f'{{"label": "{label}", "confidence": {confidence}}}', 0)
    assert s.score_source == "confidence"
    assert (s.p_malignant >= 0.5) == (label == "malignant")
    if confidence > 0.5:
        assert math.isclose(s.p_malignant, confidence if label == "malignant" else 1 - confidence)


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


def test_label_probability_pins_the_answer_object_not_an_echoed_form():
    # review: the offset came from the first '"label": "' in the text, here the echoed form
    mk = lambda text, p: TokenLogprob(text, math.log(p), (("ben", math.log(0.3)), ("mal", math.log(0.7))))  # noqa: E731
    tokens = [TokenLogprob('Format: {"label": "', -0.1), mk("ben", 0.9), TokenLogprob('ign" or "malignant"}\n', -0.1),
              TokenLogprob('{"label": "', -0.1), mk("mal", 0.7), TokenLogprob('ignant", "confidence": 0.9}', -0.1)]
    text = "".join(t.token for t in tokens)
    s = score_answer(text, 0, tokens=tokens)
    assert s.label == 1 and s.score_source == "logprobs" and math.isclose(s.p_malignant, 0.7)


def test_logprobs_of_a_negated_label_word_are_not_used():
    tokens = [TokenLogprob("Not", -0.1), TokenLogprob(" malignant", math.log(0.9),
                                                     ((" malignant", math.log(0.9)), (" benign", math.log(0.1))))]
    s = score_answer("Not malignant", 1, tokens=tokens)
    assert s.label == 0 and s.score_source == "label" and s.p_malignant == 0.0


def test_label_probability_without_label_token_is_none():
    assert label_probability([TokenLogprob("hello", -0.1)]) is None
