"""A fast start: the package, its errors, names, zoo and viz import without torch; names resolve on use."""

from __future__ import annotations

import subprocess
import sys

import camlens
from camlens.names import GUIDED_BACKPROP, GUIDED_GRADCAM, METHODS, SEED_METHODS


def test_light_modules_import_no_torch():
    code = (
        "import sys\n"
        "import camlens, camlens.errors, camlens.names, camlens.zoo, camlens.viz\n"
        "from camlens.zoo import DEFAULT_NETWORK, SEED_NETWORKS, ALIASES\n"
        "print(sorted(m for m in ('torch', 'torchvision', 'timm', 'matplotlib') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves_and_functions_keep_their_names():
    import camlens.engine
    import camlens.explanation  # the modules are named apart from the functions: importing them changes nothing

    for name in camlens.__all__:
        assert getattr(camlens, name) is not None
    assert callable(camlens.capture) and camlens.capture.__module__ == "camlens.engine"
    assert callable(camlens.explain) and camlens.explain.__module__ == "camlens.explanation"
    assert set(camlens.__all__) <= set(dir(camlens))


def test_method_names_constant_is_the_registry():
    """``camlens.names.METHODS`` (no torch) lists exactly the built-in methods of the registry, in order."""
    from camlens.explanation import SEED_METHODS as explain_default
    from camlens.methods import CAM_METHODS, CONTEXT_METHODS

    built_in = [name for name, function in CAM_METHODS.items() if function.__module__.startswith("camlens.")]
    built_in += [name for name, spec in CONTEXT_METHODS.items() if spec.function.__module__.startswith("camlens.")]
    assert METHODS == (*built_in, GUIDED_BACKPROP, GUIDED_GRADCAM)
    assert set(METHODS) <= set(camlens.available_methods())
    assert explain_default is SEED_METHODS is camlens.SEED_METHODS


def test_metric_names_match_the_registry():
    """``camlens.names.METRICS`` (no torch) lists exactly the registered metrics; MASK_METRICS those needing masks."""
    from camlens.metrics import METRICS as registry
    from camlens.names import MASK_METRICS, METRICS

    assert METRICS == tuple(registry)
    assert MASK_METRICS == tuple(name for name, spec in registry.items() if spec.kind == "mask")


def test_usage_errors_of_the_metric_options_import_no_torch():
    """A mistyped or mask-needing metric is refused by explain and compare before torch is imported."""
    code = (
        "import sys\n"
        "from camlens.cli.main import main\n"
        "codes = []\n"
        "for argv in (['explain', 'x.jpg', '--metrics', 'delection'],\n"
        "             ['compare', 'x.jpg', '--networks', 'resnet18', '--metrics', 'pointing_game']):\n"
        "    try:\n"
        "        codes.append(main(argv))\n"
        "    except SystemExit as exit:\n"
        "        codes.append(exit.code)\n"
        "print(codes, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[2, 2] False", result.stdout + result.stderr
    assert "unknown metric 'delection'; closest: deletion" in result.stderr
    assert "pointing_game needs object boxes" in result.stderr
