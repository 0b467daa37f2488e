"""Batch scoring as a Beam pipeline (RunInference): the library behind ``python -m serving.beam_score``.

The same detectors, decoding, model, post-processing and files as serving.score, so the output is
identical on the same images: the network (decode -> RunInference -> post-process), the matcher
(one ``serving.matcher.analyse`` per image, then its decision) or the two fused (the matcher's
analysis feeds the network its evidence map where the model takes one, and the two meet again by
case id). Beam's stock TFModelHandlerTensor loads through ``tf.keras.models.load_model``, which
refuses Keras 3 exports (apache/beam#30613), so ``SavedModelHandler`` wraps ``tf.saved_model.load``.
The image list is discovered on the launcher (local or shared filesystem).
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Optional

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from preprocessing import fileio, outputs, rle
from preprocessing.beam_runner import local_runner
from preprocessing.cases import discover_test_images
from serving import fused, matcher
from serving.detectors import Settings
from serving.postprocess import PostprocessConfig, Prediction, annotation
from serving.saved_model import export_dir_of, read_metadata
from serving.submission import errors_path, evidence_path, format_csv, jsonl, publish, read_jsonl

COUNTERS = "copymove_scoring"
ERRORS = "errors"


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult, Any]):
    """RunInference handler around serving.saved_model.load (a Keras 3 SavedModel, no trainer code)."""

    def __init__(self, model_dir: str, batch_size: int = 16):
        super().__init__(min_batch_size=1, max_batch_size=batch_size)
        self._model_dir = model_dir

    def load_model(self):
        from serving.saved_model import load

        return load(self._model_dir)

    def run_inference(self, batch: Sequence[tuple], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        """``batch``: (model-size image, its evidence map or None) per image."""
        images = np.stack([image for image, _ in batch])
        evidence = np.stack([ev for _, ev in batch]) if batch[0][1] is not None else None
        probs, scores = model.predict(images, evidence)
        return [PredictionResult(None, (probs[k], None if scores is None else float(scores[k])))
                for k in range(len(batch))]

    def get_num_bytes(self, batch: Sequence[tuple]) -> int:
        return sum(image.nbytes + (0 if ev is None else ev.nbytes) for image, ev in batch)

    def get_metrics_namespace(self) -> str:
        return COUNTERS


class DecodeFn(beam.DoFn):
    """(case_id, path, Detection or None) -> ((case_id, H, W), (model-size uint8 image, its
    evidence map or None)), or an error record on the side.

    The same checks, TF decoding and resizing as serving.score's tf.data pipeline; the evidence map
    (``preprocessing.matching.evidence``) only for a model that takes it.
    """

    def __init__(self, image_size: int):
        self._size = image_size

    def setup(self):
        import tensorflow as tf

        from serving.decode import load_for_model, resize_to_model

        self._load = tf.function(lambda path: load_for_model(path, self._size),
                                 input_signature=[tf.TensorSpec([], tf.string)])
        self._resize = resize_to_model
        self._decoded = beam.metrics.Metrics.counter(COUNTERS, "images_decoded")
        self._bad = beam.metrics.Metrics.counter(COUNTERS, "images_unreadable")

    def process(self, item):
        import tensorflow as tf

        from preprocessing.errors import BadInput
        from preprocessing.images import check_file, read_rgb8

        case_id, path, detection = item
        try:
            check_file(path)
            try:
                image, hw = self._load(tf.constant(path))
                image, hw = image.numpy(), hw.numpy()
            except tf.errors.OpError:  # TF refused a file with a sane header: the reference decoder decides
                raw = read_rgb8(path)
                image, hw = self._resize(tf.constant(raw), self._size).numpy(), raw.shape[:2]
        except BadInput as exc:
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, {"case_id": case_id, "path": path, "reason": exc.reason})
            return
        self._decoded.inc()
        evidence = None
        if detection is not None:
            from preprocessing.matching.evidence import evidence_map

            evidence = self._resize(tf.constant(evidence_map(detection)), self._size).numpy()
        yield (case_id, int(hw[0]), int(hw[1])), (image, evidence)


class MatchFn(beam.DoFn):
    """(case_id, path) -> (case_id, ``serving.matcher.Analysed``), or an error record on the side.
    ``with_field``: also the dense field's planes, for a network that reads the evidence map."""

    def __init__(self, with_field: bool = False):
        super().__init__()
        self._with_field = with_field

    def setup(self):
        self._matched = beam.metrics.Metrics.counter(COUNTERS, "images_matched")
        self._bad = beam.metrics.Metrics.counter(COUNTERS, "images_unreadable")

    def process(self, item):
        a = matcher.analyse(item, matcher.config_for(self._with_field))
        if a.error:
            self._bad.inc()
            yield beam.pvalue.TaggedOutput(ERRORS, a.error)
            return
        self._matched.inc()
        yield a.case_id, a


def keyed_prediction(keyed: tuple) -> tuple[str, Prediction]:
    """RunInference's ((case_id, H, W), result) -> (case_id, Prediction)."""
    (case_id, h, w), result = keyed
    prob, image_score = result.inference
    return case_id, Prediction(case_id, (h, w), prob, image_score)


def fused_decision(joined: tuple, settings: Settings) -> Iterable[tuple[str, str, dict]]:
    """(case_id, {"analysed": [a], "prediction": [pred]}) -> (case_id, annotation, evidence record);
    nothing for an image the network could not decode (its error record is on the side)."""
    case_id, parts = joined
    if parts["prediction"]:
        yield (case_id, *fused.outcome(parts["analysed"][0], parts["prediction"][0], settings.matcher,
                                       settings.postprocess, settings.fused))


def matcher_decision(keyed: tuple, settings: Settings) -> tuple[str, str, dict]:
    case_id, a = keyed
    return (case_id, *matcher.outcome(a, settings.matcher))


def csv_text(rows: list) -> str:
    return format_csv(sorted(rows)).rstrip("\n")  # WriteToText adds the final newline


def jsonl_lines(records: list) -> Iterable[str]:
    return jsonl(records).splitlines()


def write_lines(pcoll, label: str, path: str) -> None:
    """Every record of ``pcoll`` as one JSON line of ``path``, sorted by case id (an empty file if none)."""
    (pcoll | f"Gather{label}" >> beam.combiners.ToList()
     | f"{label}Lines" >> beam.FlatMap(jsonl_lines)
     | f"Write{label}" >> beam.io.WriteToText(path, num_shards=1, shard_name_template=""))


def build(p: beam.Pipeline, items: Sequence[tuple[str, str]], model_dir: Optional[str], image_size: int,
          settings: Settings, csv_path: str, errors_file: str, batch_size: int = 16, detector: str = "network",
          evidence_file: Optional[str] = None, uses_evidence: bool = False,
          refused: Sequence[dict] = ()) -> None:
    """The scoring graph: per image a decision (case_id, annotation, evidence record or None) ->
    one sorted CSV, the error lines and (matcher, fused) the evidence lines. ``refused``: error
    records of files discovery refused (scored authentic like unreadable ones)."""
    images = p | "Images" >> beam.Create(list(items))
    error_parts = [p | "Refused" >> beam.Create(list(refused))]
    if detector != "network" or uses_evidence:
        matched = images | "Match" >> beam.ParDo(MatchFn(uses_evidence)).with_outputs(ERRORS, main="analysed")
        error_parts.append(matched[ERRORS])
    if detector == "matcher":
        decided = matched.analysed | "Decide" >> beam.Map(matcher_decision, settings)
    else:
        if not uses_evidence:
            inputs = images | "NoEvidence" >> beam.Map(lambda it: (it[0], it[1], None))
        else:
            inputs = matched.analysed | "WithEvidence" >> beam.Map(lambda kv: (kv[0], kv[1].path, kv[1].detection))
        decoded = inputs | "Decode" >> beam.ParDo(DecodeFn(image_size)).with_outputs(ERRORS, main="images")
        error_parts.append(decoded[ERRORS])
        handler = KeyedModelHandler(SavedModelHandler(model_dir, batch_size))
        preds = (decoded.images | "Predict" >> RunInference(handler)
                 | "Prediction" >> beam.Map(keyed_prediction))
        if detector == "network":
            decided = preds | "Postprocess" >> beam.Map(
                lambda kv: (kv[0], annotation(kv[1], settings.postprocess), None))
        else:
            decided = ({"analysed": matched.analysed, "prediction": preds} | "Join" >> beam.CoGroupByKey()
                       | "Fuse" >> beam.FlatMap(fused_decision, settings))
    errors = tuple(error_parts) | "AllErrors" >> beam.Flatten()
    unreadable = errors | "Authentic" >> beam.Map(lambda e: (e["case_id"], rle.AUTHENTIC))
    rows = decided | "Rows" >> beam.Map(lambda d: (d[0], d[1]))
    (((rows, unreadable) | "AllRows" >> beam.Flatten())
     | "Gather" >> beam.combiners.ToList()
     | "Csv" >> beam.Map(csv_text)
     | "WriteCsv" >> beam.io.WriteToText(csv_path, num_shards=1, shard_name_template=""))
    write_lines(errors, "Errors", errors_file)
    if evidence_file:
        write_lines(decided | "Records" >> beam.Map(lambda d: d[2]), "Evidence", evidence_file)


def run(model_dir: Optional[str], input_dir: str, output: str, batch_size: int = 16,
        cfg: Optional[PostprocessConfig] = None, pipeline_args: Optional[list] = None,
        items: Optional[Sequence[tuple[str, str]]] = None, detector: str = "network",
        settings: Optional[Settings] = None, refused: Optional[Sequence[dict]] = None) -> list[dict]:
    """Run the pipeline to completion; returns the error records it wrote. ``settings`` default to
    the export's metadata.json, ``cfg`` overrides their post-processing. Beam writes every file to
    a temporary name; when the job has finished they are put in place as serving.score's
    (``submission.publish``: side files first, each naming the CSV, the CSV last)."""
    meta = read_metadata(export_dir_of(model_dir)) if model_dir else None
    settings = settings or Settings.from_metadata(meta)
    if cfg is not None:
        settings = replace(settings, postprocess=cfg)
    uses_evidence = False
    if detector != "matcher":  # a model that takes the matcher's evidence map needs the matcher to run
        from serving.saved_model import load

        uses_evidence = load(model_dir).uses_evidence
    if items is None:
        items, problems = discover_test_images(input_dir)
        refused = [pr.record() for pr in problems] if refused is None else refused
    options = PipelineOptions(list(pipeline_args or []))
    p = beam.Pipeline(runner=local_runner(options), options=options)
    finals = [output, errors_path(output)] + ([evidence_path(output)] if detector != "network" else [])
    temps = [outputs.temp_name(f) for f in finals]
    build(p, items, model_dir, int(meta["image_size"]) if meta else 0, settings, temps[0], temps[1], batch_size,
          detector, temps[2] if len(temps) > 2 else None, uses_evidence, refused or ())
    try:
        p.run().wait_until_finish()
        errors = read_jsonl(temps[1])
        side = {final: fileio.read_text(tmp) for tmp, final in zip(temps[1:], finals[1:])}
        publish(output, fileio.read_text(temps[0]), {evidence_path(output): None, **side})
    finally:
        for tmp in temps:
            if fileio.exists(tmp):
                fileio.remove(tmp)
            remove_beam_temp_dirs(tmp)
    return errors


def remove_beam_temp_dirs(path: str) -> None:
    """Remove the folders ``beam.io.WriteToText(path)`` stages its shards in (``beam-temp-<name>-<uuid>``
    beside ``path``), which a failed job leaves behind. ``path`` is this run's own temporary name, so
    only this run's folders match."""
    folder = fileio.parent(path)
    prefix = f"beam-temp-{path.rstrip('/').rpartition('/')[2]}-"
    for name in fileio.listdir(folder) if fileio.isdir(folder) else []:
        if name.rstrip("/").startswith(prefix):
            fileio.rmtree(fileio.join(folder, name.rstrip("/")))


def read_rows(path: str) -> list[tuple[str, str]]:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(zip(df["case_id"], df["annotation"]))
