"""Every tunable number of the matcher, each with the reason for its value.

Two kinds of parameters:
- ``MatcherConfig``: how evidence is *computed* (expensive; changing it means re-running
  ``detect``). Defaults are module constants below.
- ``DecisionParams``: how computed evidence is *judged* (cheap; ``decide`` applies them to a
  cached ``Detection``), so calibration can search them over a grid without re-matching.

Pixel sizes below are at the working resolution (see ``WORK_MAX_SIDE``), not the original.
"""
from __future__ import annotations

from dataclasses import dataclass

from preprocessing.hyperparams import Recorded

# ----------------------------------------------------------------------------- working resolution

# Longest side the matcher works at. A 1280 px side keeps a copy of 1% of the image ~110 px
# across (plenty for SIFT and for dense verification) while SIFT's internal 2x pyramid stays
# under ~300 MB even on pure texture; a 4000 x 3000 page is matched at 1280 x 960.
WORK_MAX_SIDE = 1280
# SIFT sees smaller images enlarged to this longest side (at most ``WORK_MAX_UPSCALE`` times):
# a 150 px blot has too few scale-space extrema at its own size. Nothing else is enlarged.
WORK_MIN_SIDE = 640
# Optionally, SIFT sees images longer than this at half size (0 = never): OpenCV's SIFT doubles
# its input for the first octave, so a halved image is still analysed near native detail on a
# quarter of the pixels. It roughly halves the time on ~1000 px figures but lost tuning oF1
# (docs/experiments.md), so it is off by default.
SIFT_HALVE_ABOVE = 0
WORK_MAX_UPSCALE = 4.0
# Images whose shorter side is below this (at the original size) carry no matchable copy.
MIN_IMAGE_SIDE = 16

# ----------------------------------------------------------------------------- panels

# A figure has a page: at least PAGE_MIN_FRAME of its outer frame within PAGE_TOL (per channel)
# of one colour. Gutters are page-coloured; an image without a page is a single panel.
PAGE_TOL = 8
PAGE_MIN_FRAME = 0.6
# ... and paper is white: every channel of the page colour at least this.
PAGE_MIN_LEVEL = 235
# A gutter pixel strays from the page colour by at most PAGE_NOISE_TOL times the page's own noise
# (robust std of its frame), but at least PAGE_MIN_TOL (a clean page is flat to the grey level,
# so a near-white blot membrane stays content) and at most PAGE_TOL.
PAGE_NOISE_TOL = 4.0
PAGE_MIN_TOL = 3.0
# A gutter line's standard deviation after a 5 px blur along it stays within the page noise
# allowance too, between GUTTER_MIN_STD (clean page) and GUTTER_MAX_STD (noise of sigma 4).
GUTTER_MIN_STD = 0.75
GUTTER_MAX_STD = 3.0
# Blur (a resampled figure) spreads the panels into their gutters: the middle lines of a 4 px
# gutter between dark panels, blurred by sigma 0.6-1.2, stay 4-25 levels below white and vary
# along the line (the panels leak in unevenly), and a figure read as one panel let its repeated
# labels pass for a copy. On a figure whose edges are not sharp (``panels.edges_sharp``), a
# gutter line may stray this far from the page level, with up to this standard deviation: the
# 40 blurred coloured-label look-alikes of the design seeds (5000-5039) keep their panels (7 of
# them lost some at a spread of 3, 1 at 4).
BLURRED_GUTTER_TOL = 25.0
BLURRED_GUTTER_MAX_STD = 5.0
# Pixels this close to the page (outside every panel) are not compared: the step from page to
# panel lines up between any two panels.
PAGE_MARGIN_PX = 2
# Narrowest gutter that splits a box (figures use 2 px and up).
GUTTER_MIN_PX = 2
# Smallest panel side kept as a panel; thinner slivers are margins or labels.
PANEL_MIN_PX = 12

# ----------------------------------------------------------------------------- decorations

# An overlay pixel differs from the local background (median over ``DECOR_BG_PX``) by this much:
# labels, scale bars and arrows are drawn in high contrast to be legible.
DECOR_CONTRAST = 60
DECOR_BG_PX = 21
# Within DECOR_GROUP_PX of a mark, pen-coloured pixels standing out by DECOR_WEAK_CONTRAST belong
# to it (the rest of a label whose first glyphs or bar were found).
DECOR_GROUP_PX = 10
DECOR_WEAK_CONTRAST = 30
# A decoration's pixels are one colour (text, bars, arrows are drawn with one pen): the spread
# of its (eroded) colour below this. Natural bright spots vary more inside.
DECOR_MAX_COLOR_STD = 25.0
# Small anti-aliased text on a dark panel spreads its colour further (partial coverage blends the
# pen with black: a blue "RFP" at 14 px spreads by 35-40): glyphs up to DECOR_WORD_MAX_PX tall
# may spread up to DECOR_WORD_MAX_COLOR_STD when they stand in a word, beside a glyph of the same
# height and top (within DECOR_WORD_ALIGN_PX) and mean colour (within DECOR_WORD_COLOR_TOL).
DECOR_WORD_MAX_COLOR_STD = 50.0
DECOR_WORD_MAX_PX = 30
DECOR_WORD_ALIGN_PX = 2
DECOR_WORD_COLOR_TOL = 30
# ... each of its pixels in a pen's colour (anti-aliased edges are covered by the halo): near
# white (every channel >= DECOR_WHITE), near black (every channel <= DECOR_BLACK) or vivid
# (channel spread >= DECOR_VIVID_CHROMA at value >= DECOR_VIVID_VALUE; 120 rather than 150 so a
# dark-green (0, 128, 0) channel label counts: stained tissue is muted, not dark and vivid).
DECOR_WHITE = 215
DECOR_BLACK = 50
DECOR_VIVID_CHROMA = 120
DECOR_VIVID_VALUE = 120
# Decorations are drawn with thin pens: the largest inscribed half-width (distance transform
# maximum) at most this, unless the component is a bar (elongation >= DECOR_BAR_ELONGATION).
DECOR_MAX_HALF_STROKE = 4.0
# ... and at most this share of its longest side (a letter's stroke is a small part of it).
DECOR_MAX_STROKE_RATIO = 0.25
DECOR_BAR_ELONGATION = 4.0
# A decoration is small: its box at most this fraction of the panel's side.
DECOR_MAX_SIDE_FRACTION = 0.35
DECOR_MIN_AREA = 4
# A mark is drawn on its background: the pixels within DECOR_RING_PX around it (other pen pixels
# standing out aside) stand out, median, by at most DECOR_MAX_RING_CONTRAST of the mark's own
# contrast. A bright fragment of a fluorescent fibre, nucleus or stained cell continues into its
# dimmer surroundings and fails; without this test, vivid fluorescence structure was taken for
# marks and its copies could not be found. On the figures of dev seeds 3003 and 4004 the test kept
# 96% of the pixels of the recorded labels, bars and letters and removed 88% of the rest.
DECOR_RING_PX = 2
DECOR_MAX_RING_CONTRAST = 0.1
# Blur spreads a halo around every mark, which the ring read as structure continuing: under blur
# of sigma 0.6-1.2 no label was found any more, and 11 of 40 coloured-label look-alikes were
# flagged (2 before the ring test; lookalikes seeds 5000-5039). On an image whose edges are not
# sharp the ring starts DECOR_BLUR_GAP_PX (2 sigma) out: 2 of 40 flagged again. Edges are sharp when
# the DECOR_SHARP_QUANTILE of slope over rise (on DECOR_MIN_EDGE_PIXELS or more edge pixels) is
# at least DECOR_SHARP_SLOPE: drawn figures 0.45-0.50; blurred by sigma 0.6: 0.41-0.42, 1.2: 0.33.
DECOR_BLUR_GAP_PX = 2
DECOR_SHARP_QUANTILE = 0.95
DECOR_SHARP_SLOPE = 0.44
DECOR_MIN_EDGE_PIXELS = 50
# Anti-aliasing and JPEG ringing around strokes: decorations are dilated by this radius.
DECOR_HALO_PX = 2

# ----------------------------------------------------------------------------- keypoints

# SIFT contrast threshold: far below OpenCV's 0.04 so that blots and smooth micrographs still
# give keypoints (the 2nd-place Kaggle solution found low thresholds essential). At 0.01 most
# copies the matcher missed on the tuning sets lay in smooth areas with under 25 keypoints per
# instance and no hypothesis; 0.003 gives them 3-8x more and no authentic image more was flagged
# (docs/matcher_recall.md).
SIFT_CONTRAST = 0.003
# ... except in blot and gel panels with regular lanes (``lanes.laned_boxes``), whose lanes and
# bands are look-alikes: at 0.003-0.006 the weak keypoints of one authentic gel in 40 matched its
# neighbouring lane (8-10 inliers); at 0.007 none did, and the blots of the tuning sets kept the
# low threshold's gain (0.01 there lost it: docs/matcher_recall.md).
BLOT_SIFT_CONTRAST = 0.007
# Both thresholds are for an image that spans the grey levels; SIFT's contrast is absolute, so a
# low-contrast image (a fundus photograph spans ~45 levels, a pale blot 60-90) shows its structure
# far below them. They scale with the image's spread (its 1st to 99th percentile, outside
# decorations and page, over 255), at least CONTRAST_MIN_SCALE: on the photos dev sets (seeds
# 3003/4004) copies with 8 or more true g2NN matches rose from 57 to 61 of 90. Keeping the laned
# threshold absolute lost most of the gain (smooth photographs whose column profile looks laned
# get it too); a pale blot's like lanes then match more often, which ``decision.ambiguous`` and
# ``decision.lane_preferred`` answer.
CONTRAST_PERCENTILES = (1.0, 99.0)
CONTRAST_MIN_SCALE = 0.1
# At most this many keypoints (strongest first): bounds matching time on pure texture; doubled
# with the lower contrast threshold so textured images keep their weak keypoints too (+15-25% time).
SIFT_MAX_FEATURES = 12000
# Generalised 2-nearest-neighbour test: neighbour i is a match while d_i / d_(i+1) < ratio.
G2NN_RATIO = 0.6
G2NN_NEIGHBOURS = 8
# Guided matching (``keypoints.guided_pairs``): after RANSAC, keypoints around a map's inliers
# (their box grown by GUIDED_MARGIN of its size) are paired with the keypoint found within
# GUIDED_RADIUS_PX of their image under the map when the RootSIFT distance is at most
# GUIDED_MAX_DIST. On a 15-degree rotated copy among look-alike cells after JPEG 90, 14 pairs
# passed 0.4 where g2NN had kept 7 inliers; maps shifted at random in the same image found none.
GUIDED_MARGIN = 0.5
GUIDED_RADIUS_PX = 3.0
GUIDED_MAX_DIST = 0.4
# ... and only when that distance is below this share of the keypoint's nearest descriptor
# elsewhere: the identical elements of a lattice (or a gel's like lanes) are all equally near.
GUIDED_RATIO = 0.8
# Two keypoints closer than this are the same structure (overlapping SIFT windows), not a copy.
MIN_MATCH_DIST_PX = 12.0
# Among a keypoint's descriptor neighbours, one within this distance (px) of a nearer neighbour is
# that neighbour again (a denser pass over a small panel finds the main pass's keypoints once
# more), not a rival for the ratio test.
DUPLICATE_PX = 2.0
# FLANN k-d forest: with 4 trees and 64 leaf checks the g2NN matches equal brute force's on a
# dense retina photo (near-duplicates are easy neighbours) at a fraction of its time.
FLANN_TREES = 4
FLANN_CHECKS = 64
# Matches are grouped by the rotation and scale their keypoints imply before RANSAC, so a
# small copy's matches are not drowned by outliers from everywhere else.
ANGLE_BIN_DEG = 30.0
LOG2_SCALE_BIN = 0.5
# RANSAC reprojection tolerance: SIFT positions are accurate to ~1 px; 3 px allows scale error.
RANSAC_PX = 3.0
RANSAC_ITERS = 2000
# A transform needs this many distinct inlier positions to be a candidate at all (the decision
# threshold ``DecisionParams.min_inliers`` is higher; this only bounds the work).
CANDIDATE_MIN_INLIERS = 4
# Copies are rescaled by at most this factor either way (real figure manipulations and the
# synthetic generator stay within 0.75-1.3; beyond 2x it is a different magnification).
MAX_SCALE = 2.0
# At most this many transforms are verified per image (strongest support first).
MAX_HYPOTHESES = 24

# ----------------------------------------------------------------------------- small and flat panels

# Panels whose shorter side is below this (working pixels) hold too few scale-space extrema at
# the image's SIFT settings: a copy inside them shows only a handful of keypoints.
SMALL_PANEL_PX = 200
# Panels whose fine detail (the verification band, grey levels) spreads less than this are
# smooth (background, blurred nuclei, blot membranes): their keypoints sit below the contrast bar.
LOW_DETAIL_STD = 2.5
# The denser pass: SIFT's contrast threshold this low (OpenCV's default is 0.04; near zero keeps
# extrema carried by sensor noise, which a copy carries too), on the panel enlarged this much ...
DENSE_SIFT_CONTRAST = 0.003
PANEL_ZOOM = 2.0
# ... but never beyond this longer side, and at most this many keypoints per panel (the g2NN
# search over all keypoints grows with their count).
PANEL_MAX_SIDE = 800
PANEL_MAX_FEATURES = 1500

# ----------------------------------------------------------------------------- dense matching

# Dense candidates come from the auto-correlation of the whitened working image (and its
# cross-correlation with its mirrors): one FFT finds every plain shift at once (see dense.py).
# Peaks kept per correlation map (plain, and each of three mirrors).
DENSE_PEAKS = 8
# A peak must hold at least this fraction of the whitened image's energy (a copy of 1% of the
# image holds ~1%; copy-free peaks of a 1 MP image stay near 0.5%).
DENSE_MIN_PEAK = 0.003
# Shifts shorter than this (original pixels) are the image's own texture correlation, not a copy.
MIN_SHIFT_PX = 10.0

# ----------------------------------------------------------------------------- exact copies

# Side of the hashed blocks: 5 x 5 RGB pixels with detail never recur by chance, and a band group
# of a narrow blot lane (~10 px) still holds dozens of them.
EXACT_BLOCK = 5
# Blocks flatter than this (grey-level std) are identical by nature (page, saturated areas).
EXACT_MIN_STD = 2.0
# Recurring blocks (probed on a 2 px grid) a transform needs to be a candidate (a 10 x 10 copy
# shows 9; 12 x 12 shows 16).
EXACT_MIN_BLOCKS = 6
# A block seen more than this many times is a pattern (glyphs, rulings), not a copy.
EXACT_MAX_REPEATS = 4
# A pixel belongs to an exact copy when every channel equals its partner's within this (0: the
# copy's flat parts are identical too) and it lies within EXACT_GROW_PX of the recurring blocks'
# hull; further out only where it varies and neither it nor its partner is excluded (page,
# decorations): flat background equal by nature, and the page and frames around panels that
# recur under a shift by a panel's height, would join (``exact.exact_region``).
EXACT_TOL = 0
EXACT_GROW_PX = 8
# Gaps between recurring blocks closed in the region (JPEG-free copies miss a few blocks).
EXACT_CLOSE_PX = 5
# Larger images are not hashed: hashing works on the original pixels (resampling breaks
# exactness) with int64 arrays, whose time and memory grow with the pixel count
# (benchmarks/matcher_dev.py --memory; figures in docs/experiments.md). Figures up to
# ~1580 x 1580 px are hashed.
EXACT_MAX_PIXELS = 2_500_000

# ----------------------------------------------------------------------------- verification

# Band compared between a region and its transformed partner: a difference of Gaussians of
# these sigmas. On exact copies in the tuning sets this band kept far more of the copies'
# correlation after JPEG and added noise than a plain high-pass, while similar blot lanes stayed
# below the dense decision bar (docs/experiments.md).
BAND_SIGMAS = (0.7, 2.0)
# A keypoint hypothesis that this band does not verify is tried once more in a coarser band:
# JPEG at quality 70-90, blur and a resampled copy's interpolation remove the fine band's detail,
# not the coarser structure the keypoints matched on. Coarse structure is shared more easily, so
# only for maps that do not mirror (a band or a lane's halves mirror each other at that scale),
# and only when each region stays inside one panel (COARSE_IN_PANEL of it): repeated labels and
# scale bars down a column of panels otherwise grow into panel-wide agreement.
COARSE_BAND_SIGMAS = (2.0, 6.0)
COARSE_IN_PANEL = 0.9
# Local normalised cross-correlation window (odd); 9 px is small enough to follow region edges.
ZNCC_WINDOW = 9
# Windows flatter than this (std of the high-pass, grey levels) carry no evidence either way;
# low, because the sensor noise of a blot or a smooth photo area (std 0.3-1) is often its only
# detail: noise correlates with itself in an untouched copy and not with unrelated noise. 0.6
# left copies of smooth areas with no textured pixel to grow from (docs/matcher_recall.md).
TEXTURE_MIN_STD = 0.3
# A pixel agrees when its local correlation with its partner is at least this.
AGREE_ZNCC = 0.55
# ... and an agreeing area counts only around a core where the correlation averaged over this
# wider window reaches CORE_ZNCC: chance agreement of unrelated texture is scattered.
CORE_WINDOW = 25
CORE_ZNCC = 0.7
# Gaps in the agreement map up to this size are closed (flat spots inside a copied region).
CLOSE_PX = 7
# A hole in an agreeing region is filled when at most this share of it is textured and disagrees.
MAX_HOLE_DISAGREEMENT = 0.3
# Regions are opened with a disc this wide: an edge that lines up with its mirror image (the rim
# of a round field of view, a lane border) agrees along a strip without a body.
OPEN_PX = 9
# Verification looks around the inliers' box expanded by this fraction of its size (and at
# least ``ROI_MIN_MARGIN_PX``), growing when the region reaches the window's edge.
ROI_MARGIN = 0.75
ROI_MIN_MARGIN_PX = 48
ROI_GROWTH_STEPS = 2
# Candidate floor (well below any decision default): smaller regions are not kept at all.
CANDIDATE_MIN_AREA = 0.0005
# A region that overlaps its own partner by more than this is self-similar texture.
MAX_SELF_OVERLAP = 0.3
# Source and copy sharing a boundary longer than this share of their side are one symmetric
# object (its mirrored halves) or a texture continuing into itself (copies are pasted apart).
MAX_CONTACT = 0.5
# A region's part in one panel counts as a part of its own (the channel/merge rule reads each) when
# it holds this share of the region: a region grown across a gutter keeps a sliver beyond it.
PANEL_PART_SHARE = 0.25
# Two candidates are one copy when both their regions overlap by this IoU.
DUPLICATE_IOU = 0.4
# A decided pair whose two regions lie this much inside another decided pair's two regions is a
# part of that copy (a keypoint pair inside an exact pair, or its inverse): its instances would
# only add unmatched predictions. On the tuning sets such parts lay >= 0.97 inside; distinct
# pairs of one image <= 0.36.
PART_INSIDE = 0.8


@dataclass(frozen=True)
class MatcherConfig(Recorded):
    """How evidence is computed (see the module constants for the reason of each default)."""

    work_max_side: int = WORK_MAX_SIDE
    work_min_side: int = WORK_MIN_SIDE
    sift_halve_above: int = SIFT_HALVE_ABOVE
    sift_contrast: float = SIFT_CONTRAST
    blot_sift_contrast: float = BLOT_SIFT_CONTRAST
    sift_max_features: int = SIFT_MAX_FEATURES
    guided: bool = True
    g2nn_ratio: float = G2NN_RATIO
    ransac_px: float = RANSAC_PX
    max_scale: float = MAX_SCALE
    max_hypotheses: int = MAX_HYPOTHESES
    agree_zncc: float = AGREE_ZNCC
    # the FFT search for plain / mirrored shifts: off by default, since on the tuning sets it
    # added no oF1 over keypoints + exact hashing at several times the time (docs/experiments.md)
    dense: bool = False
    # the dense field (densefield.py): rotation-invariant, contrast-normalised disk features
    # matched over a grid, for copies in smooth areas or with changed brightness. Off by default:
    # on the tuning seed it raised oF1 but about doubled the matcher's time, beyond the speed
    # goal, and the gain did not hold on held-out photos (docs/dense_field.md)
    dense_field: bool = False
    # the dense field drawn as planes of the network's evidence map (``Detection.field_planes``,
    # ``evidence.EVIDENCE_CONFIG``), without its candidates: costs the field's time, changes no verdict
    field_evidence: bool = False
    # a denser keypoint pass in small or low-contrast panels (keypoints.panel_features). Off by
    # default: on the 8 development sets (seeds 3003/4004) it raises the mean oF1 from 0.753 to
    # 0.764 but flags 1 of 240 authentic images (and 1 of 150 authentic look-alikes the default
    # leaves alone), grows some copied lanes across their like neighbours, and costs ~15-20% more
    # time (docs/benchmarks.md)
    small_panels: bool = False
    # block matching at the noise floor (noiseblocks.py): shifted copies in noisy images, where
    # keypoints land on the noise. Off by default: on the 18 development sets it flags no more
    # images but finds only two more copies (mean oF1 +0.0004), on fresh held-out sets none
    # (docs/dense_field.md)
    noise_blocks: bool = False
    exact: bool = True  # block hashing for copies pasted without resampling
    decorations: bool = True  # drop keypoints and agreement on labels, scale bars, arrows
    skip_charts: bool = True  # no matching inside chart / text panels
    lanes: bool = True  # blot and gel panels compared lane by lane (see lanes.py)


# Decision defaults, chosen by benchmarks/matcher_dev.py (--grid) on the tuning sets (synthetic
# photos and figures, seed 1001; the report sets use seed 2002; figures in docs/experiments.md).
# 8 inliers: fewer flag authentic photos and figures of similar texture; more lose small copies.
DEFAULT_MIN_INLIERS = 8
# ... but that bar is for maps under which look-alikes match (``decision.ambiguous_map``): on the
# 10 development sets (seeds 3003/4004/6006, 420 images) every authentic candidate with 4-7
# inliers had a mirror or half-turn map (bands, nuclei and cells are symmetric: a twin matches
# turned half round or mirrored) or a scale beyond 1/1.3-1.3, while the true copies held back by
# the bar were translations, rotations by 13-90 degrees and rescales by 0.88 (copies after JPEG
# keep a few matches). Under any other map the candidate floor suffices, as verification carries
# the evidence: 5 more copies found, no authentic image more flagged (docs/benchmarks.md).
DEFAULT_MIN_INLIERS_UNAMBIGUOUS = 4
# (Pairs inside laned blots and gels stay at the higher bar too: like lanes match by a shift.)
# A map is ambiguous within this many degrees of a half turn ...
HALF_TURN_TOL_DEG = 10.0
# ... or beyond this rescale either way (copies are rescaled by at most ~1.3; look-alikes of
# different size match at any scale: one authentic candidate matched at 0.67).
UNAMBIGUOUS_MAX_SCALE = 1.3
# Keypoint-verified copies agree at 0.8-1.0, resampled ones (rotation, scale) at 0.7-0.9: a
# higher bar loses resampled copies.
DEFAULT_MIN_CORRELATION = 0.7
# 0.2% of the image: the smallest keypoint copies in the tuning sets (0.1-0.4% score the same).
DEFAULT_MIN_AREA = 0.002
# No image-level bar by default (calibration may set one on ``CopyPair.strength``).
DEFAULT_MIN_STRENGTH = 0.0
# 16 recurring 5x5 blocks (probed on a 2 px grid, ~ a 14 x 14 px copy): lower bars flag
# authentic photos and figures (identical tick marks, rulings, JPEG-flat blocks).
DEFAULT_MIN_EXACT_BLOCKS = 16
# Fewer recurring blocks (any exact candidate: EXACT_MIN_BLOCKS) suffice for a pair that also
# covers ``min_area`` and that look-alikes or the layout could not give (``decision.ambiguous``,
# ``decision.on_jpeg_grid``, ``decision.along_an_axis``). A 0.3% exact copy of a 360 x 480 photo
# holds 7-15 blocks and was lost to the bar above; the authentic recurrences under 16 blocks on the
# development sets cover under 0.05% of the image, except like gel lanes 32 px apart after JPEG
# (on its grid) and a blurred figure's repeated labels (along its row).
# Development sets (12, 2026-12-06): mean oF1 +0.004, no image more flagged (docs/benchmarks.md).
DEFAULT_MIN_EXACT_BLOCKS_SIZED = EXACT_MIN_BLOCKS
# JPEG's block side: exact recurrence at a shift of whole blocks can be made by the compression
# itself (``decision.on_jpeg_grid``).
JPEG_BLOCK = 8
# A shift within this (original px) of a row or column is one the layout gives its repeated labels
# (``decision.along_an_axis``): a blurred figure's "GFP" labels recur exactly 308 px apart in one
# row (held-out look-alikes); none of the small exact copies the sized rule found on the
# development and held-out sets lay along an axis.
AXIS_PX = 1.0
# Pairs found only lane by lane (lanes.py) pass when their tile's lane-residual correlation
# reaches this (the search proposes from lanes.LANE_TILE_ZNCC with a margin over every other
# lane). benchmarks/lane_probe.py: on 40 authentic synthetic blots and gels the best false lane
# pairs score 0.47-0.52 (at a 0.9 rescale: the variants give chance more tries); copied lanes
# after a gain change, mirror or rescale and JPEG score 0.41-0.99. 0.55 kept every authentic blot
# clean and found 16 of 20 copied lanes (7 without the stage). Since only verified lane pairs are
# candidates, the false ones that remain score 0.42, 0.58 and 0.81 on 200 authentic blots and gels
# (the last two flagged at 0.55 too), while copied lanes of the development sets lost at 0.55 score
# 0.49-0.54 (after JPEG, blur): 0.5 finds 3 more on 12 sets and flags no image more (2026-12-06).
DEFAULT_MIN_LANE_SCORE = 0.5
# Pairs found only by the FFT search need near-exact agreement: at 0.9 and below, similar or
# mirror-symmetric blot lanes flagged authentic images in the tuning sets.
DEFAULT_MIN_DENSE_CORRELATION = 0.95


@dataclass(frozen=True)
class DecisionParams(Recorded):
    """How candidates are judged; ``decide`` applies them to a cached ``Detection``.

    min_inliers: a pair needs this many distinct RANSAC inliers, unless the dense search found
        it (its support is then the agreeing area itself) ...
    min_inliers_unambiguous: ... or this many when its map is not one under which look-alikes
        match (``decision.ambiguous_map``: a mirror, a half turn, a large rescale).
    min_correlation: mean local correlation between a region and its transformed partner.
    min_dense_correlation: the same for pairs only the dense search found (no keypoint inliers
        back them, and similar blot lanes correlate at 0.7-0.85 in fine detail).
    min_area: smallest region, as a fraction of the image area (both source and copy).
    min_strength: image-level bar on ``CopyPair.strength``; calibration trades false positives
        on authentic images against missed copies with it.
    use_dense: whether being found by the dense search can stand in for keypoint inliers.
    min_lane_score: a pair found lane by lane passes when its lanes' residuals correlate this
        well (``CopyPair.lane``); it still needs ``min_correlation`` and ``min_area``.
    min_exact_blocks: a pair whose pixels recur exactly over this many hashed blocks passes on
        that alone, at any size (see ``exact``).
    min_exact_blocks_sized: ... or over this many when it also covers ``min_area``.
    """

    min_inliers: int = DEFAULT_MIN_INLIERS
    min_inliers_unambiguous: int = DEFAULT_MIN_INLIERS_UNAMBIGUOUS
    min_correlation: float = DEFAULT_MIN_CORRELATION
    min_dense_correlation: float = DEFAULT_MIN_DENSE_CORRELATION
    min_area: float = DEFAULT_MIN_AREA
    min_strength: float = DEFAULT_MIN_STRENGTH
    use_dense: bool = True
    min_exact_blocks: int = DEFAULT_MIN_EXACT_BLOCKS
    min_exact_blocks_sized: int = DEFAULT_MIN_EXACT_BLOCKS_SIZED
    min_lane_score: float = DEFAULT_MIN_LANE_SCORE
