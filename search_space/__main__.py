"""`python -m search_space`: print the default search space and the reference designs."""

from __future__ import annotations

from . import DEFAULT_SPACE, REFERENCES, NetworkConfig, network_params


def main() -> None:
    print(DEFAULT_SPACE.describe())
    print("\nreference designs (parameters in the default 28x28 skeleton):")
    for name, block in REFERENCES.items():
        params = network_params(NetworkConfig(block=block))
        print(f"  {name}: {block.short()}  ({params:,} params)")


if __name__ == "__main__":
    main()
