"""Command line: `python -m edgecore <command>` (also installed as `edgecore`).

    info MODEL     the file's flavour and Keras version, then model.summary()

Errors in the model file print one line naming the file, layer and reason, and exit 2.
"""
import argparse
import sys

from .errors import EdgecoreError


def _info(args):
    from . import load

    model = load(args.model)
    print(f"file: {args.model}")
    print(f"format: {model.ctx.flavour} (written by Keras {model.ctx.keras_version})")
    print(f"inputs: {model.input_shape}   outputs: {model.output_shape}")
    model.summary()
    return 0


def build_parser():
    parser = argparse.ArgumentParser(prog="edgecore", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="describe a Keras model file")
    info.add_argument("model", help="a .h5 (Keras 2 or 3) or .keras (Keras 3) file")
    info.set_defaults(run=_info)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (EdgecoreError, FileNotFoundError) as exc:
        print(f"edgecore: error: {exc}", file=sys.stderr)
        return 2
