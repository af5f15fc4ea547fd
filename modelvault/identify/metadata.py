"""What a file's own metadata says: its base model, kind, trigger words, resolution, title.

Kohya's trainers (sd-scripts, musubi-tuner) write ``ss_*`` keys
(``ss_base_model_version``, ``ss_sd_model_name``, ``ss_v2``,
``ss_network_module``, ``ss_tag_frequency``, ``ss_resolution``,
``ss_output_name``); Stability's ModelSpec writes ``modelspec.*``
(``modelspec.architecture`` such as ``stable-diffusion-xl-v1-base/lora``,
``modelspec.title``, ``modelspec.trigger_phrase``, ``modelspec.resolution``);
a GGUF made for ComfyUI says ``general.architecture``. Every value is read
with care: a malformed one is passed over, never trusted.
"""

from __future__ import annotations

import heapq
import json
import re
from collections import Counter
from collections.abc import Mapping

from modelvault.identify.parsing import MetaValue

# Identity.trigger_words takes at most this many of ss_tag_frequency's most frequent tags.
TOP_TAGS = 10
MAX_WORD = 100  # characters of one trigger word or phrase
MAX_TITLE = 200
MAX_TAG_FREQUENCY = 8 * 1024 * 1024  # characters of ss_tag_frequency parsed for tags
# Identity.training: all metadata keys, each value cut to VALUE_CAP characters, the
# whole within TRAINING_BUDGET characters (keys and values); what does not fit is named.
VALUE_CAP = 1024
TRAINING_BUDGET = 16 * 1024
LEFT_OUT_KEY = "(left out)"

# modelspec.architecture (before any "/adapter"), first match wins.
_MODELSPEC_BASES: tuple[tuple[str, str], ...] = (
    (r"stable-diffusion-xl-v1-refiner|sdxl.*refiner", "SDXL Refiner"),
    (r"stable-diffusion-xl|sdxl", "SDXL 1.0"),
    (r"stable-diffusion-v1|sd-?1", "SD 1.5"),
    (r"stable-diffusion-v2|sd-?2", "SD 2.x"),
    (r"stable-diffusion-v?3[-._]5|sd-?3[-._]5", "SD 3.5"),
    (r"stable-diffusion-v?3|sd-?3", "SD 3"),
    (r"stable-video-diffusion", "SVD"),
    (r"stable-cascade", "Stable Cascade"),
    (r"flux[-._]?1[-._]dev", "Flux.1 D"),
    (r"flux[-._]?1[-._]schnell", "Flux.1 S"),
    (r"flux[-._]?1", "Flux.1"),
    (r"flux[-._]?2", "Flux.2"),
    (r"chroma", "Chroma"),
    (r"hunyuan-video-1[-._]5", "Hunyuan Video 1.5"),
    (r"hunyuan-video", "Hunyuan Video"),
    (r"wan", "Wan Video"),
    (r"ltx", "LTXV"),
    (r"mochi", "Mochi"),
    (r"cosmos", "Cosmos"),
    (r"auraflow", "AuraFlow"),
    (r"lumina", "Lumina"),
    (r"hidream", "HiDream"),
    (r"qwen-image", "Qwen"),
)

# kohya's ss_base_model_version, by prefix.
_KOHYA_BASES: tuple[tuple[str, str], ...] = (
    ("sd_v1", "SD 1.5"),
    ("sd_v2", "SD 2.x"),
    ("sdxl", "SDXL 1.0"),
    ("sd3", "SD 3"),
    ("flux", "Flux.1"),
    ("chroma", "Chroma"),
    ("lumina", "Lumina"),
    ("stable_cascade", "Stable Cascade"),
    ("hunyuan_video", "Hunyuan Video"),
    ("wan", "Wan Video"),
)

# kohya's network modules that exist for one family only.
_NETWORK_BASES: Mapping[str, str] = {
    "networks.lora_flux": "Flux.1",
    "networks.lora_sd3": "SD 3",
    "networks.lora_lumina": "Lumina",
    "networks.lora_wan": "Wan Video",
}

# general.architecture of the GGUF files ComfyUI-GGUF makes and reads.
_GGUF_BASES: Mapping[str, str] = {
    "sd1": "SD 1.5",
    "sdxl": "SDXL 1.0",
    "sd3": "SD 3",
    "flux": "Flux.1",
    "chroma": "Chroma",
    "aura": "AuraFlow",
    "ltxv": "LTXV",
    "hyvid": "Hunyuan Video",
    "wan": "Wan Video",
    "cosmos": "Cosmos",
    "hidream": "HiDream",
    "lumina2": "Lumina",
    "qwen_image": "Qwen",
    "umt5": "Wan Video",
}
_GGUF_TEXT_ENCODERS = frozenset(
    {"t5", "t5encoder", "umt5", "clip", "llama", "qwen2", "qwen2vl", "qwen3", "gemma2", "gemma3"}
)

_ADAPTER_KINDS: Mapping[str, str] = {
    "lora": "lora",
    "lycoris": "lycoris",
    "textual-inversion": "embedding",
    "controlnet": "controlnet",
    "control-lora": "controlnet",
    "vae": "vae",
}
_LYCORIS_ALGOS = frozenset({"lokr", "loha", "locon", "ia3", "full", "diag-oft", "boft", "glora"})

# Refinements of a base the metadata's base model file name may give (ss_sd_model_name).
_NAME_REFINEMENTS: Mapping[str, tuple[tuple[str, str], ...]] = {
    "SDXL 1.0": (("pony", "Pony"), ("illustrious", "Illustrious"), ("noob", "NoobAI")),
    "SD 2.x": ((r"(?<![0-9])(v?2[-._]1|21)(?![0-9])", "SD 2.1"),),
    "Flux.1": (("schnell", "Flux.1 S"), (r"(?<![a-z])dev(?![a-z])", "Flux.1 D")),
}
_DEFAULT_TITLE = re.compile(r"(LoRA|TextualInversion|Checkpoint|Hunyuan-Video)@[0-9.]+")
_NUMBERS = re.compile(r"[0-9]+")


def text(metadata: Mapping[str, MetaValue], key: str) -> str:
    """The value of ``key`` as stripped text, '' when absent or not a string."""
    value = metadata.get(key)
    return value.strip() if isinstance(value, str) else ""


def base(metadata: Mapping[str, MetaValue]) -> str | None:
    """The base model the metadata names, before any refinement by a file name."""
    spec = text(metadata, "modelspec.architecture").lower().split("/")[0]
    if spec:
        for pattern, name in _MODELSPEC_BASES:
            if re.match(pattern, spec):
                return name
    version = text(metadata, "ss_base_model_version").lower()
    for prefix, name in _KOHYA_BASES:
        if version.startswith(prefix):
            return name
    module = _NETWORK_BASES.get(text(metadata, "ss_network_module"))
    if module:
        return module
    if text(metadata, "ss_v2") == "True":
        return "SD 2.x"
    return _GGUF_BASES.get(text(metadata, "general.architecture").lower())


def refine_by_name(metadata: Mapping[str, MetaValue], found: str) -> str:
    """``found`` refined by the base model's file name kohya recorded (Pony, SD 2.1, ...)."""
    name = text(metadata, "ss_sd_model_name").lower()
    for pattern, refined in _NAME_REFINEMENTS.get(found, ()) if name else ():
        if re.search(pattern, name):
            return refined
    return found


def kind(metadata: Mapping[str, MetaValue]) -> str | None:
    """The kind of model the metadata says the file is, where it says."""
    spec = text(metadata, "modelspec.architecture").lower()
    if "/" in spec:
        adapter = _ADAPTER_KINDS.get(spec.split("/", 1)[1])
        if adapter:
            return adapter
    module = text(metadata, "ss_network_module")
    if module.startswith("lycoris") or _lycoris_algo(text(metadata, "ss_network_args")):
        return "lycoris"
    if module:
        return "lora"
    if text(metadata, "general.architecture").lower() in _GGUF_TEXT_ENCODERS:
        return "text_encoder"
    return None


def _lycoris_algo(args: str) -> bool:
    try:
        parsed = json.loads(args) if args.startswith("{") else None
    except (ValueError, RecursionError):
        return False
    return isinstance(parsed, dict) and str(parsed.get("algo", "")).lower() in _LYCORIS_ALGOS


def trigger_words(metadata: Mapping[str, MetaValue]) -> tuple[str, ...]:
    """``modelspec.trigger_phrase``, then the most frequent tags of ``ss_tag_frequency``."""
    words: list[str] = []
    phrase = text(metadata, "modelspec.trigger_phrase")
    if phrase:
        words.append(phrase[:MAX_WORD])
    for tag in _top_tags(text(metadata, "ss_tag_frequency")):
        if tag not in words:
            words.append(tag)
    return tuple(words)


def _top_tags(frequency: str) -> list[str]:
    """The TOP_TAGS most frequent tags over all of the training set's folders."""
    if not frequency or len(frequency) > MAX_TAG_FREQUENCY:
        return []
    try:
        folders = json.loads(frequency)
    except (ValueError, RecursionError):
        return []
    counts: Counter[str] = Counter()
    for tags in folders.values() if isinstance(folders, dict) else ():
        for tag, count in tags.items() if isinstance(tags, dict) else ():
            if type(count) is int and count > 0 and type(tag) is str:
                counts[tag] += count
    merged: Counter[str] = Counter()
    for tag, count in counts.items():  # " smile" and "smile" are one tag
        word = tag.strip()[:MAX_WORD]
        if word:
            merged[word] += count
    return [word for word, _ in heapq.nsmallest(TOP_TAGS, merged.items(), key=_by_count)]


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def resolution(metadata: Mapping[str, MetaValue]) -> str | None:
    """``"WxH"`` from ``modelspec.resolution`` (``1024x1024``) or ``ss_resolution``
    (``(512, 512)``)."""
    for key in ("modelspec.resolution", "ss_resolution"):
        numbers = [int(n) for n in _NUMBERS.findall(text(metadata, key)[:64])]
        if len(numbers) == 1:
            numbers *= 2
        if len(numbers) == 2 and all(0 < n <= 65536 for n in numbers):
            return f"{numbers[0]}x{numbers[1]}"
    return None


def title(metadata: Mapping[str, MetaValue]) -> str | None:
    """``modelspec.title`` (unless it is a trainer's placeholder), else ``ss_output_name``."""
    spec = text(metadata, "modelspec.title")
    if spec and not _DEFAULT_TITLE.fullmatch(spec):
        return spec[:MAX_TITLE]
    name = text(metadata, "ss_output_name") or text(metadata, "general.name")
    return name[:MAX_TITLE] or None


def training(metadata: Mapping[str, MetaValue]) -> dict[str, str]:
    """The metadata verbatim, bounded: long values cut (saying so), small keys kept first,
    the keys left out named (the largest first) under ``LEFT_OUT_KEY``."""
    values = {key: _as_text(value) for key, value in metadata.items()}
    budget = TRAINING_BUDGET
    kept: set[str] = set()
    for key in sorted(values, key=lambda k: (len(values[k]), k)):
        cost = len(key) + min(len(values[key]), VALUE_CAP + 40)
        if cost <= budget - 400:  # room for the list of what was left out
            kept.add(key)
            budget -= cost
    result = {key: _cut(values[key]) for key in values if key in kept}
    left_out = sorted((key for key in values if key not in kept), key=lambda k: -len(values[k]))
    if left_out:
        result[LEFT_OUT_KEY] = _cut(", ".join(left_out), 300)
    return result


def _as_text(value: MetaValue) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _cut(value: str, cap: int = VALUE_CAP) -> str:
    if len(value) <= cap:
        return value
    return f"{value[:cap]}… [{len(value) - cap:,} more characters cut]"
