"""Turning a generative VLM's answer into a label and a continuous P(malignant).

Pure functions, no I/O: :func:`parse_answer` reads the answer text, :func:`label_probability`
reads token log-probabilities, and :func:`score_answer` combines them into the score recorded
per image.

Parsing order (first that decides wins):

1. **empty** text -> ``empty``.
2. A **JSON object** anywhere in the text (markdown fences and prose around it are tolerated)
   with a ``label`` (or ``answer``/``classification``/``diagnosis``/``prediction``) field naming
   benign or malignant, or a yes/no field ``malignant``/``is_malignant``/``benign``/``is_benign``
   -> ``json``; a ``confidence`` field is read as the confidence in *that* label (0-1, a
   percentage, or low/medium/high; see :func:`parse_confidence` for the one rule on its range).
3. **Free text**: mentions of benign/malignant words, where a negation in front flips the
   meaning ("not malignant", "non-malignant", "no signs of malignancy", "low risk of malignancy"
   -> benign), and so does a bare no after it ("malignant: no", "Malignant? No."). A word in a
   question ("Benign or malignant? Benign.") does not count when a word outside one does; an
   answer that only asks -> ``ambiguous``. One side named -> ``text``. Both named -> an explicit
   answer line ("Answer: malignant") or a concluding phrase ("most likely benign", "consistent
   with malignancy") decides; otherwise ``ambiguous`` (the study's "benign or malignant?" echo).
4. No label word: a refusal ("I cannot provide a diagnosis", "consult a dermatologist")
   -> ``refusal``, anything else -> ``no_label``.

``empty``, ``ambiguous``, ``refusal`` and ``no_label`` are *unparsed*; together with failed
requests they are scored as wrong by the cell (never a third class, never dropped).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ...models.vlm.base import TokenLogprob

#: Parse statuses that produced a label.
PARSED = ("json", "text")
#: Parse statuses that did not (scored as wrong).
UNPARSED = ("empty", "ambiguous", "refusal", "no_label")
#: Status of an image whose request failed (no answer at all).
FAILED = "failed"

_MALIGNANT_WORDS = r"malignan(?:t|cy|cies)|cancerous|cancer|carcinoma|melanoma"
_BENIGN_WORDS = r"benign|non-?cancerous|noncancerous|harmless"
_WORD_RE = re.compile(rf"\b(?P<word>{_BENIGN_WORDS}|{_MALIGNANT_WORDS})\b", re.IGNORECASE)
# Prefixes that make the following label word mean its opposite.
_NEGATION_RE = re.compile(
    r"(?:\bnot\b|\bnon-?\s*$|\bno\b|\bnor\b|\bisn'?t\b|\bwasn'?t\b|\bnever\b|\bwithout\b|\bunlikely\b|"
    r"\bdoes ?n[o']t\b|\bdo ?n[o']t\b|\black(?:s|ing)?\b|\bfree of\b|"
    r"\bneither\b|\babsence of\b|\bnegative for\b|\bno evidence of\b|\bno signs? of\b|"
    r"\blow (?:risk|suspicion|likelihood|probability|chance|concern)\b)"
    r"(?:\s+(?:\w+|,)){0,3}\s*$",
    re.IGNORECASE,
)
_NON_PREFIX_RE = re.compile(r"\bnon-?\s*$", re.IGNORECASE)
# A yes/no right after a label word answers it: "malignant: no", "Malignant? No.", "Benign: yes",
# "Risk of malignancy: low", "malignancy is ruled out". Only a bare answer ending the clause counts
# ("Benign: no atypia" is not a "no" to benign).
_POSTFIX_NO_RE = re.compile(
    r"^[\"'`]?\s*(?:[:=?\-]\s*\**\s*(?:no|false|negative|unlikely|absent|low|none)\b\**(?=\s*(?:[.,;!)\n]|$))"
    r"|\s+(?:is|was|has been|can be|been)\s+(?:ruled out|excluded)\b)",
    re.IGNORECASE,
)
_POSTFIX_YES_RE = re.compile(
    r"^[\"'`]?\s*[:=?\-]\s*\**\s*(?:yes|true|positive|likely|present|high)\b", re.IGNORECASE)
_ANSWER_LINE_RE = re.compile(
    r"(?:final answer|answer|classification|diagnosis|prediction|label|verdict|conclusion|assessment|"
    r"result|category)[\"'`]?\s*(?:is)?\s*[:=\-]\s*\**\s*[\"'`]?\s*(?P<word>benign|malignant)\b"
    # not an echo of the requested form ('"label": "benign" or "malignant"', 'benign/malignant')
    r"(?![\"'`]?\s*(?:or|\||/|vs\.?|versus)\s*[\"'`]?\s*(?:benign|malignant))",
    re.IGNORECASE,
)
_CONCLUSION_RE = re.compile(
    r"(?:most likely|more likely|likely|probably|appears to be|appears|seems to be|looks? like|looks?|"
    r"is consistent with|"
    r"consistent with|suggestive of|suggests?|suggesting|indicative of|indicates?|favou?rs?|"
    r"classify (?:it|this|the lesion) as|classified as|i would (?:say|classify)|i (?:think|believe)|"
    r"therefore|thus|overall|in conclusion|conclusion)"
    r"(?:\s+(?:it|this|the|lesion|is|as|a|an|be|to|being|of|that|process|it's))*\s*[:,]?\s*\**"
    r"(?P<word>benign|malignan(?:t|cy))\b",
    re.IGNORECASE,
)
_REFUSAL_RE = re.compile(
    r"\b(?:i can(?:'|no)?t|i cannot|i am unable|i'm unable|unable to|not able to|i'm not able|"
    r"i am not able|i won'?t|i'm sorry|i am sorry|sorry,|as an ai|not a (?:doctor|medical professional)|"
    r"consult (?:a|your) (?:dermatologist|doctor|healthcare|medical)|seek (?:medical|professional)|"
    r"cannot (?:provide|make|determine|diagnose)|can'?t (?:provide|make|determine|diagnose))",
    re.IGNORECASE,
)
_FENCE_RE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)
_LABEL_KEYS = ("label", "answer", "classification", "diagnosis", "prediction", "class", "result")
_BOOL_KEYS = ("malignant", "is_malignant", "benign", "is_benign")
_CONFIDENCE_KEYS = ("confidence", "probability", "certainty", "score")
_VERBAL_CONFIDENCE = {"very low": 0.55, "low": 0.6, "medium": 0.75, "moderate": 0.75,
                      "high": 0.9, "very high": 0.97}


@dataclass(frozen=True)
class ParsedAnswer:
    """What an answer says: ``label`` 1 = malignant, 0 = benign, None = unparsed."""

    label: int | None
    status: str                  # one of PARSED or UNPARSED
    confidence: float | None = None  # stated confidence in ``label``, in [0, 1]
    detail: str = ""
    offset: int | None = None    # where in the answer text the deciding label word starts

    @property
    def parsed(self) -> bool:
        return self.label is not None


def _word_label(word: str) -> int:
    w = word.lower()
    if re.fullmatch(_BENIGN_WORDS, w):
        return 0
    return 1


def _label_from_value(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    v = value.strip().strip("\"'`*. ").lower()
    if v in ("benign", "b", "0", "non-malignant", "nonmalignant", "not malignant"):
        return 0
    if v in ("malignant", "m", "1", "malignancy"):
        return 1
    labels = {label for label, _ in _votes(v)}
    return labels.pop() if len(labels) == 1 else None


def parse_confidence(value: Any) -> float | None:
    """A stated confidence as a probability in [0, 1], or None when none is stated or it is out of range.

    One rule for every answer:

    * a number in [0, 1] is a probability (``0.8``);
    * a number with a percent sign is a percentage in [0, 100] (``"80%"``, ``"1.7%"``);
    * a bare number above 10 and up to 100 is a percentage too (asked for 0-1, models often write ``85``);
    * ``very low`` ... ``very high`` map to fixed values (:data:`_VERBAL_CONFIDENCE`);
    * anything else is **out of range and ignored**: a bare number in (1, 10] (``1.7``: not a
      probability, and as a 1.7 % or a 1-10 scale it cannot be told apart), above 100, above 100 %,
      negative, NaN or infinite. The answer's label still counts; it is scored as a hard label
      (:func:`score_answer`), and :func:`parse_answer` notes the ignored value in ``detail``.
    """
    if value is None or isinstance(value, bool):
        return None
    percent = False
    if isinstance(value, str):
        text = value.strip().lower().rstrip(".")
        if text in _VERBAL_CONFIDENCE:
            return _VERBAL_CONFIDENCE[text]
        match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%?)", text)
        if not match:
            return None
        number, percent = float(match.group(1)), bool(match.group(2))
    elif isinstance(value, (int, float)):
        number = float(value)
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    if percent:
        return number / 100.0 if number <= 100.0 else None
    if number <= 1.0:
        return number
    return number / 100.0 if 10.0 < number <= 100.0 else None


def _out_of_range(value: Any) -> bool:
    """A stated confidence that is a number (or a percentage) but not one :func:`parse_confidence` accepts."""
    if isinstance(value, bool) or parse_confidence(value) is not None:
        return False
    if isinstance(value, (int, float)):
        return True
    return isinstance(value, str) and re.fullmatch(r"\s*-?([0-9]*\.?[0-9]+)\s*%?\s*\.?\s*", value) is not None


def _json_candidates(text: str) -> Iterable[tuple[Any, int]]:
    """(JSON value, where it starts) found in the text: fenced blocks first, then every balanced
    {...} object."""
    for fence in _FENCE_RE.finditer(text):
        try:
            yield json.loads(fence.group(1).strip()), fence.start(1)
        except ValueError:
            pass
    depth, start = 0, None
    in_string, escaped = False, False
    for i, ch in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
            continue
        if ch == '"' and depth > 0:
            in_string = True
        elif ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0 and start is not None:
                try:
                    yield json.loads(text[start:i + 1]), start
                except ValueError:
                    pass
                start = None


def _from_json(text: str) -> ParsedAnswer | None:
    for obj, start in _json_candidates(text):
        if not isinstance(obj, dict):
            continue
        lowered = {str(k).strip().lower(): v for k, v in obj.items()}
        for key in _LABEL_KEYS:
            if key in lowered:
                label = _label_from_value(lowered[key])
                if label is None:
                    continue
                confidence = None
                note = ""
                for ckey in _CONFIDENCE_KEYS:
                    if ckey in lowered:
                        confidence = parse_confidence(lowered[ckey])
                        if _out_of_range(lowered[ckey]):
                            note = f"; stated {ckey} {str(lowered[ckey])[:20]!r} out of range, ignored"
                        break
                if confidence is None and "p_malignant" in lowered:
                    p = parse_confidence(lowered["p_malignant"])
                    if p is not None:
                        confidence = p if label == 1 else 1.0 - p
                # the label value of *this* object (not an echo of the requested form before it)
                where = re.compile(rf'"{re.escape(key)}"\s*:\s*"?', re.IGNORECASE).search(text, start)
                return ParsedAnswer(label, "json", confidence, f"json field {key!r}{note}",
                                    where.end() if where else None)
        # {"malignant": true} / {"is_benign": false}: a yes/no field per label
        flags = {1 - int(k.endswith("benign")) if v else int(k.endswith("benign"))
                 for k, v in lowered.items() if k in _BOOL_KEYS and isinstance(v, bool)}
        if len(flags) == 1:
            return ParsedAnswer(flags.pop(), "json", None, "json yes/no field")
    return None


def _votes(text: str) -> list[tuple[int, int]]:
    """(label, offset) votes of every benign/malignant word in ``text``, negations flipped."""
    votes, questions = _split_votes(text)
    return votes or questions


def _split_votes(text: str) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Votes outside and inside questions. A word inside a question ("Benign or malignant?
    Benign.") echoes the question rather than answering it. A bare yes/no right after the word
    ("malignant: no", "Malignant? No.") answers it, so that word is not a question.
    """
    votes, questions = [], []
    for match in _WORD_RE.finditer(text):
        label = _word_label(match.group("word"))
        before = text[max(0, match.start() - 40):match.start()]
        after = text[match.end():match.end() + 40]
        # "non-malignant" / "non malignant": the prefix belongs to the word.
        if _NON_PREFIX_RE.search(before) or _NEGATION_RE.search(_clause(before)):
            label = 1 - label
        answered = False
        if _POSTFIX_NO_RE.search(after):
            label, answered = 1 - label, True
        elif _POSTFIX_YES_RE.search(after):
            answered = True
        end = re.search(r"[.!?\n]", text[match.end():])
        in_question = not answered and end is not None and end.group(0) == "?"
        (questions if in_question else votes).append((label, match.start("word")))
    return votes, questions


def _clause(before: str) -> str:
    """The part of the preceding text in the same clause (a negation does not cross . ; or 'but')."""
    parts = re.split(r"[.;!?\n]|\bbut\b|\bhowever\b|\balthough\b|\bwhile\b", before, flags=re.IGNORECASE)
    return parts[-1]


def _strip_markup(text: str) -> str:
    """Blank out markdown (fences, emphasis, headers) keeping every character offset."""
    text = re.sub(r"```(?:json|JSON)?", lambda m: " " * len(m.group(0)), text)
    return re.sub(r"[*_#>`]", " ", text)


def parse_answer(text: str | None) -> ParsedAnswer:
    """Read a label (and a stated confidence) from one answer; see the module docstring."""
    if text is None or not str(text).strip():
        return ParsedAnswer(None, "empty")
    raw = str(text)
    found = _from_json(raw)
    if found is not None:
        return found
    clean = _strip_markup(raw)
    # A one-word answer (the study's prompts asked for one word), possibly with punctuation.
    first = re.match(r"\W*(benign|malignant)\b\W*$", clean, re.IGNORECASE)
    if first:
        return ParsedAnswer(_word_label(first.group(1)), "text", None, "one word", first.start(1))
    confidence = _confidence_in_text(clean)
    answer_lines = [(_word_label(m.group("word")), m.start("word")) for m in _ANSWER_LINE_RE.finditer(clean)]
    if answer_lines:
        label, offset = answer_lines[-1]
        return ParsedAnswer(label, "text", confidence, "answer line", offset)
    votes, questions = _split_votes(clean)
    if questions and not votes:
        return ParsedAnswer(None, "ambiguous", None, "only asks whether the lesion is benign or malignant")
    if votes and len(set(label for label, _ in votes)) == 1:
        return ParsedAnswer(votes[0][0], "text", confidence, "label words", votes[0][1])
    if votes:
        concluded = []
        for m in _CONCLUSION_RE.finditer(clean):
            label = _word_label(m.group("word"))
            before = clean[max(0, m.start() - 40):m.start()]
            if _NEGATION_RE.search(_clause(before) + " " + m.group(0)[:m.start("word") - m.start()]):
                label = 1 - label
            concluded.append((label, m.start("word")))
        if concluded and len(set(label for label, _ in concluded)) == 1:
            return ParsedAnswer(concluded[0][0], "text", confidence, "concluding phrase", concluded[0][1])
        if concluded:
            return ParsedAnswer(concluded[-1][0], "text", confidence, "last concluding phrase", concluded[-1][1])
        return ParsedAnswer(None, "ambiguous", None, "names both benign and malignant without concluding")
    if _REFUSAL_RE.search(clean):
        return ParsedAnswer(None, "refusal", None, "the model declined to answer")
    return ParsedAnswer(None, "no_label", None, "no benign/malignant word in the answer")


def _confidence_in_text(text: str) -> float | None:
    match = re.search(r"confiden(?:ce|t)\s*(?:level|score)?\s*(?:is|of|:|=)?\s*[:=]?\s*"
                      r"([0-9]*\.?[0-9]+\s*%?|very high|very low|high|medium|moderate|low)",
                      text, re.IGNORECASE)
    return parse_confidence(match.group(1)) if match else None


# -- token log-probabilities (TokenLogprob: what a generative backend returns per token) -----

def _label_prefix(token: str) -> int | None:
    """1/0 if the token text starts the word malignant/benign ("mal", " Malignant", "ben")."""
    t = token.strip().strip("\"'`*").lower()
    if len(t) < 2:
        return None
    if "malignant".startswith(t) or t.startswith("malignan"):
        return 1
    if "benign".startswith(t) or t.startswith("benign"):
        return 0
    return None


def label_probability(tokens: Sequence[TokenLogprob], offset: int | None = None) -> float | None:
    """P(malignant) at the first generated token that starts a label word, from its alternatives
    (see :func:`label_step`)."""
    step = label_step(tokens, offset)
    return None if step is None else step[0]


def label_step(tokens: Sequence[TokenLogprob], offset: int | None = None) -> tuple[float, int] | None:
    """(P(malignant), side of the chosen token) at the first generated token that starts a label word.

    At that step the model chose between continuing with "malignant"/"mal..." or
    "benign"/"ben..."; summing the probabilities of the alternatives that start either word and
    normalising gives a continuous score (so a VLM gets an AUROC). The chosen token is always
    counted. Returns None when no step starts a label word or no alternative was returned for the
    other label *and* the chosen token carries no probability (then the caller falls back to the
    stated confidence).

    ``offset`` (from :class:`ParsedAnswer`) pins the step: the token whose text covers that
    character of the answer, so a "be" in the reasoning before the label is not mistaken for it.
    """
    steps: Sequence[TokenLogprob] = tokens
    if offset is not None:
        position, pinned = 0, []
        for step in tokens:
            end = position + len(step.token)
            if end > offset:
                pinned.append(step)
                if len(pinned) == 2:
                    break
            position = end
        steps = pinned or tokens
    for step in steps:
        chosen = _label_prefix(step.token)
        if chosen is None:
            continue
        mass = {0: 0.0, 1: 0.0}
        seen = set()
        alternatives = list(step.top)
        if not any(t == step.token for t, _ in alternatives):
            alternatives.append((step.token, step.logprob))
        for text, logprob in alternatives:
            side = _label_prefix(text)
            if side is None or text in seen or logprob is None or math.isnan(logprob):
                continue
            seen.add(text)
            mass[side] += math.exp(logprob)
        total = mass[0] + mass[1]
        if total <= 0:
            return None
        return mass[1] / total, chosen
    return None


# -- the score of one image -------------------------------------------------------------------

@dataclass(frozen=True)
class ImageScore:
    p_malignant: float
    label: int | None          # the model's answer, None when unparsed or failed
    parse_status: str          # json | text | empty | ambiguous | refusal | no_label | failed
    score_source: str          # logprobs | confidence | label | scored_wrong
    confidence_ignored: bool = False  # scored by its label because its stated confidence was out of range


def score_answer(text: str | None, true_label: int, *, tokens: Sequence[TokenLogprob] | None = None,
                 failed: bool = False) -> ImageScore:
    """P(malignant) of one image: log-probabilities, else stated confidence, else the hard label.

    An unparsed answer or a failed request is **scored as wrong**: ``p_malignant = 1 - true_label``
    (1.0 for a benign image, 0.0 for a malignant one). That counts against every metric at every
    threshold in (0, 1] - accuracy, sensitivity/specificity, F1 and the ranking metrics - instead
    of inventing a third class or dropping the image. The label is used only for this.
    """
    wrong = float(1 - int(true_label))
    if failed:
        return ImageScore(wrong, None, FAILED, "scored_wrong")
    parsed = parse_answer(text)
    if not parsed.parsed:
        return ImageScore(wrong, None, parsed.status, "scored_wrong")
    label = int(parsed.label)
    if tokens:
        # The offset pins the label token only when the tokens spell the answer exactly. The
        # token probability is used only when the chosen token *is* the answer ("malignant" for a
        # malignant answer): in "not malignant" it measures the opposite of the answer.
        offset = parsed.offset if "".join(t.token for t in tokens) == text else None
        step = label_step(tokens, offset)
        if step is not None and step[1] == label:
            return ImageScore(float(step[0]), label, parsed.status, "logprobs")
    if parsed.confidence is not None:
        # A stated confidence below 0.5 in a binary answer still names the label: the score stays on
        # that label's side of 0.5 (pred = p >= 0.5), so the paper's operating point scores the answer
        # the model gave, and a benign answer at 50% is not called malignant.
        c = min(max(parsed.confidence, 0.5), 1.0)
        p = c if label == 1 else min(1.0 - c, math.nextafter(0.5, 0.0))
        return ImageScore(p, label, parsed.status, "confidence")
    return ImageScore(float(label), label, parsed.status, "label", confidence_ignored="out of range" in parsed.detail)
