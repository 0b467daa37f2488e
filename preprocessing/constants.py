"""The data contract's names and values, written once; every stage imports them from here (no
TensorFlow, no Beam, so the lightest command can use them)."""
from __future__ import annotations

AUTHENTIC, FORGED = 0, 1  # the integer label stored in records and learnt by the trainer's image head
LABEL_NAMES = {AUTHENTIC: "authentic", FORGED: "forged"}  # the folder names of the competition layout

SPLITS = ("train", "val")  # the Beam job's record splits
ENCODINGS = ("png", "raw")  # how image and mask planes are stored in a record (never JPEG: lossy)
COMPRESSIONS = ("gzip", "none")  # TFRecord file compression
MANIFEST_FILE = "manifest.json"  # written by preprocessing.main next to the shards
ERRORS_FILE = "errors.jsonl"  # one line per case the Beam job could not convert
# The matcher's evidence map, stored next to each image (schema version 4) and fed to the network:
# where a verified copy-move match lies and how strong it is, where decorations (labels, scale bars)
# are, whether evidence was computed at all (0 for records written without it), and the dense
# field's own evidence before any verification: how clearly each point matches a partner, and how
# consistently its neighbours move with it (preprocessing.matching.evidence).
EVIDENCE_CHANNELS = ("match", "decoration", "present", "field_clarity", "field_consistency")
