"""A registry of latency profiles for a fleet of devices.

Profiles are keyed by (device, model, backend, precision, batch, resolution) and filed as
``<root>/<device-slug>/<model>-<backend>-<precision>-b<batch>-r<resolution>.json``, the layout
``edgeprune profile`` writes (``profiles.default_profile_path``). The root is a local folder
(default ``$EDGEPRUNE_PROFILES`` or ``./profiles``) or, where fsspec is installed, any fsspec URL
(``s3://bucket/profiles``, ``memory://...``), so every device of a fleet can pull the profile of
its own kind.

The device part of the key is the slug of the fingerprint (CPU or GPU model and core count);
lookups for *this* device also compare a CPU's ISA flags (AVX512-VNNI, AMX, ...), so a profile
from a CPU of the same name without them is not taken for this one. There is no fallback to
another device's profile: ``for_this_device`` raises and names the devices that do have one.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from ..deploy.outputs import atomic_write
from ..errors import BackendUnavailable, OutputError, ProfileError
from ..models.zoo import canonical_name
from .profiles import (
    MAX_PROFILE_BYTES,
    _device_mismatch,
    _safe,
    parse_profile,
    profile_slug,
    profile_text,
)

KEY_FIELDS = ("device", "model", "backend", "precision", "batch", "resolution")


@dataclass(frozen=True)
class ProfileKey:
    device: str
    model: str
    backend: str
    precision: str
    batch: int
    resolution: int

    @classmethod
    def of(cls, profile: dict) -> "ProfileKey":
        return cls(profile_slug(profile), canonical_name(profile["model"]), profile["backend"]["name"],
                   profile["precision"], int(profile["batch"]), int(profile["resolution"]))

    @property
    def relpath(self) -> str:
        """Where the key is filed inside a registry (the ``edgeprune profile`` layout)."""
        return f"{self.device}/{_safe(self.model)}-{_safe(self.backend)}-{self.precision}-b{self.batch}-r{self.resolution}.json"

    def __str__(self) -> str:
        return self.relpath[: -len(".json")]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Entry:
    """One profile in a registry: its key, where it is (path or URL) and its validated contents."""

    key: ProfileKey
    location: str
    profile: dict


def default_registry_location() -> str:
    return os.environ.get("EDGEPRUNE_PROFILES", "profiles")


def is_url(location: str | os.PathLike) -> bool:
    return "://" in str(location)


class _LocalStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def list(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.glob("*/*.json") if p.is_file())

    def read(self, rel: str) -> str:
        path = self.root / rel
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise ProfileError(f"{path} is too large to be a latency profile")
        return path.read_text(encoding="utf-8")

    def write(self, rel: str, text: str) -> None:
        atomic_write(self.root / rel, text)

    def where(self, rel: str) -> str:
        return str(self.root / rel)


class _FsspecStore:
    def __init__(self, url: str):
        try:
            import fsspec
        except ImportError:
            raise BackendUnavailable(f"the profile registry {url} is a URL, which needs fsspec",
                                     "pip install 'edgeprune[fleet]' (or fsspec and the filesystem's package, e.g. s3fs)") from None
        try:
            self.fs, self.root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            raise BackendUnavailable(f"cannot open the profile registry {url}: {exc}",
                                     "install the fsspec filesystem package for this URL (e.g. s3fs, gcsfs)") from None
        self.root, self.url = self.root.rstrip("/"), url.rstrip("/")

    def list(self) -> list[str]:
        if not self.fs.exists(self.root):
            return []
        return sorted(str(PurePosixPath(p).relative_to(PurePosixPath(self.root))) for p in self.fs.glob(f"{self.root}/*/*.json"))

    def read(self, rel: str) -> str:
        path = f"{self.root}/{rel}"
        if (self.fs.size(path) or 0) > MAX_PROFILE_BYTES:
            raise ProfileError(f"{self.where(rel)} is too large to be a latency profile")
        return self.fs.cat_file(path).decode("utf-8")

    def write(self, rel: str, text: str) -> None:
        path = f"{self.root}/{rel}"
        self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        tmp = f"{path}.tmp-{os.getpid()}"
        self.fs.pipe_file(tmp, text.encode("utf-8"))  # then renamed: readers never see half a file where mv is atomic
        self.fs.mv(tmp, path)

    def where(self, rel: str) -> str:
        return f"{self.url}/{rel}"


class ProfileRegistry:
    """Profiles of many devices under one root (module docstring)."""

    def __init__(self, location: str | os.PathLike | None = None):
        self.location = str(location if location is not None else default_registry_location())
        self.store = _FsspecStore(self.location) if is_url(self.location) else _LocalStore(self.location)

    def scan(self) -> tuple[list[Entry], list[str]]:
        """(every valid profile, one line per file that is not one)."""
        entries, problems = [], []
        for rel in self.store.list():
            try:
                prof = parse_profile(self.store.read(rel), self.store.where(rel))
                entries.append(Entry(ProfileKey.of(prof), self.store.where(rel), prof))
            except (ProfileError, OSError, UnicodeDecodeError) as exc:
                problems.append(f"{self.store.where(rel)}: {exc}")
        return entries, problems

    def entries(self) -> list[Entry]:
        return self.scan()[0]

    def find(self, **fields) -> list[Entry]:
        """Entries whose key matches every given field (None = any); model names are canonicalised."""
        if fields.get("model") is not None:
            fields["model"] = canonical_name(fields["model"])
        unknown = set(fields) - set(KEY_FIELDS)
        if unknown:
            raise TypeError(f"unknown key field(s): {', '.join(sorted(unknown))}")
        return [e for e in self.entries() if all(v is None or getattr(e.key, k) == v for k, v in fields.items())]

    def get(self, ref: str | os.PathLike) -> Entry:
        """A profile by key (``cpu-amd-epyc-2c/mobilenet_v2-onnxruntime-fp32-b1-r224``, with or
        without ``.json``), by its path inside the registry, or by a local file path."""
        ref = str(ref)
        if not is_url(ref) and Path(ref).is_file():
            from .profiles import load_profile

            prof = load_profile(ref)
            return Entry(ProfileKey.of(prof), ref, prof)
        want = ref.removeprefix(self.location.rstrip("/") + "/").removesuffix(".json")
        found = [e for e in self.entries() if str(e.key) == want or e.location.removesuffix(".json").endswith("/" + want)]
        if not found:
            raise ProfileError(f"no profile {ref!r} in the registry {self.location}",
                               "`edgeprune profiles list` shows the keys; a local file path also works")
        if len(found) > 1:
            raise ProfileError(f"{ref!r} names several profiles: " + "; ".join(e.location for e in found),
                               "give the file path")
        return found[0]

    def put(self, profile: dict, force: bool = False) -> Entry:
        """File ``profile`` under its key. A different profile already there is kept unless ``force``."""
        text = profile_text(profile)
        key = ProfileKey.of(parse_profile(text, "the profile to import"))
        if key.relpath in self.store.list():
            old = self.store.read(key.relpath)
            if old != text and not force:
                raise OutputError(f"the registry already holds another profile for {key} ({self.store.where(key.relpath)})",
                                  "pass --force to replace it, or `edgeprune profiles diff` them first")
        try:
            self.store.write(key.relpath, text)
        except OSError as exc:
            raise OutputError(f"cannot write {self.store.where(key.relpath)}: {exc.strerror or exc}") from None
        return Entry(key, self.store.where(key.relpath), json.loads(text))

    def for_this_device(self, model: str | None = None, slugs: list[str] | None = None,
                        cpu_isa: list[str] | None = None, deploy_precision: str | None = None) -> Entry:
        """The one profile recorded for this machine's device (CPU, or GPU where CUDA is present),
        of ``model`` when given. Never another device's: no match raises and says which devices
        the registry does hold profiles for. ``deploy_precision``: among several matches, keep
        the int8 profiles for "int8" and the others for "fp32" (savings differ by precision)."""
        from .profiles import current_device_slugs

        slugs = slugs if slugs is not None else current_device_slugs()
        pool = [e for e in self.entries() if model is None or e.key.model == canonical_name(model)]
        mine = [e for e in pool if e.key.device in slugs]
        isa_off = [e for e in mine if _device_mismatch(e.profile, e.key.device, cpu_isa) is not None]
        matched = [e for e in mine if e not in isa_off]
        what = f"of {canonical_name(model)} " if model else ""
        if not matched:
            others = sorted({e.key.device for e in pool if e not in mine})
            have = (f"; it has profiles {what}for other devices ({', '.join(others)}), which are not used here: "
                    "savings are device-specific") if others else ""
            if isa_off:
                have += "; " + _device_mismatch(isa_off[0].profile, isa_off[0].key.device, cpu_isa)
            raise ProfileError(f"no latency profile {what}for this device ({', '.join(slugs)}) in the registry "
                               f"{self.location}{have}",
                               f"run `edgeprune profile --model {model or 'NAME'}` here, or pass --profile PATH "
                               "(with --allow-device-mismatch for another device's)")
        if len(matched) > 1 and deploy_precision is not None:
            matched = [e for e in matched if (e.key.precision == "int8") == (deploy_precision == "int8")] or matched
        if len(matched) > 1:
            raise ProfileError("several profiles recorded for this device: " + "; ".join(e.location for e in matched),
                               "choose one with --profile (or --model)")
        return matched[0]
