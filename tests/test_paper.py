"""The reference numbers: transcription spot checks against the paper's tables and RobustBench's leaderboard, and internal consistency."""

import pytest

from msparse.report import paper


def test_every_table_has_a_known_source_and_complete_rows():
    for t in paper.TABLES.values():
        assert t.source in paper.SOURCES
        assert t.citation.startswith(paper.SOURCES[t.source])
        assert all(len(r) == len(t.columns) + 1 for r in t.rows)


def test_table1_spot_values_and_selected_alpha():
    t = paper.table("table1")
    assert t.value("RaWRN-70-16/test/apgd-ce", 0.25) == 74.74
    assert t.value("WRN-70-16/train/clean", 0.0) == 99.37
    assert t.value("ConvNeXt-L/test/apgd-ce", 0.5) == 62.32
    assert t.value("RaWRN-101-2/test/clean", 0.2) == 73.28
    assert t.selected["RaWRN-70-16"] == 0.25
    assert len(t.rows) == 9


def test_appendix_tables_share_the_gelu_pgd_at_column():
    t2, t3, t4, t5 = (paper.table(k) for k in ("table2", "table3", "table4", "table5"))
    gelu = t2.column("GELU/apgd")
    assert t3.column("apgd-linf") == gelu
    assert t4.column("PGD-AT/apgd") == gelu
    assert t5.column("mean/apgd") == gelu
    assert gelu[0.0] == 49.12 and gelu[0.35] == 51.36


def test_table7_cumulative_last_index_equals_table2_gelu():
    t7, t2 = paper.table("table7"), paper.table("table2")
    assert t7.value("cumulative/0.2/apgd", 16) == t2.value("GELU/apgd", 0.2)
    assert t7.value("cumulative/0.35/apgd", 16) == t2.value("GELU/apgd", 0.35)
    assert t7.index_values() == list(range(17))


def test_table6_eps_eight_equals_table2():
    t6 = paper.table("table6")
    assert t6.value("alpha=0", 8) == 49.12
    assert t6.value("alpha=0.35", 8) == 51.36
    assert t6.value("alpha=0.2", 16) == 13.41


def test_every_robustbench_bpda_number_is_below_its_base_aa():
    pairs = paper.bpda_pairs()
    assert len(pairs) == 6  # RobustBench lists six MeanSparse entries
    for base, ms in pairs:
        assert ms.external < base.aa, (base.key, ms.key)
        assert ms.aa > base.aa  # what the authors reported
    assert paper.robustbench("Amini2024MeanSparse_Ra_WRN_70_16").external == 68.94


def test_ambiguous_and_unknown_lookups_fail_clearly():
    with pytest.raises(KeyError, match="ambiguous"):
        paper.robustbench("Amini2024MeanSparse_S-WRN-70-16")
    assert paper.robustbench("Amini2024MeanSparse_S-WRN-70-16", "cifar100").external == 42.25
    with pytest.raises(KeyError, match="no reference table"):
        paper.table("table9")
    with pytest.raises(KeyError, match="no row"):
        paper.table("table1").value("RaWRN-70-16/test/clean", 0.33)


def test_frame_carries_its_source():
    df = paper.table("fig3").frame()
    assert df.loc["RaWRN-70-16", "aa_ms"] == 72.08
    assert "Fig. 3" in df.attrs["source"] or "README" in df.attrs["source"]
    assert "arXiv:2406.05927" in paper.cite("table2")
