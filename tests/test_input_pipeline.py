"""The tf.data pipeline on real TFRecords: the Beam job's output (``records_dir``, and
``small_records_dir`` whose images are mostly stored at their own size) and records written here
with ``schema.make_example`` (raw encoding, single shards, two in three cropped below the model
size as the Beam job stores small images, deliberately corrupt ones).

Stored pixels are read back independently of the pipeline (protobuf + cv2.imdecode / numpy).
Note: a forged case and its authentic twin share a case_id, so "each case exactly once" is
checked on (case_id, label) pairs.
"""
from __future__ import annotations

import collections
import glob
import json
import os
import warnings

import cv2
import numpy as np
import pytest
import tensorflow as tf

from preprocessing import cases as cases_lib
from preprocessing import records as records_lib
from preprocessing import schema
from preprocessing.constants import EVIDENCE_CHANNELS, MANIFEST_FILE
from preprocessing.errors import UsageError
from preprocessing.images import read_rgb8
from preprocessing.masks import load_mask
from trainer import augment, data

SIZE = 64


# --- record fixtures ----------------------------------------------------------------------------

def _examples(synth_dir: str, size: int = SIZE) -> list[bytes]:
    """Serialized records of the synthetic training cases, resized to ``size`` (test-only writer)."""
    found, _ = cases_lib.discover_training_cases(synth_dir)
    out = []
    for case in found:
        img = read_rgb8(case.image_path)
        mask = (load_mask(case.mask_path, img.shape[:2]).union if case.mask_path
                else np.zeros(img.shape[:2], np.uint8))
        small = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        small_mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_NEAREST)
        out.append((case, small, small_mask))
    return out


def _write_split(out_dir: str, split: str, records: list[bytes], shards: int, compression: str) -> None:
    suffix = ".gz" if compression == "gzip" else ""
    for s in range(shards):
        path = os.path.join(out_dir, f"{split}-{s:05d}-of-{shards:05d}.tfrecord{suffix}")
        with tf.io.TFRecordWriter(path, "GZIP" if compression == "gzip" else "") as w:
            for r in records[s::shards]:
                w.write(r)


def native_size(i: int) -> tuple[int, int]:
    """The stored size of test-written case ``i``: S x S for every third, else smaller (h, w)."""
    return (SIZE, SIZE) if i % 3 == 0 else (24 + 7 * i % 41, 64 - 5 * i % 33)


def write_records(out_dir: str, cases, encoding: str, compression: str, shards: int) -> str:
    """A manifest + train/val shards in the Beam job's layout (every 4th case to val); images
    cropped to ``native_size``."""
    os.makedirs(out_dir, exist_ok=True)
    splits = {"train": [], "val": []}
    counts = {k: {"total": 0, "authentic": 0, "forged": 0} for k in splits}
    for i, (case, img, mask) in enumerate(cases):
        h, w = native_size(i)
        img, mask = np.ascontiguousarray(img[:h, :w]), np.ascontiguousarray(mask[:h, :w])
        split = "val" if i % 4 == 0 else "train"
        splits[split].append(schema.make_example(case.case_id, case.label, case.source, img, mask,
                                                 int(mask.any()), (100 + i, 120 + i), encoding))
        counts[split]["total"] += 1
        counts[split]["forged" if case.label else "authentic"] += 1
    for split, recs in splits.items():
        _write_split(out_dir, split, recs, shards, compression)
    manifest = {"schema_version": schema.SCHEMA_VERSION, "image_size": SIZE, "encoding": encoding,
                "compression": compression, "num_shards": {k: shards for k in splits},
                "files": {k: schema.shard_pattern(k, compression) for k in splits}, "counts": counts}
    with open(os.path.join(out_dir, MANIFEST_FILE), "w") as f:
        json.dump(manifest, f)
    return out_dir


@pytest.fixture(scope="module")
def cases_64(synth_dir):
    return _examples(synth_dir)


@pytest.fixture(scope="module")
def records(request, cases_64, tmp_path_factory):
    """The Beam job's records (``records_dir``); PNG/gzip records written here if the job cannot run."""
    try:
        return request.getfixturevalue("records_dir")
    except Exception as exc:  # the Beam job is tested in its own module; keep the pipeline tests going
        warnings.warn(f"records_dir unavailable ({type(exc).__name__}: {exc}); using test-written records",
                      stacklevel=1)
        return write_records(str(tmp_path_factory.mktemp("png_records")), cases_64, "png", "gzip", 2)


@pytest.fixture(scope="module")
def raw_records(cases_64, tmp_path_factory):
    """Raw-encoded, uncompressed, one shard per split."""
    return write_records(str(tmp_path_factory.mktemp("raw_records")), cases_64, "raw", "none", 1)


def stored(data_dir: str, split: str) -> dict:
    """(case_id, label) -> (image, mask) decoded straight from the files, without tf.data."""
    manifest = records_lib.read_manifest(data_dir)
    out = {}
    for path in sorted(glob.glob(os.path.join(data_dir, manifest["files"][split]))):
        for raw in tf.compat.v1.io.tf_record_iterator(path, "GZIP" if path.endswith(".gz") else None):
            f = tf.train.Example.FromString(raw).features.feature
            h, w = f["image/height"].int64_list.value[0], f["image/width"].int64_list.value[0]
            img_b, mask_b = f["image/encoded"].bytes_list.value[0], f["mask/encoded"].bytes_list.value[0]
            if f["image/format"].bytes_list.value[0] == b"raw":
                img = np.frombuffer(img_b, np.uint8).reshape(h, w, 3)
                mask = np.frombuffer(mask_b, np.uint8).reshape(h, w)
            else:
                img = cv2.imdecode(np.frombuffer(img_b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
                mask = cv2.imdecode(np.frombuffer(mask_b, np.uint8), cv2.IMREAD_GRAYSCALE)
            key = (f["case_id"].bytes_list.value[0].decode(), f["label"].int64_list.value[0])
            assert key not in out, f"duplicate record {key}"
            out[key] = (img, mask)
    return out


def unpadded(inputs, targets, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Example ``k`` of a batch at its stored size, after checking that its padding is zeros."""
    h, w = inputs["sizes"][k].numpy()
    img, mask = inputs["images"][k].numpy(), targets["mask"][k, ..., 0].numpy()
    for a in (img, mask):
        assert not a[h:].any() and not a[:, w:].any(), "padding is not zeros"
    return img[:h, :w], mask[:h, :w]


def _keys(batch_ids, targets) -> list:
    return list(zip([c.decode() for c in batch_ids["case_id"].numpy()],
                    targets["image"].numpy()[:, 0].astype(int).tolist()))


# --- evaluation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["records", "raw_records", "small_records_dir"])
def test_eval_epoch_yields_each_record_once_with_stored_pixels(fixture, request):
    data_dir = request.getfixturevalue(fixture)
    truth = stored(data_dir, "val")
    ds = data.make_dataset(data_dir, "val", 3, training=False, with_ids=True)
    seen, sizes, stored_sizes = [], [], set()
    for inputs, targets, ids in ds:
        images = inputs["images"]
        assert images.dtype == tf.uint8 and targets["mask"].dtype == tf.uint8
        assert images.shape[1:] == (SIZE, SIZE, 3) and inputs["sizes"].dtype == tf.int32
        assert targets["image"].shape == (images.shape[0], 1) and ids["orig_hw"].dtype == tf.int32
        sizes.append(images.shape[0])
        for k, key in enumerate(_keys(ids, targets)):
            img, mask = truth[key]
            got_img, got_mask = unpadded(inputs, targets, k)
            np.testing.assert_array_equal(got_img, img)  # no augmentation: exact pixels
            np.testing.assert_array_equal(got_mask, mask)
            stored_sizes.add(img.shape[:2])
            if key[1] == 0:
                assert ids["num_instances"][k] == 0 and not mask.any()
            seen.append(key)
    assert collections.Counter(seen) == collections.Counter(truth.keys())
    assert sizes[:-1] == [3] * (len(sizes) - 1) and sum(sizes) == len(truth)  # last partial batch kept
    if fixture != "records":  # these hold images stored at their own size, below the model size
        assert any(hw != (SIZE, SIZE) for hw in stored_sizes), stored_sizes
    again = [k for _, t, i in ds for k in _keys(i, t)]
    assert again == seen  # deterministic order


def test_file_pattern_input_equals_manifest_input(records, raw_records):
    pattern = os.path.join(records, "val-*.gz")  # gzip, as the suffix says
    by_pattern = [k for _, t, i in data.make_dataset(pattern, "val", 4, False, with_ids=True) for k in _keys(i, t)]
    by_manifest = [k for _, t, i in data.make_dataset(records, "val", 4, False, with_ids=True)
                   for k in _keys(i, t)]
    assert by_pattern == by_manifest
    assert records_lib.num_examples(pattern, "val") == len(by_manifest)
    # Records of several sizes do not say the model size; only their manifest does.
    with pytest.raises(ValueError, match="records of several sizes.*manifest.json"):
        data.make_dataset(os.path.join(raw_records, "val-*"), "val", 4, False)


@pytest.mark.parametrize("fixture,mode", [("records", "files"), ("raw_records", "data")])
def test_input_context_shards_are_disjoint_and_complete(fixture, mode, request):
    data_dir = request.getfixturevalue(fixture)
    n_files = len(glob.glob(os.path.join(data_dir, records_lib.read_manifest(data_dir)["files"]["val"])))
    assert (n_files >= 2) == (mode == "files")  # 2 shards: shard files; 1 shard: shard records
    parts = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
        ds = data.make_dataset(data_dir, "val", 4, False, input_context=ctx, with_ids=True)
        batches = [(x["images"].shape[0], _keys(i, t)) for x, t, i in ds]
        assert all(size <= 2 for size, _ in batches)  # the per-replica batch of a global batch of 4
        parts.append([k for _, keys in batches for k in keys])
    assert parts[0] and parts[1] and not set(parts[0]) & set(parts[1])
    assert collections.Counter(parts[0] + parts[1]) == collections.Counter(stored(data_dir, "val").keys())
    # Training (shuffled, unseeded): the workers' shards are still disjoint; each drops < 1 batch.
    train = []
    for pid in range(2):
        ctx = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pid, num_replicas_in_sync=2)
        ds = data.make_dataset(data_dir, "train", 4, True, input_context=ctx, with_ids=True, augment_jpeg=False)
        train.append({k for _, t, i in ds for k in _keys(i, t)})
    assert not train[0] & train[1]
    assert len(train[0] | train[1]) >= records_lib.num_examples(data_dir, "train") - 2


# --- training -------------------------------------------------------------------------------------

@pytest.mark.parametrize("fixture", ["records", "raw_records"])
def test_training_batches_are_full_and_augmented_on_the_host(fixture, request):
    records = request.getfixturevalue(fixture)
    truth = stored(records, "train")
    ds = data.make_dataset(records, "train", 4, training=True, seed=3, with_ids=True)
    assert ds.element_spec[0]["images"].shape.as_list() == [4, SIZE, SIZE, 3]
    changed = same = 0
    seen = []
    for inputs, targets, ids in ds:
        assert inputs["images"].shape == (4, SIZE, SIZE, 3) and inputs["images"].dtype == tf.uint8
        for k, key in enumerate(_keys(ids, targets)):
            img, mask = truth[key]
            got_img, got_mask = unpadded(inputs, targets, k)  # recompression leaves the padding alone
            np.testing.assert_array_equal(got_mask, mask)  # masks untouched
            assert got_img.shape == img.shape
            if np.array_equal(got_img, img):
                same += 1
            else:
                changed += 1
            seen.append(key)
    assert len(seen) == len(truth) // 4 * 4 and len(set(seen)) == len(seen)  # remainder dropped, no repeats
    assert changed and same  # JPEG recompression with probability 0.5
    ordered = sorted(truth)
    assert seen != ordered[:len(seen)]  # shuffled
    no_aug = data.make_dataset(records, "train", 4, training=True, seed=3, with_ids=True, augment_jpeg=False)
    for inputs, targets, ids in no_aug:
        for k, key in enumerate(_keys(ids, targets)):
            np.testing.assert_array_equal(unpadded(inputs, targets, k)[0], truth[key][0])


@pytest.mark.parametrize("cache", [True, False])
def test_every_training_epoch_sees_each_record_once_with_or_without_the_ram_cache(records, cache):
    truth = stored(records, "train")
    ds = data.make_dataset(records, "train", 4, training=True, seed=5, with_ids=True, augment_jpeg=False,
                           cache=cache)
    epochs = []
    for _ in range(2):  # the second epoch of the cached pipeline reads only the cache
        seen = []
        for inputs, targets, ids in ds:
            for k, key in enumerate(_keys(ids, targets)):
                img, mask = unpadded(inputs, targets, k)
                np.testing.assert_array_equal(img, truth[key][0])
                np.testing.assert_array_equal(mask, truth[key][1])
                seen.append(key)
        assert len(seen) == len(truth) // 4 * 4 and len(set(seen)) == len(seen)
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled every epoch, cache or not


def test_ram_cache_is_chosen_by_size(records):
    src = records_lib.resolve_source(records, "train")
    per_example = src.image_size ** 2 * 4
    assert data.should_cache(src, limit_bytes=src.counts["total"] * per_example)
    assert not data.should_cache(src, limit_bytes=src.counts["total"] * per_example - 1)
    assert data.should_cache(src, n_pipelines=2, limit_bytes=src.counts["total"] * per_example // 2)


def test_jpeg_recompression_uses_a_quality_in_70_to_95(cases_64):
    img = tf.constant(cases_64[0][1])
    outputs = {q: tf.image.adjust_jpeg_quality(img, q).numpy().tobytes() for q in range(60, 101)}
    hits = collections.Counter()
    for i in range(40):
        out = augment.recompress_jpeg(img, tf.constant([7, i]))
        assert out.shape == img.shape and out.dtype == tf.uint8
        if np.array_equal(out.numpy(), img.numpy()):
            hits["unchanged"] += 1
            continue
        qualities = [q for q, b in outputs.items() if b == out.numpy().tobytes()]
        assert qualities and all(70 <= q <= 95 for q in qualities), qualities
        hits["recompressed"] += 1
    assert 8 <= hits["recompressed"] <= 32, hits  # probability 0.5 (binomial, 40 draws)
    forced = augment.recompress_jpeg(img, tf.constant([1, 2]), probability=1.0)
    assert not np.array_equal(forced.numpy(), img.numpy())


def test_batch_recompression_gives_each_image_its_own_choice(cases_64):
    images = np.stack([img for _, img, _ in cases_64] * 4)[:16]
    seed = tf.constant([3, 4])
    apply, quality = augment.jpeg_choices(len(images), seed)
    static = augment.recompress_jpeg_batch(tf.constant(images), seed).numpy()
    dynamic = tf.function(lambda x: augment.recompress_jpeg_batch(x, seed), input_signature=[
        tf.TensorSpec([None, *images.shape[1:]], tf.uint8)])(images).numpy()
    np.testing.assert_array_equal(static, dynamic)  # static and unknown batch sizes agree
    assert 0 < int(tf.reduce_sum(tf.cast(apply, tf.int32))) < len(images)
    for i, img in enumerate(images):
        expected = tf.image.adjust_jpeg_quality(img, quality[i]).numpy() if apply[i] else img
        np.testing.assert_array_equal(static[i], expected)
        assert 70 <= int(quality[i]) <= 95
    # Images stored below the model size: only the valid part is recompressed, the padding stays 0.
    sizes = np.array([native_size(i) for i in range(len(images))], np.int32)
    padded = images.copy()
    for img, (h, w) in zip(padded, sizes):
        img[h:], img[:, w:] = 0, 0
    out = augment.recompress_jpeg_batch(tf.constant(padded), seed, sizes=tf.constant(sizes)).numpy()
    for i, (h, w) in enumerate(sizes):
        valid = padded[i, :h, :w]
        expected = tf.image.adjust_jpeg_quality(valid, quality[i]).numpy() if apply[i] else valid
        np.testing.assert_array_equal(out[i, :h, :w], expected)
        assert not out[i, h:].any() and not out[i, :, w:].any()


def test_class_balance_oversamples_forged(records):
    counts = records_lib.read_manifest(records)["counts"]["train"]
    base_rate = counts["forged"] / counts["total"]
    ds = data.make_dataset(records, "train", 2, training=True, seed=5, forged_fraction=0.8, augment_jpeg=False)
    labels = []
    for _ in range(4):
        batches = [t["image"].numpy()[:, 0] for _, t in ds]
        assert len(batches) == counts["total"] // 2  # an epoch keeps its size
        labels.extend(np.concatenate(batches))
    assert np.mean(labels) > max(0.65, base_rate + 0.1), (np.mean(labels), base_rate)
    with pytest.raises(ValueError, match="forged_fraction"):
        data.make_dataset(records, "train", 2, training=True, forged_fraction=1.5)


# --- distribution ---------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False])
def test_mirrored_strategy_gets_per_replica_batches(records, training, two_cpus):
    strategy = two_cpus
    assert strategy.num_replicas_in_sync == 2
    dist = data.distributed_dataset(strategy, records, "val" if not training else "train", 4, training,
                                    with_ids=True, seed=1)
    total = 0
    for inputs, targets, _ in dist:
        per_replica = strategy.experimental_local_results(inputs["images"])
        assert len(per_replica) == 2
        for part, mask in zip(per_replica, strategy.experimental_local_results(targets["mask"])):
            assert part.shape[0] <= 2 and mask.shape[0] == part.shape[0]
            if training:
                assert part.shape[0] == 2
            total += part.shape[0]
    n = records_lib.num_examples(records, "train" if training else "val")
    assert total == (n // 4 * 4 if training else n)


def test_flips_run_per_replica_under_the_strategy(cases_64, two_cpus):
    strategy = two_cpus
    images = np.stack([c[1] for c in cases_64[:4]])
    masks = (images[..., :1] > 128).astype(np.float32)  # a mask drawn from the images' own pixels

    @tf.function
    def step(x, m):
        return strategy.run(lambda a, b: augment.random_flips(a, b), args=(x, m))

    dist = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors((images, masks)))
    for x, m in dist:
        out_x, out_m = step(x, m)
        for a, b in zip(strategy.experimental_local_results(out_x), strategy.experimental_local_results(out_m)):
            np.testing.assert_array_equal((a.numpy()[..., :1] > 128).astype(np.float32), b.numpy())


# --- device-side flips ----------------------------------------------------------------------------

def test_flips_keep_image_and_mask_aligned(cases_64):
    images = np.stack([c[1] for c in cases_64[:16]])
    gray = images.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    masks = (gray > np.median(gray, axis=(1, 2), keepdims=True)).astype(np.uint8)[..., None]
    out_i, out_m = augment.random_flips(tf.constant(images), tf.constant(masks), seed=(4, 2))
    out_i, out_m = out_i.numpy(), out_m.numpy()
    kinds = collections.Counter()
    for k in range(len(images)):
        g = out_i[k].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        np.testing.assert_array_equal((g > np.median(g)).astype(np.uint8), out_m[k, ..., 0])
        variants = {"none": images[k], "lr": images[k, :, ::-1], "ud": images[k, ::-1],
                    "both": images[k, ::-1, ::-1]}
        matches = [name for name, v in variants.items() if np.array_equal(v, out_i[k])]
        assert matches, "output is not a flip of the input"
        kinds[matches[0]] += 1
    assert len(kinds) >= 3, kinds  # the flips are drawn per image
    again = augment.random_flips(tf.constant(images), tf.constant(masks), seed=(4, 2))
    np.testing.assert_array_equal(again[0].numpy(), out_i)  # a stateless seed is reproducible
    unseeded = [augment.random_flips(tf.constant(images), tf.constant(masks))[0].numpy() for _ in range(2)]
    assert not np.array_equal(unseeded[0], unseeded[1])


# --- corrupt input --------------------------------------------------------------------------------

def _one_record_dir(tmp_path, serialized: list[bytes], image_size: int = SIZE, encoding: str = "raw") -> str:
    os.makedirs(tmp_path, exist_ok=True)
    _write_split(str(tmp_path), "val", serialized, 1, "none")
    manifest = {"schema_version": schema.SCHEMA_VERSION, "image_size": image_size, "encoding": encoding,
                "compression": "none", "files": {"val": schema.shard_pattern("val", "none")},
                "counts": {"val": {"total": len(serialized), "authentic": len(serialized), "forged": 0}}}
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(manifest))
    return str(tmp_path)


def _exhaust(data_dir: str):
    for _ in data.make_dataset(data_dir, "val", 2, training=False):
        pass


def test_corrupt_shard_bytes_raise_data_loss(tmp_path, cases_64):
    case, img, mask = cases_64[0]
    good = [schema.make_example(f"c{i}", 0, "train", img, mask * 0, 0, (64, 64), "raw") for i in range(3)]
    data_dir = _one_record_dir(tmp_path, good)
    path = glob.glob(os.path.join(data_dir, "val-*"))[0]
    blob = bytearray(open(path, "rb").read())
    blob[len(blob) // 2] ^= 0xFF
    open(path, "wb").write(bytes(blob))
    with pytest.raises(tf.errors.DataLossError, match="corrupted record"):
        _exhaust(data_dir)


def _example(case_id: str, img: np.ndarray, **overrides) -> bytes:
    ex = tf.train.Example.FromString(schema.make_example(case_id, 0, "train", img, np.zeros(img.shape[:2], np.uint8),
                                                         0, img.shape[:2], "raw"))
    for key, value in overrides.items():
        feat = ex.features.feature[key]
        if isinstance(value, bytes):
            feat.bytes_list.value[:] = [value]
        else:
            feat.int64_list.value[:] = [value]
    return ex.SerializeToString()


@pytest.mark.parametrize("overrides,reason", [
    ({"image/encoded": b"\x00" * 100}, "image bytes do not match image/format and size"),
    ({"mask/encoded": b"\x00" * 100}, "mask bytes do not match image/format and size"),
    ({"image/format": b"png"}, "image/format is not raw"),
    ({"label": 7}, "label is not 0/1"),
    ({"mask/encoded": b"\x02" * (SIZE * SIZE)}, "mask values are not 0/1"),
])
def test_corrupt_record_names_file_and_case(tmp_path, cases_64, overrides, reason):
    img = cases_64[1][1]
    recs = [_example("fine", img), _example("broken-case", img, **overrides)]
    data_dir = _one_record_dir(tmp_path, recs)
    with pytest.raises(tf.errors.InvalidArgumentError) as err:
        _exhaust(data_dir)
    msg = str(err.value)
    assert reason in msg and "broken-case" in msg and "val-00000-of-00001.tfrecord" in msg


def test_record_larger_than_the_model_size_is_refused(tmp_path, cases_64):
    tall = np.concatenate([cases_64[2][1], cases_64[2][1][:16]])  # 80 x 64: smaller ones are fine
    data_dir = _one_record_dir(tmp_path, [_example("fits", cases_64[2][1][:32, :40]), _example("tall", tall)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="size does not fit the manifest image_size 64x64"):
        _exhaust(data_dir)


def test_png_record_checks(tmp_path, cases_64):
    img = cases_64[3][1]
    fine = schema.make_example("fine", 0, "train", img, np.zeros(img.shape[:2], np.uint8), 0, (9, 9), "png")
    garbage = tf.train.Example.FromString(fine)
    garbage.features.feature["image/encoded"].bytes_list.value[:] = [b"GIF89a" + b"\x00" * 50]
    small = schema.make_example("lying-header", 0, "train", img[:32, :32], np.zeros((32, 32), np.uint8), 0,
                                (9, 9), "png")
    lying = tf.train.Example.FromString(small)
    for key in ("image/height", "image/width"):
        lying.features.feature[key].int64_list.value[:] = [SIZE]
    for bad, reason in ((garbage, "image bytes do not match"), (lying, "decoded size differs")):
        data_dir = _one_record_dir(tmp_path / reason.replace(" ", "_"), [fine, bad.SerializeToString()],
                                   encoding="png")
        with pytest.raises(tf.errors.InvalidArgumentError, match=reason) as err:
            _exhaust(data_dir)
        assert "val-00000-of-00001.tfrecord" in str(err.value)


def test_native_size_records_train_one_image_per_batch(tmp_path, cases_64):
    """Records kept at their own sizes (image_size 0): batches of one, recompressed whole."""
    recs = [_example(f"n{i}", np.ascontiguousarray(cases_64[i][1][:30 + 9 * i, :61 - 7 * i])) for i in range(4)]
    data_dir = _one_record_dir(tmp_path, recs, image_size=0)
    with pytest.raises(ValueError, match="no model size"):
        data.make_dataset(data_dir, "val", 2, training=True)
    ds = data.make_dataset(data_dir, "val", 1, training=True, seed=1, with_ids=True)
    for _ in range(3):  # epochs: each image keeps its own size, recompressed or not
        shapes = {i["case_id"][0].numpy().decode(): x["images"].shape[1:3] for x, _, i in ds}
        assert shapes == {f"n{i}": (30 + 9 * i, 61 - 7 * i) for i in range(4)}


@pytest.mark.parametrize("encoding", ["png", "raw"])
def test_every_evidence_plane_survives_a_record_in_both_encodings(encoding):
    """Schema 4 stores the evidence planes stacked in one grey plane (a PNG holds at most four
    channels); the reader gives back exactly the (H, W, E) map, and zeros for a record without one."""
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    evidence = rng.integers(0, 256, (20, 30, len(EVIDENCE_CHANNELS)), dtype=np.uint8)
    mask = np.zeros((20, 30), np.uint8)
    for stored, expect in ((evidence, evidence), (None, np.zeros_like(evidence))):
        record = schema.make_example("c1", 0, "synth", image, mask, 0, (20, 30), encoding, evidence=stored)
        out = schema.parse_record(tf.constant("f.tfrecord"), tf.constant(record), evidence=True)
        np.testing.assert_array_equal(out["evidence"].numpy(), expect)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_records_of_an_older_schema_are_refused_with_the_command_that_rewrites_them(tmp_path, version):
    command = ["python", "-m", "preprocessing.main", "--input_dir", "/data/corpus", "--output_dir", "/data/rec"]
    with open(tmp_path / MANIFEST_FILE, "w") as f:
        json.dump({"schema_version": version, "options": {"input_dir": "/data/corpus", "command": command}}, f)
    with pytest.raises(UsageError) as err:
        records_lib.read_manifest(str(tmp_path))
    message = str(err.value)
    assert str(tmp_path / MANIFEST_FILE) in message and f"schema_version {version}" in message
    assert "dense field" in message  # why
    assert "python -m preprocessing.main --input_dir /data/corpus --output_dir NEW_DIR" in message  # the fix
    assert " ".join(command) in message  # and how they were written
