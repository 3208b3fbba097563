"""A component's command line as its parser (spf13/pflag) reads it, losing nothing.

Flag parsing that keeps everything: order, duplicates, "--f=v" / "--f v" / bare "--f"
forms, single-dash shorthands, positional tokens, and where each token sat
(`command[i]` or `args[j]`) so that errors can name the field and rendering can put
every untouched token back exactly as it was. Which words are values and which are
stray arguments follows the component's flag tables (`kubehoist.flagtable`).

Pure: it parses the tokens it is given.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Literal, TypeAlias

from kubehoist import flagtable
from kubehoist.components import Component

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
