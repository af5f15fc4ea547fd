"""Validation and normal forms of the values the catalog stores.

One place decides what a SHA-256, a tag name and a colour look like, so the
CRUD facade, the importer and the worker can never disagree.
"""

from __future__ import annotations

import colorsys
import math
import re
from pathlib import PureWindowsPath

from modelvault.errors import ValidationError

_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_TAG_NAME = 200

# CSS Color Module Level 4 named colours, so a tag the legacy app stored as
# "red" keeps being red.
CSS_COLORS: dict[str, str] = {
    "aliceblue": "#f0f8ff",
    "antiquewhite": "#faebd7",
    "aqua": "#00ffff",
    "aquamarine": "#7fffd4",
    "azure": "#f0ffff",
    "beige": "#f5f5dc",
    "bisque": "#ffe4c4",
    "black": "#000000",
    "blanchedalmond": "#ffebcd",
    "blue": "#0000ff",
    "blueviolet": "#8a2be2",
    "brown": "#a52a2a",
    "burlywood": "#deb887",
    "cadetblue": "#5f9ea0",
    "chartreuse": "#7fff00",
    "chocolate": "#d2691e",
    "coral": "#ff7f50",
    "cornflowerblue": "#6495ed",
    "cornsilk": "#fff8dc",
    "crimson": "#dc143c",
    "cyan": "#00ffff",
    "darkblue": "#00008b",
    "darkcyan": "#008b8b",
    "darkgoldenrod": "#b8860b",
    "darkgray": "#a9a9a9",
    "darkgreen": "#006400",
    "darkgrey": "#a9a9a9",
    "darkkhaki": "#bdb76b",
    "darkmagenta": "#8b008b",
    "darkolivegreen": "#556b2f",
    "darkorange": "#ff8c00",
    "darkorchid": "#9932cc",
    "darkred": "#8b0000",
    "darksalmon": "#e9967a",
    "darkseagreen": "#8fbc8f",
    "darkslateblue": "#483d8b",
    "darkslategray": "#2f4f4f",
    "darkslategrey": "#2f4f4f",
    "darkturquoise": "#00ced1",
    "darkviolet": "#9400d3",
    "deeppink": "#ff1493",
    "deepskyblue": "#00bfff",
    "dimgray": "#696969",
    "dimgrey": "#696969",
    "dodgerblue": "#1e90ff",
    "firebrick": "#b22222",
    "floralwhite": "#fffaf0",
    "forestgreen": "#228b22",
    "fuchsia": "#ff00ff",
    "gainsboro": "#dcdcdc",
    "ghostwhite": "#f8f8ff",
    "gold": "#ffd700",
    "goldenrod": "#daa520",
    "gray": "#808080",
    "green": "#008000",
    "greenyellow": "#adff2f",
    "grey": "#808080",
    "honeydew": "#f0fff0",
    "hotpink": "#ff69b4",
    "indianred": "#cd5c5c",
    "indigo": "#4b0082",
    "ivory": "#fffff0",
    "khaki": "#f0e68c",
    "lavender": "#e6e6fa",
    "lavenderblush": "#fff0f5",
    "lawngreen": "#7cfc00",
    "lemonchiffon": "#fffacd",
    "lightblue": "#add8e6",
    "lightcoral": "#f08080",
    "lightcyan": "#e0ffff",
    "lightgoldenrodyellow": "#fafad2",
    "lightgray": "#d3d3d3",
    "lightgreen": "#90ee90",
    "lightgrey": "#d3d3d3",
    "lightpink": "#ffb6c1",
    "lightsalmon": "#ffa07a",
    "lightseagreen": "#20b2aa",
    "lightskyblue": "#87cefa",
    "lightslategray": "#778899",
    "lightslategrey": "#778899",
    "lightsteelblue": "#b0c4de",
    "lightyellow": "#ffffe0",
    "lime": "#00ff00",
    "limegreen": "#32cd32",
    "linen": "#faf0e6",
    "magenta": "#ff00ff",
    "maroon": "#800000",
    "mediumaquamarine": "#66cdaa",
    "mediumblue": "#0000cd",
    "mediumorchid": "#ba55d3",
    "mediumpurple": "#9370db",
    "mediumseagreen": "#3cb371",
    "mediumslateblue": "#7b68ee",
    "mediumspringgreen": "#00fa9a",
    "mediumturquoise": "#48d1cc",
    "mediumvioletred": "#c71585",
    "midnightblue": "#191970",
    "mintcream": "#f5fffa",
    "mistyrose": "#ffe4e1",
    "moccasin": "#ffe4b5",
    "navajowhite": "#ffdead",
    "navy": "#000080",
    "oldlace": "#fdf5e6",
    "olive": "#808000",
    "olivedrab": "#6b8e23",
    "orange": "#ffa500",
    "orangered": "#ff4500",
    "orchid": "#da70d6",
    "palegoldenrod": "#eee8aa",
    "palegreen": "#98fb98",
    "paleturquoise": "#afeeee",
    "palevioletred": "#db7093",
    "papayawhip": "#ffefd5",
    "peachpuff": "#ffdab9",
    "peru": "#cd853f",
    "pink": "#ffc0cb",
    "plum": "#dda0dd",
    "powderblue": "#b0e0e6",
    "purple": "#800080",
    "rebeccapurple": "#663399",
    "red": "#ff0000",
    "rosybrown": "#bc8f8f",
    "royalblue": "#4169e1",
    "saddlebrown": "#8b4513",
    "salmon": "#fa8072",
    "sandybrown": "#f4a460",
    "seagreen": "#2e8b57",
    "seashell": "#fff5ee",
    "sienna": "#a0522d",
    "silver": "#c0c0c0",
    "skyblue": "#87ceeb",
    "slateblue": "#6a5acd",
    "slategray": "#708090",
    "slategrey": "#708090",
    "snow": "#fffafa",
    "springgreen": "#00ff7f",
    "steelblue": "#4682b4",
    "tan": "#d2b48c",
    "teal": "#008080",
    "thistle": "#d8bfd8",
    "tomato": "#ff6347",
    "turquoise": "#40e0d0",
    "violet": "#ee82ee",
    "wheat": "#f5deb3",
    "white": "#ffffff",
    "whitesmoke": "#f5f5f5",
    "yellow": "#ffff00",
    "yellowgreen": "#9acd32",
}


def parse_sha256(value: object) -> str | None:
    """The lower-case SHA-256 in ``value``, or None if it is not exactly 64 hex digits."""
    if not isinstance(value, str):
        return None
    candidate = value.strip().lower()
    return candidate if _SHA256.fullmatch(candidate) else None


def normalize_sha256(value: object) -> str:
    """Like ``parse_sha256`` but raises ``ValidationError`` for anything unusable."""
    sha = parse_sha256(value)
    if sha is None:
        raise ValidationError(f"{value!r} is not a SHA-256: expected 64 hexadecimal characters.")
    return sha


def parse_color(value: object) -> str | None:
    """``#rrggbb`` for a CSS colour: ``#rrggbb``, ``#rgb``, ``#rrggbbaa``, ``#rgba``
    (``#`` optional), a CSS name, ``rgb()``/``rgba()``/``hsl()``/``hsla()`` in
    comma or space syntax with numbers or percentages; any case. Alpha is
    dropped. None for anything else."""
    read = read_color(value)
    return None if read is None else read[0]


def read_color(value: object) -> tuple[str, bool] | None:
    """``(#rrggbb, exact)`` for what ``parse_color`` reads, or None. ``exact`` is
    False when ``#rrggbb`` does not say all the value said: an alpha below 1, or
    channels that had to be rounded or clamped (an ``hsl()`` colour, a
    percentage, a fraction), so a caller can keep the value as it was."""
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    if text in CSS_COLORS:
        return CSS_COLORS[text], True
    function = _COLOR_FUNCTION.fullmatch(text)
    if function is not None:
        return _color_function(function.group(1), function.group(2))
    digits = text[1:] if text.startswith("#") else text
    # Without "#", only 3 or 6 digits: "face" or "deadbeef" may be words.
    lengths = (3, 4, 6, 8) if text.startswith("#") else (3, 6)
    if not _HEX.fullmatch(digits) or len(digits) not in lengths:
        return None
    if len(digits) in (3, 4):
        digits = "".join(ch * 2 for ch in digits)
    return "#" + digits[:6], digits[6:] in ("", "ff")


_HEX = re.compile(r"[0-9a-f]+")
_COLOR_FUNCTION = re.compile(r"(rgba?|hsla?)\(\s*([^()]*?)\s*\)")
_NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)(%|deg|grad|rad|turn)?")
_TURN = {None: 1.0, "deg": 1.0, "grad": 0.9, "rad": 180 / math.pi, "turn": 360.0}


def _color_function(name: str, args: str) -> tuple[str, bool] | None:
    """An ``rgb()``/``hsl()`` colour (CSS Color 4: legacy comma or modern space syntax)."""
    if "," in args:
        parts = [part.strip() for part in args.split(",")]
        channels, alpha = parts[:3], (parts[3] if len(parts) == 4 else None)
        if len(parts) not in (3, 4) or "/" in args:
            return None
    else:
        main, slash, after = args.partition("/")
        channels, alpha = main.split(), (after.strip() if slash else None)
    numbers = [_NUMBER.fullmatch(part) for part in channels]
    opacity = _alpha(alpha)
    if len(channels) != 3 or opacity is None or not all(numbers):
        return None
    values = [(float(n.group(1)), n.group(2)) for n in numbers if n is not None]
    rgb = _rgb(values) if name.startswith("rgb") else _hsl(values)
    if rgb is None:
        return None
    exact = (
        opacity >= 1.0
        and name.startswith("rgb")
        and all(
            unit is None and number.is_integer() and 0 <= number <= 255 for number, unit in values
        )
    )
    return "#" + "".join(f"{channel:02x}" for channel in rgb), exact


def _alpha(text: str | None) -> float | None:
    if text is None:
        return 1.0
    number = _NUMBER.fullmatch(text)
    if number is None or number.group(2) not in (None, "%"):
        return None
    value = float(number.group(1)) / (100 if number.group(2) else 1)
    return min(max(value, 0.0), 1.0)


def _rgb(values: list[tuple[float, str | None]]) -> list[int] | None:
    if any(unit not in (None, "%") for _, unit in values):
        return None
    return [_channel(number * 255 / 100 if unit else number) for number, unit in values]


def _hsl(values: list[tuple[float, str | None]]) -> list[int] | None:
    (hue, hue_unit), (sat, sat_unit), (light, light_unit) = values
    if hue_unit == "%" or sat_unit not in (None, "%") or light_unit not in (None, "%"):
        return None
    turn = (hue * _TURN[hue_unit] / 360) % 1.0
    s, lightness = (min(max(v / 100, 0.0), 1.0) for v in (sat, light))
    return [_channel(c * 255) for c in colorsys.hls_to_rgb(turn, lightness, s)]


def _channel(value: float) -> int:
    """A channel rounded half up and clamped to 0..255, as CSS does (the epsilon
    undoes float error: 25% lightness is 127.5, which floats make 127.4999...)."""
    return min(max(math.floor(value + 0.5 + 1e-9), 0), 255)


def normalize_color(value: str | None) -> str | None:
    """A colour in normal form; None and ``''`` mean "no colour"; junk raises."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    color = parse_color(value)
    if color is None:
        raise ValidationError(
            f"{value!r} is not a colour: use #rrggbb, #rgb, rgb(), hsl() or a CSS colour name."
        )
    return color


def normalize_tag_name(value: object) -> str:
    """Tag names are stored trimmed and lower-case; empty names are refused."""
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{value!r} is not a tag name: give a non-empty text.")
    name = value.strip().lower()
    if len(name) > MAX_TAG_NAME:
        raise ValidationError(
            f"tag name {name[:40]!r}... is {len(name)} characters long: the most is {MAX_TAG_NAME}."
        )
    return name


RELATIVE_PATH = (
    "its path is relative, and nothing says what to: it is never looked up from the "
    "current folder (give the file's absolute path)"
)


def is_absolute_path(path: str) -> bool:
    """Absolute on some OS (``/a/b``, ``C:\\a``, ``\\\\server\\share``): the legacy app
    wrote absolute, OS-native paths; a relative one is never resolved against
    the current folder."""
    # startswith("/") is PurePosixPath(path).is_absolute(), at a fraction of the cost.
    return path.startswith("/") or PureWindowsPath(path).is_absolute()


MAX_TYPE = 64  # the width of the type columns


def normalize_type(value: object) -> str:
    """Model types are lower-case words; a missing type is ``other``."""
    if not isinstance(value, str) or not value.strip():
        return "other"
    return value.strip().lower()


# ComfyUI's folder kinds (the keys of its folder_paths and extra_model_paths.yaml,
# and the folders under models/) and the model type each holds. ComfyUI keeps
# some folders under one kind (models/clip and models/text_encoders are both
# ``text_encoders``; unet and diffusion_models; t2i_adapter and controlnet): so
# does the catalog. Kinds ComfyUI keeps apart stay apart (upscale_models and
# latent_upscale_models). The last group are the folders popular custom nodes
# register. The legacy app stored the folder name itself as the type.
COMFYUI_FOLDER_TYPES: dict[str, str] = {
    "checkpoints": "checkpoint",
    "loras": "lora",
    "vae": "vae",
    "text_encoders": "text_encoder",
    "clip": "text_encoder",
    "diffusion_models": "diffusion_model",
    "unet": "diffusion_model",
    "clip_vision": "clip_vision",
    "style_models": "style_model",
    "embeddings": "embedding",
    "diffusers": "diffusers",
    "vae_approx": "vae_approx",
    "controlnet": "controlnet",
    "t2i_adapter": "controlnet",
    "gligen": "gligen",
    "upscale_models": "upscale",
    "latent_upscale_models": "latent_upscale",
    "hypernetworks": "hypernetwork",
    "photomaker": "photomaker",
    "classifiers": "classifier",
    "model_patches": "model_patch",
    "audio_encoders": "audio_encoder",
    "background_removal": "background_removal",
    "frame_interpolation": "frame_interpolation",
    "geometry_estimation": "geometry_estimation",
    "optical_flow": "optical_flow",
    "detection": "detection",
    # custom nodes' folders
    "ultralytics": "ultralytics",
    "ultralytics_bbox": "ultralytics",
    "ultralytics_segm": "ultralytics",
    "sams": "sam",
    "ipadapter": "ipadapter",
    "animatediff_models": "animatediff",
    "animatediff_motion_lora": "animatediff_motion_lora",
    "insightface": "insightface",
    "lycoris": "lora",  # LyCORIS files load as LoRAs
    "textual_inversion": "embedding",
}

# The model folders of AUTOMATIC1111's web UI and its forks (stable-diffusion-webui/
# models/<folder>, and embeddings/ beside models/), matched without regard to case,
# for folders given to the scan as they are.
A1111_FOLDER_TYPES: dict[str, str] = {
    "stable-diffusion": "checkpoint",
    "lora": "lora",
    "lycoris": "lora",
    "vae": "vae",
    "vae-approx": "vae_approx",
    "esrgan": "upscale",
    "realesrgan": "upscale",
    "swinir": "upscale",
    "embeddings": "embedding",
    "hypernetworks": "hypernetwork",
    "controlnet": "controlnet",
}

KNOWN_FOLDER_TYPES: dict[str, str] = {**A1111_FOLDER_TYPES, **COMFYUI_FOLDER_TYPES}


def known_folder_type(folder: str) -> str | None:
    """The model type of a folder ComfyUI or the A1111 web UI knows by this name
    (``loras``, ``Lora``, ``Stable-diffusion``, ...), or None."""
    return KNOWN_FOLDER_TYPES.get(folder.strip().lower())


def model_type_for_folder(folder: object) -> str:
    """The model type of a model folder's name (``loras`` -> ``lora``,
    ``Stable-diffusion`` -> ``checkpoint``).

    A name ComfyUI does not know is kept as a type of its own (lower-case,
    trimmed), so nothing the user named is lost; no name at all is ``other``.
    """
    kind = normalize_type(folder)
    return KNOWN_FOLDER_TYPES.get(kind, kind)
