"""One zeroshot cell: a dual encoder or a generative VLM scores the validation and test images.

Dual encoders embed every image and the prompt set's class prompts and turn the similarities into
P(malignant) (softmax for CLIP-style models, sigmoid for SigLIP-style ones, see
:func:`dermbench.models.vlm.dual.p_malignant_from_embeddings`).

Generative VLMs are asked the prompt set's question per image. Every answer is appended to the
per-record answer cache ``work/answers.jsonl`` as it arrives, so a killed run resumes without
re-asking answered images (failed requests are not cached: they are asked again on resume). Each
image's answer is scored by :func:`dermbench.paradigms.zeroshot.parsing.score_answer`:
log-probabilities, else the stated confidence, else the hard label; unparsed answers and failed
requests are scored as wrong and counted (``unparsed_rate``, ``failed_rate``). The raw answer,
its parse status and score source are kept per image in the predictions.

Beside dermbench's metrics, every cell records the study's own hard-label numbers
(``extra.study_metrics.<split>``: ``study_macro_f1``, ``study_accuracy``; the ``study_pred``
column of the predictions): generative answers read by the study's parser (``error`` when it finds
no single label, a third class in the macro average; failed requests dropped, as the study
dropped them), dual encoders by the larger of the two class scores. See
:mod:`dermbench.metrics.study`.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from ...data.exclusions import REASON_REQUEST_FAILED, Exclusion, exclusion_frame
from ...runs.cell import CellSpec
from ...runs.record import RunRecorder
from ...runs.study import study_metrics_record
from ...utils.atomic import atomic_write_text
from ...utils.console import get_logger
from .parsing import FAILED, UNPARSED, TokenLogprob, score_answer
from .prompts import DEFAULT_PROMPT_SET, PromptSet, PromptSetError, load_prompt_set, metadata_fields_from_mapping
from .settings import ZeroshotSettings
from .study import choose_block, missing_columns, study_parse, study_rows

if TYPE_CHECKING:
    from ...data.dataset import LesionDataset

logger = get_logger("zeroshot")
EVAL_SPLITS = ("validation", "test")
ANSWER_CACHE = "answers.jsonl"
#: A cell whose received answers are empty more often than this fails instead of completing: a
#: model that says nothing is broken (e.g. a Gemma-3-based VLM run in float16), not a weak classifier.
MAX_EMPTY_ANSWER_RATE = 0.5
#: Characters of one answer that are kept (an answer of max_new_tokens tokens is a few thousand at
#: most). A longer answer is cut here, with a note saying how much was dropped, and stored once: in
#: work/answers.jsonl. The label must come within these characters (else the answer is unparsed).
MAX_ANSWER_CHARS = 16_384
#: Characters of an answer shown in the predictions' ``raw_answer`` (a longer one ends with where the rest is).
RAW_ANSWER_PREVIEW = 4_000
#: Log-probability steps kept per answer.
MAX_ANSWER_TOKENS = 4_096


def capped_answer(text: str | None) -> tuple[str | None, int]:
    """``text`` cut to :data:`MAX_ANSWER_CHARS` with a note, and how many characters were dropped."""
    if text is None or len(text) <= MAX_ANSWER_CHARS:
        return text, 0
    dropped = len(text) - MAX_ANSWER_CHARS
    return f"{text[:MAX_ANSWER_CHARS]}\n[answer cut: {dropped} more characters not kept (MAX_ANSWER_CHARS)]", dropped


def _preview(text: str | None) -> str:
    if text is None:
        return ""
    if len(text) <= RAW_ANSWER_PREVIEW:
        return text
    return f"{text[:RAW_ANSWER_PREVIEW]} [... {len(text) - RAW_ANSWER_PREVIEW} more characters in work/{ANSWER_CACHE}]"


def run_cell(spec: CellSpec, recorder: RunRecorder) -> dict[str, Any]:
    """Score the validation and test splits with ``spec.model`` and the settings' prompt set;
    returns the metrics written to ``metrics.json``."""
    from ...runs.datasets import load_cell_dataset
    from ...models import build_zeroshot, resolve
    from ...runs.evaluate import finalize_cell

    t0 = time.perf_counter()
    settings = ZeroshotSettings.model_validate(spec.settings or {})
    model_spec = resolve("zeroshot", spec.model)
    kind = model_spec.zeroshot_kind
    prompt_set = load_prompt_set(settings.prompt_set or DEFAULT_PROMPT_SET[kind])
    if prompt_set.kind != kind:
        raise PromptSetError(f"model {spec.model!r} is a {kind} model but prompt set {prompt_set.name!r} is for "
                             f"{prompt_set.kind} models; use e.g. {DEFAULT_PROMPT_SET[kind]!r}")
    dataset = load_cell_dataset(spec)
    frames = {split: dataset.split(split) for split in EVAL_SPLITS}
    fields = metadata_fields_from_mapping(settings.metadata_columns) if settings.metadata_columns else None
    answer_format, block = settings.answer_format, "none"
    if kind == "generative":  # before loading a model: a metadata prompt on a dataset without metadata
        columns = sorted(set().union(*(f.columns for f in frames.values())))
        prompt_set.check_dataset_columns(columns, dataset.name, fields)
        answer_format = prompt_set.effective_answer_format(settings.answer_format)
        if prompt_set.study_format and prompt_set.uses_metadata:
            block = choose_block(dataset.card, settings.metadata_block)
            _check_block_columns(block, columns, dataset.name, prompt_set.name)
    t_load = time.perf_counter()
    model = build_zeroshot(model_spec, settings, device=spec.device, seed=spec.seed)
    load_s = time.perf_counter() - t_load
    log = logger.info

    if kind == "dual":
        scores, extra = _score_dual(model, prompt_set, frames, settings, dataset.fingerprint, log)
    else:
        scores, extra = _score_generative(model, prompt_set, frames, settings, recorder.work, spec, fields, log,
                                          image_digest=lambda path: _image_digest(dataset, path),
                                          answer_format=answer_format, metadata_block=block)
    extra.update({"kind": kind, "backend": model_spec.backend, "prompt_set": prompt_set.name,
                  "prompt_set_hash": prompt_set.content_hash, "prompt_set_version": prompt_set.version})
    if prompt_set.study_format:
        extra.update({"prompt_set_file": prompt_set.path, "study_format": True, "metadata_block": block})
    extra["study_metrics"] = study_metrics_record(
        dataset, scores, n_boot=spec.n_boot, seed=spec.seed,
        rule=("the study's hard labels (STUDY.md §5.4/§6.6): generative answers read by its parser (error = a third "
              "class in the macro average, failed requests dropped), dual encoders by the larger class score"))
    identity = model.identity()
    provenance = {"weights": identity.get("weights", identity.get("model")), "model_identity": identity,
                  "licence": model_spec.licence, "source": model_spec.source,
                  "device": identity.get("device", "server"), "batch_size": identity.get("batch_size"),
                  "dtype": identity.get("dtype")}
    timing = {"load_model_s": round(load_s, 3), "score_s": round(time.perf_counter() - t0 - load_s, 3)}
    return finalize_cell(recorder, dataset, scores, threshold_policy=spec.threshold_policy, n_boot=spec.n_boot,
                         seed=spec.seed, provenance=provenance, timing=timing, extra=extra, cell=spec.to_dict())


# -- dual encoders ---------------------------------------------------------------------------------

def _score_dual(encoder: Any, prompt_set: PromptSet, frames: dict[str, pd.DataFrame], settings: ZeroshotSettings,
                fingerprint: str, log: Callable[[str], None]) -> tuple[dict[str, pd.DataFrame], dict]:
    from ...models.vlm.dual import image_embeddings, p_malignant_from_embeddings, text_embeddings

    scoring = settings.dual_scoring if settings.dual_scoring != "auto" else encoder.scoring
    class_prompts = prompt_set.class_prompts()
    text = {label: text_embeddings(encoder, prompts) for label, prompts in class_prompts.items()}
    scores = {}
    hits = {}
    for split, frame in frames.items():
        log(f"zeroshot: embedding {len(frame)} {split} images with {encoder.identity().get('model')}")
        images, hits[split] = image_embeddings(encoder, list(frame["img_id"].astype(str)), list(frame["path"]),
                                               dataset_fingerprint=fingerprint, split=split,
                                               batch_size=settings.batch_size)
        p, per_class = p_malignant_from_embeddings(images, text[0], text[1], scoring=scoring,
                                                   logit_scale=encoder.logit_scale, logit_bias=encoder.logit_bias)
        scores[split] = pd.DataFrame({"img_id": frame["img_id"].astype(str).to_numpy(), "p_malignant": p,
                                      "score_benign": per_class[:, 0], "score_malignant": per_class[:, 1],
                                      "score_source": f"similarity_{scoring}",
                                      # the study's argmax over the two class scores (a tie is benign)
                                      "study_pred": ["malignant" if m > b else "benign"
                                                     for b, m in zip(per_class[:, 0], per_class[:, 1])]})
    extra = {"scoring": scoring, "n_prompts": {"benign": len(class_prompts[0]), "malignant": len(class_prompts[1])},
             "score_source": {f"similarity_{scoring}": 1.0}, "unparsed_rate": 0.0, "failed_rate": 0.0,
             "image_embeddings_cached": hits}
    return scores, extra


# -- generative VLMs -----------------------------------------------------------------------------------

class AnswerCache:
    """Append-only JSONL of answers in the cell's ``work/`` folder, keyed per image.

    One line per answer, written with a single ``write`` and flushed, so a kill loses at most the
    line being written; a torn last line is ignored when reading. A line is reused only when its
    ``key`` (model, prompt set content and rendered prompt, answer-changing settings, seed, image
    content) matches the current request, so a changed setting, prompt or image re-asks the image
    instead of mixing answers. (It is the one file of a run that is
    appended rather than replaced atomically: rewriting it after every answer would be quadratic.)
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._entries: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line torn by a kill
                if isinstance(record, dict) and "img_id" in record and "key" in record:
                    self._entries[str(record["img_id"])] = record
        self._fh = None

    def get(self, img_id: str, key: str) -> dict[str, Any] | None:
        record = self._entries.get(str(img_id))
        return record if record is not None and record["key"] == key else None

    def put(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._fh.flush()
        self._entries[str(record["img_id"])] = record

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _image_digest(dataset: LesionDataset, path: str) -> str:
    """The image's sha256 from the dataset's manifest (the path itself when it is not listed)."""
    try:
        rel = Path(path).relative_to(Path(dataset.root) / "images").as_posix()
    except ValueError:
        rel = ""
    return (getattr(dataset, "manifest", None) or {}).get(rel) or str(path)


def _request_key(spec: CellSpec, key_fields: dict[str, Any], identity: dict[str, Any], system: str, prompt: str,
                 prompt_set_hash: str = "", image: str = "") -> str:
    """Everything that changes an answer: model, seed, the answer-changing settings (``key_fields``,
    with the answer format in effect), the prompt set (its content, incl. the answer schema), the
    rendered system and user prompt, and the image's content."""
    # the dtype a local model actually ran in (``auto`` resolves per GPU): answers of a float16 run are
    # not reused by a bfloat16 one (server backends report no dtype and keep their key)
    ident = {k: identity.get(k) for k in ("backend", "model", "weights")}
    if identity.get("dtype"):
        ident["dtype"] = identity["dtype"]
    payload = {"model": spec.model, "identity": ident,
               "seed": spec.seed, "settings": key_fields, "system": system, "prompt": prompt,
               "prompt_set": prompt_set_hash, "image": image}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:24]


def _check_block_columns(block: str, columns: list[str], dataset_name: str, prompt_set_name: str) -> None:
    """A dataset with none of the columns of its study metadata block is an error (every prompt
    would read ``None``); one with some of them is warned about (the study printed ``None`` too)."""
    from .study import block_fields

    missing = missing_columns(block, columns)
    if not missing:
        return
    names = ", ".join("/".join(f.columns) for f in missing)
    if len(missing) == len(block_fields(block)):
        raise PromptSetError(
            f"prompt set {prompt_set_name!r} fills its empty user prompt with the study's {block!r} metadata block, "
            f"but dataset {dataset_name!r} has none of its columns ({names}); its columns are {', '.join(columns)}. "
            f"The study's ISIC CSVs carried the ISIC Archive's metadata (prepare from an isic-cli download: source "
            f"isic-archive), or set metadata_block: none")
    logger.warning("zeroshot: dataset %r has no column for %s of the study's %r metadata block; those lines read "
                   "'None', as the study's code printed a missing column", dataset_name, names, block)


def _score_generative(backend: Any, prompt_set: PromptSet, frames: dict[str, pd.DataFrame],
                      settings: ZeroshotSettings, work: Path, spec: CellSpec, fields: Any,
                      log: Callable[[str], None], image_digest: Callable[[str], str] = str,
                      answer_format: str | None = None, metadata_block: str = "none"
                      ) -> tuple[dict[str, pd.DataFrame], dict]:
    from ...models.vlm.base import VLMRequest

    identity = backend.identity()
    answer_format = answer_format or settings.answer_format
    schema = prompt_set.json_schema() if answer_format == "json" else None
    key_fields = {**settings.answer_key_fields(), "answer_format": answer_format}
    cache = AnswerCache(Path(work) / ANSWER_CACHE)
    requests, keys = [], {}
    for frame in frames.values():
        records = frame.to_dict("records")
        # the study's block prints cells as pandas typed them (55.0, nan, False): see .study.study_rows
        typed = study_rows(frame) if metadata_block != "none" else records
        for row, shown in zip(records, typed):
            prompt = prompt_set.render(shown, answer_format=answer_format, fields=fields,
                                       metadata_block=metadata_block)
            key = _request_key(spec, key_fields, identity, prompt_set.system, prompt, prompt_set.content_hash,
                               image_digest(str(row["path"])))
            keys[str(row["img_id"])] = key
            if cache.get(row["img_id"], key) is None:
                requests.append(VLMRequest(str(row["img_id"]), str(row["path"]), prompt, prompt_set.system, schema))
    total = sum(len(f) for f in frames.values())
    log(f"zeroshot: {total - len(requests)} of {total} answers cached; asking {identity.get('model')} "
        f"({identity.get('backend')}) about {len(requests)} images")
    failures: dict[str, str] = {}
    attempts: dict[str, int] = {}
    done = [0]
    t0 = time.perf_counter()

    def on_answer(answer: Any) -> None:
        done[0] += 1
        attempts[answer.img_id] = answer.attempts
        if answer.failed:
            failures[answer.img_id] = answer.error
        else:
            text, dropped = capped_answer(answer.text)
            tokens = answer.tokens[:MAX_ANSWER_TOKENS] if answer.tokens else None
            cache.put({"img_id": answer.img_id, "key": keys[answer.img_id], "text": text,
                       "tokens": [t.to_dict() for t in tokens] if tokens else None,
                       "attempts": answer.attempts, "seconds": round(answer.seconds, 3),
                       **({"truncated_chars": dropped} if dropped else {})})
        if done[0] % 25 == 0 or done[0] == len(requests):
            rate = done[0] / max(time.perf_counter() - t0, 1e-9)
            log(f"zeroshot: {done[0]}/{len(requests)} answered ({rate:.2f} images/s, {len(failures)} failed)")

    try:
        if requests:
            backend.answer_all(requests, on_answer)
    finally:
        cache.close()

    n_failed = len(failures)
    if total and n_failed / total > settings.max_failed_rate:
        example = next(iter(failures.values()))
        hint = (" The server rejected the request itself: if it does not support JSON-schema output or "
                "log-probabilities, try --answer-format word or --no-logprobs." if "HTTP 400" in example
                or "HTTP 422" in example else "")
        raise RuntimeError(
            f"{n_failed} of {total} requests to {identity.get('backend')} model {identity.get('model')!r}"
            f"{' at ' + identity['url'] if identity.get('url') else ''} failed (more than max_failed_rate="
            f"{settings.max_failed_rate}); e.g. {example}. Answers received are cached in {work} and are not "
            f"asked again when the cell is re-run. Is the server running and the model pulled? (--url / "
            f"OLLAMA_HOST / OPENAI_BASE_URL){hint}")
    if failures:
        failed = [Exclusion(split=split, img_id=str(i), reason=REASON_REQUEST_FAILED, detail=failures[str(i)])
                  for split, frame in frames.items() for i in frame["img_id"] if str(i) in failures]
        atomic_write_text(Path(work) / "failed_requests.csv", exclusion_frame(failed).to_csv(index=False))
        log(f"zeroshot: {n_failed} request(s) failed and are scored as wrong; e.g. {next(iter(failures.values()))}")

    _check_not_mostly_empty(cache, keys, identity, work)

    scores = {}
    statuses: list[str] = []
    sources: list[str] = []
    confidence_ignored = 0
    per_split: dict[str, dict[str, float]] = {}
    for split, frame in frames.items():
        rows = []
        for row in frame.to_dict("records"):
            img_id = str(row["img_id"])
            record = cache.get(img_id, keys[img_id])
            tokens = [TokenLogprob.from_dict(t) for t in record["tokens"]] if record and record.get("tokens") else None
            text = record["text"] if record else None
            scored = score_answer(text, int(row["label"]), tokens=tokens, failed=record is None)
            rows.append({"img_id": img_id, "p_malignant": scored.p_malignant,
                         "answer_label": scored.label,
                         "study_pred": study_parse(text) if record else "",
                         "parse_status": scored.parse_status, "score_source": scored.score_source,
                         "raw_answer": _preview(text),
                         "error": failures.get(img_id, "") if record is None else "",
                         "attempts": record.get("attempts", 1) if record else attempts.get(img_id, 0)})
            statuses.append(scored.parse_status)
            sources.append(scored.score_source)
            confidence_ignored += scored.confidence_ignored
        scores[split] = pd.DataFrame(rows).astype({"answer_label": "Int64"})
        split_status = [r["parse_status"] for r in rows]
        per_split[split] = {"n": len(rows),
                            "unparsed_rate": sum(s in UNPARSED for s in split_status) / max(len(rows), 1),
                            "failed_rate": sum(s == FAILED for s in split_status) / max(len(rows), 1)}
    n = max(len(statuses), 1)
    if confidence_ignored:
        logger.warning("zeroshot: %d of %d answers stated a confidence outside 0-1 (or 0-100 %%), e.g. 1.7 or 7 on a "
                       "1-10 scale; it was ignored and those answers scored by their label alone "
                       "(extra.confidence_out_of_range)", confidence_ignored, len(statuses))
    extra = {
        "unparsed_rate": sum(s in UNPARSED for s in statuses) / n,
        "failed_rate": sum(s == FAILED for s in statuses) / n,
        "per_split": per_split,
        "parse_status": {s: statuses.count(s) for s in sorted(set(statuses))},
        "score_source": {s: round(sources.count(s) / n, 6) for s in sorted(set(sources))},
        "confidence_out_of_range": confidence_ignored,  # answers scored by their label: the stated confidence was ignored
        "scored_wrong": "unparsed answers and failed requests get p_malignant = 1 - label (wrong at every threshold)",
        "answer_format": answer_format,
        "answers_cached": total - len(requests),
        "requests": len(requests),
        "requests_per_s": round(len(requests) / max(time.perf_counter() - t0, 1e-9), 3) if requests else None,
    }
    return scores, extra


def _check_not_mostly_empty(cache: AnswerCache, keys: dict[str, str], identity: dict[str, Any], work: Path) -> None:
    """Fail the cell when most received answers are empty (see :data:`MAX_EMPTY_ANSWER_RATE`)."""
    texts = [record["text"] for img_id, key in keys.items() if (record := cache.get(img_id, key)) is not None]
    empty = sum(not str(text or "").strip() for text in texts)
    if texts and empty / len(texts) > MAX_EMPTY_ANSWER_RATE:
        dtype = identity.get("dtype")
        raise RuntimeError(
            f"{empty} of {len(texts)} answers of {identity.get('backend')} model {identity.get('model')!r} are empty "
            f"(more than {MAX_EMPTY_ANSWER_RATE:.0%}); a model that answers nothing is broken, not a weak classifier, "
            f"so the cell is not scored."
            + (f" It ran in {dtype}: Gemma-3-based models (MedGemma) give empty output in float16; use dtype "
               f"bfloat16 or float32 (dtype auto picks them)." if dtype == "float16" else
               " Check the model's chat template and max_new_tokens, and that the server runs this model.")
            + f" The answers are kept in {work}/{ANSWER_CACHE}.")
