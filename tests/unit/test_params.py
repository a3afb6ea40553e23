import copy
import math

import pytest
import yaml

from hggt.cli import main as cli_main
from hggt.params import SECTIONS, ParamsError, load_params, parse_params, to_dict


@pytest.fixture()
def raw(root):
    return yaml.safe_load((root / "params.yaml").read_text())


def test_params_yaml_loads_and_round_trips(root, raw):
    p = load_params(root / "params.yaml")
    assert to_dict(p) == raw
    assert set(SECTIONS) == set(raw)


def test_table1_settings_exactly_as_spec(root):
    # SPEC §3 / supplement Table 1.
    deg = load_params(root / "params.yaml").enhance.degradation
    for s in (deg.a, deg.b):
        assert s.scale == 1
        assert s.kernel_sizes == (3, 5, 7)
        assert s.sinc_prob == 0.1
        assert s.kernel_kinds == ("iso", "aniso") and s.kernel_probs == (0.7, 0.3)
        assert s.resize_probs == (0.1, 0.85, 0.05)
        assert s.resize_up == (1.0, 1.1) and s.resize_down == (0.9, 1.0)
        assert s.resize_modes == ("area", "bilinear", "bicubic")
        assert s.gaussian_noise_prob == 0.5 and s.gray_noise_prob == 0.1
        assert s.jpeg_quality == (80, 95)
        assert s.resize_per == "sample"
    assert (
        deg.a.blur_sigma == (0.1, 0.5)
        and deg.a.noise_sigma == (6.5, 13.0)
        and deg.a.poisson_scale == (0.45, 0.9)
    )
    assert (
        deg.b.blur_sigma == (0.5, 1.0)
        and deg.b.noise_sigma == (0.5, 6.5)
        and deg.b.poisson_scale == (0.05, 0.45)
    )


def test_table2_exactly_as_spec(root):
    # SPEC §5 / supplement Table 2 (gray noise 0.1 by decision; paper_code preset gives 0.2).
    lr = load_params(root / "params.yaml").synthesize_lr
    d = lr.degradation
    assert lr.preset == "table2"
    assert d.scale == 4 and d.kernel_sizes == (3, 5, 7, 9) and d.sinc_prob == 0.01
    assert (
        d.kernel_kinds == ("iso", "aniso")
        and d.kernel_probs == (0.7, 0.3)
        and d.blur_sigma == (0.1, 1.0)
    )
    assert (
        d.resize_probs == (0.1, 0.85, 0.05)
        and d.resize_up == (1.0, 1.2)
        and d.resize_down == (0.8, 1.0)
    )
    assert (
        d.gaussian_noise_prob == 0.5
        and d.noise_sigma == (1.0, 12.0)
        and d.poisson_scale == (0.05, 0.8)
    )
    assert d.gray_noise_prob == 0.1 and d.jpeg_quality == (75, 95)


def test_patch_texture_test_values(root):
    # SPEC §2: the thresholds are method values, identical in the default and paper configs.
    ep = load_params(root / "params.yaml").extract_patches
    assert ep.std_thresh == 30 and ep.lap_var_thresh == 30 and ep.jitter == 16
    assert ep.offset_thresholds == (1200, 2400)


def test_lists_become_tuples_and_are_hashable(root):
    p = load_params(root / "params.yaml")
    assert isinstance(p.synthesize_lr.degradation.kernel_sizes, tuple)
    hash(p.synthesize_lr.degradation)


def test_unknown_key_named(raw):
    bad = copy.deepcopy(raw)
    bad["synthesize_lr"]["degradation"]["gray_noise_probability"] = 0.2
    with pytest.raises(
        ParamsError, match=r"unknown key synthesize_lr\.degradation\.gray_noise_probability"
    ):
        parse_params(bad)


def test_unknown_section_named(raw):
    bad = copy.deepcopy(raw)
    bad["trian_sr"] = {}
    with pytest.raises(ParamsError, match=r"unknown key trian_sr"):
        parse_params(bad)


def test_missing_key_named(raw):
    bad = copy.deepcopy(raw)
    del bad["enhance"]["degradation"]["b"]["jpeg_quality"]
    with pytest.raises(ParamsError, match=r"missing key enhance\.degradation\.b\.jpeg_quality"):
        parse_params(bad)


@pytest.mark.parametrize(
    ("path", "value", "pattern"),
    [
        (("seed",), "zero", r"seed: expected an integer"),
        (("train_sr", "hflip"), "yes", r"train_sr\.hflip: expected true/false"),
        (("labels", "source"), "crowd", r"labels\.source: must be one of"),
        (("synthesize_lr", "degradation", "blur_sigma"), [0.1], r"blur_sigma: expected 2 values"),
        (("synthesize_lr", "degradation", "resize_per"), "epoch", r"resize_per: must be one of"),
        (
            ("synthesize_lr", "degradation", "kernel_probs"),
            [0.7, 0.2],
            r"kernel_probs must sum to 1",
        ),
        (
            ("synthesize_lr", "degradation", "noise_sigma"),
            [12, 1],
            r"noise_sigma range is reversed",
        ),
        (("synthesize_lr", "degradation", "kernel_sizes"), [3, 4], r"kernel_sizes must be odd"),
    ],
)
def test_bad_values_named(raw, path, value, pattern):
    bad = copy.deepcopy(raw)
    node = bad
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ParamsError, match=pattern):
        parse_params(bad)


def test_load_errors_name_the_file(tmp_path):
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("seed: [unclosed\n")
    with pytest.raises(ParamsError, match=r"broken\.yaml: not valid YAML"):
        load_params(broken)


def test_cli_show(root, capsys):
    assert (
        cli_main(
            ["params", "show", "synthesize_lr.degradation", "--params", str(root / "params.yaml")]
        )
        == 0
    )
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["gray_noise_prob"] == 0.1 and shown["scale"] == 4
    assert cli_main(["params", "show", "no_such", "--params", str(root / "params.yaml")]) == 2


def test_cli_apply_paper_config_keeps_comments_and_method_values(root, tmp_path):
    target = tmp_path / "params.yaml"
    target.write_text((root / "params.yaml").read_text())
    assert (
        cli_main(["params", "apply", str(root / "configs" / "paper.yaml"), "--params", str(target)])
        == 0
    )
    p = load_params(target)
    assert p.extract_patches.crop_size == 512 and p.extract_patches.step == 288
    assert p.extract_patches.offset_max == (32, 64, 128)
    assert p.train_sr.rrdb.num_block == 23 and p.train_sr.batch_size == {"rrdb": 12, "swinir": 8}
    assert p.train_enhancer.rcan.n_groups == 10 and p.train_enhancer.elan.channels == 180
    assert p.pretrain_sr.milestones["swinir"] == (150000, 240000, 270000, 285000)
    assert not math.isclose(p.train_sr.iterations, 100)
    # Method values untouched; comments preserved.
    assert p.synthesize_lr == load_params(root / "params.yaml").synthesize_lr
    assert "# Table 2 (supplement)" in target.read_text()


def test_cli_apply_rejects_unknown_key_and_leaves_file(root, tmp_path):
    target = tmp_path / "params.yaml"
    original = (root / "params.yaml").read_text()
    target.write_text(original)
    override = tmp_path / "o.yaml"
    override.write_text("train_sr:\n  iterationz: 5\n")
    assert cli_main(["params", "apply", str(override), "--params", str(target)]) == 2
    assert target.read_text() == original
