"""A small Dockerfile reader and the rules the project's image must follow (used by the deploy tests).

Only what the rules need: line continuations, comments and parser directives, ``ARG`` expansion in
``FROM``, stages, exec-form (JSON) arguments, ``ENV`` pairs and ``COPY`` sources, plus a
``.dockerignore`` matcher with Docker's semantics (last matching pattern wins, ``!`` re-includes, a
pattern matching a folder matches everything below it, ``**`` spans folders).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

SECRET_WORDS = re.compile(r"KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIAL", re.IGNORECASE)


@dataclass
class Instruction:
    """One instruction: upper-case keyword, raw argument text and the line it starts on."""

    keyword: str
    args: str
    line: int

    def flags_and_rest(self) -> tuple[dict[str, str], str]:
        """Split leading ``--flag=value`` options (COPY, HEALTHCHECK, RUN) from the rest."""
        flags: dict[str, str] = {}
        rest = self.args
        while True:
            m = re.match(r"--([a-z-]+)(?:=(\S*))?\s+", rest)
            if not m:
                return flags, rest
            flags[m.group(1)] = m.group(2) or ""
            rest = rest[m.end() :]

    def exec_form(self) -> list[str] | None:
        """The JSON array form of CMD/ENTRYPOINT/HEALTHCHECK CMD, or ``None`` for the shell form."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            _, text = self.flags_and_rest()
            if not text.upper().startswith("CMD"):
                return None
            text = text[3:].strip()
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


@dataclass
class Stage:
    """A build stage: its ``FROM`` image (ARGs expanded), alias and instructions."""

    image: str
    alias: str | None
    line: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Every ``ENV`` of the stage, later ones winning."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            out.update(parse_env(ins.args))
        return out


def logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations and drop comments; returns ``(first line number, text)``."""
    out: list[tuple[int, str]] = []
    buf: list[str] = []
    start = 0
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if buf and line.startswith("#"):  # comment lines inside a continuation are skipped
            continue
        if not buf:
            start = n
        if line.endswith("\\"):
            buf.append(line[:-1].strip())
            continue
        buf.append(line)
        out.append((start, " ".join(b for b in buf if b)))
        buf = []
    if buf:
        out.append((start, " ".join(buf)))
    return out


def parse_env(args: str) -> dict[str, str]:
    """``ENV a=1 b="two words"`` or the legacy ``ENV a value``."""
    tokens = shlex.split(args)
    if tokens and "=" not in tokens[0]:
        return {tokens[0]: " ".join(tokens[1:])}
    return dict(t.split("=", 1) for t in tokens)


def expand(text: str, args: dict[str, str]) -> str:
    """``${NAME}``, ``${NAME:-default}`` and ``$NAME`` from build ARG defaults."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        default = m.group(2)
        value = args.get(name, "")
        return value if value else (default or "")

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", sub, text)


def parse_dockerfile(text: str) -> list[Stage]:
    """Stages in order; global ``ARG`` defaults (before the first ``FROM``) are expanded in ``FROM``."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line, content in logical_lines(text):
        keyword, _, args = content.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            parts = args.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            alias = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(expand(parts[0], global_args), alias, line))
        elif not stages:
            if keyword == "ARG":
                name, _, default = args.partition("=")
                global_args[name.strip()] = default.strip().strip('"')
        else:
            stages[-1].instructions.append(Instruction(keyword, args, line))
    return stages


def image_is_pinned(image: str) -> bool:
    """``repo:tag`` with a tag other than ``latest``, or ``repo@sha256:...``."""
    if "@sha256:" in image:
        return True
    name = image.rsplit("/", 1)[-1]
    if ":" not in name:
        return False
    tag = name.split(":", 1)[1]
    return bool(tag) and tag != "latest" and "$" not in tag


def rule_violations(stages: list[Stage]) -> list[str]:
    """Rules for a deployable image; each violation is a readable sentence naming the line."""
    problems: list[str] = []
    if not stages:
        return ["no FROM instruction"]
    aliases = {s.alias for s in stages if s.alias}
    for st in stages:
        if st.image in aliases or st.image == "scratch":
            continue
        if not image_is_pinned(st.image):
            problems.append(f"line {st.line}: base image {st.image!r} is not pinned to a tag or digest")
    for st in stages:
        for ins in st.instructions:
            if ins.keyword == "ENV":
                pairs = parse_env(ins.args)
            elif ins.keyword == "ARG" and "=" in ins.args:
                name, _, value = ins.args.partition("=")
                pairs = {name.strip(): value.strip()}
            else:
                continue
            for key, value in pairs.items():
                if SECRET_WORDS.search(key) and value.strip('"'):
                    problems.append(
                        f"line {ins.line}: {ins.keyword} {key} bakes a secret-looking value into the image"
                    )
    final = stages[-1]
    users = final.all("USER")
    if not users:
        problems.append("final stage has no USER: the service would run as root")
    else:
        user = users[-1].args.split(":")[0].strip()
        if user in {"root", "0"}:
            problems.append(f"line {users[-1].line}: final stage runs as root")
    checks = final.all("HEALTHCHECK")
    if not checks or checks[-1].args.strip().upper() == "NONE":
        problems.append("final stage has no HEALTHCHECK")
    cmds = final.all("CMD") + final.all("ENTRYPOINT")
    if not cmds:
        problems.append("final stage has neither CMD nor ENTRYPOINT")
    for ins in cmds:
        if ins.exec_form() is None:
            problems.append(
                f"line {ins.line}: {ins.keyword} is in shell form (signals would not reach the server)"
            )
    return problems


def copy_sources(stage: Stage) -> list[tuple[str, str]]:
    """``(source, destination)`` for each ``COPY``/``ADD`` from the build context (not ``--from``)."""
    out: list[tuple[str, str]] = []
    for ins in stage.all("COPY") + stage.all("ADD"):
        flags, rest = ins.flags_and_rest()
        if "from" in flags:
            continue
        parts = rest.split()
        out.extend((src, parts[-1]) for src in parts[:-1])
    return out


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_excludes(patterns_text: str, path: str) -> bool:
    """Whether a context-relative ``path`` is left out of the build context."""
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in patterns_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = line.removeprefix("!").strip().strip("/")
        rules.append((negate, _pattern_regex(line)))
    parts = Path(path).parts
    candidates = ["/".join(parts[: k + 1]) for k in range(len(parts))]
    excluded = False
    for negate, rx in rules:
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded
