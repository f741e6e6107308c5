"""Prompt sets: YAML files under ``prompt_sets/`` (or any path), one registry entry each.

Two kinds:

* ``dual`` - for dual encoders: ``templates`` x ``classes`` (class names per label). The study
  used the bare words (``bare_words``); the default is a dermatology template ensemble
  (``derm_ensemble``).
* ``generative`` - for generative VLMs: an optional ``system`` message and a ``prompt``.
  dermbench ships its own wording: ``simple``, ``patient_metadata`` and ``abcde`` after the
  study's three settings, and ``image_only`` (dermbench's; the study had no such setting).
  A ``{metadata}`` placeholder is filled from the image's row through ``metadata_fields``
  (column -> label [+ unit]); a row's missing values are left out, never printed as ``nan``.
  The answer instruction (JSON or one word) is appended by :meth:`PromptSet.render`, so the same
  set works with backends that do and do not constrain output to JSON.

**The study's own prompt files** load as they are, by path (``vlm_prompt_simple.yaml``,
``vlm_prompt_patient_info.yaml``, ``vlm_prompt_abcde_rules.yaml``: keys ``system_prompt`` and
``user_prompt``; ``vlm_dual_encoder.yaml``: ``labels``), so a user holding the study's repository
reproduces its prompts verbatim without dermbench carrying their text. Such a set is
``study_format``: its text is sent unchanged (not even stripped), nothing is appended to it
(answer format ``study``: the text itself asks for one word), and an empty ``user_prompt`` is
filled with the study's metadata block for the dataset (:mod:`.study`), or left empty where the
study had none.

``PROMPT_SETS`` entries point at :data:`BUILTIN` attributes, so listing them reads only the
small YAML headers; ``load_prompt_set(name_or_path)`` also accepts a path to a user's YAML file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from ...registry import Registry
from ...errors import PromptSetError

PROMPT_DIR = Path(__file__).resolve().parent / "prompt_sets"
KINDS = ("dual", "generative")
DEFAULT_PROMPT_SET = {"dual": "derm_ensemble", "generative": "simple"}

#: Appended to every generative prompt, by answer format.
ANSWER_INSTRUCTIONS = {
    "json": ('Answer with a JSON object only, in this form: {"label": "benign" or "malignant", '
             '"confidence": a number from 0 to 1 (how sure you are of the label)}.'),
    "json_reasoning": ('Answer with a JSON object only, in this form: {"reasoning": "your brief notes", '
                       '"label": "benign" or "malignant", "confidence": a number from 0 to 1 '
                       '(how sure you are of the label)}.'),
    "word": "Answer with exactly one word: benign or malignant.",
    "word_reasoning": "End your answer with a final line of the form 'Answer: benign' or 'Answer: malignant'.",
}

# Only words: a "1" is a Fitzpatrick type or a diameter as often as a flag, and "F" is a sex.
_TRUE = {"true", "yes"}
_FALSE = {"false", "no"}


@dataclass(frozen=True)
class MetadataField:
    column: str
    label: str
    unit: str = ""


@dataclass(frozen=True)
class PromptSet:
    name: str
    kind: str
    version: int = 1
    description: str = ""
    source: str = ""
    # dual encoders
    templates: tuple[str, ...] = ()
    classes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # generative VLMs
    system: str = ""
    prompt: str = ""
    reasoning: bool = False
    metadata_fields: tuple[MetadataField, ...] = ()
    path: str = ""
    study_format: bool = False  # a prompt file of the study, sent verbatim (see the module docstring)

    # -- identity ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "version": self.version, "templates": list(self.templates),
               "classes": {k: list(v) for k, v in self.classes.items()}, "system": self.system,
               "prompt": self.prompt, "reasoning": self.reasoning,
               "metadata_fields": [vars(f) for f in self.metadata_fields]}
        if self.study_format:  # only then: the content hashes of dermbench's own sets stay what they were
            out["study_format"] = True
        return out

    @property
    def content_hash(self) -> str:
        """Hash of everything that changes what a model is asked (cache keys, run records)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def uses_metadata(self) -> bool:
        """Whether a row's metadata goes into the prompt: a ``{metadata}`` placeholder, or the
        empty user prompt of a study prompt file (filled with the study's block, if the dataset has one)."""
        if self.study_format:
            return self.kind == "generative" and not self.prompt.strip()
        return "{metadata}" in self.prompt

    def effective_answer_format(self, requested: str) -> str:
        """The answer format a cell uses with this set. A study prompt file asks for one word in its
        own text: it runs as ``study`` (nothing appended) under the default ``json`` too, and
        ``word`` (which would append a second instruction) is refused."""
        if not self.study_format:
            return requested
        if requested == "word":
            raise PromptSetError(f"prompt set {self.name!r} is one of the study's prompt files, whose own text "
                                 f"asks for one word; use answer_format study (nothing appended), not word")
        return "study"

    # -- dual encoders ------------------------------------------------------------------------
    def class_prompts(self) -> dict[int, list[str]]:
        """Label (0 benign, 1 malignant) -> every template filled with every class name."""
        self._require("dual")
        out = {}
        for label, key in ((0, "benign"), (1, "malignant")):
            out[label] = [t.replace("{}", name) for name in self.classes[key] for t in self.templates]
        return out

    # -- generative VLMs ----------------------------------------------------------------------
    def answer_instruction(self, answer_format: str) -> str:
        """What is appended to the prompt: nothing for ``study`` (the study appended nothing)."""
        if answer_format == "study" or self.study_format:
            return ""
        key = answer_format + ("_reasoning" if self.reasoning else "")
        return ANSWER_INSTRUCTIONS[key]

    def json_schema(self) -> dict[str, Any]:
        """JSON schema of the requested answer (Ollama ``format``, OpenAI ``response_format``)."""
        props: dict[str, Any] = {}
        required = []
        if self.reasoning:
            props["reasoning"] = {"type": "string"}
            required.append("reasoning")
        props["label"] = {"type": "string", "enum": ["benign", "malignant"]}
        props["confidence"] = {"type": "number", "minimum": 0, "maximum": 1}
        required += ["label", "confidence"]
        return {"type": "object", "properties": props, "required": required, "additionalProperties": False}

    def render(self, row: Mapping[str, Any] | None = None, *, answer_format: str = "json",
               fields: tuple[MetadataField, ...] | None = None, metadata_block: str = "none") -> str:
        """The user prompt for one image (its metadata row when the set uses metadata).

        A study prompt file's user prompt is returned verbatim, or, when it is empty, the study's
        ``metadata_block`` for the row (:func:`.study.render_block`; the row typed by
        :func:`.study.study_rows`); nothing is appended. Other sets fill ``{metadata}`` and append
        the answer instruction of ``answer_format`` (nothing for ``study``)."""
        self._require("generative")
        if self.study_format:
            if self.uses_metadata and metadata_block != "none":
                from .study import render_block

                return render_block(metadata_block, row or {})
            return self.prompt
        text = self.prompt.strip()
        if self.uses_metadata:
            text = text.replace("{metadata}", render_metadata(row or {}, fields or self.metadata_fields))
        instruction = self.answer_instruction(answer_format)
        return f"{text}\n{instruction}" if instruction else text

    def check_dataset_columns(self, columns: list[str], dataset_name: str,
                              fields: tuple[MetadataField, ...] | None = None) -> list[str]:
        """The metadata columns this set will use on a dataset; a clear error when there are none.

        The shipped mapping covers several datasets, so a dataset may have only some of its columns;
        a mapping given for this dataset (``fields``, the ``metadata_columns`` setting) must match
        every column, so a typo is an error instead of a field silently left out of every prompt."""
        if not self.uses_metadata or self.study_format:  # a study file's block: see .study.missing_columns
            return []
        explicit = fields is not None
        fields = fields or self.metadata_fields
        present = [f.column for f in fields if f.column in columns]
        missing = [f.column for f in fields if f.column not in columns]
        if explicit and present and missing:
            raise PromptSetError(
                f"metadata_columns names column(s) {', '.join(missing)} that dataset {dataset_name!r} does not "
                f"have; its columns are {', '.join(columns)}")
        if not present:
            wanted = ", ".join(f.column for f in fields) or "(none configured)"
            raise PromptSetError(
                f"prompt set {self.name!r} puts patient metadata into the prompt, but dataset {dataset_name!r} "
                f"has none of its columns ({wanted}); its columns are {', '.join(columns)}. Use a prompt set "
                f"without metadata (image_only, simple, abcde) or map this dataset's columns with the zeroshot "
                f"setting metadata_columns: {{column: label}}")
        return present

    def _require(self, kind: str) -> None:
        if self.kind != kind:
            raise PromptSetError(f"prompt set {self.name!r} is for {self.kind} models, not {kind} ones")


def render_metadata(row: Mapping[str, Any], fields: tuple[MetadataField, ...]) -> str:
    """One ``- Label: value unit`` line per field with a value; missing values are left out."""
    lines = []
    for f in fields:
        value = _format_value(row.get(f.column))
        if value is None:
            continue
        unit = f" {f.unit}" if f.unit and value not in ("yes", "no") else ""
        lines.append(f"- {f.label}: {value}{unit}")
    return "\n".join(lines) if lines else "- not available for this patient"


def _format_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return None
        return str(int(value)) if value.is_integer() else f"{value:g}"
    if hasattr(value, "item") and not isinstance(value, str):  # numpy scalar
        return _format_value(value.item())
    text = str(value).strip()
    low = text.lower()
    if not text or low in ("nan", "none", "null", "na", "n/a", "<na>"):
        return None
    if low in _TRUE:
        return "yes"
    if low in _FALSE:
        return "no"
    try:
        number = float(text)
    except ValueError:
        text = text.replace("_", " ")
        return text.lower() if text.isupper() and len(text) > 1 else text  # PAD-UFES-20 writes FEMALE, NECK
    return _format_value(number)


def metadata_fields_from_mapping(mapping: Mapping[str, str]) -> tuple[MetadataField, ...]:
    """``{column: "Label"}`` or ``{column: "Label [unit]"}`` -> fields (a dataset's own mapping)."""
    out = []
    for column, label in mapping.items():
        unit = ""
        label = str(label)
        if label.endswith("]") and "[" in label:
            label, _, unit = label[:-1].rpartition("[")
        out.append(MetadataField(str(column).strip().lower(), label.strip(), unit.strip()))
    return tuple(out)


# -- loading -------------------------------------------------------------------------------------

STUDY_KEYS = {"system_prompt", "user_prompt", "labels"}


def parse_study_prompt_file(data: dict[str, Any], where: str) -> PromptSet:
    """A prompt file of the study (keys ``system_prompt``/``user_prompt``, or only ``labels``)."""
    unknown = sorted(set(data) - STUDY_KEYS)
    if unknown:
        raise PromptSetError(f"{where}: a study prompt file has only {', '.join(sorted(STUDY_KEYS))}; "
                             f"unknown key(s) {unknown}")
    common = dict(name=Path(where).stem, version=1, path=where, study_format=True,
                  source=f"the study's prompt file {Path(where).name} (MICCAI 2026, loaded verbatim)")
    if not ({"system_prompt", "user_prompt"} & set(data)):
        labels = data.get("labels")
        if not isinstance(labels, list) or sorted(str(v).strip().lower() for v in labels) != ["benign", "malignant"]:
            raise PromptSetError(f"{where}: labels must list benign and malignant (the study's dual-encoder file); "
                                 f"got {labels!r}")
        # The study's wrappers scored the bare words whatever this list said; it says them too.
        return PromptSet(kind="dual", description="the study's dual-encoder prompts: the bare label words",
                         templates=("{}",), classes={"benign": ("benign",), "malignant": ("malignant",)}, **common)
    texts = {}
    for key in ("system_prompt", "user_prompt"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise PromptSetError(f"{where}: {key} must be text, got {type(value).__name__}")
        texts[key] = value or ""
    if not texts["system_prompt"].strip() and not texts["user_prompt"].strip():
        raise PromptSetError(f"{where}: both system_prompt and user_prompt are empty")
    return PromptSet(kind="generative", description="the study's prompt, verbatim", system=texts["system_prompt"],
                     prompt=texts["user_prompt"], **common)


def parse_prompt_set(data: Any, where: str) -> PromptSet:
    if not isinstance(data, dict):
        raise PromptSetError(f"{where}: a prompt set is a YAML mapping")
    if set(data) & STUDY_KEYS and "kind" not in data:
        return parse_study_prompt_file(data, where)
    allowed = {"name", "kind", "version", "description", "source", "templates", "classes", "system", "prompt",
               "reasoning", "metadata_fields"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise PromptSetError(f"{where}: unknown key(s) {unknown}; allowed: {', '.join(sorted(allowed))}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise PromptSetError(f"{where}: kind must be one of {KINDS}, got {kind!r}")
    name = str(data.get("name") or Path(where).stem)
    common = dict(name=name, kind=kind, version=int(data.get("version", 1)),
                  description=str(data.get("description", "")), source=str(data.get("source", "")), path=where)
    if kind == "dual":
        templates = tuple(str(t) for t in data.get("templates") or ["{}"])
        bad = [t for t in templates if t.count("{}") != 1]
        if bad:
            raise PromptSetError(f"{where}: every template needs exactly one '{{}}' for the class name; {bad}")
        classes = data.get("classes") or {}
        if set(classes) != {"benign", "malignant"}:
            raise PromptSetError(f"{where}: classes must have exactly the keys benign and malignant")
        cls = {k: tuple(str(n) for n in (v if isinstance(v, list) else [v])) for k, v in classes.items()}
        if not all(cls.values()):
            raise PromptSetError(f"{where}: every class needs at least one name")
        return PromptSet(templates=templates, classes=cls, **common)
    prompt = str(data.get("prompt") or "").strip()
    if not prompt:
        raise PromptSetError(f"{where}: a generative prompt set needs a non-empty prompt")
    fields = []
    for item in data.get("metadata_fields") or []:
        if not isinstance(item, dict) or "column" not in item:
            raise PromptSetError(f"{where}: metadata_fields items are {{column, label[, unit]}}; got {item!r}")
        fields.append(MetadataField(str(item["column"]).lower(), str(item.get("label", item["column"])),
                                    str(item.get("unit", ""))))
    if "{metadata}" in prompt and not fields:
        raise PromptSetError(f"{where}: the prompt uses {{metadata}} but no metadata_fields are declared")
    return PromptSet(system=str(data.get("system") or "").strip(), prompt=prompt,
                     reasoning=bool(data.get("reasoning", False)), metadata_fields=tuple(fields), **common)


def load_prompt_file(path: str | Path) -> PromptSet:
    path = Path(path)
    try:
        from ...utils.yamlio import load_yaml

        data = load_yaml(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise PromptSetError(f"cannot read prompt set {path}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise PromptSetError(f"prompt set {path} is not valid YAML: {exc}") from exc
    return parse_prompt_set(data, str(path))


class _BuiltinPromptSets:
    """Attribute access to the shipped YAML files (``BUILTIN.simple``), for registry targets."""

    def __getattr__(self, name: str) -> PromptSet:
        path = PROMPT_DIR / f"{name}.yaml"
        if name.startswith("_") or not path.is_file():
            raise AttributeError(name)
        return load_prompt_file(path)


BUILTIN = _BuiltinPromptSets()
PROMPT_SETS = Registry("prompt set")


def _register_builtin() -> None:
    for path in sorted(PROMPT_DIR.glob("*.yaml")):
        try:
            head = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            head = {}
        PROMPT_SETS.add(path.stem, f"{__name__}:BUILTIN.{path.stem}", str(head.get("description", "")),
                        kind=head.get("kind", "?"), source=head.get("source", ""))


_register_builtin()


def load_prompt_set(name_or_path: str) -> PromptSet:
    """A registered prompt set by name, or a YAML file by path."""
    candidate = Path(str(name_or_path)).expanduser()
    if str(name_or_path).endswith((".yaml", ".yml")) or candidate.is_file():
        if not candidate.is_file():
            raise PromptSetError(f"prompt set file {candidate} does not exist")
        return load_prompt_file(candidate)
    return PROMPT_SETS.get(name_or_path)
