"""Measurement codec benchmark: msgspec (what probe.core.ooni uses) against pydantic v2, same measurements.

    .venv/bin/python bench/record_codec.py            # 60 target runs' measurements, 50 rounds
    .venv/bin/python bench/record_codec.py --rounds 10

The measurements are built the real way (probe.analysis.ooni) from the records of
bench/export_bench.py (per target: DNS x2, TCP, TLS, HTTP, verdict). The pydantic model is
derived field by field from the msgspec classes (same fields, types, defaults and patterns),
so both libraries validate the same thing. Prints µs per measurement for decode (JSON bytes to
a validated object), encode (object to JSON bytes) and the JSON Schema generation.
"""

from __future__ import annotations

import argparse
import sys
import time
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Union

import msgspec
import pydantic

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.export_bench import _templates  # noqa: E402
from probe.analysis.ooni import measurement  # noqa: E402
from probe.core import ooni  # noqa: E402
from probe.core.records import ProbeMeta  # noqa: E402

_MODELS: dict[type, type[pydantic.BaseModel]] = {}


def _convert(hint: Any) -> Any:
    """A msgspec type hint with every Struct replaced by its pydantic model."""
    if isinstance(hint, type) and issubclass(hint, msgspec.Struct):
        return pydantic_model(hint)
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *extras = typing.get_args(hint)
        pattern = next((m.pattern for m in extras if isinstance(m, msgspec.Meta) and m.pattern), None)
        return Annotated[_convert(base), pydantic.Field(pattern=pattern)] if pattern else _convert(base)
    if origin in (Union, types.UnionType):
        return Union[tuple(_convert(a) for a in typing.get_args(hint))]  # noqa: UP007
    if origin in (list, dict):
        return origin[tuple(_convert(a) for a in typing.get_args(hint))]
    return hint


def pydantic_model(struct: type[msgspec.Struct]) -> type[pydantic.BaseModel]:
    """The pydantic v2 twin of a msgspec Struct (fields, defaults, nested classes, patterns)."""
    if struct not in _MODELS:
        hints = typing.get_type_hints(struct, include_extras=True)
        fields: dict[str, Any] = {}
        for f in msgspec.structs.fields(struct):
            if f.default is not msgspec.NODEFAULT:
                default: Any = f.default
            elif f.default_factory is not msgspec.NODEFAULT:
                default = pydantic.Field(default_factory=f.default_factory)
            else:
                default = ...
            fields[f.name] = (_convert(hints[f.name]), default)
        _MODELS[struct] = pydantic.create_model(struct.__name__, **fields)  # type: ignore[call-overload]
    return _MODELS[struct]


def _timed(fn: Any, rounds: int, count: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=60, help="target runs (measurements)")
    parser.add_argument("--rounds", type=int, default=50, help="repetitions; the best is printed")
    args = parser.parse_args()
    meta = ProbeMeta(probe_id="probe-bench", probe_cc="RU", probe_asn="AS12389", probe_network_name="Example")
    built = [measurement(run) for run in _templates(meta, args.targets)]
    lines = [ooni.encode(m) for m in built]
    model = pydantic_model(ooni.Measurement)
    adapter = pydantic.TypeAdapter(model)
    as_pydantic = [model.model_validate_json(line) for line in lines]
    assert [msgspec.json.decode(p.model_dump_json()) for p in as_pydantic] == [msgspec.json.decode(x) for x in lines]
    n = len(lines)
    size = sum(len(x) for x in lines) / n
    results = {
        "msgspec": (
            _timed(lambda: [ooni.decode(x) for x in lines], args.rounds, n),
            _timed(lambda: [ooni.encode(m) for m in built], args.rounds, n),
            _timed(ooni.json_schema, 5, 1),
        ),
        "pydantic": (
            _timed(lambda: [model.model_validate_json(x) for x in lines], args.rounds, n),
            _timed(lambda: [p.model_dump_json() for p in as_pydantic], args.rounds, n),
            _timed(adapter.json_schema, 5, 1),
        ),
    }
    print(f"{n} measurements, {size:.0f} bytes of JSON each; best of {args.rounds} rounds")
    print(f"msgspec {msgspec.__version__}, pydantic {pydantic.VERSION}")
    print(f"{'library':<10} {'decode µs/msmt':>15} {'encode µs/msmt':>15} {'schema µs':>10}")
    for name, (dec, enc, schema) in results.items():
        print(f"{name:<10} {dec:>15.1f} {enc:>15.1f} {schema:>10.0f}")
    dec_ratio = results["pydantic"][0] / results["msgspec"][0]
    enc_ratio = results["pydantic"][1] / results["msgspec"][1]
    print(f"msgspec is {dec_ratio:.1f}x faster to decode and {enc_ratio:.1f}x faster to encode")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
