"""A procedural chest radiograph: anatomy, findings drawn as their radiographic signs, and acquisition.

Rendering works on an attenuation map (0 = air outside the body, about 1 = soft tissue, above 1.5 = metal) in
normalised coordinates: ``y`` runs from -1 (top) to 1 (bottom) over the image height and ``x`` uses the same
unit, 0 at the image centre. Image left is the patient's right, as on a PA film. Every step is a handful of
vectorised numpy operations on arrays broadcast from (H, 1) and (1, W) vectors, so one 256 px image costs a
few milliseconds.

The signs follow the textbook descriptions: cardiothoracic ratio above 0.5 for cardiomegaly, basal fluid with
a meniscus rising towards the lateral chest wall for pleural effusion, bilateral perihilar haze for edema,
dense lobar patches with air bronchograms for consolidation, plate-like band opacities with volume loss
(raised hemidiaphragm, mediastinal shift) for atelectasis. A sign's ``strength`` in [0, 1] scales it: 0 is
absent, about 0.2-0.45 is the ambiguous picture that reports call uncertain, 0.6-1 is clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

#: The findings the phantom can draw, in the paper's label order.
DRAWN_FINDINGS: tuple[str, ...] = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

Array = np.ndarray

# 5 x 7 bitmaps of the laterality markers; drawn with np.kron, so no font file is needed.
_GLYPHS: dict[str, Array] = {
    "L": np.array([[1, 0, 0, 0, 0]] * 6 + [[1, 1, 1, 1, 1]], dtype=bool),
    "R": np.array(
        [
            [1, 1, 1, 1, 0],
            [1, 0, 0, 0, 1],
            [1, 0, 0, 0, 1],
            [1, 1, 1, 1, 0],
            [1, 0, 1, 0, 0],
            [1, 0, 0, 1, 0],
            [1, 0, 0, 0, 1],
        ],
        dtype=bool,
    ),
}


@dataclass(frozen=True)
class FrontalGeometry:
    """The anatomy of one frontal view, in normalised units (half the image height is 1).

    The cardiothoracic ratio is the widest horizontal heart diameter over the widest inner thorax diameter
    (between the lateral lung margins), the radiologist's measure on a PA film.
    """

    midline: float
    thorax_half_width: float
    mediastinum_half_width: float
    heart_half_width: float
    heart_half_height: float
    heart_offset: float
    lung_top: float
    diaphragm_right: float
    diaphragm_left: float

    @property
    def cardiothoracic_ratio(self) -> float:
        """Heart width / thorax width; above 0.5 reads as cardiomegaly."""
        return self.heart_half_width / self.thorax_half_width

    @property
    def heart_center(self) -> tuple[float, float]:
        """(x, y) of the heart ellipse: left of the patient (image right), resting on the diaphragm."""
        return (self.midline + self.heart_offset, self.diaphragm_left - 0.7 * self.heart_half_height)


def cardiothoracic_ratio(strength: float, rng: np.random.Generator) -> float:
    """The ratio drawn for a cardiomegaly sign of ``strength`` (0: normal heart, 0.36-0.47).

    A clear sign (strength >= 0.6) gives 0.56-0.64; an ambiguous one (0.2-0.45) 0.48-0.53, the borderline
    hearts that reports hedge on.
    """
    return 0.44 + 0.2 * strength if strength > 0 else float(rng.uniform(0.36, 0.47))


def frontal_geometry(rng: np.random.Generator, signs: Mapping[str, float], atelectasis_side: int) -> FrontalGeometry:
    """Sample a body and place the heart; atelectasis pulls its hemidiaphragm up and the mediastinum over.

    Args:
        rng: the image's generator.
        signs: finding -> strength in [0, 1].
        atelectasis_side: -1 patient's right (image left), +1 patient's left.
    """
    thorax = float(rng.uniform(0.6, 0.72))
    atel = signs.get("Atelectasis", 0.0)
    midline = float(rng.normal(0.0, 0.025)) + 0.05 * atel * atelectasis_side
    base = float(rng.uniform(0.42, 0.55))
    lift_right = 0.12 * atel if atelectasis_side < 0 else 0.0
    lift_left = 0.12 * atel if atelectasis_side > 0 else 0.0
    heart = cardiothoracic_ratio(signs.get("Cardiomegaly", 0.0), rng) * thorax
    return FrontalGeometry(
        midline=midline,
        thorax_half_width=thorax,
        mediastinum_half_width=float(rng.uniform(0.09, 0.12)),
        heart_half_width=heart,
        heart_half_height=heart * float(rng.uniform(0.68, 0.8)),
        heart_offset=0.3 * heart,
        lung_top=float(rng.uniform(-0.82, -0.72)),
        diaphragm_right=base - 0.04 - lift_right,
        diaphragm_left=base - lift_left,
    )


def grid(shape: tuple[int, int]) -> tuple[Array, Array]:
    """Normalised coordinates: x as a (1, W) row and y as an (H, 1) column, float32."""
    height, width = shape
    half = height / 2.0
    x = ((np.arange(width, dtype=np.float32) + 0.5 - width / 2.0) / half)[None, :]
    y = ((np.arange(height, dtype=np.float32) + 0.5 - half) / half)[:, None]
    return x, y


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> Array:
    """Low-frequency texture in about [-1, 1]: a ``cells``-wide random grid upsampled bicubically."""
    coarse = rng.standard_normal((cells, cells)).astype(np.float32)
    return cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _soft(value: Array, sharpness: float) -> Array:
    # A ramp from 0 to 1 over 1/sharpness units: anti-aliased masks without per-pixel branching.
    return np.clip(value * sharpness, 0.0, 1.0)


def _band(x: Array, y: Array, point: tuple[float, float], angle: float, width: float) -> Array:
    """1 on the line through ``point`` at ``angle`` (radians), falling to 0 at ``width``."""
    dist = np.abs((x - point[0]) * np.sin(angle) - (y - point[1]) * np.cos(angle))
    return _soft(1.0 - dist / width, 1.0)


def frontal_masks(geometry: FrontalGeometry, shape: tuple[int, int]) -> dict[str, Array]:
    """Soft masks in [0, 1] of the lungs, heart, mediastinum and body; the renderer and tests share them."""
    x, y = grid(shape)
    g = geometry
    side = np.where(x < g.midline, -1.0, 1.0).astype(np.float32)
    lung_half = (g.thorax_half_width - g.mediastinum_half_width) / 2.0
    lung_cx = g.midline + side * (g.mediastinum_half_width + lung_half)
    diaphragm = np.where(side < 0, g.diaphragm_right, g.diaphragm_left).astype(np.float32)
    across = (x - lung_cx) / lung_half  # -1..1 across each lung, (1, W)
    dome = diaphragm - 0.12 * np.clip(1.0 - across**2, 0.0, 1.0)
    lung_cy = (g.lung_top + g.diaphragm_left) / 2.0
    lung_half_h = (g.diaphragm_left - g.lung_top) / 2.0 + 0.1
    ellipse = across**2 + ((y - lung_cy) / lung_half_h) ** 2
    lungs = _soft(1.0 - ellipse, 8.0) * _soft(dome - y, 40.0)
    hx, hy = g.heart_center
    heart = _soft(1.0 - ((x - hx) / g.heart_half_width) ** 2 - ((y - hy) / g.heart_half_height) ** 2, 10.0)
    mediastinum = _soft(1.0 - np.abs(x - g.midline) / g.mediastinum_half_width, 6.0) * _soft(
        np.float32(g.diaphragm_left) - y, 20.0
    )
    body = _soft(1.0 - np.abs(x - g.midline) / (g.thorax_half_width + 0.13), 12.0) * np.ones_like(y)
    return {"lungs": lungs * (1.0 - heart), "heart": heart, "mediastinum": mediastinum, "body": body}


def _effusion(x: Array, y: Array, g: FrontalGeometry, side: int, strength: float, meniscus: float) -> Array:
    """Basal fluid under a meniscus that climbs the lateral chest wall, on one side (-1 right, +1 left)."""
    lung_half = (g.thorax_half_width - g.mediastinum_half_width) / 2.0
    lung_cx = g.midline + side * (g.mediastinum_half_width + lung_half)
    lateral = np.clip((x - lung_cx) * side / lung_half, 0.0, 1.0)
    base = g.diaphragm_right if side < 0 else g.diaphragm_left
    level = base - 0.14 - 0.35 * strength - meniscus * strength * lateral**2
    on_side = _soft((x - g.midline) * side, 40.0)
    return _soft(y - level, 25.0) * on_side


def render_frontal(
    rng: np.random.Generator,
    signs: Mapping[str, float],
    shape: tuple[int, int],
    *,
    device: bool = False,
    meniscus: float = 0.25,
) -> tuple[Array, FrontalGeometry]:
    """Attenuation map of a frontal chest film with the given signs.

    Args:
        rng: the image's generator (every random choice comes from it).
        signs: finding -> strength in [0, 1]; missing findings are absent.
        shape: (H, W) in pixels.
        device: draw a pacemaker (generator over the left upper chest, lead to the heart).
        meniscus: how far the effusion surface climbs laterally (0: flat, layering fluid).

    Returns:
        float32 [H, W] attenuation and the geometry used.
    """
    side = int(rng.choice([-1, 1]))
    geometry = frontal_geometry(rng, signs, side)
    g = geometry
    x, y = grid(shape)
    masks = frontal_masks(geometry, shape)
    lungs = masks["lungs"]
    texture = smooth_noise(rng, shape, 14)
    spine = _soft(1.0 - np.abs(x - g.midline) / 0.07, 5.0) * np.ones_like(y)
    ribs = _soft(np.sin((y + 0.45 * np.abs(x - g.midline)) * (2 * np.pi / 0.16) + rng.uniform(0, 6.3)) - 0.55, 4.0)
    attenuation = (
        masks["body"]
        + 0.3 * masks["mediastinum"]
        + 0.2 * spine
        + 0.35 * masks["heart"]
        - lungs * (0.72 - 0.05 * texture - 0.14 * ribs)
    )
    lesion = np.zeros(shape, dtype=np.float32)
    if (s := signs.get("Pleural Effusion", 0.0)) > 0:
        sides = [side] if rng.random() < 0.55 else [-1, 1]
        for effusion_side in sides:
            lesion += 0.75 * _effusion(x, y, g, effusion_side, s, meniscus)
    if (s := signs.get("Edema", 0.0)) > 0:
        hilum_y = (g.lung_top + g.diaphragm_left) / 2.0 + 0.12
        haze = np.exp(-(((np.abs(x - g.midline) - 0.2) / 0.2) ** 2)) * np.exp(-(((y - hilum_y) / 0.32) ** 2))
        lesion += 0.55 * s * haze * (0.8 + 0.5 * smooth_noise(rng, shape, 24))
    if (s := signs.get("Consolidation", 0.0)) > 0:
        patch_side = int(rng.choice([-1, 1]))
        center = (
            g.midline + patch_side * rng.uniform(0.25, 0.45) * g.thorax_half_width * 1.4,
            float(rng.uniform(g.lung_top + 0.3, g.diaphragm_left - 0.15)),
        )
        radius = float(rng.uniform(0.12, 0.2))
        patch = _soft(1.0 - ((x - center[0]) / radius) ** 2 - ((y - center[1]) / (radius * 1.3)) ** 2, 2.5)
        patch = patch * (0.75 + 0.35 * texture)
        bronchus = _band(x, y, center, float(rng.uniform(0.9, 1.4)) * patch_side, 0.012)
        lesion += 0.7 * s * patch * (1.0 - 0.6 * bronchus)
    if (s := signs.get("Atelectasis", 0.0)) > 0:
        base = g.diaphragm_right if side < 0 else g.diaphragm_left
        point = (g.midline + side * g.thorax_half_width * 0.55, base - rng.uniform(0.15, 0.3))
        on_side = _soft((x - g.midline) * side, 40.0)
        lesion += 0.7 * s * _band(x, y, point, float(rng.uniform(-0.25, 0.25)), 0.045) * on_side
    attenuation += lesion * lungs
    if device:
        attenuation += _pacemaker(x, y, g, rng)
    return attenuation, geometry


def _pacemaker(x: Array, y: Array, g: FrontalGeometry, rng: np.random.Generator) -> Array:
    """A metal generator under the left clavicle and its lead running to the right ventricle."""
    cx = g.midline + g.thorax_half_width * float(rng.uniform(0.55, 0.75))
    cy = g.lung_top + float(rng.uniform(0.05, 0.15))
    can = _soft(1.0 - ((x - cx) / 0.075) ** 4 - ((y - cy) / 0.055) ** 4, 6.0)
    hx, hy = g.heart_center
    angle = float(np.arctan2(hy - cy, hx - g.heart_half_width * 0.3 - cx))
    along = (x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)
    length = float(np.hypot(hy - cy, hx - g.heart_half_width * 0.3 - cx))
    lead = _band(x, y, (cx, cy), angle, 0.012) * _soft(along, 50.0) * _soft(length - along, 50.0)
    return 1.6 * np.maximum(can, lead)


def render_lateral(
    rng: np.random.Generator, signs: Mapping[str, float], shape: tuple[int, int], *, device: bool = False
) -> Array:
    """A simpler lateral view: anterior is image left, spine on the right, heart anterior-inferior.

    The same signs appear in their lateral form: a larger cardiac shadow, fluid in the posterior
    costophrenic sulcus, central haze, a dense patch, a band with a raised diaphragm.
    """
    x, y = grid(shape)
    cx = float(rng.normal(0.0, 0.03))
    depth = float(rng.uniform(0.55, 0.68))
    top = float(rng.uniform(-0.8, -0.7))
    base = float(rng.uniform(0.4, 0.52)) - 0.1 * signs.get("Atelectasis", 0.0)
    body = _soft(1.0 - np.abs(x - cx) / (depth + 0.12), 12.0) * np.ones_like(y)
    dome = base - 0.15 * np.clip(1.0 - ((x - cx) / depth) ** 2, 0.0, 1.0)
    lung = _soft(1.0 - ((x - cx) / depth) ** 2 - ((y - (top + base) / 2) / ((base - top) / 2 + 0.1)) ** 2, 6.0)
    lung = lung * _soft(dome - y, 40.0)
    ratio = cardiothoracic_ratio(signs.get("Cardiomegaly", 0.0), rng)
    heart_r = 0.55 * ratio * depth * 1.6
    heart = _soft(1.0 - ((x - cx + depth * 0.45) / heart_r) ** 2 - ((y - base + heart_r * 0.6) / heart_r) ** 2, 8.0)
    spine = _soft(1.0 - np.abs(x - cx - depth * 0.85) / 0.1, 5.0) * np.ones_like(y)
    lungs = lung * (1.0 - heart)
    texture = smooth_noise(rng, shape, 12)
    attenuation = body + 0.35 * heart + 0.3 * spine - lungs * (0.68 - 0.05 * texture)
    lesion = np.zeros(shape, dtype=np.float32)
    if (s := signs.get("Pleural Effusion", 0.0)) > 0:
        posterior = np.clip((x - cx) / depth, 0.0, 1.0)
        lesion += 0.75 * _soft(y - (base - 0.12 - 0.3 * s - 0.25 * s * posterior**2), 25.0) * _soft(x - cx, 20.0)
    if (s := signs.get("Edema", 0.0)) > 0:
        lesion += 0.45 * s * np.exp(-(((x - cx) / 0.3) ** 2) - ((y - (top + base) / 2 - 0.1) / 0.3) ** 2)
    if (s := signs.get("Consolidation", 0.0)) > 0:
        px, py, r = float(rng.uniform(-0.3, 0.3)) + cx, float(rng.uniform(top + 0.3, base - 0.2)), 0.17
        lesion += 0.65 * s * _soft(1.0 - ((x - px) / r) ** 2 - ((y - py) / r) ** 2, 2.5) * (0.8 + 0.3 * texture)
    if (s := signs.get("Atelectasis", 0.0)) > 0:
        lesion += 0.6 * s * _band(x, y, (cx, base - 0.25), float(rng.uniform(-0.5, -0.2)), 0.045)
    attenuation += lesion * lungs
    if device:
        attenuation += 1.6 * _soft(1.0 - ((x - cx + depth * 0.8) / 0.05) ** 2 - ((y - top - 0.1) / 0.07) ** 2, 6.0)
    return attenuation


@dataclass(frozen=True)
class Acquisition:
    """How one hospital's equipment and habits turn attenuation into pixels.

    Attributes:
        gamma: exponent of the display curve applied after windowing (<1 brightens the lungs).
        window: attenuation mapped to black and to white.
        noise: standard deviation of additive quantum noise, in [0, 1] intensity units.
        blur: Gaussian sigma of the detector blur, in pixels of a 256 px image (scaled with size).
        resolution: the detector samples at this fraction of the output size; pixels are upsampled.
        marker: laterality letter stamped on frontal views ("L" or "R").
        marker_corner: "tl", "tr", "bl" or "br".
        collimation: largest collimator border, as a fraction of the image side (0: none).
        collimation_value: intensity of the collimated border (0 black, 1 white).
        jitter: per-image spread of gamma, window and noise (log-normal sigma).
    """

    gamma: float
    window: tuple[float, float]
    noise: float
    blur: float
    resolution: float
    marker: str
    marker_corner: str
    collimation: float
    collimation_value: float
    jitter: float = 0.08


def detector_shape(acquisition: Acquisition, shape: tuple[int, int]) -> tuple[int, int]:
    """The (H, W) the detector samples for an output of ``shape``; render the phantom at this size."""
    return (max(16, round(shape[0] * acquisition.resolution)), max(16, round(shape[1] * acquisition.resolution)))


def acquire(
    attenuation: Array, acquisition: Acquisition, rng: np.random.Generator, *, frontal: bool, shape: tuple[int, int],
    levels: int = 255,
) -> Array:
    """Pixels (uint8 ``shape``) from an attenuation map at detector size: window, gamma, upsampling, blur,
    noise, marker, collimation. ``levels`` above 255 (4095: a 12-bit detector) gives uint16 pixels."""
    a = acquisition
    height, width = shape
    spread = np.exp(rng.normal(0.0, a.jitter, size=3))
    low, high = a.window[0], a.window[0] + (a.window[1] - a.window[0]) * float(spread[0])
    image = cv2.pow(np.clip((attenuation - low) / (high - low), 0.0, 1.0), a.gamma * float(spread[1]))
    if image.shape != shape:
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    if a.blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), a.blur * height / 256.0)
    image = image + rng.standard_normal(image.shape, dtype=np.float32) * np.float32(a.noise * spread[2])
    if frontal:
        _stamp(image, a.marker, a.marker_corner, rng)
    if a.collimation > 0:
        _collimate(image, a.collimation, a.collimation_value, rng)
    if levels > 255:
        return (np.clip(image, 0.0, 1.0) * float(levels) + 0.5).astype(np.uint16)
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _stamp(image: Array, letter: str, corner: str, rng: np.random.Generator) -> None:
    """Burn a radiographer's lead marker letter into a corner, in place."""
    height, width = image.shape
    scale = max(1, height // 64)
    glyph = np.kron(_GLYPHS[letter], np.ones((scale, scale), dtype=bool))
    margin = scale * 3 + int(rng.integers(0, scale * 3 + 1))
    top = margin if corner[0] == "t" else height - margin - glyph.shape[0]
    left = margin if corner[1] == "l" else width - margin - glyph.shape[1]
    image[top : top + glyph.shape[0], left : left + glyph.shape[1]][glyph] = 0.97


def _collimate(image: Array, largest: float, value: float, rng: np.random.Generator) -> None:
    """Flat borders where the collimator blocked the beam, a random width on each side, in place."""
    height, width = image.shape
    top, bottom, left, right = (rng.uniform(0.0, largest, size=4) * np.array([height, height, width, width])).astype(
        int
    )
    image[:top] = value
    image[height - bottom :] = value
    image[:, :left] = value
    image[:, width - right :] = value
