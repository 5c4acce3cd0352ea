"""Fuzz targets for longer runs than CI's (tests/fuzz/README.md says how to run them).

    python -m tests.fuzz.target seeded --seed 7 --count 5000000
    python -m tests.fuzz.target hypothesis --examples 200000
    python -m tests.fuzz.target atheris -atheris_runs=10000000   # pip install atheris

Each target feeds raw entries to `payloads.check`: decode, wrap_invalid, promote and
place_orphan must yield a valid Sidekiq payload or a clean PayloadError, nothing else.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz.payloads import VALID, check, generate

# Bytes near the shape of a payload, so hypothesis reaches past the JSON parser.
_json_text = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["class", "args", "jid", "queue", "retry", "retry_count",
                         "difo_orphaned", "enqueued_at", "x"]), inner, max_size=6),
    max_leaves=30,
).map(lambda value: repr(value).replace("'", '"').replace("None", "null")
      .replace("True", "true").replace("False", "false").encode("utf-8", "surrogatepass"))
raw_entries = st.binary(max_size=400) | _json_text | st.builds(
    lambda cut, extra: VALID[:cut] + extra + VALID[cut:],
    st.integers(0, len(VALID)), st.binary(max_size=20))


def fuzz_one(data: bytes) -> None:
    """One entry through the settle path; AssertionError on anything but a clean outcome."""
    check(data, random.Random(len(data)))


def hypothesis_target(examples: int, seed: int | None = None) -> None:
    """Run `examples` hypothesis-generated entries (derandomized when `seed` is given)."""

    @given(raw_entries)
    @settings(max_examples=examples, deadline=None, database=None,
              derandomize=seed is not None, suppress_health_check=list(HealthCheck))
    def target(data: bytes) -> None:
        fuzz_one(data)

    target()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["seeded", "hypothesis", "atheris"])
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--examples", type=int, default=100_000)
    args, rest = parser.parse_known_args(argv)
    if args.mode == "seeded":
        outcomes: Counter[str] = Counter()
        rng = random.Random(args.seed)
        for index, raw in enumerate(generate(args.seed, args.count)):
            try:
                outcomes[check(raw, rng)] += 1
            except Exception as exc:
                print(f"seed {args.seed} payload {index}: {raw[:300]!r}", file=sys.stderr)
                raise SystemExit(f"{type(exc).__name__}: {exc}") from exc
        print(f"seed {args.seed}: {dict(outcomes)}")
    elif args.mode == "hypothesis":
        hypothesis_target(args.examples)
        print(f"{args.examples} hypothesis examples: clean")
    else:
        import atheris  # type: ignore[import-not-found]

        atheris.Setup([sys.argv[0], *rest], fuzz_one)
        atheris.Fuzz()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
