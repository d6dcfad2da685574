"""The appendix ResNet-18 family shipped in msparse/assets/family/ (issue 6, CPU route)."""
import json
import shutil

import pytest
import torch

import msparse.models.zoo as M
from msparse.data.loading import load_data
from msparse.errors import ChecksumError, ModelLoadError
from msparse.models.registry import list_models, load_model
from msparse.models.resnet import ACTIVATIONS
from msparse.training.metrics import accuracy

MEMBERS = {  # name -> (activation, method, reverse attention)
    **{f"msparse/resnet18-{a}-w8-pgdat": (a, "pgd-at", False) for a in ACTIVATIONS},
    "msparse/resnet18-gelu-w8-trades": ("gelu", "trades", False),
    "msparse/resnet18-gelu-w8-ancra": ("gelu", "ancra", True),
}


def test_all_eight_members_are_shipped_and_listed():
    assert set(M.shipped_family()) == set(MEMBERS)
    assert set(MEMBERS) <= set(list_models(include_robustbench=False))
    total = sum(p.stat().st_size for p in M.shipped_family().values())
    assert total <= 5 * 2**20, f"the family's weights take {total} bytes"


@pytest.mark.parametrize("name", sorted(MEMBERS))
def test_member_loads_verified_with_the_architecture_and_recipe_its_name_says(name):
    act, method, ra = MEMBERS[name]
    model = load_model(name)
    info = model.msparse_card
    assert info["verified"] and info["name"] == name
    assert (model.activation, model.width, model.reverse_attention) == (act, 8, ra)
    card = info["card"]
    assert card["recipe"]["method"] == method and card["data"]["train"]["kind"] == "jpeg"
    assert card["weights"]["dtype"] == "float16"
    ev = card["evaluation"]
    assert ev["n"] == 1000 and ev["data"]["exact"] and ev["data"]["indices"] == "0..999"
    assert ev["apgd_ce"]["iterations"] == 100
    robust = ev["apgd_ce_accuracy"]
    if ra:  # the direct attack is masked by the argmax gates: the card must carry the gate attacks too
        gates = ev["apgd_ce_gates"]
        assert gates["direct"] == robust and gates["worst"] <= min(v for k, v in gates.items() if k != "worst")
        robust = gates["worst"]
    # adversarially trained: well above chance under a 100-step attack (the paper's models: ~85% / ~50%)
    assert ev["clean_accuracy"] >= 0.45 and robust >= 0.25, ev
    x, y = load_data("cifar10", "test", n=200)
    assert abs(accuracy(model, x, y) - ev["clean_accuracy"]) < 0.1     # the card describes these weights


def test_a_tampered_member_is_refused(tmp_path, monkeypatch):
    src = M.shipped_family()["msparse/resnet18-gelu-w8-pgdat"]
    for f in (src, src.with_suffix(".json")):
        shutil.copy(f, tmp_path / f.name)
    state = torch.load(tmp_path / src.name, weights_only=True)
    state["linear.bias"] = state["linear.bias"] + 1
    torch.save(state, tmp_path / src.name)
    monkeypatch.setattr(M, "FAMILY_DIR", tmp_path)
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        load_model("msparse/resnet18-gelu-w8-pgdat")
    assert json.loads((tmp_path / src.with_suffix(".json").name).read_text())["name"] == "resnet18-gelu-w8-pgdat"


def test_unknown_msparse_name_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="unknown model 'msparse/resnet18-gelu-w8-mart'"):
        load_model("msparse/resnet18-gelu-w8-mart")
