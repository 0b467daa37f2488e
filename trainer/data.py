"""The tf.data input pipeline over the Beam job's TFRecords.

Shape of the pipeline (one per input worker):

    shard files -> parallel interleave -> [shard records] -> shuffle | class balance (training)
    -> parallel parse + validate + decode + pad -> batch -> JPEG recompression (training) -> prefetch

The Beam job stored each image either at the model size S or, when it fits in
S x S, at its own size (``preprocessing.images.fits``). The host only parses,
decodes, pads to S x S and (in training) recompresses the valid part;
everything else (enlarging to S with ``preprocessing.model_input.upscale``,
flips, scaling, the noise residual) runs on the accelerator in the model's
train and test steps. JPEG on the host so sees the image's own pixel grid, and
costs what the image's own size costs, not S x S.

Nothing is ever skipped and no batch is filled up with repeats, so every
record of an evaluation epoch is seen exactly once. A record whose content is wrong (bad format, byte count,
size, label or mask values) raises InvalidArgumentError naming the check, the
file and the case id; a damaged shard (bad CRC, truncated gzip) raises the
reader's DataLossError ("corrupted record at <offset>"), which TF does not let
us annotate with the file name.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Optional

import tensorflow as tf

from preprocessing import model_input, schema
from preprocessing.constants import EVIDENCE_CHANNELS, FORGED
from preprocessing.errors import UsageError
from preprocessing.records import Source, resolve_source
from trainer import augment

AUTOTUNE = tf.data.AUTOTUNE
DEFAULT_SHUFFLE_BUFFER = 256  # serialized records: ~260 KB each raw at 256 px, ~60 KB PNG
CACHE_LIMIT_BYTES = 4 << 30  # decoded training examples kept in RAM up to this size per input pipeline


def _records(src: Source, training: bool, input_context, seed) -> tf.data.Dataset:
    """(filename, serialized) pairs: files sharded across input workers when there are enough,
    else the records; parallel interleave over files."""
    files = tf.data.Dataset.from_tensor_slices(list(src.files))
    n = input_context.num_input_pipelines if input_context else 1
    shard_files = n > 1 and len(src.files) >= n
    shard_records = n > 1 and not shard_files
    if shard_files:
        files = files.shard(n, input_context.input_pipeline_id)
    if training and not shard_records:
        files = files.shuffle(len(src.files), seed=seed, reshuffle_each_iteration=True)

    def read(filename):
        return tf.data.TFRecordDataset(filename, src.compression).map(lambda r: (filename, r))

    # Sharding records needs every worker to see the same order before .shard(): fixed file order
    # and a deterministic interleave there (records are shuffled after sharding).
    records = files.interleave(read, cycle_length=max(1, min(len(src.files), 8)), block_length=1,
                               num_parallel_calls=AUTOTUNE, deterministic=True if shard_records else None)
    if shard_records:
        records = records.shard(n, input_context.input_pipeline_id)
    return records


def _is_forged(filename, serialized):
    label = tf.io.parse_single_example(serialized, {"label": schema.FEATURES["label"]})["label"]
    return tf.equal(label, FORGED)


def _balanced(records: tf.data.Dataset, src: Source, fraction: float, epoch_size: int,
              shuffle_buffer: int, seed) -> tf.data.Dataset:
    """Sample forged records with probability ``fraction`` (repeating them as needed) for an epoch
    of ``epoch_size`` records, so an epoch has the same number of steps as without balancing."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"forged_fraction must be in (0, 1), got {fraction}")
    if not src.counts.get("forged") or not src.counts.get("authentic"):
        raise UsageError(f"class balancing needs both classes; split counts are {src.counts}")
    forged = records.filter(_is_forged).repeat().shuffle(shuffle_buffer, seed=seed)
    authentic = records.filter(lambda f, r: tf.logical_not(_is_forged(f, r))).repeat().shuffle(
        shuffle_buffer, seed=seed)
    mixed = tf.data.Dataset.sample_from_datasets([authentic, forged], weights=[1.0 - fraction, fraction],
                                                 seed=seed)
    return mixed.take(epoch_size)


def should_cache(src: Source, n_pipelines: int = 1, limit_bytes: int = CACHE_LIMIT_BYTES,
                 evidence: bool = False) -> bool:
    """Cache decoded examples in RAM when one input pipeline's share fits under ``limit_bytes``."""
    if not src.image_size:
        return False
    channels = 3 + 1 + (len(EVIDENCE_CHANNELS) if evidence else 0)  # RGB, mask, evidence: uint8
    per_example = src.image_size * src.image_size * channels
    return src.counts.get("total", 0) * per_example / max(1, n_pipelines) <= limit_bytes


PLANES = ("image", "mask", "evidence")  # the per-pixel fields of a parsed record


def padded(example: dict, size: int) -> dict:
    """Image, mask (and evidence) zero-padded at the bottom and right to ``size`` x ``size`` (0: as
    stored), so batches have one static shape; ``size`` keeps their valid (height, width)."""
    if not size:
        return example
    return dict(example, **{k: model_input.pad_to(example[k], size) for k in PLANES if k in example})


TRAIN_FIELDS = ("image", "mask", "size", "label")
ID_FIELDS = ("case_id", "orig/height", "orig/width", "mask/num_instances")


def model_fields(example: dict, with_ids: bool) -> dict:
    """Only what the batches carry: every extra field is work for shuffle, cache and batch."""
    keys = TRAIN_FIELDS + (("evidence",) if "evidence" in example else ()) + (ID_FIELDS if with_ids else ())
    return {k: example[k] for k in keys}


def _to_model_io(batch: dict, with_ids: bool):
    # The mask stays uint8 (0/1) and images stay at their stored size: the model's train/test step
    # enlarges both and casts the mask on the device (trainer.model.device_batch).
    inputs = {"images": batch["image"], "sizes": batch["size"]}
    if "evidence" in batch:
        inputs["evidence"] = batch["evidence"]
    targets = {"mask": batch["mask"], "image": tf.cast(batch["label"], tf.float32)[:, None]}
    if not with_ids:
        return inputs, targets
    ids = {"case_id": batch["case_id"],
           "orig_hw": tf.cast(tf.stack([batch["orig/height"], batch["orig/width"]], axis=1), tf.int32),
           "num_instances": batch["mask/num_instances"]}
    return inputs, targets, ids


def make_dataset(data_dir: str, split: str, global_batch_size: int, training: bool, input_context=None,
                 forged_fraction: float | None = None, seed: int | None = None, with_ids: bool = False,
                 *, augment_jpeg: bool | None = None, num_parallel_calls: int = AUTOTUNE,
                 shuffle_buffer: int = DEFAULT_SHUFFLE_BUFFER, cache: bool | None = None,
                 evidence: bool = False) -> tf.data.Dataset:
    """Batches of ``({"images": uint8 [B,S,S,3], "sizes": int32 [B,2]}, {"mask": uint8 0/1 [B,S,S,1],
    "image": float32 [B,1]})`` (+ ``{"case_id", "orig_hw", "num_instances"}`` when ``with_ids``;
    + inputs ``"evidence"`` uint8 [B,S,S,E], the matcher's evidence map, when ``evidence``).
    Images and masks are as stored, padded at the bottom and right to S x S; ``sizes`` are their
    stored (height, width), and ``trainer.model.device_batch`` makes the model's S x S input of them.

    B is the per-replica batch when ``input_context`` is given (distribute_datasets_from_function),
    else ``global_batch_size``. Training: shuffled, JPEG-recompressed (``augment_jpeg`` overrides),
    optionally class-balanced to ``forged_fraction``, last partial batch dropped. Evaluation:
    deterministic order, every record exactly once, last partial batch kept. ``cache`` (training;
    default: when the decoded split fits in ``CACHE_LIMIT_BYTES``) keeps decoded examples in RAM
    after the first epoch. Flips are not
    applied here: the model's train_step calls ``trainer.augment.random_flips`` on the device.
    """
    src = resolve_source(data_dir, split)
    batch_size = input_context.get_per_replica_batch_size(global_batch_size) if input_context else global_batch_size
    if batch_size < 1:
        raise UsageError(f"global batch {global_batch_size} gives per-replica batch {batch_size}")
    if src.image_size == 0 and batch_size > 1:
        raise UsageError(f"{data_dir}: records of several sizes and no model size (image_size 0); batches "
                         "need one: read the directory with its manifest.json, or rerun preprocessing.main "
                         "with --image_size")
    augment_jpeg = training if augment_jpeg is None else augment_jpeg
    n_pipelines = input_context.num_input_pipelines if input_context else 1

    records = _records(src, training, input_context, seed)
    parse = lambda f, r: model_fields(padded(schema.parse_record(f, r, src.image_size, src.encoding,  # noqa: E731
                                                                 evidence), src.image_size), with_ids)
    epoch_size = max(1, src.counts["total"] // n_pipelines)
    # Class balancing reads its streams partially (take), which would never complete a cache.
    cache = training and not forged_fraction and (should_cache(src, n_pipelines, evidence=evidence) if cache is None
                                                  else cache)
    if cache:
        # Decode once and keep the examples in RAM: from the second epoch on the host only
        # shuffles and augments (reading + CRC + parsing a raw 256 px record costs about as much
        # as the JPEG recompression itself on a CPU).
        examples = records.map(parse, num_parallel_calls=num_parallel_calls).cache()
        examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    else:
        if training and forged_fraction:
            records = _balanced(records, src, forged_fraction, epoch_size, shuffle_buffer, seed)
        elif training:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        examples = records.map(parse, num_parallel_calls=num_parallel_calls)
    ds = batch_for_model(examples, batch_size, training, with_ids, num_parallel_calls,
                         augment_jpeg=augment_jpeg, seed=seed)
    options = tf.data.Options()
    options.deterministic = (not training) or seed is not None
    # Sharding is done above from the input context; never let tf.distribute re-shard.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options)


def host_augment(batch: dict, seed: tf.Tensor) -> dict:
    """Host-side training augmentation: JPEG recompression (a CPU-only op) of each image of a
    batch at its stored size, with its own coin and quality. ``seed``: a random int64 for the batch."""
    return dict(batch, image=augment.recompress_jpeg_batch(batch["image"], tf.stack([seed, 0]),
                                                           sizes=batch["size"]))


def batch_for_model(examples: tf.data.Dataset, batch_size: int, training: bool, with_ids: bool = False,
                    num_parallel_calls: int = AUTOTUNE, augment_jpeg: bool = False,
                    seed: int | None = None) -> tf.data.Dataset:
    """Decoded examples -> (JPEG-recompressed when ``augment_jpeg``) prefetched model batches; the
    last partial batch is dropped in training.

    Recompression happens here, per image but in one tf.data call per batch, because a call per
    image costs a fifth of the JPEG work on a CPU host. Each batch pairs with its own random
    int64 (fresh each epoch, reproducible with ``seed``), so the choices do not depend on which
    parallel map thread runs first.
    """
    ds = examples.batch(batch_size, drop_remainder=training)
    if augment_jpeg:
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip(ds, seeds).map(lambda b, s: _to_model_io(host_augment(b, s), with_ids),
                                                num_parallel_calls=num_parallel_calls)
    else:
        ds = ds.map(lambda b: _to_model_io(b, with_ids), num_parallel_calls=num_parallel_calls)
    return ds.prefetch(AUTOTUNE)


def distributed_dataset(strategy: tf.distribute.Strategy, data_dir: str, split: str, global_batch_size: int,
                        training: bool, *, context: Optional[Callable] = None, then: Optional[Callable] = None,
                        **kwargs) -> tf.distribute.DistributedDataset:
    """``make_dataset`` per input worker via ``strategy.distribute_datasets_from_function``: each
    worker batches at the per-replica size and reads its own shard (files if there are enough).

    Training's one path to its data (``trainer.train``), so what the tests check is what it runs:
    ``context`` rewrites a worker's ``InputContext`` first (the tf.data service reads the whole
    dataset, ``trainer.service.whole_dataset``); ``then`` finishes each worker's dataset (training
    selects the model's targets, repeats, and hands it to the service).
    """
    def dataset_fn(input_context: tf.distribute.InputContext) -> tf.data.Dataset:
        ctx = context(input_context) if context else input_context
        ds = make_dataset(data_dir, split, global_batch_size, training, input_context=ctx, **kwargs)
        return then(ds) if then else ds

    return strategy.distribute_datasets_from_function(dataset_fn)
