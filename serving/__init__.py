"""Scoring side: the competition RLE, post-processing, the oF1 metric, batch scoring.

`serving.rle` and `serving.metric` are pure numpy/scipy (no TensorFlow), so the
data side (`preprocessing.synth`) and the trainer can share them: one
implementation of the competition format and its metric.
"""
