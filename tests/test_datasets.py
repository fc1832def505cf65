"""edgecore.utils.image_dataset_from_directory, load_img, img_to_array: Keras 3.15's file
order, class_names, labels, splits and errors; streaming with a bounded prefetch; fit,
evaluate and predict on a dataset, with and without the frozen-prefix cache.  The
`keras`-marked test compares with what Keras itself returns for the same folder."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

import edgecore as ec
from edgecore import datasets, images
from fixtures import REPO
from photofolders import write_fashion_folder

PIL = pytest.importorskip("PIL.Image")
MOBILENET = REPO / "weights/pretrained/mobilenet_v2_imagenet.h5"


def _photo(seed, size, mode="RGB"):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size[::-1] + ((3,) if mode != "L" else ()), dtype=np.uint8)
    return PIL.fromarray(pixels).convert(mode)


@pytest.fixture
def folder(tmp_path):
    """Three classes, nested folders, mixed formats and case, and files Keras skips."""
    root = tmp_path / "photos"
    spec = [("cats", "b.png"), ("cats", "a.JPG"), ("cats", "sub/c.gif"), ("cats", "d.bmp"),
            ("dogs", "x.jpeg"), ("dogs", "zz/y.png"), ("dogs", "zz/deeper/w.png"),
            ("zebra", "1.png"), ("zebra", "10.png"), ("zebra", "2.PNG")]
    for k, (cls, name) in enumerate(spec):
        path = root / cls / name
        path.parent.mkdir(parents=True, exist_ok=True)
        _photo(k, (20 + 3 * k, 15 + 2 * k)).save(path, format={
            ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF",
            ".bmp": "BMP"}[path.suffix.lower()])
    (root / "cats" / "notes.txt").write_text("not a photo")
    (root / "cats" / "e.webp").write_bytes(b"skipped: not in Keras's list")
    (root / ".hidden").mkdir()
    _photo(99, (8, 8)).save(root / ".hidden" / "h.png")
    _photo(98, (8, 8)).save(root / "top.png")  # files beside the class folders: not used
    (root / "empty").mkdir()
    return root


def test_file_order_class_names_and_labels_unshuffled(folder):
    ds = ec.utils.image_dataset_from_directory(folder, shuffle=False, image_size=(8, 8),
                                               verbose=False)
    rel = [str(p)[len(str(folder)) + 1:] for p in ds.file_paths]
    assert rel == ["cats/a.JPG", "cats/b.png", "cats/d.bmp", "cats/sub/c.gif", "dogs/x.jpeg",
                   "dogs/zz/y.png", "dogs/zz/deeper/w.png", "zebra/1.png", "zebra/10.png",
                   "zebra/2.PNG"]
    assert ds.class_names == ["cats", "dogs", "empty", "zebra"]
    assert ds.labels.tolist() == [0, 0, 0, 0, 1, 1, 1, 3, 3, 3]
    xs, ys = zip(*ds)
    assert np.concatenate(ys).tolist() == ds.labels.tolist()
    assert np.concatenate(ys).dtype == np.int32 and xs[0].dtype == np.float32
    assert len(ds) == 1 and xs[0].shape == (10, 8, 8, 3)


def test_class_names_choose_and_order_the_classes(folder):
    ds = ec.utils.image_dataset_from_directory(folder, class_names=["zebra", "cats"],
                                               shuffle=False, verbose=False, image_size=4)
    assert ds.class_names == ["zebra", "cats"]
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 1]


def test_shuffle_is_keras_randomstate_shuffle_and_the_split_is_keras(folder, capsys):
    tr, va = ec.utils.image_dataset_from_directory(folder, seed=123, validation_split=0.3,
                                                   subset="both", image_size=4)
    plain = ec.utils.image_dataset_from_directory(folder, shuffle=False, image_size=4,
                                                  verbose=False)
    paths, labels = list(plain.file_paths), plain.labels.copy()
    np.random.RandomState(123).shuffle(paths)
    np.random.RandomState(123).shuffle(labels)
    assert tr.file_paths == paths[:-3] and va.file_paths == paths[-3:]
    assert tr.labels.tolist() == labels[:-3].tolist() and va.labels.tolist() == labels[-3:].tolist()
    out = capsys.readouterr().out
    assert "Found 10 files belonging to 4 classes." in out
    assert "Using 7 files for training." in out and "Using 3 files for validation." in out
    one = ec.utils.image_dataset_from_directory(folder, seed=123, validation_split=0.3,
                                                subset="validation", image_size=4)
    assert one.file_paths == va.file_paths and one.shuffle and not va.shuffle


def test_each_pass_of_a_shuffled_dataset_is_a_new_repeatable_order(folder):
    ds = ec.utils.image_dataset_from_directory(folder, seed=5, batch_size=3, image_size=4,
                                               verbose=False)
    first = [y.tolist() for _, y in ds]
    second = [y.tolist() for _, y in ds]
    assert sorted(sum(first, [])) == sorted(ds.labels.tolist())
    assert first != second or ds.order(0).tolist() != ds.order(1).tolist()
    again = ec.utils.image_dataset_from_directory(folder, seed=5, batch_size=3, image_size=4,
                                                  verbose=False)
    assert [y.tolist() for _, y in again] == first


@pytest.mark.parametrize("mode, want", [
    ("categorical", lambda ids: np.eye(4, dtype=np.float32)[ids]),
    ("int", lambda ids: ids.astype(np.int32))])
def test_label_modes(folder, mode, want):
    ds = ec.utils.image_dataset_from_directory(folder, label_mode=mode, shuffle=False,
                                               image_size=4, verbose=False)
    y = np.concatenate([b[1] for b in ds])
    np.testing.assert_array_equal(y, want(ds.labels))
    assert y.dtype == want(ds.labels).dtype


def test_binary_labels_and_no_labels(folder):
    ds = ec.utils.image_dataset_from_directory(folder, label_mode="binary", shuffle=False,
                                               image_size=4, class_names=["cats", "zebra"],
                                               verbose=False)
    y = np.concatenate([b[1] for b in ds])
    assert y.dtype == np.float32 and y.shape == (7, 1) and y.ravel().tolist() == [0] * 4 + [1] * 3
    none = ec.utils.image_dataset_from_directory(folder, labels=None, shuffle=False,
                                                 image_size=4, verbose=False)
    batch = next(iter(none))
    assert isinstance(batch, np.ndarray) and batch.shape == (12, 4, 4, 3)  # top.png and .hidden/h.png too (os.walk)
    assert none.class_names is None


@pytest.mark.parametrize("kwargs, message", [
    (dict(label_mode="sparse"), '`label_mode` argument must be one of "int"'),
    (dict(color_mode="cmyk"), '`color_mode` must be one of {"rgb", "rgba", "grayscale"}'),
    (dict(image_size=(1, 2, 3)), "Invalid `image_size` value. Expected a tuple of 2 integers"),
    (dict(interpolation="cubic"), "Argument `interpolation` should be one of"),
    (dict(validation_split=1.5, subset="training", seed=1),
     "`validation_split` must be between 0 and 1, received: 1.5"),
    (dict(subset="training"), "If `subset` is set, `validation_split` must be set"),
    (dict(validation_split=0.2), "If `subset` is set, `validation_split` must be set"),
    (dict(validation_split=0.2, subset="test", seed=1), '`subset` must be either "training", '
                                                        '"validation" or "both"'),
    (dict(validation_split=0.2, subset="training"), "you must provide a `seed` argument"),
    (dict(labels="folders"), "`labels` argument should be a list/tuple of integer labels"),
    (dict(labels=[0] * 11, class_names=["a"]), 'You can only pass `class_names` if'),
    (dict(class_names=["cats", "lions"]), "The `class_names` passed did not match"),
    (dict(label_mode="binary"), 'When passing `label_mode="binary"`, there must be exactly 2'),
    (dict(labels=[0, 1]), "Expected the lengths of `labels` to match the number of files"),
    (dict(interpolation="bicubic"), "edgecore reproduces Keras's"),
])
def test_bad_arguments_raise_keras_messages(folder, kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("{", r"\{").replace("}", r"\}").replace(".", r"\.")):
        ec.utils.image_dataset_from_directory(folder, verbose=False, **kwargs)


def test_no_images_and_a_split_leaving_nothing(tmp_path, folder):
    (tmp_path / "none" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="No images found in directory"):
        ec.utils.image_dataset_from_directory(tmp_path / "none", verbose=False)
    # int(0.05 * 10) == 0 validation files, and Keras's samples[:-0] leaves no training ones
    with pytest.raises(ValueError, match="No training images found"):
        ec.utils.image_dataset_from_directory(folder, validation_split=0.05, subset="both",
                                              seed=1, verbose=False)


def test_a_corrupt_photo_names_its_file(folder):
    (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    ds = ec.utils.image_dataset_from_directory(folder, shuffle=False, image_size=4,
                                               verbose=False, batch_size=2)
    with pytest.raises(images.ImageError, match="broken.png"):
        list(ds)


def test_without_pillow_the_error_names_the_extra(tmp_path, folder):
    code = ("import sys; sys.modules['PIL'] = None\nimport edgecore as ec\n"
            "try:\n    ec.utils.image_dataset_from_directory(sys.argv[1])\n"
            "except ec.MissingDependencyError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert "pip install 'edgecore[images]'" in proc.stdout, proc.stderr


def test_resize_matches_the_half_pixel_bilinear_formula():
    """An independent float64 reading of tf.image.resize's bilinear rule."""
    rng = np.random.default_rng(1)
    src = rng.integers(0, 256, (7, 11, 2)).astype(np.uint8)
    for size in [(3, 5), (14, 9), (7, 11), (1, 1)]:
        got = images.resize_image(src, size)
        want = np.empty(size + (2,))
        for i in range(size[0]):
            for j in range(size[1]):
                y = min(max((i + 0.5) * 7 / size[0] - 0.5, 0), 6)
                x = min(max((j + 0.5) * 11 / size[1] - 0.5, 0), 10)
                y0, x0 = int(np.floor(y)), int(np.floor(x))
                y1, x1 = min(y0 + 1, 6), min(x0 + 1, 10)
                dy, dx = y - y0, x - x0
                want[i, j] = ((src[y0, x0] * (1 - dx) + src[y0, x1] * dx) * (1 - dy)
                              + (src[y1, x0] * (1 - dx) + src[y1, x1] * dx) * dy)
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_prefetch_stays_a_bounded_number_of_batches_ahead(folder, monkeypatch):
    ds = ec.utils.image_dataset_from_directory(folder, batch_size=1, shuffle=False,
                                               image_size=4, verbose=False, prefetch=2)
    made = []
    real = ds.load
    monkeypatch.setattr(ds, "load", lambda index: (made.append(int(index[0])), real(index))[1])
    it = iter(ds)
    next(it)
    time.sleep(0.5)  # the thread runs ahead as far as it may
    assert len(made) <= 1 + 2 + 1  # the one taken, the queue, the one being put
    consumed = 1
    for _ in it:
        consumed += 1
        assert len(made) <= consumed + 3
    assert consumed == 10
    it2 = iter(ds)
    next(it2)
    it2.close()  # leaving early stops the thread
    assert not any(t.name == "edgecore-prefetch" and t.is_alive()
                   for t in __import__("threading").enumerate())


def test_load_img_and_img_to_array(folder):
    path = folder / "cats" / "b.png"
    img = ec.utils.load_img(path, target_size=(5, 7))
    assert img.size == (7, 5) and img.mode == "RGB"
    x = ec.utils.img_to_array(img)
    assert x.shape == (5, 7, 3) and x.dtype == np.float32
    grey = ec.utils.img_to_array(ec.utils.load_img(path, color_mode="grayscale"))
    assert grey.shape[-1] == 1
    assert ec.utils.img_to_array(img, data_format="channels_first").shape == (3, 5, 7)
    with pytest.raises(ValueError, match='color_mode must be "grayscale", "rgb", or "rgba"'):
        ec.utils.load_img(path, color_mode="hsv")
    with pytest.raises(ValueError, match="Invalid interpolation method"):
        ec.utils.load_img(path, target_size=(3, 3), interpolation="cubic")


# --- training on a dataset ---------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    return write_fashion_folder(tmp_path_factory.mktemp("fashion"), 120, classes=3)


def _model(classes=3):
    model = ec.transfer.new_head(ec.load(MOBILENET), classes=classes)
    model.compile(optimizer=ec.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def test_fit_on_a_dataset_equals_fit_on_its_arrays(fashion):
    """Unshuffled: the dataset with its cache filled during epoch 1 (in memory or spilled
    to a temporary file), the dataset without a cache, and the same photos as arrays
    train the same weights."""
    ds = ec.utils.image_dataset_from_directory(fashion, shuffle=False, image_size=(32, 32),
                                               batch_size=16, verbose=False)
    x = np.concatenate([b[0] for b in ds])
    y = ds.labels
    results = []
    for kind in ("cached", "streamed", "spilled", "arrays"):
        ec.utils.set_random_seed(0)
        model = _model()
        if kind == "arrays":
            history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
        else:
            history = model.fit(ds, epochs=2, verbose=0, feature_cache={
                "cached": "auto", "streamed": False, "spilled": "disk"}[kind])
        results.append((model.get_weights()[-2:], history.history["loss"]))
    for weights, losses in results[1:]:
        np.testing.assert_allclose(losses, results[0][1], rtol=1e-6)
        for a, b in zip(weights, results[0][0]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fit_validation_evaluate_and_predict_take_datasets(fashion):
    tr, va = ec.utils.image_dataset_from_directory(fashion, image_size=(32, 32), batch_size=8,
                                                   validation_split=0.25, subset="both",
                                                   seed=3, verbose=False)
    model = _model()
    history = model.fit(tr, epochs=3, validation_data=va, verbose=0)
    assert len(history.history["val_accuracy"]) == 3
    loss, acc = model.evaluate(va)
    assert abs(loss - history.history["val_loss"][-1]) < 1e-5
    probs = model.predict(va)
    assert probs.shape == (30, 3)
    assert abs((probs.argmax(1) == va.labels).mean() - acc) < 1e-9
    plan = model.memory_plan((32, 32, 3), batch_size=8, training=True, samples=90,
                             print_fn=False)
    assert plan.run_parts  # the run's parts, as fit counts them


def test_fit_refuses_unlabelled_or_extra_arguments(fashion):
    model = _model()
    unlabelled = ec.utils.image_dataset_from_directory(fashion, labels=None, image_size=8,
                                                       verbose=False)
    with pytest.raises(ValueError, match="label_mode=None"):
        model.fit(unlabelled, verbose=0)
    ds = ec.utils.image_dataset_from_directory(fashion, image_size=8, verbose=False)
    with pytest.raises(ValueError, match="y must not be given"):
        model.fit(ds, np.zeros(120), verbose=0)
    with pytest.raises(ValueError, match="validation_split is not supported"):
        model.fit(ds, validation_split=0.2, verbose=0)


def test_a_budget_too_small_for_the_run_refuses_before_any_photo_is_decoded(fashion):
    ds = ec.utils.image_dataset_from_directory(fashion, image_size=(32, 32), verbose=False)
    model = _model()
    calls = []
    ds.load = lambda index: calls.append(index)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  memory_budget=model.trainer.state_bytes() + 4 * model.weights_buffer.size
                  + 2048)
    with pytest.raises(ec.MemoryBudgetError):
        model.fit(ds, verbose=0)
    assert calls == []


# --- against Keras itself ----------------------------------------------------------------

KERAS_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import keras
spec = json.loads(sys.argv[1])
out = {}
for name, kw in spec["cases"].items():
    ds = keras.utils.image_dataset_from_directory(spec["dirs"][name], verbose=False, **kw)
    for j, one in enumerate(ds if isinstance(ds, list) else [ds]):
        out[f"{name}/{j}/paths"] = np.array(one.file_paths)
        out[f"{name}/{j}/class_names"] = np.array(one.class_names)
        if not kw.get("shuffle", True) or j == 1:
            xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in one])
            out[f"{name}/{j}/x"], out[f"{name}/{j}/y"] = np.concatenate(xs), np.concatenate(ys)
try:  # Keras's load_img needs Pillow, which a Keras venv may lack
    img = keras.utils.load_img(spec["one"], target_size=(9, 13), interpolation="bilinear")
    out["load_img"] = keras.utils.img_to_array(img)
except ImportError:
    pass
np.savez(spec["out"], **out)
"""

CASES = {
    "plain": dict(shuffle=False, image_size=(20, 24)),
    "categorical_crop": dict(shuffle=False, label_mode="categorical", image_size=(17, 31),
                             crop_to_aspect_ratio=True),
    "nearest": dict(shuffle=False, interpolation="nearest", image_size=(50, 45)),
    "split": dict(seed=7, validation_split=0.3, subset="both", image_size=(8, 8)),
    "split_train": dict(seed=11, validation_split=0.4, subset="training", image_size=(8, 8)),
    "grey": dict(shuffle=False, color_mode="grayscale", image_size=(16, 16)),
    "rgba": dict(shuffle=False, color_mode="rgba", image_size=(9, 9)),
    "grey_jpeg": dict(shuffle=False, color_mode="grayscale", image_size=(16, 16)),
}


@pytest.mark.keras
def test_against_keras(keras_py, tmp_path):
    """Paths, labels and class_names equal Keras's; images within 1e-3 of Keras's for
    PNG, BMP and GIF (float32 round-off of the same bilinear formula) and within 8 grey
    levels for JPEG (TF asks libjpeg for its fast integer DCT, Pillow for the accurate one;
    measured at most 5.0 of 255 here, so the bound is 8)."""
    rgb = tmp_path / "rgb"
    png = tmp_path / "png"  # TF cannot decode GIF or BMP to 1 channel, nor GIF or JPEG to 4
    jpg = tmp_path / "jpg"
    photos = [p for p in (REPO / "weights" / "pretrained").glob("*.npz")]
    source = np.load(photos[0])["x"] if photos else None
    exts = ["png", "jpg", "bmp", "gif", "JPEG", "png"]
    for k in range(12):
        pixels = source[k] if source is not None else _photo(k, (64, 64))
        img = PIL.fromarray(np.asarray(pixels)).resize((40 + 7 * k, 30 + 5 * k))
        cls = ["cats", "dogs", "zebra"][k % 3]
        where = rgb / cls / ("sub" if k % 4 == 3 else "")
        where.mkdir(parents=True, exist_ok=True)
        img.save(where / f"img_{k:02d}.{exts[k % 6]}")
        (png / cls).mkdir(parents=True, exist_ok=True)
        (img.convert("RGBA") if k % 2 else img).save(png / cls / f"p{k:02d}.png")
        (jpg / cls).mkdir(parents=True, exist_ok=True)
        img.save(jpg / cls / f"j{k:02d}.jpg", quality=90)
    dirs = {name: str(png if name in ("grey", "rgba") else jpg if name == "grey_jpeg" else rgb)
            for name in CASES}
    one = str(rgb / "cats" / "img_00.png")
    proc = subprocess.run([keras_py, "-c", KERAS_SCRIPT, json.dumps(
        {"cases": CASES, "dirs": dirs, "out": str(tmp_path / "k.npz"), "one": one})],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = np.load(tmp_path / "k.npz")
    worst = {}
    for name, kw in CASES.items():
        ds = ec.utils.image_dataset_from_directory(dirs[name], verbose=False, **kw)
        for j, one_ds in enumerate(ds if isinstance(ds, list) else [ds]):
            key = f"{name}/{j}"
            assert one_ds.file_paths == ref[key + "/paths"].tolist(), key
            assert one_ds.class_names == ref[key + "/class_names"].tolist(), key
            if key + "/x" not in ref:
                continue
            xs, ys = zip(*one_ds)
            x, y = np.concatenate(xs), np.concatenate(ys)
            np.testing.assert_array_equal(y, ref[key + "/y"])
            assert y.dtype == ref[key + "/y"].dtype
            for path, a, b in zip(one_ds.file_paths, x, ref[key + "/x"]):
                jpeg = path.lower().endswith((".jpg", ".jpeg"))
                diff = float(np.abs(a - b).max())
                worst[jpeg] = max(worst.get(jpeg, 0.0), diff)
                assert diff <= (8.0 if jpeg else 1e-3), (key, path, diff)
    ours = ec.utils.img_to_array(ec.utils.load_img(one, target_size=(9, 13),
                                                   interpolation="bilinear"))
    if "load_img" in ref:
        np.testing.assert_array_equal(ours, ref["load_img"])
    print("largest difference from Keras: png/bmp/gif", worst.get(False), "jpeg", worst.get(True))


def test_a_budget_without_room_for_the_cache_spills_it_to_disk(fashion, capsys):
    ds = ec.utils.image_dataset_from_directory(fashion, image_size=(32, 32), batch_size=16,
                                               verbose=False)
    model = _model()

    def total(cache):
        plan = model.memory_plan((32, 32, 3), batch_size=16, training=True, samples=120,
                                 feature_cache=cache, print_fn=False)
        return plan.total_bytes

    in_memory, on_disk = total(True), total("disk")
    assert in_memory - on_disk == 120 * 1280 * 4  # the cache is what differs
    budget = on_disk + ds.memory_bytes() + 100_000  # no room for 614 KB of features
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  memory_budget=budget)
    model.fit(ds, epochs=2, verbose=1)
    out = capsys.readouterr().out
    assert "Caching the frozen layers' output for 120 photos in a temporary file" in out
    with pytest.raises(ec.MemoryBudgetError):
        model.fit(ds, epochs=1, verbose=0, feature_cache=True)  # in memory: refused
