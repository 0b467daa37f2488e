"""Scoring side: detectors and their post-processing, the oF1 metric, calibration, batch scoring,
prediction reports. Imports ``preprocessing`` (the data contract), never ``trainer``: an exported
SavedModel is enough to score."""
