"""``ila-fast bench kernels``: the fused ILA ops against their references (eager and compiled)."""
from __future__ import annotations

from ila_fast.arguments import nonnegative_int

SHAPES = ("tiny", "b16", "l14")
OPS = ("align", "corr_train", "corr_eval", "dense_train", "dense_eval")


def _choices(valid):
    import argparse

    def parse(text: str) -> str:
        bad = [v for v in text.split(",") if v not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}; choose from {','.join(valid)}")
        return text
    parse.__name__ = "list"
    return parse


def add_arguments(parser) -> None:
    parser.add_argument("--shapes", default="auto", type=_choices(("auto", *SHAPES)),
                        help="comma list of tiny,b16,l14 (auto: b16,l14 on a GPU, tiny on the CPU)")
    parser.add_argument("--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"],
                        help="auto: bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--ops", default=",".join(OPS), type=_choices(OPS),
                        help="comma list of ops to time (corr: Kinetics depthwise front; dense: SSv2 front)")
    parser.add_argument("--iters", type=nonnegative_int, default=0,
                        help="timed iterations (0: 20 on GPU, 3 on CPU)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference)")
    parser.add_argument("--check", action="store_true",
                        help="first check forward and every gradient against float64 at these shapes")
    parser.add_argument("--save", default=None, metavar="JSON", help="write the rows as JSON to this path")
    parser.add_argument("--compile-report", action="store_true",
                        help="instead: compile every kernel x autotune config x dtype for sm_90 offline (no GPU "
                             "needed); print shared memory, registers, spills, tensor-core use")


def run(args) -> int:
    from ila_fast.bench import kernels_table

    return kernels_table.run(args)
