"""A tiny exported model for the serving tests (tests may use trainer to BUILD a model; serving never does)."""
from __future__ import annotations

import os

import keras

SIZE = 64


def build_tiny_model(image_head: bool = True, evidence: bool = False) -> keras.Model:
    """A few-parameter model with the project's input contract (uint8 in, {"mask", "image"} out).

    Fixed weights: the mask follows local brightness, the image score is a random projection;
    outputs vary with the image, which is all scoring and calibration need. With ``evidence``, a
    second input (the matcher's map) that brightens the mask where it is set.
    """
    from trainer.layers import NoiseResidual, ScaleRGB

    keras.utils.set_random_seed(3)
    images = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="images")
    rgb = ScaleRGB()(images)
    # Mask: sigmoid(8 * (local brightness - 0.5)), so bright regions come out "forged".
    mask = keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid", name="mask",
                               kernel_initializer=keras.initializers.Constant(8.0 / 27),
                               bias_initializer=keras.initializers.Constant(-4.0))(rgb)
    x = keras.layers.Concatenate()([rgb, NoiseResidual()(images)])
    x = keras.layers.Conv2D(4, 3, padding="same", activation="tanh",
                            kernel_initializer=keras.initializers.RandomNormal(stddev=1.0, seed=1))(x)
    inputs = images
    if evidence:
        from preprocessing.constants import EVIDENCE_CHANNELS

        ev = keras.Input((SIZE, SIZE, len(EVIDENCE_CHANNELS)), dtype="uint8", name="evidence")
        inputs = {"images": images, "evidence": ev}
        mask = keras.layers.Maximum(name="mask_with_evidence")([mask, ScaleRGB()(ev)[..., :1]])
    outputs = {"mask": mask}
    if image_head:
        pooled = keras.layers.GlobalAveragePooling2D()(x)
        outputs["image"] = keras.layers.Dense(1, activation="sigmoid", name="image")(pooled)
    return keras.Model(inputs, outputs)


def export_tiny(model_dir: str, image_head: bool = True, evidence: bool = False) -> str:
    from trainer.export import export_model

    export_model(build_tiny_model(image_head, evidence), os.path.join(model_dir, "export"), image_size=SIZE,
                 metadata={"arch": "tiny-test"})
    return model_dir
