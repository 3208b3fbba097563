"""YAML in, with bounds: every document render reads goes through `load_document`.

A manifest, a kubeconfig or a component config is input kubehoist does not control,
so reading one must end quickly, in bounded memory, and with one line naming the file
(and the field, where there is one) when it is refused. The limits:

* `MAX_BYTES` (4 MiB) of text: a static pod manifest is a few KiB, a kubeconfig with
  embedded certificates about 10 KiB.
* `MAX_DEPTH` (64) levels of nested mappings and sequences, counted with aliases
  expanded. PyYAML composes nodes recursively, so thousands of levels would blow the
  Python stack; the count stops the composer first.
* `MAX_NODES` (250,000) nodes, counted with aliases expanded: a "billion laughs"
  document (anchors of anchors) is a few hundred bytes that expand exponentially.
  PyYAML shares an aliased node instead of copying it, so the count is computed over
  the shared graph (each node once, memoised) and never expands anything.
* A mapping may not repeat a key (PyYAML would silently keep the last one; the API
  server and kubectl refuse such a manifest). A merge key (`<<`) may be overridden.
* An alias may not refer to a node that contains it (a recursive document).

Pure: it parses text it is given.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from kubehoist.errors import KubehoistError

MAX_BYTES = 4 * 1024 * 1024
MAX_DEPTH = 64
MAX_NODES = 250_000


class _Limit(Exception):
    """A bound was hit while composing (raised through PyYAML, caught below)."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer refuses to nest deeper than MAX_DEPTH."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Limit(f"nested more than {MAX_DEPTH} levels deep (line {mark.line + 1})")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _key_text(node: Node) -> str:
    value = node.value if isinstance(node, ScalarNode) else "?"
    return str(value)


def _check_graph(root: Node) -> None:
    """Duplicate keys (with the field that holds them), expanded size, depth, cycles."""
    # Expanded size and depth of every node, memoised by identity, computed without
    # recursion (post-order over an explicit stack); a node met again while it is
    # still open is an alias to one of its own ancestors.
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        children = _children(node)
        if done:
            open_nodes.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise _Limit(
                    f"more than {MAX_NODES} nodes once aliases are expanded "
                    f"(line {node.start_mark.line + 1})"
                )
            if depth[key] > MAX_DEPTH:
                raise _Limit(
                    f"nested more than {MAX_DEPTH} levels deep once aliases are expanded "
                    f"(line {node.start_mark.line + 1})"
                )
            continue
        if key in size:
            continue
        if key in open_nodes:
            line = node.start_mark.line + 1
            raise _Limit(f"an alias refers to a node that contains it (line {line})")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in size)

    # Duplicate keys, named by the field path (aliases are walked once).
    seen: set[int] = set()
    paths: list[tuple[Node, str]] = [(root, "")]
    while paths:
        node, path = paths.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            keys: set[str] = set()
            for k, v in node.value:
                text = _key_text(k)
                if isinstance(k, ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if text in keys:
                        raise _Limit(
                            f"duplicate key {text!r} (line {k.start_mark.line + 1})",
                            field=path or "",
                        )
                    keys.add(text)
                paths.append((v, f"{path}.{text}" if path else text))
        elif isinstance(node, SequenceNode):
            paths.extend((v, f"{path}[{i}]") for i, v in enumerate(node.value))


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def load_all(text: str, *, source: str) -> list[Any]:
    """Every non-empty document of `text`, or a one-line KubehoistError naming `source`."""
    size = len(text.encode("utf-8", errors="surrogatepass"))
    if size > MAX_BYTES:
        raise KubehoistError(f"{source}: {size} bytes, more than the {MAX_BYTES} render reads")
    loader = _BoundedLoader(text)
    docs: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_graph(node)
            doc = loader.construct_document(node)
            if doc is not None:
                docs.append(doc)
    except _Limit as exc:
        if exc.field is None:
            raise KubehoistError(f"{source}: refused: {exc.message}") from None
        where = f"{exc.field}: " if exc.field else ""
        raise KubehoistError(f"{source}: {where}{exc.message}") from None
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" (line {mark.line + 1}, column {mark.column + 1})"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        problem = " ".join(str(problem).split())
        raise KubehoistError(f"{source}: not YAML: {problem}{where}") from None
    except RecursionError:  # belt and braces: the depth bound should come first
        raise KubehoistError(f"{source}: refused: nested too deeply") from None
    finally:
        loader.dispose()
    return docs


def load_document(text: str, *, source: str, what: str = "Pod") -> Any:
    """The one YAML document in `text`, or a one-line error."""
    docs = load_all(text, source=source)
    if not docs:
        raise KubehoistError(f"{source}: empty: expected one {what}")
    if len(docs) > 1:
        raise KubehoistError(f"{source}: {len(docs)} YAML documents: expected exactly one {what}")
    return docs[0]
