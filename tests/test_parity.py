"""Parity with RobustBench's published MeanSparse models (issue 2 §5).

RobustBench 1.1.1 ships hand-edited copies of the architectures with MeanSparse modules built in
(``Amini2024MeanSparse_*``). With the same (random) weights, the same statistics and the same α, our base
architecture + preset must give identical outputs; and the official statistics procedure, run inside their
model, must equal our ``mode="official"``.
"""

import gc

import pytest
import torch

import msparse as ms
import msparse.core.placement as pl
from msparse._compat import robustbench_architecture

CASES = [  # (base name, MeanSparse name, dataset, threat model, preset key)
    ("Bartoldson2024Adversarial_WRN-94-16", "Amini2024MeanSparse_S-WRN-94-16", "cifar10", "Linf",
     "Bartoldson2024Adversarial_WRN-94-16/cifar10/Linf/v2"),
    ("Peng2023Robust", "Amini2024MeanSparse_Ra_WRN_70_16", "cifar10", "Linf", "Peng2023Robust/cifar10/Linf/v2"),
]


def their_operators(model, x):
    """RobustBench's MeanSparse modules in forward-execution order."""
    order = []
    handles = [m.register_forward_pre_hook(lambda mod, a: order.append(mod))
               for m in model.modules() if type(m).__name__ == "MeanSparse"]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return order


def official_statistics_pass(model, ops, batches):
    """The official procedure, run through their modules' own flag_update_statistics code."""
    for op in ops:
        op.flag_update_statistics.fill_(1)
        op.batch_num.fill_(len(batches))
    with torch.no_grad():
        for x in batches:
            model(x)
    for op in ops:
        op.flag_update_statistics.fill_(0)


@pytest.mark.slow
@pytest.mark.parametrize("base_name, ms_name, dataset, threat, key", CASES, ids=[c[1] for c in CASES])
def test_same_weights_statistics_and_alpha_give_identical_outputs(base_name, ms_name, dataset, threat, key):
    torch.manual_seed(0)
    ours = robustbench_architecture(base_name, dataset, threat).eval()
    theirs = robustbench_architecture(ms_name, dataset, threat).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    assert not unexpected and missing and all("meansparse" in k for k in missing)

    sites = ms.sparsify(ours, key)
    images = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batches = [images[:2], images[2:4], images[4:]]  # uneven, as in the official pass (kept tiny: ~50 GMAC/image)
    their_ops = their_operators(theirs, images[:1])
    assert [op.running_mean.numel() for op in their_ops] == [s.channels for s in sites]

    # statistics: the official procedure inside their model == our "official" mode
    official_statistics_pass(theirs, their_ops, batches)
    ms.calibrate(ours, batches, mode="official")
    our_ops = pl.operators(ours)
    for a, b in zip(our_ops, their_ops):
        torch.testing.assert_close(a.mean, b.running_mean, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(a.var, b.running_var, rtol=1e-4, atol=1e-5)

    # outputs: same statistics (copied bit for bit) and α → identical logits
    alpha = ms.PRESETS[key].alpha
    for a, b in zip(our_ops, their_ops):
        b.running_mean.copy_(a.mean)
        b.running_var.copy_(a.var)
        b.threshold.fill_(alpha)
    ms.set_alpha(ours, alpha)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out_ours, out_theirs = ours(x), theirs(x)
        blocked = pl.blocked_fractions(ours, x[:1])
        ms.set_alpha(ours, 0.0)
        out_base = ours(x)
    assert min(blocked.values()) > 0.01  # the operators really act ...
    assert not torch.equal(out_ours, out_base)  # ... and change the logits
    assert torch.equal(out_ours, out_theirs)
    del ours, theirs
    gc.collect()
