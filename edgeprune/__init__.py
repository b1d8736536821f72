"""edgeprune: test-time block pruning and distillation (TT-MPD) of image classifiers."""

from .version import __version__


def __getattr__(name):
    # Lazy: `import edgeprune` stays cheap (no torch import) for `edgeprune --version`.
    if name == "adapt":
        from .pipeline.adapt import adapt

        return adapt
    if name == "AdaptResult":
        from .pipeline.adapt import AdaptResult

        return AdaptResult
    if name == "run_profile":
        from .latency.measurement import run_profile

        return run_profile
    if name == "load_profile":
        from .latency.profiles import load_profile

        return load_profile
    if name in ("load_model", "find_blocks", "remove_blocks", "load_manifest"):
        from .models import blocks, surgery, zoo

        for mod in (zoo, blocks, surgery):
            if hasattr(mod, name):
                return getattr(mod, name)
    raise AttributeError(name)


__all__ = ["adapt", "AdaptResult", "run_profile", "load_profile", "load_model", "find_blocks", "remove_blocks", "load_manifest"]
