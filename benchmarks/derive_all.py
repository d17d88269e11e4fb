"""Time deriving every shipped rule and checking the cross-rule identities.

Run ``python benchmarks/derive_all.py`` from the repository root. Prints seconds per rule, for
the identities (reusing the derived rules) and in total; the target is under 10 s in total.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lrp_sym.identities import prove_identities  # noqa: E402
from lrp_sym.registry import load_declarations  # noqa: E402

TARGET_SECONDS = 10.0


def main() -> int:
    start = time.perf_counter()
    declarations = load_declarations()
    derivations = {}
    for name, rule in declarations.items():
        began = time.perf_counter()
        derivations[name] = rule.derive()
        status = "ok" if derivations[name].as_expected else "NOT AS EXPECTED"
        print(f"{name:<14} {time.perf_counter() - began:6.2f} s  {status}")
    began = time.perf_counter()
    identities = prove_identities(derivations)
    unexpected = [proof.name for proof in identities if not proof.as_expected]
    print(f"{'identities':<14} {time.perf_counter() - began:6.2f} s  "
          f"{'ok' if not unexpected else 'NOT AS EXPECTED: ' + ', '.join(unexpected)}")
    total = time.perf_counter() - start
    print(f"{'total':<14} {total:6.2f} s  (target < {TARGET_SECONDS:.0f} s)")
    return 0 if total < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
