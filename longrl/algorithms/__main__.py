"""`python3 -m longrl.algorithms`: list the registered names of every algorithm registry."""

from __future__ import annotations

from longrl.algorithms import ADVANTAGES, KL_PENALTIES, POLICY_LOSSES


def main() -> None:
    for registry in (ADVANTAGES, POLICY_LOSSES, KL_PENALTIES):
        print(f"{registry.config_key}:")
        for name in sorted(registry):
            summary = (registry[name].__doc__ or "").strip().splitlines()
            print(f"  {name:<22}{summary[0] if summary else ''}")
        print()


if __name__ == "__main__":
    main()
