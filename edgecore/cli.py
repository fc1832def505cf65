"""Command line: `edgecore <command>` (also `python -m edgecore <command>`).

    predict MODEL IMAGE_OR_DIR...   top-k labels of photos (a folder: every photo in it)
    train BASE DATA_DIR --out OUT.h5
                   a new head on the frozen BASE learns the photos of DATA_DIR (one
                   sub-folder per class); saves OUT.h5 (Keras opens it) and OUT.labels.txt
    info MODEL     the file's flavour and Keras version, then model.summary();
                   --memory: the memory plan of one inference
    bench MODEL    inference time (median of repeats); --profile: per op, as model.profile;
                   --threads N: the model's num_threads (default: the CPUs it may use)
    demo           a real transfer-learning run: the bundled ImageNet MobileNetV2 gets a new
                   head and learns Fashion-MNIST on this machine, then saves a Keras file

Exit status: 0 done; 1 a package is missing (the message says what to install) or the
run failed (training met a NaN loss, a prediction file differs); 2 bad input (a bad or
missing model or photo, wrong arguments): one line naming the file, layer and reason.
"""
import argparse
import os
import sys

from .errors import EdgecoreError, MissingDependencyError, NonFiniteLossError


class UsageError(Exception):
    """A mistake on the command line the user can fix (exit status 2)."""


def _info(args):
    from . import load

    model = load(args.model)
    print(f"file: {args.model}")
    print(f"format: {model.ctx.flavour} (written by Keras {model.ctx.keras_version})")
    print(f"inputs: {model.input_shape}   outputs: {model.output_shape}")
    model.summary()
    if args.memory:
        shape = _shape_arg(args.input_shape) if args.input_shape else _declared(model)
        if any(d is None for d in shape):
            raise UsageError(f"the model's input {(None,) + shape} has open dimensions; pass "
                             f"--input-shape H,W,C for --memory")
        print()
        model.memory_plan(shape, batch_size=args.batch)
    return 0


def _declared(model):
    declared = model.input_shape if not isinstance(model.input_shape, list) else model.input_shape[0]
    return tuple(declared[1:])


def _shape_arg(text):
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        raise UsageError(f"--input-shape must be numbers like 224,224,3, got {text!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise UsageError(f"--input-shape must be positive numbers, got {text!r}")
    return shape


def _size_arg(text):
    try:
        parts = [int(d) for d in text.lower().replace("x", ",").split(",")]
    except ValueError:
        raise UsageError(f"--image-size must be N or H,W, got {text!r}") from None
    if len(parts) not in (1, 2) or any(d <= 0 for d in parts):
        raise UsageError(f"--image-size must be N or H,W, got {text!r}")
    return (parts[0], parts[-1])


def labels_path(model_path):
    """Where `edgecore train` writes the class names of OUT.h5: OUT.labels.txt."""
    root, _ = os.path.splitext(os.fspath(model_path))
    return root + ".labels.txt"


def _read_labels(path):
    """Class names, one a line; `wnid<TAB>name` lines give the name; `#` lines are notes
    (`edgecore train` writes the image size it trained at as `# image_size=H,W`)."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t")[-1] for line in f
                if line.strip() and not line.startswith("#")]


def _trained_size(model_path):
    """(H, W) that `edgecore train` recorded beside the model, or None."""
    path = labels_path(model_path)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith("# image_size="):
                return _size_arg(line.split("=", 1)[1].split()[0])
    return None


def _labels_for(args, classes):
    if args.labels:
        names = _read_labels(args.labels)
        source = args.labels
    elif os.path.exists(labels_path(args.model)):
        names = _read_labels(labels_path(args.model))
        source = labels_path(args.model)
    elif classes == 1000:
        from .utils import _imagenet_classes

        # decode_predictions' table; Keras spells names with underscores, people with spaces
        return [name.replace("_", " ") for _, name in _imagenet_classes()]
    else:
        return [str(i) for i in range(max(classes, 2))]
    if len(names) != max(classes, 2):
        raise UsageError(f"{source} has {len(names)} labels but the model has {classes} "
                         f"output(s)")
    return names


def _photo_files(paths):
    from .images import ALLOWLIST_FORMATS

    found = []
    for path in paths:
        if os.path.isdir(path):
            for root, _, files in sorted(os.walk(path), key=lambda x: x[0]):
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(ALLOWLIST_FORMATS)]
        elif os.path.exists(path):
            found.append(path)
        else:
            raise UsageError(f"{path}: no such file or folder")
    if not found:
        raise UsageError(f"no photos (.bmp .gif .jpeg .jpg .png) in {' '.join(paths)}")
    return found


def _predict(args):
    import json

    import numpy as np

    from . import images, load

    if args.top < 1:
        raise UsageError(f"--top must be at least 1, got {args.top}")
    files = _photo_files(args.inputs)
    images.pil()
    model = load(args.model, num_threads=args.threads)
    h, w, channels = _declared(model)
    if h is None or w is None:  # open input size: as trained, else ImageNet's 224
        h, w = (_size_arg(args.image_size) if args.image_size
                else _trained_size(args.model) or (224, 224))
    elif args.image_size:
        raise UsageError(f"the model's input is {h}x{w}: --image-size applies only to "
                         f"models with an open input size")
    if channels not in (1, 3, 4):
        raise UsageError(f"the model takes {channels} channels: photos give 1, 3 or 4")
    names = _labels_for(args, _declared_classes(model))  # a wrong labels file: before decoding
    results = []
    for start in range(0, len(files), args.batch_size):
        chunk = files[start:start + args.batch_size]
        x = np.empty((len(chunk), h, w, channels), np.float32)
        for k, path in enumerate(chunk):
            images.resize_image(images.decode_image(path, channels), (h, w), out=x[k])
        probs = model.predict(x, batch_size=len(chunk))
        if isinstance(probs, list):
            probs = probs[0]
        results.append(probs.reshape(len(chunk), -1))
    probs = np.concatenate(results)
    if probs.shape[1] == 1:  # one sigmoid unit: P(class 1)
        probs = np.concatenate([1 - probs, probs], axis=1)
    out = []
    for path, row in zip(files, probs):
        best = np.argsort(row, kind="stable")[::-1][:args.top]
        out.append({"file": path, "top": [{"label": names[i], "index": int(i),
                                           "probability": float(row[i])} for i in best]})
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for item in out:
            print(item["file"])
            for rank, guess in enumerate(item["top"], 1):
                print(f"  {rank}. {guess['label']:<30} {guess['probability']:.4f}")
    return 0


def _declared_classes(model):
    shape = model.output_shape if not isinstance(model.output_shape, list) else model.output_shape[0]
    return int(shape[-1])


def _load_base(args):
    """ec.load with the CLI's --threads, and --grayscale as input_channels=1."""
    from . import load

    kwargs = {"num_threads": args.threads}
    if args.grayscale:
        kwargs["input_channels"] = 1
    return load(args.base, memory_budget=args.memory_budget, **kwargs)


def _train(args):
    import numpy as np

    from . import optimizers, transfer, utils
    from .datasets import image_dataset_from_directory

    if not os.path.isdir(args.data):
        raise UsageError(f"{args.data}: not a folder (expected one sub-folder of photos per "
                         f"class)")
    if not args.out.lower().endswith(".h5"):
        raise UsageError(f"--out {args.out}: the model is saved as a Keras .h5 file; name it "
                         f"*.h5")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1")
    if args.validation_split and not 0 < args.validation_split < 1:
        raise UsageError("--validation-split must be between 0 and 1 (0: no validation)")
    size = _size_arg(args.image_size)
    utils.set_random_seed(args.seed)
    base = _load_base(args)
    channels = _declared(base)[2]
    grey = args.grayscale or channels == 1
    common = dict(image_size=size, batch_size=args.batch_size, seed=args.seed,
                  color_mode="grayscale" if grey else "rgb", verbose=True)
    if args.validation_split:
        train, val = image_dataset_from_directory(args.data, validation_split=args.validation_split,
                                                  subset="both", **common)
    else:
        train, val = image_dataset_from_directory(args.data, **common), None
    if len(train.class_names) < 2:
        raise UsageError(f"{args.data} has {len(train.class_names)} class folder(s): "
                         f"training a classifier needs at least 2 (one sub-folder per class)")
    model = transfer.new_head(base, classes=len(train.class_names))
    model.compile(optimizer=optimizers.Adam(learning_rate=args.learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  memory_budget=args.memory_budget)
    history = model.fit(train, epochs=args.epochs, validation_data=val, verbose=1,
                        checkpoint=args.checkpoint, resume=args.resume)
    model.save(args.out)
    labels = labels_path(args.out)
    tmp = labels + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(f"# image_size={size[0]},{size[1]} (what edgecore predict resizes to)\n")
        f.write("".join(name + "\n" for name in train.class_names))
    os.replace(tmp, labels)
    acc = history.history.get("val_accuracy")
    print(f"saved {args.out} (Keras opens it) and {labels} ({len(train.class_names)} classes: "
          f"{', '.join(train.class_names)})"
          + (f"; validation accuracy {100 * acc[-1]:.1f} % on {val.samples} photos"
             if acc else ""))
    print(f"next: edgecore predict {args.out} PHOTO.jpg")
    return 0 if np.isfinite(history.history["loss"][-1]) else 1


def _bench(args):
    import time

    import numpy as np

    from . import load

    if args.batch < 1 or args.repeats < 1:
        raise UsageError("--batch and --repeats must be at least 1")
    model = load(args.model, num_threads=args.threads)
    shape = _shape_arg(args.input_shape) if args.input_shape else _declared(model)
    if any(d is None for d in shape):
        raise UsageError(f"the model's input {(None,) + shape} has open dimensions; pass "
                         f"--input-shape H,W,C")
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
    predict = commands.add_parser(
        "predict", help="top-k labels of photos",
        description="Decode each photo (JPEG, PNG, BMP, GIF), resize it to the model's input "
                    "(224x224 for a model with an open size, such as the bundled ImageNet "
                    "MobileNetV2) and print the top-k labels with probabilities.  Labels: "
                    "--labels, else MODEL's .labels.txt written by `edgecore train`, else "
                    "ImageNet's for a 1000-class model, else class numbers.")
    predict.add_argument("model", help="a .h5 (Keras 2 or 3) or .keras (Keras 3) file")
    predict.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR",
                         help="photos, or folders of photos (searched recursively)")
    predict.add_argument("--top", type=int, default=5, help="labels per photo (default 5)")
    predict.add_argument("--labels", help="a text file: one class name a line, in the "
                         "model's output order")
    predict.add_argument("--json", action="store_true", help="print JSON instead of text")
    predict.add_argument("--image-size", help="N or H,W for models with an open input size")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--threads", type=int, default=None,
                         help="threads per call (default: the CPUs this process may use)")
    predict.set_defaults(run=_predict)
    train = commands.add_parser(
        "train", help="a new head on a frozen base learns a folder of labelled photos",
        description="DATA_DIR holds one sub-folder of photos per class (the layout of "
                    "Keras's image_dataset_from_directory); the class names are the folder "
                    "names.  BASE (e.g. weights/pretrained/mobilenet_v2_imagenet.h5) gets "
                    "a new Dense softmax head, its layers stay frozen; the photos stream "
                    "from disk one batch at a time.  Saves OUT.h5 (keras.models.load_model "
                    "opens it) and OUT.labels.txt beside it, which `edgecore predict OUT.h5` "
                    "uses.")
    train.add_argument("base", help="the backbone: a Keras .h5 or .keras file")
    train.add_argument("data", metavar="DATA_DIR", help="one sub-folder of photos per class")
    train.add_argument("--out", required=True, help="where to save the trained model (.h5)")
    train.add_argument("--classes-from-dirs", action="store_true", default=True,
                       help="class names are DATA_DIR's sub-folder names, in sorted order "
                            "(the default and, for now, the only way)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=32)
    train.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's (1e-3)")
    train.add_argument("--image-size", default="224", help="N or H,W (default 224)")
    train.add_argument("--grayscale", action="store_true",
                       help="read the photos as 1-channel grey and fold the base's first "
                            "convolution to take them (edgecore.load(..., input_channels=1))")
    train.add_argument("--validation-split", type=float, default=0.2,
                       help="the fraction held out to report validation accuracy (0: none)")
    train.add_argument("--memory-budget", default=None,
                       help="refuse (before any work) a run needing more, e.g. 200MB; the "
                            "feature cache spills to a temporary file when it does not fit")
    train.add_argument("--checkpoint", default=None,
                       help="a .h5 written after each epoch (with --resume: continue from it)")
    train.add_argument("--resume", action="store_true")
    train.add_argument("--threads", type=int, default=None)
    train.add_argument("--seed", type=int, default=1337,
                       help="the split and the shuffling (default 1337)")
    train.set_defaults(run=_train)
    info = commands.add_parser("info", help="describe a Keras model file")
    info.add_argument("model", help="a .h5 (Keras 2 or 3) or .keras (Keras 3) file")
    info.add_argument("--memory", action="store_true",
                      help="also print the memory plan of one inference")
    info.add_argument("--input-shape", help="H,W,C for --memory when the input size is open")
    info.add_argument("--batch", type=int, default=1, help="batch size for --memory")
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
    except NonFiniteLossError as exc:
        print(f"edgecore: error: {exc}", file=sys.stderr)
        return 1
    except UsageError as exc:
        print(f"edgecore {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except (EdgecoreError, FileNotFoundError, IsADirectoryError, PermissionError,
            ValueError) as exc:
        print(f"edgecore: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`edgecore info m.h5 | head`): not an error of ours.  Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
