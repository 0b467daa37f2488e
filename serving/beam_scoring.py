"""Batch scoring as a Beam pipeline (RunInference): the library behind ``python -m serving.beam_score``.

The same decoding, model, post-processing and CSV as serving.score, so the
output is identical on the same images. Beam's stock TFModelHandlerTensor
loads through ``tf.keras.models.load_model``, which refuses Keras 3 exports
(apache/beam#30613), so ``SavedModelHandler`` wraps ``tf.saved_model.load``.
The image list is discovered on the launcher (local or shared filesystem).
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any, Optional

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from preprocessing import fileio, outputs, rle
from preprocessing.beam_runner import local_runner
from preprocessing.cases import discover_test_images
from serving.postprocess import PostprocessConfig, Prediction, annotation
from serving.saved_model import export_dir_of, read_metadata
from serving.submission import errors_path, format_csv, jsonl

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

    def run_inference(self, batch: Sequence[np.ndarray], model, inference_args: Optional[dict] = None
                      ) -> Iterable[PredictionResult]:
        probs, scores = model.predict(np.stack(batch))
        return [PredictionResult(None, (probs[k], None if scores is None else float(scores[k])))
                for k in range(len(batch))]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(x.nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return COUNTERS


class DecodeFn(beam.DoFn):
    """(case_id, path) -> ((case_id, H, W), model-size uint8 image), or an error record on the side.

    The same checks and TF decoding as serving.score's tf.data pipeline.
    """

    def __init__(self, image_size: int):
        self._size = image_size

    def setup(self):
        import tensorflow as tf

        from serving.decode import decode_rgb8_tf, resize_to_model

        def load(path):
            image = decode_rgb8_tf(tf.io.read_file(path))
            return resize_to_model(image, self._size), tf.shape(image)[:2]

        self._load = tf.function(load, input_signature=[tf.TensorSpec([], tf.string)])
        self._resize = resize_to_model
        self._decoded = beam.metrics.Metrics.counter(COUNTERS, "images_decoded")
        self._bad = beam.metrics.Metrics.counter(COUNTERS, "images_unreadable")

    def process(self, item):
        import tensorflow as tf

        from preprocessing.errors import BadInput
        from preprocessing.images import read_rgb8
        from serving.decode import check_file

        case_id, path = item
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
        yield (case_id, int(hw[0]), int(hw[1])), image


def keyed_row(keyed: tuple, cfg: PostprocessConfig) -> tuple[str, str]:
    """RunInference's ((case_id, H, W), result) -> the submission row (case_id, annotation)."""
    (case_id, h, w), result = keyed
    prob, image_score = result.inference
    return case_id, annotation(Prediction(case_id, (h, w), prob, image_score), cfg)


def csv_text(rows: list) -> str:
    return format_csv(sorted(rows)).rstrip("\n")  # WriteToText adds the final newline


def error_lines(errors: list) -> Iterable[str]:
    return jsonl(errors).splitlines()


def build(p: beam.Pipeline, items: Sequence[tuple[str, str]], model_dir: str, image_size: int,
          cfg: PostprocessConfig, csv_path: str, errors_file: str, batch_size: int = 16) -> None:
    """The scoring graph: decode -> RunInference -> post-process -> one sorted CSV (+ the error lines)."""
    decoded = (p | "Images" >> beam.Create(list(items))
               | "Decode" >> beam.ParDo(DecodeFn(image_size)).with_outputs(ERRORS, main="images"))
    handler = KeyedModelHandler(SavedModelHandler(model_dir, batch_size))
    scored = (decoded.images | "Predict" >> RunInference(handler)
              | "Postprocess" >> beam.Map(keyed_row, cfg))
    unreadable = decoded[ERRORS] | "Authentic" >> beam.Map(lambda e: (e["case_id"], rle.AUTHENTIC))
    (((scored, unreadable) | "AllRows" >> beam.Flatten())
     | "Gather" >> beam.combiners.ToList()
     | "Csv" >> beam.Map(csv_text)
     | "WriteCsv" >> beam.io.WriteToText(csv_path, num_shards=1, shard_name_template=""))
    (decoded[ERRORS] | "GatherErrors" >> beam.combiners.ToList()
     | "ErrorLines" >> beam.FlatMap(error_lines)
     | "WriteErrors" >> beam.io.WriteToText(errors_file, num_shards=1, shard_name_template=""))


def run(model_dir: str, input_dir: str, output: str, batch_size: int = 16,
        cfg: Optional[PostprocessConfig] = None, pipeline_args: Optional[list] = None,
        items: Optional[Sequence[tuple[str, str]]] = None) -> list[dict]:
    """Run the pipeline to completion; returns the error records it wrote. Beam writes both files to
    temporary names, renamed into place only when the job has finished."""
    meta = read_metadata(export_dir_of(model_dir))
    cfg = cfg or PostprocessConfig.from_dict(meta.get("postprocess"))
    items = discover_test_images(input_dir) if items is None else items
    options = PipelineOptions(list(pipeline_args or []))
    p = beam.Pipeline(runner=local_runner(options), options=options)
    tmp_csv, tmp_errors = outputs.temp_name(output), outputs.temp_name(errors_path(output))
    build(p, items, model_dir, int(meta["image_size"]), cfg, tmp_csv, tmp_errors, batch_size)
    try:
        p.run().wait_until_finish()
        errors = [json.loads(line) for line in fileio.read_text(tmp_errors).splitlines() if line.strip()]
        fileio.rename(tmp_csv, output)
        fileio.rename(tmp_errors, errors_path(output))
    finally:
        for tmp in (tmp_csv, tmp_errors):
            if fileio.exists(tmp):
                fileio.remove(tmp)
    return errors


def read_rows(path: str) -> list[tuple[str, str]]:
    import pandas as pd

    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return list(zip(df["case_id"], df["annotation"]))
