"""Dataset report: the exploratory analysis people run before training, as one HTML page.

    python -m preprocessing.report --input_dir DATA --output_dir REPORT [--max_images N] [--allow_pickle_masks]

writes REPORT/index.html, one PNG per figure, stats.json (the numbers on the page, for machines)
and problems.csv. Modules: ``measure`` (per-image measurements), ``collect`` (the pass over the
data), ``stats`` (numbers and the written summary), ``render`` (HTML), ``figures`` (PNGs), ``build``
(orchestration). To score a submission on the same page: ``python -m serving.report``.
"""
