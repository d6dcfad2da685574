"""Every preset gives the paper's number of sites on RobustBench's architecture (issue 2; the official code's placements)."""

import pytest
import torch

import msparse as ms

EXPECTED_SITES = {
    "Peng2023Robust/cifar10/Linf/v1": 143,
    "Peng2023Robust/cifar10/Linf/v2": 214,
    "Wang2023Better_WRN-70-16/cifar10/Linf/v1": 67,
    "Bartoldson2024Adversarial_WRN-94-16/cifar10/Linf/v2": 136,
    "Wang2023Better_WRN-70-16/cifar100/Linf/v2": 100,
    "Wang2023Better_WRN-70-16/cifar10/L2/v2": 100,
    "Liu2023Comprehensive_ConvNeXt-L/imagenet/Linf/v1": 72,
    "Peng2023Robust/imagenet/Linf/v1": 75,
    "Liu2023Comprehensive_Swin-L/imagenet/Linf/v2": 96,
}
PAPER_ALPHA = {"Peng2023Robust/cifar10/Linf/v1": 0.25, "Wang2023Better_WRN-70-16/cifar10/Linf/v1": 0.20,
               "Liu2023Comprehensive_ConvNeXt-L/imagenet/Linf/v1": 0.30, "Peng2023Robust/imagenet/Linf/v1": 0.20,
               "Bartoldson2024Adversarial_WRN-94-16/cifar10/Linf/v2": 0.15,
               "Liu2023Comprehensive_Swin-L/imagenet/Linf/v2": 0.10}


def shape_only(preset):
    """The random-weight architecture on the meta device: shapes propagate, nothing is computed."""
    try:
        with torch.device("meta"):
            return preset.build_architecture()
    except (NotImplementedError, RuntimeError):  # constructors that read tensor values (timm Swin)
        return preset.build_architecture().to("meta")


def test_every_paper_model_has_a_preset():
    assert EXPECTED_SITES.keys() <= ms.PRESETS.keys()
    for key, preset in ms.PRESETS.items():
        assert preset.key == key and preset.n_sites > 0 and 0 < preset.alpha <= 0.5


@pytest.mark.parametrize("key", sorted(EXPECTED_SITES))
def test_preset_gives_the_paper_site_count_on_the_robustbench_architecture(key):
    model = shape_only(ms.PRESETS[key])
    sites = ms.sparsify(model, key)
    assert len(sites) == EXPECTED_SITES[key] == ms.PRESETS[key].n_sites
    assert [s.index for s in sites] == list(range(len(sites)))
    assert len({s.name for s in sites}) == len(sites)


@pytest.mark.parametrize("key, alpha", sorted(PAPER_ALPHA.items()))
def test_preset_records_the_paper_alpha(key, alpha):
    assert ms.PRESETS[key].alpha == alpha


def test_convnext_sites_alternate_channels_last_mlp_and_channels_first_branch():
    model = shape_only(ms.PRESETS["Liu2023Comprehensive_ConvNeXt-L/imagenet/Linf/v1"])
    sites = ms.sparsify(model, "Liu2023Comprehensive_ConvNeXt-L/imagenet/Linf/v1")
    assert [(s.layout, s.channels) for s in sites[:2]] == [("nhwc", 4 * 192), ("nchw", 192)]
    assert [(s.layout, s.channels) for s in sites[-2:]] == [("nhwc", 4 * 1536), ("nchw", 1536)]


def test_swin_sites_follow_the_official_block_order():
    model = shape_only(ms.PRESETS["Liu2023Comprehensive_Swin-L/imagenet/Linf/v2"])
    sites = ms.sparsify(model, "Liu2023Comprehensive_Swin-L/imagenet/Linf/v2")
    first_block = [(s.name.rsplit(".", 2)[-2:], s.channels) for s in sites[:4]]
    assert first_block == [(["0", "msparse_attn_add"], 192), (["act", "msparse_in"], 4 * 192),
                           (["fc2", "msparse_out"], 192), (["0", "msparse_mlp_add"], 192)]
    assert {s.layout for s in sites} == {"nlc"}


def test_imagenet_rawrn_skips_squeeze_excitation_and_last_activation():
    model = shape_only(ms.PRESETS["Peng2023Robust/imagenet/Linf/v1"])
    sites = ms.sparsify(model, "Peng2023Robust/imagenet/Linf/v1")
    assert sites[0].channels == 96  # the stem ReLU
    assert not any(".se." in s.name or "last_activation" in s.name for s in sites)


@pytest.mark.parametrize("activation", ["relu", "gelu", "pssilu"])
def test_resnet18_sites_follow_the_appendix_position_convention(activation):
    from msparse.models.resnet import activation_positions, resnet18

    model = resnet18(activation, width=8)
    sites = ms.sparsify(model, "ResNet-18/cifar10/Linf/v1")
    assert len(sites) == 17
    assert [s.module for s in sites] == [path for _, path, _ in activation_positions(model)]
    assert [s.index for s in sites if "main_path" in s.tags] == list(range(1, 17, 2))
    assert [s.index for s in sites if "after_add" in s.tags] == list(range(2, 17, 2))
    assert [s.index for s in sites if "stem" in s.tags] == [0]
