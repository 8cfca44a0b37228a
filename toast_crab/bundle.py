"""Model bundles: a Keras generator plus its JSON model card.

A bundle is two files side by side, ``NAME.keras`` (the generator saved by Keras 3)
and ``NAME.json`` (the model card). The card records how to use the generator: sample
rate, chunk length, output unit, amplitude transform, latent shape, conditioning,
and how the model was trained and how well it scored. Loading checks the card
against the schema and rejects what this version cannot honour.

Reading a card needs no TensorFlow; loading the generator does.
"""

import json
import os
from dataclasses import dataclass

from .transforms import transform_from_card

__all__ = [
    "CARD_SCHEMA",
    "CARD_SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "bundle_paths",
    "default_bundle_path",
    "load_bundle",
    "read_card",
    "save_bundle",
    "validate_card",
]

CARD_SCHEMA = "toast_crab.model_card"
CARD_SCHEMA_VERSION = 1

# Families whose generator maps (batch,) + latent_shape to (batch, chunk_length[, 1]).
CHUNK_FAMILIES = ("crab_bce", "wgan_gp", "vae")
# Families whose generator maps a latent sequence (batch, n_latent, channels) to a
# timestream (batch, n_latent * latent_stride); see ``validate_card``.
SEQUENCE_FAMILIES = ("seamless",)
KNOWN_FAMILIES = CHUNK_FAMILIES + SEQUENCE_FAMILIES

# Required card entries and their JSON types.
_REQUIRED = {
    "schema": str,
    "schema_version": int,
    "name": str,
    "family": str,
    "sample_rate_hz": (int, float),
    "chunk_length": int,
    "output_unit": str,
    "transform": dict,
    "latent_shape": list,
    "conditioning": dict,
    "training_data": dict,
    "training": dict,
    "validation": dict,
}


class BundleError(ValueError):
    """A model bundle is missing, unreadable or does not match the card schema."""


@dataclass
class Bundle:
    """A loaded generator with its card.

    Attributes:
        card (dict): The validated model card.
        generator (keras.Model): Maps latent vectors to chunks in network space.
        transform: Maps network outputs back to watts (see :mod:`toast_crab.transforms`).
        keras_path (str): The ``.keras`` file.
        card_path (str): The ``.json`` card.
    """

    card: dict
    generator: object
    transform: object
    keras_path: str
    card_path: str

    @property
    def sample_rate_hz(self):
        return float(self.card["sample_rate_hz"])

    @property
    def chunk_length(self):
        return int(self.card["chunk_length"])

    @property
    def latent_shape(self):
        return tuple(int(n) for n in self.card["latent_shape"])


def default_bundle_path():
    """Return the path of the generator shipped with toast_crab."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "data", "default_model", "crab_default.keras")


def bundle_paths(path):
    """Return ``(keras_path, card_path)`` for a bundle given by either file.

    Args:
        path (str): The ``.keras`` file or the ``.json`` card of a bundle.

    Raises:
        BundleError: If the path has another extension.
    """
    path = os.fspath(path)
    stem, ext = os.path.splitext(path)
    if ext not in (".keras", ".json"):
        raise BundleError(
            f"Model bundle path {path!r} must end in '.keras' (the generator) or "
            "'.json' (its card), with both files side by side."
        )
    return stem + ".keras", stem + ".json"


def validate_card(card, source="model card"):
    """Check a model card against schema version 1.

    Args:
        card (dict): The parsed card.
        source (str): Where the card came from, for error messages.

    Raises:
        BundleError: Naming the first entry that is missing or invalid.
    """
    if not isinstance(card, dict):
        raise BundleError(f"{source} must be a JSON object. Got {type(card).__name__}.")
    if card.get("schema") != CARD_SCHEMA:
        raise BundleError(
            f"{source} has schema {card.get('schema')!r}; expected {CARD_SCHEMA!r}. "
            "It is not a toast_crab model card: point the model path at a bundle "
            "written by crab-train."
        )
    version = card.get("schema_version")
    if version != CARD_SCHEMA_VERSION:
        raise BundleError(
            f"{source} has schema_version {version!r}; this toast_crab reads version "
            f"{CARD_SCHEMA_VERSION}. Upgrade toast_crab or re-export the bundle."
        )
    for key, kind in _REQUIRED.items():
        if key not in card:
            raise BundleError(f"{source} lacks the required entry {key!r}.")
        if not isinstance(card[key], kind) or isinstance(card[key], bool):
            raise BundleError(
                f"{source} entry {key!r} = {card[key]!r} has the wrong type; "
                f"expected {kind}."
            )
    if card["family"] not in KNOWN_FAMILIES:
        raise BundleError(
            f"{source} names model family {card['family']!r}; this toast_crab can run "
            f"{list(KNOWN_FAMILIES)}. Upgrade toast_crab or choose another bundle."
        )
    if not card["sample_rate_hz"] > 0:
        raise BundleError(f"{source} sample_rate_hz must be positive. Got {card['sample_rate_hz']!r}.")
    if not card["chunk_length"] > 0:
        raise BundleError(f"{source} chunk_length must be positive. Got {card['chunk_length']!r}.")
    if card["output_unit"] != "W":
        raise BundleError(
            f"{source} output_unit is {card['output_unit']!r}; toast_crab generators "
            "must output watts ('W') of absorbed power change."
        )
    if not card["latent_shape"] or not all(
        isinstance(n, int) and n > 0 for n in card["latent_shape"]
    ):
        raise BundleError(
            f"{source} latent_shape must be a list of positive integers. "
            f"Got {card['latent_shape']!r}."
        )
    if card["conditioning"]:
        raise BundleError(
            f"{source} declares conditioning variables {sorted(card['conditioning'])}; "
            "this toast_crab runs only unconditioned generators."
        )
    try:
        transform_from_card(card["transform"])
    except ValueError as err:
        raise BundleError(f"{source}: {err}") from err


def read_card(path):
    """Read and validate the card of a bundle, without loading TensorFlow.

    Args:
        path (str): The ``.keras`` file or the ``.json`` card.

    Returns:
        (dict): The validated card.

    Raises:
        FileNotFoundError: If either file of the bundle is missing.
        BundleError: If the card is not valid JSON or breaks the schema.
    """
    keras_path, card_path = bundle_paths(path)
    for needed in (keras_path, card_path):
        if not os.path.isfile(needed):
            raise FileNotFoundError(
                f"Model bundle file {needed!r} not found. A bundle is a '.keras' file "
                "with its '.json' card beside it; give the path of an existing bundle, "
                "or leave the model unset to use the shipped default."
            )
    try:
        with open(card_path, "r", encoding="utf-8") as handle:
            card = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"Model card {card_path!r} is not readable JSON ({err}).") from err
    validate_card(card, source=f"Model card {card_path!r}")
    return card


def load_bundle(path=None):
    """Load a generator and its card.

    Args:
        path (str): The ``.keras`` file or the ``.json`` card; None loads the
            shipped default.

    Returns:
        (Bundle): The generator, card and amplitude transform.

    Raises:
        FileNotFoundError: If a file of the bundle is missing.
        BundleError: If the card or the generator is invalid or unreadable.
    """
    if path is None:
        path = default_bundle_path()
    keras_path, card_path = bundle_paths(path)
    card = read_card(card_path)

    import keras

    from . import models  # noqa: F401  registers the custom layers before loading

    try:
        generator = keras.saving.load_model(keras_path, compile=False)
    except Exception as err:  # Keras raises several types for corrupt archives.
        raise BundleError(
            f"Generator {keras_path!r} could not be loaded by Keras ({type(err).__name__}: "
            f"{err}). Re-export it with crab-train or restore the file."
        ) from err

    latent_shape = tuple(card["latent_shape"])
    input_shape = tuple(generator.inputs[0].shape[1:])
    output_shape = tuple(generator.outputs[0].shape[1:])
    if input_shape != latent_shape:
        raise BundleError(
            f"Generator {keras_path!r} takes inputs of shape {input_shape}, but its card "
            f"says latent_shape {list(latent_shape)}. The two files do not belong together."
        )
    if output_shape not in ((card["chunk_length"],), (card["chunk_length"], 1)):
        raise BundleError(
            f"Generator {keras_path!r} outputs shape {output_shape}, but its card gives "
            f"chunk_length {card['chunk_length']}. The two files do not belong together."
        )
    return Bundle(
        card=card,
        generator=generator,
        transform=transform_from_card(card["transform"]),
        keras_path=keras_path,
        card_path=card_path,
    )


def save_bundle(generator, card, path):
    """Write a generator and its card as a bundle.

    Args:
        generator (keras.Model): The generator.
        card (dict): The model card; it is validated before anything is written.
        path (str): The ``.keras`` path; the card goes beside it as ``.json``.

    Returns:
        (tuple): ``(keras_path, card_path)``.
    """
    keras_path, card_path = bundle_paths(path)
    validate_card(card, source="Model card to save")
    os.makedirs(os.path.dirname(os.path.abspath(keras_path)), exist_ok=True)
    generator.save(keras_path)
    with open(card_path, "w", encoding="utf-8") as handle:
        json.dump(card, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return keras_path, card_path
