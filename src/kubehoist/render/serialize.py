"""Objects to text, byte-for-byte stable: multi-document YAML, or a JSON `List`.

Keys are sorted and nothing depends on dict insertion order, so two renders of the
same input print the same bytes and a diff between two renders means something.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    """Indents lists under their key, as kubectl does."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def to_yaml(objects: Iterable[Mapping[str, Any]]) -> str:
    """Objects as one multi-document YAML stream."""
    docs = [
        yaml.dump(
            dict(obj),
            Dumper=_Dumper,
            sort_keys=True,
            default_flow_style=False,
            width=1 << 30,
            allow_unicode=True,
        )
        for obj in objects
    ]
    return "".join(f"---\n{doc}" for doc in docs)


def to_json(objects: Iterable[Mapping[str, Any]]) -> str:
    """Objects as a JSON `List`, as `kubectl get -o json` prints several."""
    listing = {"apiVersion": "v1", "kind": "List", "items": [dict(o) for o in objects]}
    return json.dumps(listing, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def dump(objects: Iterable[Mapping[str, Any]], *, output: str) -> str:
    if output == "json":
        return to_json(objects)
    return to_yaml(objects)
