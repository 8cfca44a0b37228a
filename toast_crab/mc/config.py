"""Configuration of the reference cosmic-ray Monte-Carlo.

Frozen dataclasses with the defaults of the reference MC. Every field carries its unit in its
name. Each class validates its values in ``__post_init__`` and raises ``ValueError`` (bad value)
or ``TypeError`` (bad type) with a message that names the value received and the fix.
``MCConfig.to_dict`` and ``MCConfig.from_dict`` convert to and from nested plain dictionaries,
so a configuration can be stored as JSON provenance and read from a TOML file
(``MCConfig.from_toml``).

The physical meaning and source of each default are listed in ``docs/mc.md``.
"""

import dataclasses
import datetime
import math
import numbers
import tomllib
import warnings
from pathlib import Path

from toast_crab.mc.solar_cycle import parse_date, phi_at_date

__all__ = [
    "KNOWN_SPECIES",
    "SIGN_CONVENTIONS",
    "ISLAND_MATERIALS",
    "MCWarning",
    "EnvironmentConfig",
    "SolarCycleConfig",
    "DetectorConfig",
    "WaferConfig",
    "ReadoutConfig",
    "MCConfig",
]

# Species names accepted in ``EnvironmentConfig.species``. "p" and "He" are protons and
# helium-4; the other names are placeholder groups of heavier nuclei (see environment.py).
KNOWN_SPECIES = ("p", "He", "LiBeB", "CNO", "NeMgSi", "SToCa", "Fe")

SIGN_CONVENTIONS = ("optical", "joule")

ISLAND_MATERIALS = ("SiN", "Si")


class MCWarning(UserWarning):
    """Warning for a configuration that runs but is outside the model's intended range."""


def _check_real(owner, name, value):
    """Return ``value`` as float, raising TypeError for a non-numeric value."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{owner}.{name} must be a real number, got {value!r} of type "
            f"{type(value).__name__}; write it as a plain number, e.g. {name} = 1.0"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be finite, got {value!r}; give a finite number")
    return value


def _check_positive(owner, name, value):
    value = _check_real(owner, name, value)
    if value <= 0.0:
        raise ValueError(f"{owner}.{name} must be > 0, got {value!r}; give a positive value")
    return value


def _check_int(owner, name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{owner}.{name} must be an integer, got {value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"{owner}.{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _set(instance, name, value):
    """Store a normalised value on a frozen dataclass instance."""
    object.__setattr__(instance, name, value)


@dataclasses.dataclass(frozen=True)
class EnvironmentConfig:
    """Galactic cosmic-ray environment at L2.

    Attributes:
        phi_gv (float): Force-field solar modulation potential in GV, on the scale of the
            Corti et al. (2019) proton LIS. 0.30 GV reproduces the ~5 cm^-2 s^-1 that Planck
            measured in the 2009-2010 solar minimum.
        phi_range_gv (tuple or None): When given as (min, max) in GV, each MC run draws its
            own phi uniformly in this range and ``phi_gv`` is not used.
        mission_date (str or None): ISO 8601 date (e.g. "2032-06-01"). When given, phi
            comes from the solar-cycle model (``SolarCycleConfig``) at that date and
            ``phi_gv`` is not used. Exclusive with ``phi_range_gv``.
        species (tuple of str): Particle species to simulate, names from ``KNOWN_SPECIES``.
        helium_scale (float): k_He, the helium LIS as a multiple of the proton LIS in
            rigidity (dimensionless).
        heavy_fraction (float): Number fraction of Z > 2 nuclei relative to helium, applied
            to the placeholder heavy groups when they are listed in ``species``.
        cutoff_energy_mev_per_nucleon (float): Shielding cut. Particles with a lower kinetic
            energy per nucleon do not reach the focal plane.
    """

    phi_gv: float = 0.35
    phi_range_gv: tuple | None = None
    mission_date: str | None = None
    species: tuple = ("p", "He")
    helium_scale: float = 0.117
    heavy_fraction: float = 0.1
    cutoff_energy_mev_per_nucleon: float = 40.0

    def __post_init__(self):
        owner = "EnvironmentConfig"
        phi = _check_real(owner, "phi_gv", self.phi_gv)
        if phi < 0.0:
            raise ValueError(
                f"{owner}.phi_gv must be >= 0 GV, got {phi!r}; the modulation potential is "
                "0.3-0.6 GV near solar minimum and ~1 GV at maximum"
            )
        _set(self, "phi_gv", phi)

        if self.phi_range_gv is not None:
            if isinstance(self.phi_range_gv, str) or len(self.phi_range_gv) != 2:
                raise ValueError(
                    f"{owner}.phi_range_gv must be a pair (min, max) in GV or None, got "
                    f"{self.phi_range_gv!r}"
                )
            low = _check_real(owner, "phi_range_gv[0]", self.phi_range_gv[0])
            high = _check_real(owner, "phi_range_gv[1]", self.phi_range_gv[1])
            if low < 0.0 or high < low:
                raise ValueError(
                    f"{owner}.phi_range_gv must satisfy 0 <= min <= max, got {(low, high)!r}; "
                    "e.g. phi_range_gv = [0.30, 0.60]"
                )
            _set(self, "phi_range_gv", (low, high))

        if self.mission_date is not None:
            moment = parse_date(self.mission_date, name=f"{owner}.mission_date")
            if self.phi_range_gv is not None:
                raise ValueError(
                    f"{owner} sets both mission_date ({self.mission_date!r}) and phi_range_gv "
                    f"({self.phi_range_gv!r}); keep one: a date gives one phi, a range draws "
                    "phi per run"
                )
            # Store the ISO string so that the configuration stays JSON-serialisable.
            if isinstance(self.mission_date, datetime.datetime):
                _set(self, "mission_date", moment.isoformat())
            elif isinstance(self.mission_date, datetime.date):
                _set(self, "mission_date", self.mission_date.isoformat())

        if isinstance(self.species, str):
            raise TypeError(
                f"{owner}.species must be a list of species names, got the string "
                f"{self.species!r}; write species = [{self.species!r}]"
            )
        species = tuple(self.species)
        if not species:
            raise ValueError(f"{owner}.species is empty; list at least one of {KNOWN_SPECIES}")
        for name in species:
            if name not in KNOWN_SPECIES:
                raise ValueError(
                    f"{owner}.species contains unknown species {name!r}; known species are "
                    f"{KNOWN_SPECIES}"
                )
        if len(set(species)) != len(species):
            raise ValueError(f"{owner}.species lists a species twice: {species!r}")
        _set(self, "species", species)

        for name in ("helium_scale", "heavy_fraction"):
            value = _check_real(owner, name, getattr(self, name))
            if value < 0.0:
                raise ValueError(f"{owner}.{name} must be >= 0, got {value!r}")
            _set(self, name, value)
        _set(
            self,
            "cutoff_energy_mev_per_nucleon",
            _check_positive(owner, "cutoff_energy_mev_per_nucleon", self.cutoff_energy_mev_per_nucleon),
        )


@dataclasses.dataclass(frozen=True)
class SolarCycleConfig:
    """Smooth model of the modulation potential over the solar cycle, phi(t).

    See ``toast_crab.mc.solar_cycle`` for the curve. phi values are on the scale of the
    Corti et al. (2019) proton LIS; docs/mc.md lists the status of each default.

    Attributes:
        phi_min_gv (float): phi at the modulation minimum (highest cosmic-ray flux), GV.
            0.30 GV reproduces the ~5 cm^-2 s^-1 that Planck measured at L2 in 2009-2010.
        phi_max_gv (float): phi at the modulation maximum, GV. Assumed value for a weak to
            average solar cycle such as cycles 24 and 25.
        minimum_year (float): Decimal year of one modulation minimum. 2009.7 assumes that
            the cosmic-ray maximum lagged the December 2008 sunspot minimum by 0.75 yr.
        period_years (float): Cycle length, years. Cycle 24 ran from December 2008 to
            December 2019 (11.0 yr).
        rise_fraction (float): Share of the cycle from the phi minimum to the phi maximum.
            Sunspot numbers rose for 5.3 yr (cycle 24) and about 4.8 yr (cycle 25) of 11.
    """

    phi_min_gv: float = 0.30
    # NOTE: no force-field phi series on the Corti et al. (2019) LIS scale was available;
    # 0.75 GV at maximum is an assumption, not a fit.
    phi_max_gv: float = 0.75
    minimum_year: float = 2009.7
    period_years: float = 11.0
    rise_fraction: float = 0.45

    def __post_init__(self):
        owner = "SolarCycleConfig"
        phi_min = _check_real(owner, "phi_min_gv", self.phi_min_gv)
        phi_max = _check_real(owner, "phi_max_gv", self.phi_max_gv)
        if phi_min < 0.0 or phi_max < phi_min:
            raise ValueError(
                f"{owner} must satisfy 0 <= phi_min_gv <= phi_max_gv, got phi_min_gv = "
                f"{phi_min!r}, phi_max_gv = {phi_max!r}; e.g. 0.30 and 0.75 GV"
            )
        _set(self, "phi_min_gv", phi_min)
        _set(self, "phi_max_gv", phi_max)
        _set(self, "minimum_year", _check_real(owner, "minimum_year", self.minimum_year))
        _set(self, "period_years", _check_positive(owner, "period_years", self.period_years))
        rise = _check_real(owner, "rise_fraction", self.rise_fraction)
        if not 0.0 < rise < 1.0:
            raise ValueError(f"{owner}.rise_fraction must be in (0, 1), got {rise!r}")
        _set(self, "rise_fraction", rise)

    def phi_gv(self, date):
        """Return phi at a date (ISO 8601 string, date or datetime), GV."""
        return phi_at_date(date, self)


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """TES bolometer: absorbing island and small-signal electrothermal parameters.

    Attributes:
        island_area_m2 (float): Face area of the suspended island hit directly by particles.
        island_thickness_m (float): Thickness of the island membrane.
        island_material (str): Island material for the energy loss, "SiN" or "Si".
        tau_eff_s (float): Effective (electrothermal) time constant of the TES.
        bath_temperature_k (float): Bath (wafer) temperature T_b.
        critical_temperature_k (float): TES transition temperature T_c.
        thermal_exponent (float): n in the leg power law P = K (T^n - T_b^n).
        saturation_ratio (float): P_sat / P_opt.
        joule_power_w (float): Joule (bias) power P_J0 at the operating point.
        alpha (float): Logarithmic temperature sensitivity d ln R / d ln T.
    """

    island_area_m2: float = 0.06e-6
    island_thickness_m: float = 1.0e-6
    island_material: str = "SiN"
    tau_eff_s: float = 4.0e-3
    bath_temperature_k: float = 0.100
    critical_temperature_k: float = 0.171
    thermal_exponent: float = 3.0
    saturation_ratio: float = 2.5
    joule_power_w: float = 0.78e-12
    alpha: float = 100.0

    def __post_init__(self):
        owner = "DetectorConfig"
        for name in (
            "island_area_m2",
            "island_thickness_m",
            "tau_eff_s",
            "bath_temperature_k",
            "critical_temperature_k",
            "thermal_exponent",
            "joule_power_w",
            "alpha",
        ):
            _set(self, name, _check_positive(owner, name, getattr(self, name)))
        if self.island_material not in ISLAND_MATERIALS:
            raise ValueError(
                f"{owner}.island_material must be one of {ISLAND_MATERIALS}, got "
                f"{self.island_material!r}"
            )
        if self.critical_temperature_k <= self.bath_temperature_k:
            raise ValueError(
                f"{owner}.critical_temperature_k ({self.critical_temperature_k!r} K) must be "
                f"above bath_temperature_k ({self.bath_temperature_k!r} K); LiteBIRD uses "
                "T_c = 0.171 K over a 0.100 K bath"
            )
        ratio = _check_real(owner, "saturation_ratio", self.saturation_ratio)
        if ratio <= 1.0:
            raise ValueError(
                f"{owner}.saturation_ratio (P_sat/P_opt) must be > 1, got {ratio!r}; "
                "LiteBIRD designs use 2.5"
            )
        _set(self, "saturation_ratio", ratio)

    @property
    def saturation_power_w(self):
        """P_sat = P_J0 + P_opt with P_opt = P_J0 / (ratio - 1), in W."""
        return self.joule_power_w * self.saturation_ratio / (self.saturation_ratio - 1.0)

    @property
    def leg_coefficient_w_per_kn(self):
        """K of the leg law, P_sat / (T_c^n - T_b^n), in W K^-n."""
        n = self.thermal_exponent
        return self.saturation_power_w / (
            self.critical_temperature_k**n - self.bath_temperature_k**n
        )

    @property
    def conductance_w_per_k(self):
        """Thermal conductance G = n K T_c^(n-1) of the legs at T_c, in W/K."""
        n = self.thermal_exponent
        return n * self.leg_coefficient_w_per_kn * self.critical_temperature_k ** (n - 1.0)

    @property
    def bath_conductance_w_per_k(self):
        """G_b = n K T_b^(n-1): change of leg power per unit bath temperature, in W/K."""
        n = self.thermal_exponent
        return n * self.leg_coefficient_w_per_kn * self.bath_temperature_k ** (n - 1.0)

    @property
    def loop_gain(self):
        """Electrothermal loop gain L = P_J0 alpha / (G T_c) (dimensionless)."""
        return self.joule_power_w * self.alpha / (
            self.conductance_w_per_k * self.critical_temperature_k
        )

    @property
    def loop_fraction(self):
        """L / (1 + L): fraction of a deposited energy that the readout measures as Joule power."""
        gain = self.loop_gain
        return gain / (1.0 + gain)

    @property
    def island_heat_capacity_j_per_k(self):
        """C = G tau_0 with tau_0 = tau_eff (1 + L), in J/K."""
        return self.conductance_w_per_k * self.tau_eff_s * (1.0 + self.loop_gain)


@dataclasses.dataclass(frozen=True)
class WaferConfig:
    """Silicon wafer that carries the detectors, and its thermal response.

    Attributes:
        wafer_side_m (float): Side of the square wafer.
        wafer_thickness_m (float): Wafer thickness.
        debye_temperature_k (float): Debye temperature of silicon for the T^3 heat capacity.
        heat_capacity_multiplier (float): Factor >= 1 on the Debye heat capacity for metal
            films, glue and holder parts coupled to the wafer. The default 4 brings the
            1-7 Hz amplitude spectral density of the wafer term to 6e-17 W/sqrt(Hz), inside
            the 4-8e-17 W/sqrt(Hz) plateau of the LiteBIRD CR simulations of Stever et al.
            (as plotted in Baratto 2021, BSc thesis, Univ. Milano).
        tau_wafer_s (float): Decay time of a wafer temperature step.
        near_field_fraction (float): Share of a wafer hit's temperature response that falls
            with distance from the hit; the rest is common to the whole wafer.
        near_field_length_m (float): e-folding length of the distance-dependent share.
        pixel_pitch_m (float): Pitch of the square pixel grid.
        detectors_per_pixel (int): Detectors that share one pixel position.
    """

    wafer_side_m: float = 0.10
    wafer_thickness_m: float = 500.0e-6
    debye_temperature_k: float = 645.0
    heat_capacity_multiplier: float = 4.0
    tau_wafer_s: float = 10.0e-3
    near_field_fraction: float = 0.3
    near_field_length_m: float = 0.012
    pixel_pitch_m: float = 0.012
    detectors_per_pixel: int = 4

    def __post_init__(self):
        owner = "WaferConfig"
        for name in (
            "wafer_side_m",
            "wafer_thickness_m",
            "debye_temperature_k",
            "tau_wafer_s",
            "near_field_length_m",
            "pixel_pitch_m",
        ):
            _set(self, name, _check_positive(owner, name, getattr(self, name)))
        multiplier = _check_real(owner, "heat_capacity_multiplier", self.heat_capacity_multiplier)
        if multiplier < 1.0:
            raise ValueError(
                f"{owner}.heat_capacity_multiplier must be >= 1 (extra parts only add heat "
                f"capacity), got {multiplier!r}"
            )
        _set(self, "heat_capacity_multiplier", multiplier)
        fraction = _check_real(owner, "near_field_fraction", self.near_field_fraction)
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"{owner}.near_field_fraction must be in [0, 1], got {fraction!r}")
        _set(self, "near_field_fraction", fraction)
        _set(
            self,
            "detectors_per_pixel",
            _check_int(owner, "detectors_per_pixel", self.detectors_per_pixel, 1),
        )
        if self.wafer_thickness_m >= self.wafer_side_m:
            raise ValueError(
                f"{owner}.wafer_thickness_m ({self.wafer_thickness_m!r} m) must be smaller than "
                f"wafer_side_m ({self.wafer_side_m!r} m); check the units (metres)"
            )


@dataclasses.dataclass(frozen=True)
class ReadoutConfig:
    """Time sampling, anti-alias filter and output convention.

    Attributes:
        sample_rate_hz (float): Output (detector) sample rate.
        internal_rate_hz (float): Rate of the internal simulation grid, an integer multiple
            of ``sample_rate_hz``.
        antialias_order (int): Order of the causal Butterworth anti-alias low-pass.
        antialias_cutoff_fraction (float): Cutoff of that low-pass as a fraction of
            ``sample_rate_hz``; below 0.5 (the output Nyquist frequency).
        sign_convention (str): "optical" returns the optical-power-equivalent change
            dP_opt = -dP_J (positive glitches); "joule" returns dP_J (negative glitches).
        nep_w_per_rthz (float): One-sided white-noise NEP added to the output, in W/sqrt(Hz);
            0 gives CR-only timestreams.
    """

    sample_rate_hz: float = 19.1
    internal_rate_hz: float = 64 * 19.1
    antialias_order: int = 4
    antialias_cutoff_fraction: float = 0.4
    sign_convention: str = "optical"
    nep_w_per_rthz: float = 0.0

    def __post_init__(self):
        owner = "ReadoutConfig"
        _set(self, "sample_rate_hz", _check_positive(owner, "sample_rate_hz", self.sample_rate_hz))
        _set(
            self,
            "internal_rate_hz",
            _check_positive(owner, "internal_rate_hz", self.internal_rate_hz),
        )

        if self.sample_rate_hz > self.internal_rate_hz:
            raise ValueError(
                f"{owner}.sample_rate_hz ({self.sample_rate_hz!r} Hz) is above internal_rate_hz "
                f"({self.internal_rate_hz!r} Hz); set internal_rate_hz to an integer multiple "
                f"of the output rate, e.g. {64 * self.sample_rate_hz!r}"
            )
        ratio = self.internal_rate_hz / self.sample_rate_hz
        if abs(ratio - round(ratio)) > 1e-6 * ratio:
            raise ValueError(
                f"{owner}.internal_rate_hz ({self.internal_rate_hz!r} Hz) must be an integer "
                f"multiple of sample_rate_hz ({self.sample_rate_hz!r} Hz), got ratio {ratio!r}; "
                f"use e.g. {round(ratio) * self.sample_rate_hz!r}"
            )

        _set(
            self,
            "antialias_order",
            _check_int(owner, "antialias_order", self.antialias_order, 1),
        )
        fraction = _check_real(owner, "antialias_cutoff_fraction", self.antialias_cutoff_fraction)
        if not 0.0 < fraction < 0.5:
            raise ValueError(
                f"{owner}.antialias_cutoff_fraction must be in (0, 0.5) of the output rate, "
                f"got {fraction!r}; 0.4 puts the cutoff at 80 % of the output Nyquist frequency"
            )
        _set(self, "antialias_cutoff_fraction", fraction)

        if self.sign_convention not in SIGN_CONVENTIONS:
            raise ValueError(
                f"{owner}.sign_convention must be one of {SIGN_CONVENTIONS}, got "
                f"{self.sign_convention!r}"
            )

        nep = _check_real(owner, "nep_w_per_rthz", self.nep_w_per_rthz)
        if nep < 0.0:
            raise ValueError(f"{owner}.nep_w_per_rthz must be >= 0, got {nep!r}")
        _set(self, "nep_w_per_rthz", nep)

    @property
    def decimation_factor(self):
        """Internal samples per output sample (int)."""
        return int(round(self.internal_rate_hz / self.sample_rate_hz))


_SECTIONS = {
    "environment": EnvironmentConfig,
    "solar_cycle": SolarCycleConfig,
    "detector": DetectorConfig,
    "wafer": WaferConfig,
    "readout": ReadoutConfig,
}


@dataclasses.dataclass(frozen=True)
class MCConfig:
    """Complete configuration of the reference MC.

    Attributes:
        environment (EnvironmentConfig): Particle flux.
        solar_cycle (SolarCycleConfig): phi(t), used when ``environment.mission_date`` is set.
        detector (DetectorConfig): TES island and electrothermal parameters.
        wafer (WaferConfig): Wafer geometry and thermal response.
        readout (ReadoutConfig): Sampling and filtering.
    """

    environment: EnvironmentConfig = dataclasses.field(default_factory=EnvironmentConfig)
    solar_cycle: SolarCycleConfig = dataclasses.field(default_factory=SolarCycleConfig)
    detector: DetectorConfig = dataclasses.field(default_factory=DetectorConfig)
    wafer: WaferConfig = dataclasses.field(default_factory=WaferConfig)
    readout: ReadoutConfig = dataclasses.field(default_factory=ReadoutConfig)

    def __post_init__(self):
        for name, cls in _SECTIONS.items():
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise TypeError(
                    f"MCConfig.{name} must be a {cls.__name__}, got {type(value).__name__}"
                )
        tau_eff = self.detector.tau_eff_s
        tau_wafer = self.wafer.tau_wafer_s
        if abs(tau_wafer - tau_eff) < 1e-3 * max(tau_wafer, tau_eff):
            raise ValueError(
                f"WaferConfig.tau_wafer_s ({tau_wafer!r} s) equals DetectorConfig.tau_eff_s "
                f"({tau_eff!r} s) within 0.1 %; the two-exponential wafer response needs "
                "distinct time constants, so change one of them by a few per cent"
            )
        fastest_s = min(tau_eff, tau_wafer)
        if self.readout.internal_rate_hz < 4.0 / fastest_s:
            warnings.warn(
                f"ReadoutConfig.internal_rate_hz = {self.readout.internal_rate_hz!r} Hz is below "
                f"4 / tau = {4.0 / fastest_s!r} Hz for the fastest time constant; pulses are "
                "resolved by fewer than 4 internal samples per time constant",
                MCWarning,
                stacklevel=3,
            )

    @property
    def phi_gv(self):
        """phi of a run without ``phi_range_gv``, GV: at ``mission_date`` if set, else ``phi_gv``."""
        if self.environment.mission_date is not None:
            return self.solar_cycle.phi_gv(self.environment.mission_date)
        return self.environment.phi_gv

    def to_dict(self):
        """Convert to nested plain dictionaries (JSON-serialisable; tuples become lists)."""
        result = {}
        for name in _SECTIONS:
            section = dataclasses.asdict(getattr(self, name))
            result[name] = {
                key: list(value) if isinstance(value, tuple) else value
                for key, value in section.items()
            }
        return result

    @classmethod
    def from_dict(cls, data):
        """Build a configuration from nested dictionaries; missing keys take defaults.

        Args:
            data (dict): ``{"environment": {...}, "solar_cycle": {...}, "detector": {...},
                "wafer": {...}, "readout": {...}}``; any section may be left out.

        Returns:
            MCConfig: The validated configuration.

        Raises:
            TypeError: ``data`` or a section is not a mapping.
            ValueError: Unknown section or key, or a value fails validation.
        """
        if not isinstance(data, dict):
            raise TypeError(f"MC configuration must be a dict of sections, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_SECTIONS))
        if unknown:
            raise ValueError(
                f"unknown MC configuration section(s) {unknown}; valid sections are "
                f"{sorted(_SECTIONS)}"
            )
        sections = {}
        for name, section_cls in _SECTIONS.items():
            values = data.get(name, {})
            if not isinstance(values, dict):
                raise TypeError(
                    f"MC configuration section [{name}] must be a table of keys, got "
                    f"{type(values).__name__}"
                )
            valid = {field.name for field in dataclasses.fields(section_cls)}
            bad = sorted(set(values) - valid)
            if bad:
                raise ValueError(
                    f"unknown key(s) {bad} in section [{name}]; valid keys are {sorted(valid)}"
                )
            values = dict(values)
            for key, value in values.items():
                if isinstance(value, list):
                    values[key] = tuple(value)
            sections[name] = section_cls(**values)
        return cls(**sections)

    @classmethod
    def from_toml(cls, path):
        """Read a configuration from a TOML file with sections as in ``from_dict``.

        Raises:
            FileNotFoundError: The file does not exist.
            ValueError: The file is not valid TOML or contains invalid values.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"MC configuration file not found: {str(path)!r}")
        with path.open("rb") as handle:
            try:
                data = tomllib.load(handle)
            except tomllib.TOMLDecodeError as error:
                raise ValueError(f"invalid TOML in {str(path)!r}: {error}") from error
        return cls.from_dict(data)
