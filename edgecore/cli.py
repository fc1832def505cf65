"""Command line: `python -m edgecore <command>` (also installed as `edgecore`).

    info MODEL     the file's flavour and Keras version, then model.summary()
    bench MODEL    inference time (median of repeats); --profile: per op, as model.profile;
                   --threads N: the model's num_threads (default: the CPUs it may use)
    demo           a real transfer-learning run: the bundled ImageNet MobileNetV2 gets a new
                   head and learns Fashion-MNIST on this machine, then saves a Keras file

Errors in the model file print one line naming the file, layer and reason, and exit 2.
"""
import argparse
import os
import sys

from .errors import EdgecoreError, MissingDependencyError


def _info(args):
    from . import load

    model = load(args.model)
    print(f"file: {args.model}")
    print(f"format: {model.ctx.flavour} (written by Keras {model.ctx.keras_version})")
    print(f"inputs: {model.input_shape}   outputs: {model.output_shape}")
    model.summary()
    return 0


def _bench(args):
    import time

    import numpy as np

    from . import load

    model = load(args.model, num_threads=args.threads)
    shape = tuple(int(d) for d in args.input_shape.split(",")) if args.input_shape else None
    declared = model.input_shape if not isinstance(model.input_shape, list) else model.input_shape[0]
    shape = shape or tuple(declared[1:])
    if any(d is None for d in shape):
        print(f"edgecore: error: the model's input {declared} has open dimensions; pass "
              f"--input-shape H,W,C", file=sys.stderr)
        return 2
    x = np.random.default_rng(0).uniform(0, 1, (args.batch,) + shape).astype(np.float32)
    if args.profile:
        model.profile(x, repeats=args.repeats, top=args.top)
        return 0
    model.predict(x, batch_size=args.batch)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        model.predict(x, batch_size=args.batch)
        times.append(time.perf_counter() - start)
    times.sort()
    print(f"{args.model}: batch {args.batch} of {shape}, {model.num_threads} thread(s), "
          f"{args.repeats} runs: median {times[len(times) // 2] * 1e3:.3f} ms, min "
          f"{times[0] * 1e3:.3f} ms")
    return 0


KERAS_BASELINE = ("Keras 3.15 model.fit, same recipe on the project's 2-core x86-64 runner "
                  "(weights/datasets/README.md): 85.3 s, test accuracy 84.3 %, peak RSS 1.78 GB")


def _demo(args):
    import os
    import resource
    import time

    import numpy as np

    from . import load, optimizers, transfer, utils

    for path in (args.model, args.data):
        if not os.path.exists(path):
            print(f"edgecore: error: {path} not found: run `edgecore demo` from the root of "
                  f"the edgecore repository, or pass --model and --data", file=sys.stderr)
            return 2
    data = np.load(args.data)
    names = [str(n) for n in data["class_names"]]
    print(f"edgecore demo: transfer learning on this machine, no TensorFlow\n"
          f"  backbone: {args.model} (MobileNetV2, real ImageNet weights, frozen)\n"
          f"  data:     {args.data} ({len(data['x_train'])} training and "
          f"{len(data['x_test'])} test images, {len(names)} classes: {', '.join(names)})\n"
          f"  recipe:   new Dense({len(names)}, softmax) head, images resized to "
          f"{args.size}x{args.size} RGB, Adam(1e-3), batch 32, {args.epochs} epochs")
    utils.set_random_seed(args.seed)
    start = time.perf_counter()
    x_train = utils.resize_images(data["x_train"], args.size)  # stays uint8
    x_test = utils.resize_images(data["x_test"], args.size)
    model = transfer.new_head(load(args.model), classes=len(names))
    model.compile(optimizer=optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x_train, data["y_train"], batch_size=32, epochs=args.epochs,
              validation_data=(x_test, data["y_test"]), verbose=args.verbose)
    elapsed = time.perf_counter() - start
    loss, accuracy = model.evaluate(x_test, data["y_test"])
    model.save(args.out)
    reloaded = load(args.out)
    same = np.array_equal(reloaded.predict(x_test[:32]), model.predict(x_test[:32]))
    guesses = reloaded.predict(x_test[:5]).argmax(axis=1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nedgecore: {elapsed:.1f} s (resizing, caching the frozen base once, "
          f"{args.epochs} epochs), test accuracy {100 * accuracy:.1f} %, "
          f"peak RSS {peak:.0f} MiB\n"
          f"compare:  {KERAS_BASELINE}\n"
          f"saved:    {args.out} (legacy Keras .h5: keras.models.load_model opens it); "
          f"reloaded by edgecore: {'identical predictions' if same else 'PREDICTIONS DIFFER'}\n"
          f"first test images: predicted {[names[i] for i in guesses]}, "
          f"labelled {[names[i] for i in data['y_test'][:5]]}")
    return 0 if same else 1


def build_parser():
    parser = argparse.ArgumentParser(prog="edgecore", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="describe a Keras model file")
    info.add_argument("model", help="a .h5 (Keras 2 or 3) or .keras (Keras 3) file")
    info.set_defaults(run=_info)
    bench = commands.add_parser("bench", help="time a model's inference (or profile it per op)")
    bench.add_argument("model", help="a .h5 (Keras 2 or 3) or .keras (Keras 3) file")
    bench.add_argument("--input-shape", help="H,W,C when the model's input size is open")
    bench.add_argument("--batch", type=int, default=1)
    bench.add_argument("--repeats", type=int, default=20)
    bench.add_argument("--profile", action="store_true",
                       help="per op: kind, layer, output shape, time, share, GFLOP/s")
    bench.add_argument("--top", type=int, default=None, help="with --profile: the N slowest ops")
    bench.add_argument("--threads", type=int, default=None,
                       help="threads per call (default: the CPUs this process may use)")
    bench.set_defaults(run=_bench)
    demo = commands.add_parser("demo", help="a real transfer-learning run on bundled data")
    demo.add_argument("--model", default="weights/pretrained/mobilenet_v2_imagenet.h5")
    demo.add_argument("--data", default="weights/datasets/fashion_mnist_small.npz")
    demo.add_argument("--out", default="fashion_mnist_mobilenet_v2.h5",
                      help="where to save the trained model (default: %(default)s)")
    demo.add_argument("--epochs", type=int, default=10)
    demo.add_argument("--size", type=int, default=96, help="image side in pixels")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--verbose", type=int, default=2, choices=(0, 1, 2))
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except MissingDependencyError as exc:
        print(f"edgecore: error: {exc.reason}", file=sys.stderr)
        return 1
    except (EdgecoreError, FileNotFoundError) as exc:
        print(f"edgecore: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`edgecore info m.h5 | head`): not an error of ours.  Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
