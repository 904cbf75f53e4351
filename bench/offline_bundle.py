"""Benchmark: the signed offline bundle's size for 1 million permits with 1 % revoked, full and
as one hour's delta, against the unsigned JSON status list of the same permits (the baseline).

One status list of 2^20 permits (the registry's list size), 1 % of them revoked at seeded
random indexes; the full bundle carries the shipped policy, two permit keys, one trust-list
key and the list's Status List Token; the deltas carry one hour's revocations at two rates:
the 1 % spread evenly over a 30-day season, and a burst of 1,000 in the hour. Prints bytes
and the ratio of the signed token to the unsigned JSON list (what GET /v1/status-lists/{id}
answered before), and the time to build and to check the full bundle, each against the time
to compress the bitmap alone in the same run.
Run: `.venv/bin/python bench/offline_bundle.py [--permits N] [--revoked-share F]`.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec

from checkpoint.offline import (
    DeltaBundle,
    FullBundle,
    RevokedRef,
    StatusListRef,
    sign_bundle,
    status_list_token,
    status_list_uri,
    verify_bundle,
)
from checkpoint.policy_file import default_policy
from checkpoint.signing import InProcessKey, Keyring, key_entry
from checkpoint.statuslist import StatusList

NOW = 1_808_211_600
SEASON_HOURS = 30 * 24


def _best(action: Callable[[], object], rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--permits", type=int, default=1 << 20)
    parser.add_argument("--revoked-share", type=float, default=0.01)
    args = parser.parse_args()
    rng = random.Random(12)
    revoked = sorted(rng.sample(range(args.permits), int(args.permits * args.revoked_share)))
    status = StatusList(0)
    for index in revoked:
        status.set(index)
    policy = default_policy()
    trust = InProcessKey.generate()
    permit_keys = tuple(
        key_entry(InProcessKey.generate(), not_before=NOW - 86_400) for _ in range(2)
    )
    trust_entry = key_entry(trust, not_before=NOW - 86_400)
    unsigned = msgspec.json.encode(
        {"list_id": 0, "seq": len(revoked), "status_list": status.export(args.permits)}
    )

    def full() -> str:
        token = status_list_token(
            trust,
            status,
            capacity=args.permits,
            seq=len(revoked),
            iat=NOW,
            exp=NOW + 3600,
            ttl=300,
        )
        return sign_bundle(
            trust,
            FullBundle(
                iss="checkpoint",
                iat=NOW,
                exp=NOW + 3600,
                ttl=300,
                seq=len(revoked),
                keyring_version=3,
                policy_version=policy.version,
                offline_revocation_bound=3600,
                keys=tuple(permit_keys),
                trust_keys=(trust_entry,),
                policy=msgspec.to_builtins(policy),
                status_lists=(
                    StatusListRef(id=0, uri=status_list_uri(0), capacity=args.permits, token=token),
                ),
            ),
        )

    def delta(count: int) -> str:
        refs = tuple(RevokedRef(i + 1, 0, index) for i, index in enumerate(revoked[:count]))
        return sign_bundle(
            trust,
            DeltaBundle(
                iss="checkpoint",
                iat=NOW,
                exp=NOW + 3600,
                ttl=300,
                seq=len(revoked),
                since_seq=len(revoked) - count,
                keyring_version=3,
                policy_version=policy.version,
                offline_revocation_bound=3600,
                revocations=refs,
            ),
        )

    bundle = full()
    token_size = len(
        status_list_token(trust, status, capacity=args.permits, seq=1, iat=NOW, exp=NOW + 1, ttl=1)
    )
    per_hour = max(1, round(len(revoked) / SEASON_HOURS))
    pinned = Keyring([trust_entry])
    compress = _best(lambda: zlib.compress(bytes(status.bits).ljust(args.permits // 8, b"\0"), 9))
    build = _best(full)
    check = _best(lambda: verify_bundle(bundle, pinned, NOW))
    print(f"{args.permits:,} permits, {len(revoked):,} revoked ({args.revoked_share:.1%})")
    print(f"  unsigned JSON status list (baseline): {len(unsigned):,} bytes")
    print(
        f"  Status List Token (statuslist+jwt):   {token_size:,} bytes "
        f"({token_size / len(unsigned):.2f}x the baseline)"
    )
    print(
        f"  full offline bundle:                  {len(bundle):,} bytes "
        f"({len(bundle) / len(unsigned):.2f}x the baseline)"
    )
    print(f"  one hour's delta, {per_hour} revocations:    {len(delta(per_hour)):,} bytes")
    print(f"  one hour's delta, 1,000 revocations:  {len(delta(1000)):,} bytes")
    print(
        f"  build the full bundle: {build * 1000:.1f} ms ({build / compress:.2f}x compressing "
        f"the bitmap alone, {compress * 1000:.1f} ms); check it: {check * 1000:.1f} ms "
        f"({check / compress:.2f}x)"
    )


if __name__ == "__main__":
    main()
