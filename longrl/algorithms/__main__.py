"""`python3 -m longrl.algorithms`: list the registered names of every algorithm registry."""

from __future__ import annotations

import dataclasses

from longrl.algorithms import ADVANTAGES, KL_PENALTIES, POLICY_LOSSES


def main() -> None:
    for registry in (ADVANTAGES, POLICY_LOSSES, KL_PENALTIES):
        print(f"{registry.config_key}:")
        for name in sorted(registry):
            summary = (registry[name].__doc__ or "").strip().splitlines()
            needs = registry.requires(name)
            declared = {f.name: getattr(needs, f.name) for f in dataclasses.fields(needs)
                        if f.name != "why" and getattr(needs, f.name) != f.default}
            print(f"  {name:<22}{summary[0] if summary else ''}" + (f"  [needs {declared}]" if declared else ""))
        print()


if __name__ == "__main__":
    main()
