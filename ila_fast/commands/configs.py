"""``ila-fast configs``: the bundled configs, one line each (arch, dataset, frames x size)."""
from __future__ import annotations


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    from ila_fast.config import bundled_configs, load_config

    print(f"{'name':<18} {'arch':<9} {'dataset':<8} {'frames x px':>11}  file")
    for name, path in bundled_configs().items():
        m = load_config(path).model
        print(f"{name:<18} {m.arch:<9} {m.dataset:<8} {f'{m.frames}x{m.input_size}':>11}  {path}")
    print("use a name wherever a config is asked for: --config k400_b16_8f; `ila-fast config show NAME` "
          "prints one in full")
    return 0
