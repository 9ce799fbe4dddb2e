"""``ila-fast convert SRC DST``: an official ILA checkpoint -> ila-fast's model file."""
from __future__ import annotations

from ila_fast.arguments import add_config_argument, add_force_argument, check_output, existing_file


def add_arguments(parser) -> None:
    parser.add_argument("source", type=existing_file,
                        help="official ILA checkpoint (.pth); it is unpickled, so convert trusted files only")
    parser.add_argument("output", help="where to write ila-fast's model file")
    add_config_argument(parser, required=False,
                        help_text="config (bundled name or TOML file) to check the checkpoint against")
    parser.add_argument("--labels", metavar="CSV|SET",
                        help="label CSV (id,name) or a bundled label set (kinetics400, ssv2, ...) whose names the "
                             "file stores, so that predict / eval need none "
                             "(official files carry no names; a Kinetics text head cannot classify without them)")
    add_force_argument(parser)


def run(args) -> int:
    output = check_output(args.output, args.force)
    from ila_fast.config import load_config
    from ila_fast.model import count_parameters
    from ila_fast.model.convert import convert_official, save_checkpoint

    from ila_fast.data import read_labels

    config = load_config(args.config).model if args.config else None
    names = read_labels(args.labels) if args.labels else None
    model, report = convert_official(args.source, config)  # WeightsError: one line, exit 2
    if names is not None:
        from ila_fast.train.eval_command import check_names

        check_names(names, model.cfg.num_classes, args.source, args.labels)
        model.set_class_names(names)
    save_checkpoint(model, output)
    cfg = report["config"]
    total, trainable = count_parameters(model)
    print(f"converted {args.source} -> {output}: {report['mapped']} tensors, {cfg.arch} {cfg.dataset} "
          f"{cfg.frames}x{cfg.input_size}, {total:,} parameters ({trainable:,} trainable), "
          + (f"{len(names)} class names from {args.labels}" if names else "no class names stored (--labels CSV)"))
    return 0
