"""Static pod manifest (YAML text) -> a typed, frozen model of what kubehoist needs.

It owns two things:

* Flag parsing that keeps everything: order, duplicates, "--f=v" / "--f v" / bare
  "--f" forms, single-dash shorthands, positional tokens, and where each token sat
  (`command[i]` or `args[j]`) so that errors can name the field and rendering can put
  every untouched token back exactly as it was.
* Reading a manifest into `StaticPod`, with one-line `KubehoistError`s that name the
  file and the field ("kube-controller-manager.yaml: spec.containers[0].command: ...").

Pure: it parses text it is given and reads no file.
"""

from __future__ import annotations

import copy
import hashlib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeAlias

from kubehoist import components, flagtable, safeyaml
from kubehoist.components import Component
from kubehoist.errors import KubehoistError

FlagForm: TypeAlias = Literal["equals", "separate", "bare"]

_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "busybox"})


# --------------------------------------------------------------------------- flags


@dataclass(frozen=True, kw_only=True)
class Flag:
    """One flag as written: `--name=value`, `--name value` or a bare `--name`."""

    name: str
    value: str | None
    form: FlagForm
    dashes: str = "--"

    @property
    def spelled(self) -> str:
        return f"{self.dashes}{self.name}"

    def tokens(self) -> tuple[str, ...]:
        if self.form == "bare" or self.value is None:
            return (self.spelled,)
        if self.form == "separate":
            return (self.spelled, self.value)
        return (f"{self.spelled}={self.value}",)

    def with_value(self, value: str) -> Flag:
        """The same flag, same spelling and form, with another value."""
        form: FlagForm = "equals" if self.form == "bare" else self.form
        return replace(self, value=value, form=form)

    def __str__(self) -> str:
        return " ".join(self.tokens())


@dataclass(frozen=True, kw_only=True)
class Positional:
    """A token that is not a flag (kept verbatim, in place)."""

    token: str

    def tokens(self) -> tuple[str, ...]:
        return (self.token,)


Arg: TypeAlias = Flag | Positional


class FlagSyntaxError(ValueError):
    """A token that cannot be a flag; `index` is its position in the parsed tokens."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index


def parse_flags(
    tokens: Sequence[str],
    *,
    bool_flags: frozenset[str] = frozenset(),
    value_flags: frozenset[str] | None = None,
) -> tuple[tuple[Arg, int], ...]:
    """Parse tokens into (arg, index of its first token) pairs, losing nothing.

    As spf13/pflag parses them: `--name=value` has that value; a boolean flag
    (`bool_flags`) takes no other value, so a word after it is a positional token; a
    flag of `value_flags` takes the next token as its value, whatever it looks like,
    and is an error without one; "--" ends flag parsing. A flag in neither table:
    with `value_flags` given, a word after it is an error (render cannot tell a value
    from a stray argument); with `value_flags=None` it takes that word as its value.
    Names are looked up as pflag looks them up (`_` read as `-`).
    """
    out: list[tuple[Arg, int]] = []
    i = 0
    n = len(tokens)
    while i < n:
        token = tokens[i]
        if token == "--":
            out.extend((Positional(token=t), j) for j, t in enumerate(tokens[i:], start=i))
            break
        if not token.startswith("-") or token == "-":
            out.append((Positional(token=token), i))
            i += 1
            continue
        dashes = "--" if token.startswith("--") else "-"
        body = token[len(dashes) :]
        if "=" in body:
            name, value = body.split("=", 1)
            if not name:
                raise FlagSyntaxError(i, f"{token!r} is not a flag (no name before '=')")
            out.append((Flag(name=name, value=value, form="equals", dashes=dashes), i))
            i += 1
            continue
        if not body or body.startswith("-"):
            raise FlagSyntaxError(i, f"{token!r} is not a flag")
        key = flagtable.normalize(body)
        nxt = tokens[i + 1] if i + 1 < n else None
        if key in bool_flags:
            out.append((Flag(name=body, value=None, form="bare", dashes=dashes), i))
            i += 1
            continue
        if value_flags is not None and key in value_flags:
            if nxt is None:
                raise FlagSyntaxError(
                    i, f"{token} takes a value ({token}=VALUE); the component refuses to start"
                )
            out.append((Flag(name=body, value=nxt, form="separate", dashes=dashes), i))
            i += 2
            continue
        if nxt is not None and not nxt.startswith("-"):
            if value_flags is not None:
                raise FlagSyntaxError(
                    i,
                    f"{token} {nxt}: {token} is not a flag render knows, so {nxt!r} may be its "
                    f"value or a stray argument (which the component refuses); if it is the "
                    f"value, write {token}={nxt}",
                )
            out.append((Flag(name=body, value=nxt, form="separate", dashes=dashes), i))
            i += 2
            continue
        out.append((Flag(name=body, value=None, form="bare", dashes=dashes), i))
        i += 1
    return tuple(out)


def stray_argument(items: Sequence[Arg], bool_flags: frozenset[str]) -> tuple[int, str] | None:
    """The item to blame for the first positional token the component would refuse
    (the boolean flag before it, else the token itself), and why; None if there is none.

    kube components take no positional arguments (an empty one is let through); a
    word after a boolean flag is one, since pflag gives a boolean its value only
    after "=". The "--" that ends the flags is not an argument itself.
    """
    for index, item in enumerate(items):
        if not isinstance(item, Positional) or item.token == "":
            continue
        if item.token == "--" and not any(isinstance(p, Positional) for p in items[:index]):
            continue
        before = items[index - 1] if index else None
        if (
            isinstance(before, Flag)
            and before.form == "bare"
            and flagtable.normalize(before.name) in bool_flags
        ):
            flag = before.spelled
            return index - 1, (
                f"{flag} {item.token}: {flag} is a boolean flag, which takes a value only as "
                f"{flag}=VALUE, so the component takes {item.token!r} for a stray argument and "
                f"refuses to start; write {flag}={item.token}"
            )
        return index, (
            f"{item.token!r} is a stray argument: the component takes none and refuses to start"
        )
    return None


def unparse(items: Iterable[Arg]) -> tuple[str, ...]:
    """Tokens of `items`, the exact inverse of `parse_flags` for untouched items."""
    return tuple(t for item in items for t in item.tokens())


def flag_values(items: Iterable[Arg]) -> dict[str, str]:
    """name -> effective value (the last occurrence wins, as pflag does; bare -> "true")."""
    values: dict[str, str] = {}
    for item in items:
        if isinstance(item, Flag):
            values[item.name] = "true" if item.value is None else item.value
    return values


# --------------------------------------------------------------------------- argv


@dataclass(frozen=True, kw_only=True)
class ComponentArgv:
    """A container's command and args, split into a prefix and the component's flags.

    The prefix is everything up to and including the component's executable
    (a `/go-runner --log-file=... --also-stdout` wrapper, `hyperkube controller-manager`,
    or just `kube-controller-manager`); it is never changed.
    """

    command: tuple[str, ...] | None
    args: tuple[str, ...] | None
    prefix: tuple[str, ...]
    items: tuple[Arg, ...]
    starts: tuple[int, ...]
    """Index of each item's first token in command+args (for error field paths)."""

    @property
    def flags(self) -> tuple[Flag, ...]:
        return tuple(i for i in self.items if isinstance(i, Flag))

    def values(self) -> dict[str, str]:
        return flag_values(self.items)

    def field_of(self, token_index: int) -> str:
        """`command[i]` or `args[j]` for a token index in command+args."""
        n = len(self.command or ())
        return f"command[{token_index}]" if token_index < n else f"args[{token_index - n}]"

    def field_of_item(self, item_index: int) -> str:
        return self.field_of(self.starts[item_index])

    @property
    def flags_field(self) -> str:
        """Which field holds the flags ("command" or "args")."""
        first = len(self.prefix)
        return "command" if first < len(self.command or ()) or not self.args else "args"

    def with_items(self, items: Sequence[Arg]) -> ComponentArgv:
        """A copy with other items (their start indices no longer refer to a source)."""
        return replace(self, items=tuple(items), starts=tuple(-1 for _ in items))

    def command_and_args(self) -> tuple[tuple[str, ...] | None, tuple[str, ...] | None]:
        """(command, args) to write back, keeping the original split where it can."""
        tokens = self.prefix + unparse(self.items)
        if self.command is None:
            return None, tokens
        if not self.args:
            return tokens, None
        split = len(self.command)
        if split > len(self.prefix):  # flags were spread over both fields
            split = len(self.prefix)
        return tokens[:split], tokens[split:]


def split_argv(
    *,
    command: tuple[str, ...] | None,
    args: tuple[str, ...] | None,
    component: Component,
) -> tuple[tuple[str, ...], int] | str:
    """(prefix, index where the flags start) or, if it cannot be split, why."""
    tokens = (command or ()) + (args or ())
    if not tokens:
        return "no command and no args: the flags are missing"
    if command and posixpath.basename(command[0]) in _SHELLS and "-c" in command[1:3]:
        return (
            f"runs a shell ({' '.join(command[:2])}); kubehoist needs the flags as "
            "separate list items"
        )
    for i, token in enumerate(tokens):
        if token.startswith("-"):
            continue
        if component.is_binary(token):
            return tokens[: i + 1], i + 1
        if (
            posixpath.basename(token) == "hyperkube"
            and i + 1 < len(tokens)
            and tokens[i + 1] in component.hyperkube_names
        ):
            return tokens[: i + 2], i + 2
    if not command:  # the image's entrypoint is the component; args are its flags
        return (), 0
    return f"does not run {component.name} (no {'/'.join(sorted(component.binary_names))})"


# --------------------------------------------------------------------------- pod model


@dataclass(frozen=True, kw_only=True)
class Volume:
    name: str
    host_path: str | None
    """hostPath.path, or None for any other volume type."""
    kind: str
    """The volume source key: "hostPath", "emptyDir", ..."""
    raw: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class VolumeMount:
    name: str
    mount_path: str
    read_only: bool
    sub_path: str | None
    raw: Mapping[str, Any]


@dataclass(frozen=True, kw_only=True)
class PathOnHost:
    """Where a path inside the container comes from."""

    volume: str
    kind: str
    host_path: str | None
    """The file's path on the node when the volume is a hostPath, else None."""


@dataclass(frozen=True, kw_only=True)
class StaticPod:
    """A static pod manifest of a component kubehoist can move."""

    source: str
    """How errors name the manifest (its file name, or "pod/NAME" for a live pod)."""
    sha256: str
    """sha256 of the manifest text."""
    name: str
    namespace: str
    labels: Mapping[str, str]
    component: Component
    container_index: int
    container: Mapping[str, Any]
    """The component's container, as parsed (treat as read-only)."""
    spec: Mapping[str, Any]
    """The pod spec, as parsed (treat as read-only)."""
    image: str
    argv: ComponentArgv
    volumes: tuple[Volume, ...]
    mounts: tuple[VolumeMount, ...]
    host_network: bool
    other_containers: tuple[str, ...]

    def field(self, sub: str) -> str:
        return f"spec.containers[{self.container_index}].{sub}"

    def error(self, sub: str, message: str) -> KubehoistError:
        """A one-line error naming this manifest and a field of its container."""
        return KubehoistError(f"{self.source}: {self.field(sub)}: {message}")

    def flag_error(self, item_index: int, message: str) -> KubehoistError:
        return self.error(self.argv.field_of_item(item_index), message)

    def locate(self, container_path: str) -> PathOnHost | None:
        """Which volume a container path lives on, and its node path for a hostPath."""
        path = posixpath.normpath(container_path)
        by_name = {v.name: v for v in self.volumes}
        for mount in sorted(self.mounts, key=lambda m: len(m.mount_path), reverse=True):
            base = posixpath.normpath(mount.mount_path)
            if path != base and not path.startswith(base.rstrip("/") + "/"):
                continue
            volume = by_name.get(mount.name)
            if volume is None:
                return PathOnHost(volume=mount.name, kind="missing", host_path=None)
            if volume.host_path is None:
                return PathOnHost(volume=volume.name, kind=volume.kind, host_path=None)
            rest = posixpath.relpath(path, base) if path != base else ""
            host = posixpath.join(volume.host_path, mount.sub_path or "", rest)
            return PathOnHost(
                volume=volume.name, kind="hostPath", host_path=posixpath.normpath(host)
            )
        return None


def _fail(source: str, fld: str, message: str) -> KubehoistError:
    return KubehoistError(f"{source}: {fld}: {message}" if fld else f"{source}: {message}")


def _mapping(source: str, fld: str, value: Any, *, required: bool = True) -> dict[str, Any]:
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise _fail(source, fld, f"expected a mapping, got {_kind(value)}")
    return value


def _list(source: str, fld: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(source, fld, f"expected a list, got {_kind(value)}")
    return value


def _str(source: str, fld: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _fail(source, fld, f"expected a string, got {_kind(value)}")
    return value


def _strings(source: str, fld: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = _list(source, fld, value)
    return tuple(_str(source, f"{fld}[{i}]", v) for i, v in enumerate(items))


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value[:40]!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def load_yaml_document(text: str, *, source: str, what: str = "Pod") -> Any:
    """The one YAML document in `text`, or a one-line error (bounded: `kubehoist.safeyaml`)."""
    return safeyaml.load_document(text, source=source, what=what)


def load_static_pod(text: str, *, source: str) -> StaticPod:
    """Parse a static pod manifest of kube-controller-manager or kube-scheduler."""
    doc = load_yaml_document(text, source=source)
    return static_pod_from_dict(
        doc, source=source, sha256=hashlib.sha256(text.encode()).hexdigest()
    )


def static_pod_from_dict(doc: Any, *, source: str, sha256: str) -> StaticPod:
    """`load_static_pod` for an already parsed document (e.g. a live mirror pod)."""
    doc = copy.deepcopy(doc)
    if not isinstance(doc, dict):
        raise _fail(source, "", f"expected a Pod (a mapping), got {_kind(doc)}")
    kind = doc.get("kind")
    if kind != "Pod":
        raise _fail(source, "kind", f"expected Pod, got {_kind(kind)}")
    api_version = doc.get("apiVersion")
    if api_version != "v1":
        raise _fail(source, "apiVersion", f"expected v1, got {_kind(api_version)}")
    metadata = _mapping(source, "metadata", doc.get("metadata"), required=False)
    name = _str(source, "metadata.name", metadata.get("name", ""))
    namespace = _str(source, "metadata.namespace", metadata.get("namespace") or "kube-system")
    labels_raw = _mapping(source, "metadata.labels", metadata.get("labels"), required=False)
    labels = {
        _str(source, "metadata.labels", k): _str(source, f"metadata.labels.{k}", v)
        for k, v in labels_raw.items()
    }
    spec = _mapping(source, "spec", doc.get("spec"))
    containers = _list(source, "spec.containers", spec.get("containers"))
    if not containers:
        raise _fail(source, "spec.containers", "no container")

    found: tuple[int, Component] | None = None
    names: list[str] = []
    for i, raw in enumerate(containers):
        fld = f"spec.containers[{i}]"
        c = _mapping(source, fld, raw)
        cname = _str(source, f"{fld}.name", c.get("name", ""))
        names.append(cname)
        argv = (_strings(source, f"{fld}.command", c.get("command")) or ()) + (
            _strings(source, f"{fld}.args", c.get("args")) or ()
        )
        component = components.detect(container_name=cname, argv=argv)
        if component is not None and found is None:
            found = (i, component)
    if found is None:
        wanted = " or ".join(components.COMPONENTS)
        shown = ", ".join(repr(n) for n in names)
        fld = "spec.containers[0].name" if len(names) == 1 else "spec.containers"
        raise _fail(source, fld, f"{shown} is not {wanted}")
    index, component = found
    container = containers[index]
    fld = f"spec.containers[{index}]"

    image = container.get("image")
    if not isinstance(image, str) or not image:
        raise _fail(source, f"{fld}.image", f"expected an image reference, got {_kind(image)}")
    command = _strings(source, f"{fld}.command", container.get("command"))
    args = _strings(source, f"{fld}.args", container.get("args"))
    split = split_argv(command=command, args=args, component=component)
    if isinstance(split, str):
        where = "args" if not command and args else "command"
        raise _fail(source, f"{fld}.{where}", split)
    prefix, first = split
    tokens = (command or ()) + (args or ())
    n = len(command or ())

    def token_field(at: int) -> str:
        return f"{fld}.command[{at}]" if at < n else f"{fld}.args[{at - n}]"

    try:
        parsed = parse_flags(
            tokens[first:], bool_flags=component.bool_flags, value_flags=component.value_flags
        )
    except FlagSyntaxError as exc:
        raise _fail(source, token_field(first + exc.index), str(exc)) from None
    stray = stray_argument([a for a, _ in parsed], component.bool_flags)
    if stray is not None:
        raise _fail(source, token_field(first + parsed[stray[0]][1]), stray[1])
    argv_model = ComponentArgv(
        command=command,
        args=args,
        prefix=prefix,
        items=tuple(a for a, _ in parsed),
        starts=tuple(first + s for _, s in parsed),
    )

    volumes: list[Volume] = []
    for i, raw in enumerate(_list(source, "spec.volumes", spec.get("volumes"))):
        vfld = f"spec.volumes[{i}]"
        v = _mapping(source, vfld, raw)
        vname = _str(source, f"{vfld}.name", v.get("name"))
        kinds = sorted(k for k in v if k != "name")
        vkind = kinds[0] if kinds else "emptyDir"
        host_path: str | None = None
        if "hostPath" in v:
            hp = _mapping(source, f"{vfld}.hostPath", v["hostPath"])
            host_path = _str(source, f"{vfld}.hostPath.path", hp.get("path"))
            vkind = "hostPath"
        if any(v.name == vname for v in volumes):
            raise _fail(source, f"{vfld}.name", f"{vname!r}: a second volume of that name")
        volumes.append(Volume(name=vname, host_path=host_path, kind=vkind, raw=v))
    names_of_volumes = {v.name for v in volumes}
    mounts: list[VolumeMount] = []
    for i, raw in enumerate(_list(source, f"{fld}.volumeMounts", container.get("volumeMounts"))):
        mfld = f"{fld}.volumeMounts[{i}]"
        m = _mapping(source, mfld, raw)
        mname = _str(source, f"{mfld}.name", m.get("name"))
        if mname not in names_of_volumes:
            raise _fail(source, f"{mfld}.name", f"{mname!r} names no volume in spec.volumes")
        mount_path = _str(source, f"{mfld}.mountPath", m.get("mountPath"))
        if not mount_path.startswith("/"):
            raise _fail(source, f"{mfld}.mountPath", f"{mount_path!r} is not an absolute path")
        sub_path = m.get("subPath")
        if sub_path:
            sub_path = _str(source, f"{mfld}.subPath", sub_path)
            if sub_path.startswith("/") or ".." in sub_path.split("/"):
                raise _fail(
                    source,
                    f"{mfld}.subPath",
                    f"{sub_path!r}: expected a relative path without '..'",
                )
        mounts.append(
            VolumeMount(
                name=mname,
                mount_path=mount_path,
                read_only=bool(m.get("readOnly", False)),
                sub_path=sub_path or None,
                raw=m,
            )
        )
    host_network = spec.get("hostNetwork", False)
    if not isinstance(host_network, bool):
        raise _fail(source, "spec.hostNetwork", f"expected a boolean, got {_kind(host_network)}")
    return StaticPod(
        source=source,
        sha256=sha256,
        name=name,
        namespace=namespace,
        labels=labels,
        component=component,
        container_index=index,
        container=container,
        spec=spec,
        image=image,
        argv=argv_model,
        volumes=tuple(volumes),
        mounts=tuple(mounts),
        host_network=host_network,
        other_containers=tuple(n for i, n in enumerate(names) if i != index),
    )
