"""Model bundles: a Keras generator plus its JSON model card.

A bundle is two files side by side, ``NAME.keras`` (the generator saved by Keras 3)
and ``NAME.json`` (the model card).

Two kinds of generator exist. Chunk families (``CHUNK_FAMILIES``) map a latent
vector to one chunk of ``chunk_length`` samples. Sequence families
(``SEQUENCE_FAMILIES``) map a latent sequence ``(n_latent, latent_channels)`` to
``n_latent * latent_stride`` samples; their card adds ``sequence`` =
``{"latent_stride": S, "halo_latents": H}``, where output sample ``t`` depends only
on latent positions within ``H`` of ``t // S``. Only sequence families may be
conditioned, on the solar modulation potential ``phi_gv``: the generator then takes
a second input ``(batch, 1)`` holding ``(phi_gv - offset) / scale``. The card records how to use the generator: sample
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
    "CHUNK_FAMILIES",
    "CONDITIONING_VARIABLES",
    "KNOWN_FAMILIES",
    "SEQUENCE_FAMILIES",
    "CARD_SCHEMA_VERSION",
    "Bundle",
    "BundleError",
    "bundle_paths",
    "default_bundle_path",
    "load_bundle",
    "network_condition",
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

# Conditioning variables a card may declare, with their units. The network input is
# (value - offset) / scale; ``range`` is the span of values the model was trained on.
CONDITIONING_VARIABLES = {"phi_gv": "GV"}

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

    @property
    def is_sequence(self):
        """True for generators of latent sequences (family in ``SEQUENCE_FAMILIES``)."""
        return self.card["family"] in SEQUENCE_FAMILIES

    @property
    def conditioning(self):
        """The card's conditioning entry (dict, empty when unconditioned)."""
        return self.card["conditioning"]


def default_bundle_path():
    """Return the path of the generator shipped with toast_crab."""
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(here, "data", "default_model", "seamless.keras")


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
    if card["family"] in SEQUENCE_FAMILIES:
        _validate_sequence(card, source)
    _validate_conditioning(card, source)
    try:
        transform_from_card(card["transform"])
    except ValueError as err:
        raise BundleError(f"{source}: {err}") from err


def _validate_sequence(card, source):
    """Check the ``sequence`` entry of a sequence-family card."""
    sequence = card.get("sequence")
    if not isinstance(sequence, dict):
        raise BundleError(
            f"{source} of family {card['family']!r} lacks the 'sequence' entry "
            "{'latent_stride': S, 'halo_latents': H}. Re-export the bundle with crab-train."
        )
    for key, low in (("latent_stride", 1), ("halo_latents", 0)):
        value = sequence.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise BundleError(
                f"{source} sequence.{key} must be an integer >= {low}. Got {value!r}."
            )
    if len(card["latent_shape"]) != 1:
        raise BundleError(
            f"{source} latent_shape of a sequence model is [latent_channels]. "
            f"Got {card['latent_shape']!r}."
        )
    if card["chunk_length"] % sequence["latent_stride"] != 0:
        raise BundleError(
            f"{source} chunk_length {card['chunk_length']} is not a multiple of "
            f"sequence.latent_stride {sequence['latent_stride']}."
        )


def _validate_conditioning(card, source):
    """Check the ``conditioning`` entry: empty, or ``phi_gv`` for sequence families."""
    conditioning = card["conditioning"]
    if not conditioning:
        return
    if card["family"] not in SEQUENCE_FAMILIES:
        raise BundleError(
            f"{source} declares conditioning variables {sorted(conditioning)}, but family "
            f"{card['family']!r} takes no conditioning; only {list(SEQUENCE_FAMILIES)} do."
        )
    unknown = sorted(set(conditioning) - set(CONDITIONING_VARIABLES))
    if unknown:
        raise BundleError(
            f"{source} declares conditioning variables {unknown}; this toast_crab supports "
            f"{list(CONDITIONING_VARIABLES)}. Upgrade toast_crab or choose another bundle."
        )
    for name, entry in conditioning.items():
        where = f"{source} conditioning.{name}"
        if not isinstance(entry, dict):
            raise BundleError(f"{where} must be a JSON object. Got {entry!r}.")
        if entry.get("unit") != CONDITIONING_VARIABLES[name]:
            raise BundleError(
                f"{where}.unit is {entry.get('unit')!r}; expected "
                f"{CONDITIONING_VARIABLES[name]!r}."
            )
        offset, scale = entry.get("offset"), entry.get("scale")
        if not _is_number(offset) or not _is_number(scale) or not scale > 0:
            raise BundleError(
                f"{where} needs a numeric offset and a positive scale. "
                f"Got offset={offset!r}, scale={scale!r}."
            )
        value_range = entry.get("range")
        if (
            not isinstance(value_range, list)
            or len(value_range) != 2
            or not all(_is_number(v) for v in value_range)
            or value_range[0] > value_range[1]
        ):
            raise BundleError(
                f"{where}.range must be [min, max] with min <= max. Got {value_range!r}."
            )


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def network_condition(card, phi_gv):
    """Return the network input of a flux-conditioned card for a value of phi.

    Args:
        card (dict): A validated card with a ``phi_gv`` conditioning entry.
        phi_gv (float): Solar modulation potential, GV.

    Returns:
        (tuple): ``((phi_gv - offset) / scale,)``.

    Raises:
        ValueError: If the card is not conditioned, or ``phi_gv`` lies outside the
            range the model was trained on.
    """
    entry = card["conditioning"].get("phi_gv")
    if entry is None:
        raise ValueError(f"Model {card['name']!r} is not conditioned on the cosmic-ray flux.")
    low, high = entry["range"]
    phi_gv = float(phi_gv)
    if not low - 1.0e-9 <= phi_gv <= high + 1.0e-9:
        raise ValueError(
            f"phi = {phi_gv:.4g} GV lies outside the range [{low:g}, {high:g}] GV that model "
            f"{card['name']!r} was trained on."
        )
    return ((phi_gv - entry["offset"]) / entry["scale"],)


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

    if card["family"] in SEQUENCE_FAMILIES:
        _check_sequence_model(generator, card, keras_path)
        return Bundle(
            card=card,
            generator=generator,
            transform=transform_from_card(card["transform"]),
            keras_path=keras_path,
            card_path=card_path,
        )
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


def _check_sequence_model(generator, card, keras_path):
    """Check that a sequence generator's inputs and output match its card."""
    n_inputs = 1 + (1 if card["conditioning"] else 0)
    if len(generator.inputs) != n_inputs:
        raise BundleError(
            f"Generator {keras_path!r} takes {len(generator.inputs)} inputs, but its card "
            f"implies {n_inputs} (latent sequence"
            f"{' and condition' if n_inputs == 2 else ''}). The two files do not belong "
            "together."
        )
    latent_shape = tuple(generator.inputs[0].shape[1:])
    if latent_shape != (None, card["latent_shape"][0]):
        raise BundleError(
            f"Generator {keras_path!r} takes latents of shape {latent_shape}, but its card "
            f"says (any length, {card['latent_shape'][0]} channels). The two files do not "
            "belong together."
        )
    if n_inputs == 2:
        condition_shape = tuple(generator.inputs[1].shape[1:])
        if condition_shape != (len(card["conditioning"]),):
            raise BundleError(
                f"Generator {keras_path!r} takes a condition of shape {condition_shape}, but "
                f"its card declares {sorted(card['conditioning'])}."
            )
    output_shape = tuple(generator.outputs[0].shape[1:])
    if output_shape not in ((None,), (None, 1)):
        raise BundleError(
            f"Generator {keras_path!r} outputs shape {output_shape}; a sequence generator "
            "outputs (batch, n_samples) or (batch, n_samples, 1)."
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
