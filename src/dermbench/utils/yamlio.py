"""The one YAML loader for files users give dermbench: run configs, prompt sets, label-mapping
tables, merge configs, ``--set`` values.

It is PyYAML's safe loader (no Python objects) with two refusals that ``yaml.safe_load`` lacks:

* **duplicate keys** — ``yaml.safe_load`` keeps the last value silently, so a config that sets
  ``seeds:`` twice runs with one of them without a word;
* **alias expansion** past :data:`MAX_EXPANDED_NODES` values, and recursive aliases. An anchor
  referenced by aliases nested a few levels deep (the "billion laughs") is a small file that
  expands into billions of values once anything walks it (validation, hashing, printing); a real
  config that reuses a block with ``&common`` / ``*common`` stays far below the limit.

Problems are raised as :class:`yaml.YAMLError` (``ConstructorError``) whose message names the
line, so every caller's existing ``except yaml.YAMLError`` turns them into its own error class
(``ConfigError``, ``PromptSetError`` ...).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError

#: Values (scalars, lists, mappings) a document may hold once its aliases are expanded.
MAX_EXPANDED_NODES = 100_000

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictSafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _value in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue  # `<<: *base` merges keys that explicit keys may override
                try:
                    key = self.construct_object(key_node, deep=True)
                    hash(key)
                except (TypeError, yaml.YAMLError):
                    continue  # an unhashable key: the base constructor says so
                line = key_node.start_mark.line + 1
                if key in first_line:
                    raise ConstructorError(None, None, f"line {line}: duplicate key {_short(key)} (first given on "
                                                       f"line {first_line[key]}); give each key once", None)
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:80] + "..."


def _check_expansion(root: yaml.Node, limit: int) -> None:
    """Refuse a document whose aliases expand past ``limit`` values, or refer to themselves."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_nodes:
            raise ConstructorError(None, None, f"line {node.start_mark.line + 1}: an alias refers to the value "
                                               f"that contains it (a recursive structure); write the values out",
                                   None)
        open_nodes.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                total += size(key_node) + size(value_node)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
        open_nodes.discard(key)
        if total > limit:
            raise ConstructorError(None, None, f"line {node.start_mark.line + 1}: aliases (*name) expand this "
                                               f"document past {limit:,} values; write the values out or "
                                               f"reuse fewer", None)
        sizes[key] = total
        return total

    try:
        size(root)
    except RecursionError:
        raise ConstructorError(None, None, "the document is nested too deeply to read", None) from None


def load_yaml(text: str | bytes, *, max_nodes: int = MAX_EXPANDED_NODES) -> Any:
    """The value of one YAML document (``None`` for an empty one), read safely; a
    :class:`yaml.YAMLError` naming the line for a duplicate key or an alias bomb."""
    loader = _StrictSafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, max_nodes)
        return loader.construct_document(node)
    finally:
        loader.dispose()
