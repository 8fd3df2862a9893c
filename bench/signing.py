"""Benchmark of signed streaming URLs: issuances/s and verifications/s on one core.

Run: ``python bench/signing.py [--iterations N] [--repeats R]``.

Each measurement runs ``iterations`` operations over a fixed set of distinct asset ids, is
repeated ``repeats`` times, and reports the best repeat (the least disturbed by other load).
Everything runs in this one thread, so the figures are single-core. In the same run it measures
a RAW BASELINE -- a bare ``hmac.new(key, msg, sha256).digest()`` loop over exactly the bytes our
tokens MAC -- and prints ours ÷ raw. The goal is at least 5,000 issuances/s; the exit status is
1 when it is not met. The defaults finish in a few seconds.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

try:
    import medialog  # noqa: F401
except ImportError:  # run from a checkout without installing: use the repo's src/
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from medialog.signing import SigningKeys, _mac_input, sign_stream, stream_url, verify_stream

GOAL_ISSUANCES_PER_S = 5_000
BASE_URL = "https://media.example.com"
EXPIRES = 4_102_444_800  # 2100-01-01: far in the future, so every token verifies
NOW = 1_700_000_000.0
CLIENT_IP = "203.0.113.7"
N_ASSETS = 1_000


def best_rate(fn: Callable[[int], None], iterations: int, repeats: int) -> float:
    """Run ``fn(iterations)`` ``repeats`` times; return the best ops/s."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(iterations)
        best = min(best, time.perf_counter() - start)
    return iterations / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30_000, help="operations per repeat")
    parser.add_argument("--repeats", type=int, default=5, help="repeats; the best is reported")
    args = parser.parse_args(argv)
    iterations: int = max(1, args.iterations)
    repeats: int = max(1, args.repeats)

    # Two keys, as during a rotation: the first signs, both verify.
    keys = SigningKeys.parse(f"k2026:{'n' * 48},k2025:{'o' * 48}")
    secret = keys.keys[0][1]
    kid = keys.active_kid
    rng = uuid.UUID(int=0x5EED)
    assets = [str(uuid.uuid5(rng, str(i))) for i in range(N_ASSETS)]
    plan = [assets[i % N_ASSETS] for i in range(iterations)]

    tokens = [sign_stream(keys, a, EXPIRES) for a in plan]
    bound_tokens = [sign_stream(keys, a, EXPIRES, client_ip=CLIENT_IP) for a in plan]
    messages = [_mac_input(kid, "a", a, str(EXPIRES), "") for a in plan]
    bound_messages = [_mac_input(kid, "i", a, str(EXPIRES), CLIENT_IP) for a in plan]
    # Sanity: the baseline MACs exactly the bytes the tokens carry a MAC of.
    for msgs, toks in ((messages, tokens), (bound_messages, bound_tokens)):
        digest = hmac.new(secret, msgs[0], hashlib.sha256).digest()
        if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != toks[0].split(".")[2]:
            raise SystemExit("baseline messages differ from what the tokens MAC")

    def issue(n: int) -> None:
        for i in range(n):
            stream_url(BASE_URL, keys, plan[i], EXPIRES)

    def issue_bound(n: int) -> None:
        for i in range(n):
            stream_url(BASE_URL, keys, plan[i], EXPIRES, client_ip=CLIENT_IP)

    def verify(n: int) -> None:
        expires = str(EXPIRES)
        for i in range(n):
            verify_stream(keys, plan[i], expires, tokens[i], now=NOW, client_ip=CLIENT_IP)

    def verify_bound(n: int) -> None:
        expires = str(EXPIRES)
        for i in range(n):
            verify_stream(keys, plan[i], expires, bound_tokens[i], now=NOW, client_ip=CLIENT_IP)

    def raw(msgs: list[bytes]) -> Callable[[int], None]:
        def run(n: int) -> None:
            new, sha256 = hmac.new, hashlib.sha256
            for i in range(n):
                new(secret, msgs[i], sha256).digest()

        return run

    raw_rate = best_rate(raw(messages), iterations, repeats)
    raw_bound_rate = best_rate(raw(bound_messages), iterations, repeats)
    rows = [
        ("issue  (sign + build URL)", best_rate(issue, iterations, repeats), raw_rate),
        ("issue  IP-bound", best_rate(issue_bound, iterations, repeats), raw_bound_rate),
        ("verify (parse + MAC + compare)", best_rate(verify, iterations, repeats), raw_rate),
        ("verify IP-bound", best_rate(verify_bound, iterations, repeats), raw_bound_rate),
    ]

    print(
        f"python {sys.version.split()[0]}, {iterations:,} ops x {repeats} repeats (best), 1 thread"
    )
    print(f"{'raw hmac.new(...).digest()':32} {raw_rate:>12,.0f} ops/s")
    print(f"{'raw hmac, IP-bound message':32} {raw_bound_rate:>12,.0f} ops/s")
    for name, rate, baseline in rows:
        print(f"{name:32} {rate:>12,.0f} ops/s   ours/raw = {rate / baseline:.2f}")
    issuance = rows[0][1]
    met = issuance >= GOAL_ISSUANCES_PER_S
    verdict = "MET" if met else "NOT MET"
    print(f"goal >= {GOAL_ISSUANCES_PER_S:,} issuances/s: {verdict} ({issuance:,.0f}/s)")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
