"""Synthetic copy-move forgeries in the competition layout: the built-in default dataset.

    python -m preprocessing.synth --output_dir DIR --num_train 200 --num_test 50 --seed 0 [--style mixed]

writes
    DIR/train_images/authentic/<case_id>.png   DIR/train_images/forged/<case_id>.png
    DIR/train_masks/<case_id>.npy               uint8 (N, H, W): the source and each copy are instances
    DIR/test_images/<case_id>.png               DIR/test_solution.csv (case_id,annotation,height,width)
    DIR/synth_meta.json                         every case and every copy-move operation

``--style``: ``photos`` (single images, described next), ``figures`` (compound scientific
figures with panel letters, scale bars, blots, gels and charts: ``preprocessing.synth.figures``) or
``mixed`` (the default: each case is a figure or a photo, half and half).

Photos are crops of the scientific photographs scikit-image ships offline
(micrographs, immunohistochemistry, retina, astronomy) and procedurally drawn
western blots and gels. A forged image gets 1-3 copy-move operations: a region
(rectangle, ellipse or polygon) pasted elsewhere in the same image, sometimes
flipped / rotated / rescaled / brightened / feathered. As in the competition,
many forged case ids also exist as the untouched authentic image. Some images
(authentic too, so it is no give-away) are re-saved through JPEG or get noise.

Everything is a pure function of ``seed``: each case draws from its own
``SeedSequence`` child, so the same seed gives byte-identical fil

Modules: ``base`` (single images), ``copymove`` (the operation and its masks), ``dataset`` (the
plan, the files, ``generate``), ``figures`` with ``figure_*`` (compound figures).
"""
from __future__ import annotations

from preprocessing.synth.base import (
                                      BASE_KINDS,
                                      MIN_REGION_STD,
                                      available_science_images,
                                      figure_panels,
                                      gel,
                                      make_base,
                                      photo_crop,
                                      western_blot,
)
from preprocessing.synth.copymove import (
                                      SHAPES,
                                      CopyMove,
                                      apply_copy_move,
                                      draw_copy_move,
                                      forge,
                                      region_mask,
                                      transform_patch,
)
from preprocessing.synth.dataset import (
                                      META_FILE,
                                      SOLUTION_FILE,
                                      STYLES,
                                      SynthCase,
                                      draw_post,
                                      figures_fit,
                                      generate,
                                      owned,
                                      post_process,
                                      replay_case,
                                      replay_truth,
                                      write_png,
)

__all__ = ["BASE_KINDS", "MIN_REGION_STD", "available_science_images", "figure_panels", "gel", "make_base",
           "photo_crop", "western_blot", "SHAPES", "CopyMove", "apply_copy_move", "draw_copy_move", "forge",
           "region_mask", "transform_patch", "META_FILE", "SOLUTION_FILE", "STYLES", "SynthCase", "draw_post",
           "figures_fit", "generate", "owned", "post_process", "replay_case", "replay_truth", "write_png"]
