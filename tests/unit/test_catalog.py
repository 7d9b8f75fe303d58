"""The one method catalog: every name, title, class and registry entry is read off camlens.catalog.ROWS."""

from __future__ import annotations

import subprocess
import sys

import pytest

import camlens
from camlens import names
from camlens.catalog import ROW, ROWS, MethodRow, resolve


def test_the_catalog_imports_no_torch():
    code = "import sys, camlens.catalog, camlens.names; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_names_are_read_off_the_catalog():
    assert names.METHODS == tuple(row.name for row in ROWS) == tuple(ROW)
    assert len(set(names.METHODS)) == len(ROWS)  # no name twice
    assert names.CAM_METHODS[:2] == ("gradcam", "gradcam++") and "refinecam" in names.CAM_METHODS
    assert names.METHODS == (*names.CAM_METHODS, *names.CONTEXT_METHODS, *names.GUIDED_METHODS)
    assert names.GUIDED_METHODS == (names.GUIDED_BACKPROP, names.GUIDED_GRADCAM)
    assert names.SEED_METHODS == ("gradcam", "gradcam++", "guided_backprop", "guided_gradcam")
    assert names.VIT_ONLY_METHODS == (
        "legrad",
        "attention_rollout",
        "generic_attention",
        "transformer_attribution",
        "attnlrp",
    )
    assert set(names.METHOD_INFO) == set(names.METHODS)
    assert names.METHOD_INFO["fem"] == ("activation CAM", True, "FEM (Fuad et al. 2020), gradient-free")
    assert names.METHOD_INFO["kpcacam"][2] == "KPCA-CAM (kernel PCA of the activations)"
    assert names.METHOD_INFO["fullgrad"][1] is False


def test_every_entry_is_the_function_explain_runs():
    """The registries hold exactly the catalog's functions, with the catalog's flags."""
    from camlens.methods import CAM_METHODS, CONTEXT_METHODS

    for row in ROWS:
        if row.kind == "cam":
            assert CAM_METHODS[row.name] is resolve(row.entry), row.name
            assert row.uses_layer
        elif row.kind == "context":
            spec = CONTEXT_METHODS[row.name]
            assert spec.function is resolve(row.entry), row.name
            assert (spec.uses_layer, spec.perturbation, spec.any_layout) == (
                row.uses_layer, row.perturbation, row.any_layout,
            ), row.name  # fmt: skip
            assert (spec.head is None) == (not row.head), row.name
            if row.head:
                assert spec.head is resolve(row.head)
        else:
            assert row.name not in CAM_METHODS and row.name not in CONTEXT_METHODS
    built_in = [n for n in CAM_METHODS if n in ROW] + [n for n in CONTEXT_METHODS if n in ROW]
    assert built_in == [row.name for row in ROWS if row.kind != "guided"]


def test_titles_and_the_methods_command_come_from_the_catalog():
    from camlens.cli.methods import rows
    from camlens.render import METHOD_TITLES, title

    assert METHOD_TITLES == {row.name: row.title for row in ROWS}
    assert title("gradcam") == "Grad-CAM" and title("guided_backprop") == "guided backprop"
    assert title("xgradcam") == "XGrad-CAM" and title("not-a-method") == "not-a-method"
    listed = rows()
    assert [r["name"] for r in listed] == list(names.METHODS)
    assert all(r["title"] == ROW[r["name"]].description for r in listed)
    assert [r["name"] for r in listed if r["default"]] == list(names.SEED_METHODS)


def test_a_malformed_row_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        MethodRow("x", "weird", "f", True, "X", "", "m:f", "X")
    with pytest.raises(ValueError, match="fuse must be one of"):
        MethodRow("x", "cam", "f", True, "X", "", "m:f", "X", fuse="median")
    with pytest.raises(ValueError, match="entry"):
        MethodRow("x", "cam", "f", True, "X", "", "", "X")
    with pytest.raises(ValueError, match="module:function"):
        resolve("camlens.catalog")


def test_available_methods_are_the_catalog_in_order():
    assert camlens.available_methods()[: len(ROWS) - 2] == [r.name for r in ROWS if r.kind != "guided"]
    assert camlens.available_methods()[-2:] == list(names.GUIDED_METHODS)


def test_listing_the_registries_imports_no_method_module():
    """A row's module is imported when its method is first looked up, not when the registry is."""
    code = (
        "import sys\n"
        "from camlens.methods import CAM_METHODS, CONTEXT_METHODS\n"
        "names = list(CAM_METHODS) + list(CONTEXT_METHODS)\n"
        "lazy = ('camlens.methods.score', 'camlens.methods.legrad', 'camlens.methods.activation')\n"
        "print(len(names) + 2, 'scorecam' in CONTEXT_METHODS, [m for m in lazy if m in sys.modules])\n"
        "CONTEXT_METHODS['scorecam']\n"
        "print('camlens.methods.score' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == f"{len(ROWS)} True []" and out[1] == "True"  # every row but the two guided ones


def test_every_row_has_its_explainer_class():
    import camlens.explainers as explainers

    for row in ROWS:
        cls = explainers.explainer_class(row.name)
        assert (cls.__name__, cls.method, cls.uses_layer) == (row.class_name, row.name, row.uses_layer)
        assert getattr(explainers, row.class_name, None) is cls or row.seed
    assert explainers.ScoreCAM.__doc__.startswith("Score-CAM (Wang et al. 2020)")
    assert "fuses the maps by their max" in explainers.LayerCAM.__doc__ and "Layer-free" in explainers.FullGrad.__doc__
    with pytest.raises(ValueError, match="no method named 'nope'"):
        explainers.explainer_class("nope")
    with pytest.raises(AttributeError):
        explainers.NoSuchCAM  # noqa: B018


def test_methods_registered_at_run_time_still_work():
    """register_cam / register_method add methods explain, available_methods and the classes know, after the
    built-in ones; a built-in name is refused; removing a registration forgets it."""
    import torch

    from camlens.explainers import explainer_class
    from camlens.methods import CAM_METHODS, CONTEXT_METHODS, register_cam, register_method

    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(4, 3),
    ).eval()  # fmt: skip
    x = torch.rand(2, 3, 10, 10)

    @register_cam("test_hires_twice")
    def hires_twice(activations, gradients):
        return 2 * (activations * gradients).sum(dim=1)

    @register_method("test_first_channel", uses_layer=True)
    def first_channel(context):
        return context.activations[:, 0]

    try:
        known = camlens.available_methods()
        assert known.index("test_hires_twice") == len(names.CAM_METHODS) and known[-3] == "test_first_channel"
        assert list(CAM_METHODS)[-1] == "test_hires_twice" and list(CONTEXT_METHODS)[-1] == "test_first_channel"
        result = camlens.explain(model, x, ["test_hires_twice", "hirescam", "test_first_channel"], target_layer="1")
        torch.testing.assert_close(result.raw["test_hires_twice"], 2 * result.raw["hirescam"])
        torch.testing.assert_close(result.raw["test_first_channel"], result.capture.activations[:, 0])
        cam = explainer_class("test_hires_twice")(model, "1")
        torch.testing.assert_close(cam(x), result["test_hires_twice"])
        fused = camlens.explain(model, x, ["test_hires_twice", "hirescam"], target_layer=["0", "1"])
        torch.testing.assert_close(fused["test_hires_twice"], fused["hirescam"])  # a run-time method: the mean
        for taken in ("gradcam", "scorecam", "guided_backprop", "test_hires_twice"):
            with pytest.raises(ValueError, match="registered already"):
                register_cam(taken)(hires_twice)
        with pytest.raises(ValueError, match="built-in"):
            del CAM_METHODS["gradcam"]
    finally:
        del CAM_METHODS["test_hires_twice"]
        del CONTEXT_METHODS["test_first_channel"]
    assert "test_hires_twice" not in camlens.available_methods()
    with pytest.raises(ValueError, match="unknown method"):
        camlens.explain(model, x, ["test_hires_twice"])


def test_the_docs_table_is_the_catalog():
    from pathlib import Path

    from camlens.catalog import markdown_table

    text = (Path(__file__).parents[2] / "docs" / "guide" / "methods.md").read_text(encoding="utf-8")
    begin, end = "<!-- catalog table: begin -->\n", "<!-- catalog table: end -->"
    assert begin in text and end in text
    table = text.split(begin, 1)[1].split(end, 1)[0]
    assert table == markdown_table(), "docs/guide/methods.md is stale: paste `camlens methods --markdown` into it"
    assert table.count("\n| ") == len(ROWS)  # one line per row, after the header


def test_the_markdown_option_prints_the_table_without_torch():
    code = (
        "import sys\n"
        "from camlens.cli.main import main\n"
        "status = main(['methods', '--markdown'])\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].startswith("| method | family | layer |")
    assert out.splitlines()[-1] == "0 False"
