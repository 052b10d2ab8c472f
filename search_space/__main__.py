"""`python -m search_space`: print the default search space and the reference designs."""

from __future__ import annotations

from . import DEFAULT_SPACE, REFERENCES, NetworkConfig, network_params, reference_network


def main() -> None:
    print(DEFAULT_SPACE.describe())
    print("\nreference designs (parameters in the default 28x28 skeleton):")
    for name, block in REFERENCES.items():
        params = network_params(NetworkConfig(block=block))
        print(f"  {name}: {block.short()}  ({params:,} params)")
    three = NetworkConfig(block=REFERENCES["v1"], stages=(1, 1, 1))
    v3 = reference_network("v3", three, per_stage=True)
    print(f"\nv3 placed per stage (28 -> 14 -> 7, --stages 1,1,1 --per-stage):\n  {v3.short()}")


if __name__ == "__main__":
    main()
