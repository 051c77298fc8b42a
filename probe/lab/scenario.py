"""Incident scenarios (``seeds/*.yaml``): the schema, its loader, and the replay in the lab.

A scenario is data: the lab hosts it measures, and a timeline of phases. Each
phase has an onset and a lift (seconds from the start of the replay), the censor
techniques in force during it, and the verdict expected for every target. The
replay applies and removes the techniques on that timeline, runs the probe once
in each phase, and compares what the probe decided with what the file expects::

    phase      t(s)  target           expected              observed  failure                rule         ok
    cloud-ban  6.2   shop.cloud.test  tcp_ip (tcp_blocked)  tcp_ip    generic_timeout_error  tcp_blocked  yes

The loader works like :mod:`probe.core.config` (and reuses its node helpers): the
YAML is composed into nodes, so every error names the file, line and key::

    seeds/x.yaml:14: phases[1] (ban).expect.cloud-a: unknown target 'cloud-a' (this scenario's: ...)

docs/scenarios.md documents the format; the seeds are in ``seeds/``.
"""

from __future__ import annotations

import inspect
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import yaml

from probe.core.config import (
    SETTINGS,
    TARGET,
    ConfigError,
    _bool,
    _Ctx,
    _fields,
    _list,
    _name,
    _number,
    _plain,
    _scalar,
    _show,
    _str,
    compose,
    read_text,
)

#: The values a verdict's ``blocking`` can take (probe/analysis/verdict.py); None is "inconclusive".
BLOCKING_VALUES: tuple[str | bool | None, ...] = (
    False, "dns", "tcp_ip", "tls", "http-failure", "http-diff", "origin-withheld", "quic", "throttling", None,
)
MAX_SECONDS = 3600.0  # a scenario is a compressed incident: an hour of replay is already too long


class LabLike(Protocol):
    """What the replay needs from :class:`probe.lab.Lab` (a protocol, so tests can fake it)."""

    def apply(self, technique: str, **params: Any) -> Any: ...  # a handle for remove()

    def remove(self, handle: Any) -> None: ...

    def run_probe(self, targets_yaml: str, only: list[str] | None = None, timeout: float = ...) -> list[
        dict[str, Any]]: ...

    def targets_yaml(self, names: list[str], overrides: dict[str, dict[str, Any]] | None = None,
                     settings: dict[str, Any] | None = None) -> str: ...


# -- The schema -------------------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """The verdict a target should get in a phase. ``None`` fields other than blocking are not checked."""

    blocking: str | bool | None
    accessible: bool | None = None
    check_accessible: bool = False
    failure: str | None = None
    rule: str | None = None
    line: int | None = None

    def describe(self) -> str:
        text = _blocking_text(self.blocking)
        if self.rule:
            text += f" ({self.rule})"
        return text


@dataclass(frozen=True)
class Step:
    """One censor technique, applied with ``lab.apply(technique, **params)``."""

    technique: str
    params: Mapping[str, Any] = field(default_factory=dict)
    aims: tuple[str, ...] = ()  # the targets it is aimed at (the rest is collateral)
    line: int | None = None

    def describe(self) -> str:
        args = ", ".join(f"{k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in self.params.items())
        return f"{self.technique}({args})"

    def call_params(self) -> dict[str, Any]:
        """The parameters as the lab takes them (lists, not the tuples kept here)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}

    @property
    def key(self) -> tuple[str, str]:
        """Identity for carrying a technique over from one phase to the next."""
        return self.technique, repr(sorted(self.params.items()))


@dataclass(frozen=True)
class Phase:
    name: str
    onset: float
    lift: float
    techniques: tuple[Step, ...]
    expect: Mapping[str, Expectation]
    when: str = ""
    note: str = ""
    line: int | None = None

    def role(self, target: str) -> str:
        """``aimed`` if a technique aims at the target, ``collateral`` if it is expected blocked anyway."""
        if any(target in s.aims for s in self.techniques):
            return "aimed"
        blocking = self.expect[target].blocking
        return "collateral" if isinstance(blocking, str) and self.techniques else ""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    targets: tuple[str, ...]
    phases: tuple[Phase, ...]
    path: str
    sources: tuple[str, ...] = ()
    description: str = ""
    probe_timeout: float = 60.0
    target_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    probe_settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        """Seconds of timeline at speed 1 (the replay also waits for each measurement)."""
        return self.phases[-1].lift if self.phases else 0.0


# -- Parsers (probe.core.config's node helpers, plus the scenario-specific ones) --------


def _text(node: yaml.Node, where: str, ctx: _Ctx) -> str:
    value = _scalar(node)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ctx.fail(node, where, f"{_show(node)} is not text")
    return value.strip()


def _blocking(node: yaml.Node, where: str, ctx: _Ctx) -> str | bool | None:
    value = _scalar(node)
    if isinstance(value, yaml.Node) or value not in BLOCKING_VALUES or value is True:
        known = ", ".join(_blocking_text(v) for v in BLOCKING_VALUES)
        raise ctx.fail(node, where, f"{_show(node)} is not a blocking value (one of: {known})")
    return value  # type: ignore[no-any-return]


def _opt_bool(node: yaml.Node, where: str, ctx: _Ctx) -> bool | None:
    return None if _scalar(node) is None else _bool(node, where, ctx)


EXPECT: Mapping[str, Callable[[yaml.Node, str, _Ctx], Any]] = {
    "blocking": _blocking,
    "accessible": _opt_bool,
    "failure": _str,
    "rule": _name,
}


def _expectation(node: yaml.Node, where: str, ctx: _Ctx) -> Expectation:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):  # the short form: just the blocking value
        return Expectation(_blocking(node, where, ctx), line=line)
    values, _ = _fields(node, where, ctx, EXPECT)
    if "blocking" not in values:
        raise ctx.fail(node, where, "missing required key 'blocking'")
    return Expectation(
        blocking=values["blocking"],
        accessible=values.get("accessible"),
        check_accessible="accessible" in values,
        failure=values.get("failure"),
        rule=values.get("rule"),
        line=line,
    )


def _params(node: yaml.Node, where: str, ctx: _Ctx) -> dict[str, Any]:
    if _scalar(node) is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, where, f"{_show(node)} is not a mapping")
    out: dict[str, Any] = {}
    for key_node, value_node in node.value:
        key = _scalar(key_node)
        if not isinstance(key, str) or not key.isidentifier():
            raise ctx.fail(key_node, f"{where}.{key}", f"{key!r} is not a parameter name")
        if key in out:
            raise ctx.fail(key_node, f"{where}.{key}", "duplicate key")
        value = _plain(value_node)
        out[key] = tuple(value) if isinstance(value, list) else value
    return out


STEP: Mapping[str, Callable[[yaml.Node, str, _Ctx], Any]] = {
    "technique": _name,
    "params": _params,
    "aims": _list(_name, allow_empty=True),
    "note": _text,
}

PHASE: Mapping[str, Callable[[yaml.Node, str, _Ctx], Any]] = {
    "name": _name,
    "onset": _number(0, MAX_SECONDS),
    "lift": _number(0, MAX_SECONDS),
    "when": _text,
    "note": _text,
    "techniques": lambda n, w, c: n,  # checked below, against the lab's techniques
    "expect": lambda n, w, c: n,  # checked below, against the scenario's targets
}

SCENARIO: Mapping[str, Callable[[yaml.Node, str, _Ctx], Any]] = {
    "scenario": _name,
    "title": _str,
    "sources": _list(_str, allow_empty=True),
    "description": _text,
    "probe_timeout": _number(5, 600),
    "targets": _list(_name),
    "target_options": lambda n, w, c: n,  # checked below, against the targets and probe.core.config.TARGET
    "probe_settings": lambda n, w, c: n,  # checked with probe.core.config.SETTINGS
    "phases": lambda n, w, c: n,
}

FIXED_TARGET_KEYS = frozenset({"name", "host", "service", "category", "control"})  # the lab sets these


def _overrides(node: yaml.Node, where: str, ctx: _Ctx, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Keys of a targets file, validated by probe.core.config's own parsers, kept as plain YAML values."""
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, where, f"{_show(node)} is not a mapping")
    _fields(node, where, ctx, schema)  # raises on unknown keys and bad values, naming the line
    return {str(_scalar(k)): _plain(v) for k, v in node.value}


def _target_options(node: yaml.Node, ctx: _Ctx, targets: Sequence[str]) -> dict[str, dict[str, Any]]:
    if not isinstance(node, yaml.MappingNode):
        raise ctx.fail(node, "target_options", f"{_show(node)} is not a mapping")
    schema = {k: v for k, v in TARGET.items() if k not in FIXED_TARGET_KEYS}
    out: dict[str, dict[str, Any]] = {}
    for key_node, value_node in node.value:
        name = _scalar(key_node)
        where = f"target_options.{name}"
        if name not in targets:
            raise ctx.fail(key_node, where, f"{name!r} is not one of this scenario's targets ({', '.join(targets)})")
        if name in out:
            raise ctx.fail(key_node, where, "duplicate key")
        out[name] = _overrides(value_node, where, ctx, schema)
    return out


# -- What the lab offers (looked up lazily, so the loader also runs where the lab cannot) --


def lab_hosts() -> frozenset[str]:
    """The lab's host names (probe.lab.topology.HOSTS)."""
    from probe.lab.topology import HOSTS

    return frozenset(HOSTS)


def lab_techniques() -> Mapping[str, Callable[..., Any] | None]:
    """The lab's techniques by name, with the callable whose signature gives the parameters."""
    import probe.lab  # noqa: F401  (registers the techniques)
    from probe.lab.base import TECHNIQUES

    return dict(TECHNIQUES)


def _check_params(step: Step, fn: Callable[..., Any] | None, node: yaml.Node, where: str, ctx: _Ctx) -> None:
    """Unknown or missing parameters are load errors, not a failure half-way through a replay."""
    if fn is None:
        return
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    keyword = {
        name: p for name, p in signature.parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name not in _INTERNAL_PARAMS
    }
    if any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
        return
    for name in step.params:
        if name not in keyword:
            known = ", ".join(keyword) or "none"
            raise ctx.fail(node, f"{where}.params.{name}",
                           f"unknown parameter {name!r} for {step.technique} (known: {known})")
    missing = [n for n, p in keyword.items() if p.default is p.empty and n not in step.params]
    if missing:
        raise ctx.fail(node, f"{where}.params", f"{step.technique} needs {', '.join(map(repr, missing))}")


_INTERNAL_PARAMS = frozenset({"lab", "handle"})  # probe.lab.techniques: (lab, handle, **params)


def _step(node: yaml.Node, where: str, ctx: _Ctx, targets: Sequence[str],
          techniques: Mapping[str, Callable[..., Any] | None], hosts: frozenset[str]) -> Step:
    if isinstance(node, yaml.ScalarNode):  # the short form: a technique without parameters
        values: dict[str, Any] = {"technique": _name(node, where, ctx)}
        nodes: dict[str, yaml.Node] = {"technique": node}
    else:
        values, nodes = _fields(node, where, ctx, STEP)
    if "technique" not in values:
        raise ctx.fail(node, where, "missing required key 'technique'")
    name = values["technique"]
    if name not in techniques:
        raise ctx.fail(nodes["technique"], f"{where}.technique",
                       f"unknown technique {name!r} (the lab has: {', '.join(sorted(techniques))})")
    for i, aim in enumerate(values.get("aims", ())):
        if aim not in targets:
            raise ctx.fail(nodes["aims"], f"{where}.aims[{i}]",
                           f"{aim!r} is not one of this scenario's targets ({', '.join(targets)})")
    step = Step(name, values.get("params", {}), values.get("aims", ()), node.start_mark.line + 1)
    _check_params(step, techniques[name], nodes.get("params", node), where, ctx)
    host_param = step.params.get("host")
    if host_param is not None and host_param not in hosts:
        raise ctx.fail(nodes["params"], f"{where}.params.host",
                       f"{host_param!r} is not a lab host (known: {', '.join(sorted(hosts))})")
    return step


def _phase(node: yaml.Node, where: str, ctx: _Ctx, targets: Sequence[str],
           techniques: Mapping[str, Callable[..., Any] | None], hosts: frozenset[str]) -> Phase:
    values, nodes = _fields(node, where, ctx, PHASE)
    if "name" in values:
        where = f"{where} ({values['name']})"
    for required in ("name", "onset", "lift", "expect"):
        if required not in values:
            raise ctx.fail(node, where, f"missing required key {required!r}")
    if values["lift"] <= values["onset"]:
        raise ctx.fail(nodes["lift"], f"{where}.lift",
                       f"{values['lift']:g} is not after the onset {values['onset']:g}")
    steps: list[Step] = []
    tech_node = values.get("techniques")
    if tech_node is not None and _scalar(tech_node) is not None:
        if not isinstance(tech_node, yaml.SequenceNode):
            raise ctx.fail(tech_node, f"{where}.techniques", f"{_show(tech_node)} is not a list")
        steps = [_step(n, f"{where}.techniques[{i}]", ctx, targets, techniques, hosts)
                 for i, n in enumerate(tech_node.value)]
        seen: dict[tuple[str, str], int] = {}
        for i, s in enumerate(steps):
            if s.key in seen:
                raise ctx.fail(tech_node.value[i], f"{where}.techniques[{i}]",
                               f"the same technique as techniques[{seen[s.key]}]")
            seen[s.key] = i
    expect_node = values["expect"]
    if not isinstance(expect_node, yaml.MappingNode):
        raise ctx.fail(expect_node, f"{where}.expect", f"{_show(expect_node)} is not a mapping")
    expect: dict[str, Expectation] = {}
    for key_node, value_node in expect_node.value:
        target = _scalar(key_node)
        path = f"{where}.expect.{target}"
        if target not in targets:
            raise ctx.fail(key_node, path, f"unknown target {target!r} (this scenario's: {', '.join(targets)})")
        if target in expect:
            raise ctx.fail(key_node, path, "duplicate key")
        expect[target] = _expectation(value_node, path, ctx)
    missing = [t for t in targets if t not in expect]
    if missing:
        raise ctx.fail(nodes["expect"], f"{where}.expect", f"no expectation for {', '.join(missing)}")
    return Phase(values["name"], values["onset"], values["lift"], tuple(steps), expect,
                 values.get("when", ""), values.get("note", ""), node.start_mark.line + 1)


def load_text(
    text: str, path: str = "<string>", *, hosts: Iterable[str] | None = None,
    techniques: Mapping[str, Callable[..., Any] | None] | Iterable[str] | None = None,
) -> Scenario:
    """Parse and validate a scenario. ``hosts``/``techniques`` default to the lab's own."""
    ctx = _Ctx(path)
    known_hosts = frozenset(lab_hosts() if hosts is None else hosts)
    if techniques is None:
        techniques = lab_techniques()
    known_techniques: Mapping[str, Callable[..., Any] | None] = (
        techniques if isinstance(techniques, Mapping) else dict.fromkeys(techniques)
    )
    root = compose(text, path)
    values, nodes = _fields(root, "", ctx, SCENARIO)
    for required in ("scenario", "title", "targets", "phases"):
        if required not in values:
            raise ctx.fail(root, required, f"missing required key {required!r}")
    targets: tuple[str, ...] = values["targets"]
    targets_node = _value_node(root, "targets")
    for i, name in enumerate(targets):
        if name not in known_hosts:
            raise ctx.fail(targets_node, f"targets[{i}]",
                           f"{name!r} is not a lab host (known: {', '.join(sorted(known_hosts))})")
        if targets.index(name) != i:
            raise ctx.fail(targets_node, f"targets[{i}]", f"duplicate target {name!r}")
    options = _target_options(values["target_options"], ctx, targets) if "target_options" in values else {}
    settings = _overrides(values["probe_settings"], "probe_settings", ctx, SETTINGS) \
        if "probe_settings" in values else {}
    phases_node = values["phases"]
    if not isinstance(phases_node, yaml.SequenceNode) or not phases_node.value:
        raise ctx.fail(phases_node, "phases", "must be a non-empty list")
    phases = [_phase(n, f"phases[{i}]", ctx, targets, known_techniques, known_hosts)
              for i, n in enumerate(phases_node.value)]
    names: dict[str, int] = {}
    for i, phase in enumerate(phases):
        if phase.name in names:
            raise ConfigError(path, phase.line, f"phases[{i}].name",
                              f"duplicate phase name {phase.name!r} (first: phases[{names[phase.name]}])")
        names[phase.name] = i
        if i and phase.onset < phases[i - 1].lift:
            raise ConfigError(path, phase.line, f"phases[{i}] ({phase.name}).onset",
                              f"{phase.onset:g} is before the lift {phases[i - 1].lift:g} of the phase before: "
                              "phases are in time order and do not overlap")
    return Scenario(
        name=values["scenario"], title=values["title"], targets=targets, phases=tuple(phases), path=path,
        sources=values.get("sources", ()), description=values.get("description", ""),
        probe_timeout=values.get("probe_timeout", Scenario.probe_timeout),
        target_options=options, probe_settings=settings,
    )


def _value_node(mapping: yaml.Node, key: str) -> yaml.Node:
    assert isinstance(mapping, yaml.MappingNode)
    found: yaml.Node = next(v for k, v in mapping.value if _scalar(k) == key)
    return found


def load(
    path: str | Path, *, hosts: Iterable[str] | None = None,
    techniques: Mapping[str, Callable[..., Any] | None] | Iterable[str] | None = None,
) -> Scenario:
    """Load a scenario file (errors: :class:`probe.core.config.ConfigError`, naming file, line and key)."""
    return load_text(read_text(path), str(path), hosts=hosts, techniques=techniques)


# -- The replay ----------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One target in one phase: what the file expects, what the probe said."""

    target: str
    expected: Expectation
    blocking: str | bool | None
    accessible: bool | None
    failure: str | None
    rule: str | None
    reason: str
    found: bool = True  # False when the probe produced no verdict for the target

    @property
    def ok(self) -> bool:
        e = self.expected
        return (
            self.found
            and _same_blocking(self.blocking, e.blocking)
            and (not e.check_accessible or self.accessible == e.accessible)
            and (e.failure is None or self.failure == e.failure)
            and (e.rule is None or self.rule == e.rule)
        )

    def mismatch(self) -> str:
        """What differs, in words (empty when ok)."""
        if not self.found:
            return "no verdict"
        e, out = self.expected, []
        if not _same_blocking(self.blocking, e.blocking):
            out.append(f"blocking {_blocking_text(self.blocking)} != {_blocking_text(e.blocking)}")
        if e.check_accessible and self.accessible != e.accessible:
            out.append(f"accessible {_yaml_text(self.accessible)} != {_yaml_text(e.accessible)}")
        if e.failure is not None and self.failure != e.failure:
            out.append(f"failure {self.failure} != {e.failure}")
        if e.rule is not None and self.rule != e.rule:
            out.append(f"rule {self.rule} != {e.rule}")
        return "; ".join(out)


@dataclass(frozen=True)
class PhaseReport:
    phase: Phase
    started: float  # seconds since the replay began
    measured: float  # seconds the probe took
    observations: tuple[Observation, ...]
    error: str | None = None  # applying a technique or running the probe failed

    @property
    def passed(self) -> bool:
        return self.error is None and all(o.ok for o in self.observations)


@dataclass(frozen=True)
class ScenarioReport:
    scenario: Scenario
    speed: float
    phases: tuple[PhaseReport, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return len(self.phases) == len(self.scenario.phases) and all(p.passed for p in self.phases)

    def mismatches(self) -> list[str]:
        """One line per phase/target that did not match (for test failure messages)."""
        out = []
        for p in self.phases:
            if p.error:
                out.append(f"{p.phase.name}: {p.error}")
            out += [f"{p.phase.name}/{o.target}: {o.mismatch()} ({o.rule}: {o.reason})"
                    for o in p.observations if not o.ok]
        return out

    def table(self) -> str:
        """Expected against observed, per phase, per target (what ``probe lab run`` prints)."""
        s = self.scenario
        rows = [("phase", "t(s)", "target", "hit", "expected", "observed", "failure", "rule", "ok")]
        for p in self.phases:
            for o in p.observations:
                rows.append((
                    p.phase.name, f"{p.started:.1f}", o.target, p.phase.role(o.target) or "-", o.expected.describe(),
                    _blocking_text(o.blocking) if o.found else "-", o.failure or "-", o.rule or "-",
                    "yes" if o.ok else "NO",
                ))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"scenario {s.name}: {s.title} ({s.path}, speed {self.speed:g})"]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        for p in self.phases:
            when = f" [{p.phase.when}]" if p.phase.when else ""
            steps = ", ".join(st.describe() for st in p.phase.techniques) or "no technique"
            lines.append(f"  {p.phase.name}{when}: {steps}; probe {p.measured:.1f} s")
            if p.error:
                lines.append(f"phase {p.phase.name}: ERROR {p.error}")
        for line in self.mismatches():
            lines.append(f"mismatch {line}")
        total = sum(len(p.observations) for p in self.phases)
        good = sum(o.ok for p in self.phases for o in p.observations)
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: {good}/{total} verdicts as expected in {len(self.phases)} phases, "
                     f"{self.seconds:.1f} s")
        return "\n".join(lines)


def _same_blocking(a: str | bool | None, b: str | bool | None) -> bool:
    return a is b if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None else a == b


def _blocking_text(value: str | bool | None) -> str:
    return _yaml_text(value)


def _yaml_text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def observe(phase: Phase, records: Sequence[Mapping[str, Any]]) -> tuple[Observation, ...]:
    """Match the probe's verdict records against the phase's expectations (pure)."""
    verdicts = {r.get("target"): r for r in records if r.get("record_type") == "verdict"}
    out = []
    for target, expected in phase.expect.items():
        record = verdicts.get(target)
        if record is None:
            out.append(Observation(target, expected, None, None, None, None, "the probe gave no verdict",
                                   found=False))
            continue
        keys = record.get("test_keys") or {}
        out.append(Observation(target, expected, keys.get("blocking"), keys.get("accessible"),
                               record.get("failure"), keys.get("rule"), str(keys.get("reason", ""))))
    return tuple(out)


def replay(
    path: str | Path | Scenario, lab: LabLike, *, speed: float = 1.0, out: IO[str] | None = None,
    settle: float = 0.3, clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ScenarioReport:
    """Replay a scenario in ``lab``; print and return expected against observed.

    Times in the file are divided by ``speed``. A technique listed identically in
    two phases that touch (lift == next onset) stays applied across them; every
    other technique is removed at its phase's lift. A phase whose measurement
    takes longer than its window delays the rest (a measurement is never cut
    short). Everything applied is removed at the end, also on error.
    """
    if speed <= 0:
        raise ValueError("speed must be positive")
    scenario = path if isinstance(path, Scenario) else load(path)
    targets_yaml = lab.targets_yaml(
        list(scenario.targets), overrides={k: dict(v) for k, v in scenario.target_options.items()},
        settings=dict(scenario.probe_settings),
    )
    start = clock()
    active: dict[tuple[str, str], Any] = {}
    reports: list[PhaseReport] = []

    def wait_until(t: float) -> None:
        delay = start + t / speed - clock()
        if delay > 0:
            sleep(delay)

    def remove(keys: Iterable[tuple[str, str]]) -> None:
        """Remove each technique, even if removing an earlier one failed (then re-raise the first error)."""
        first: Exception | None = None
        for key in list(keys):
            try:
                lab.remove(active.pop(key))
            except Exception as exc:  # noqa: BLE001 - the others must still be removed
                first = first or exc
        if first is not None:
            raise first

    try:
        for i, phase in enumerate(scenario.phases):
            wait_until(phase.onset)
            wanted = {s.key: s for s in phase.techniques}
            remove([k for k in active if k not in wanted])
            error = None
            try:
                for key, step in wanted.items():
                    if key not in active:
                        active[key] = lab.apply(step.technique, **step.call_params())
            except Exception as exc:  # noqa: BLE001 - reported in the phase, then the replay stops
                error = f"applying {step.technique}: {exc}"
            if settle > 0 and error is None:
                sleep(settle)
            began = clock()
            records: list[dict[str, Any]] = []
            if error is None:
                try:
                    records = lab.run_probe(targets_yaml, timeout=scenario.probe_timeout)
                except Exception as exc:  # noqa: BLE001 - as above
                    error = f"running the probe: {exc}"
            measured = clock() - began
            observations = observe(phase, records) if error is None else ()
            reports.append(PhaseReport(phase, began - start, measured, observations, error))
            if error is not None:
                break
            following = scenario.phases[i + 1] if i + 1 < len(scenario.phases) else None
            if following is None or following.onset > phase.lift:
                wait_until(phase.lift)
                remove(list(active))
    finally:
        remove(list(active))
    report = ScenarioReport(scenario, speed, tuple(reports), clock() - start)
    print(report.table(), file=out if out is not None else sys.stdout, flush=True)
    return report
