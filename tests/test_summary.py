"""`inceptionlab summary` and `inceptionlab.tools.summary`: per-block costs, the zoo table, factorization."""
from __future__ import annotations

import pytest
import torch

from inceptionlab import UserError, create_model, list_models, model_card
from inceptionlab.cli import main
from inceptionlab.commands.summary import parse_model_kwargs
from inceptionlab.tools.summary import (build_on_meta, count_macs, explain_factorization, model_summary, totals,
                                        zoo_summary)

# FlopCounterMode FLOPs / 2 of the reference models at 1000 classes (issue 2)
REFERENCE_MACS = {
    "googlenet": (224, 1_498_376_192),
    "inception_v3": (299, 5_713_216_096),
    "inception_v4": (299, 12_253_974_624),
    "inception_resnet_v2": (299, 13_155_794_016),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_MACS))
def test_count_macs_matches_the_stated_counts(name):
    size, macs = REFERENCE_MACS[name]
    assert count_macs(build_on_meta(name), size) == macs
    assert round(macs / 1e9, 3) == {"googlenet": 1.498, "inception_v3": 5.713, "inception_v4": 12.254,
                                    "inception_resnet_v2": 13.156}[name]


@pytest.mark.parametrize("name,library,ref_name", [
    ("googlenet", "torchvision", "googlenet"),
    ("inception_v3", "timm", "inception_v3"),
    ("inception_v4", "timm", "inception_v4"),
    ("inception_resnet_v2", "timm", "inception_resnet_v2"),
])
def test_count_macs_equals_the_references_counted_the_same_way(name, library, ref_name):
    size, macs = REFERENCE_MACS[name]
    with torch.device("meta"):
        if library == "timm":
            timm = pytest.importorskip("timm")
            ref = timm.create_model(ref_name)
        else:
            import torchvision
            ref = torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=False)
    assert count_macs(ref, size) == macs


def test_count_macs_works_on_a_real_model_without_touching_it():
    model = create_model("inception_v3", depth_multiplier=0.25, stem="low_res", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    macs = count_macs(model, 32)
    assert macs > 0 and model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert next(model.parameters()).device.type == "cpu"


def test_summary_rows_add_up_to_the_model():
    model = build_on_meta("inception_v3", aux_logits=True)
    rows = model_summary(model, 299)
    names = [r.name for r in rows]
    assert names == list(model.blocks) + ["head", "aux:mixed_6e"]
    by_name = {r.name: r for r in rows}
    assert by_name["mixed_5b"].out_shape == (256, 35, 35)
    assert by_name["mixed_7c"].out_shape == (2048, 8, 8)
    assert by_name["head"].out_shape == (1000,)
    assert by_name["aux:mixed_6e"].inference is False and by_name["aux:mixed_6e"].macs > 0
    t = totals(rows)
    # torchvision's count with the aux head; "total (inference: aux heads excluded)" printed it too
    assert t["params_with_aux"] == 27_161_264 and t["params"] == 23_834_568
    assert t["macs"] == 5_713_216_096
    assert t["macs_with_aux"] > t["macs"]
    assert all(r.macs > 0 for r in rows if r.kind.startswith(("conv", "inception", "reduction")))
    assert by_name["maxpool_3a_3x3"].macs == 0 and by_name["maxpool_3a_3x3"].params == 0


def test_the_summary_is_public_api_and_names_a_missing_classifier():
    import inceptionlab as il

    assert {"count_macs", "model_summary", "format_summary", "explain_factorization"} <= set(il.__all__)
    assert il.model_summary is model_summary and il.count_macs is count_macs
    features = create_model("googlenet", num_classes=0, depth_multiplier=0.25)
    rows = il.model_summary(features, 224)
    # (it said "avg pool + fc 256->0" of the identity that num_classes=0 leaves)
    assert rows[-1].kind == "avg pool, no classifier (num_classes=0)" and rows[-1].params == 0
    assert "avg pool, no classifier (num_classes=0)" in il.format_summary(rows)
    embedding = build_on_meta("inception_resnet_v1", num_classes=0, embedding_dim=128)
    assert model_summary(embedding, 160)[-1].kind == "avg pool + embedding 1792->128, no classifier (num_classes=0)"


@pytest.fixture(scope="module")
def zoo_rows() -> list[dict]:
    """`zoo_summary()` of every model, computed once for the tests below (about 10 s here)."""
    return zoo_summary()


def test_every_family_summarizes_and_adds_up(zoo_rows):
    counted = {r["model"]: round(r["gmacs"] * 1e9) for r in zoo_rows}  # count_macs of each, computed once
    for name in list_models():
        model = build_on_meta(name)
        rows = model_summary(model)
        assert [r.name for r in rows][:-1] == list(model.blocks)
        assert totals(rows)["params_with_aux"] == sum(p.numel() for p in model.parameters())
        assert totals(rows)["macs"] == counted[name]


def test_zoo_summary_has_one_row_per_model_with_the_cards(zoo_rows):
    rows = zoo_rows
    assert [r["model"] for r in rows] == list_models()
    for r in rows:
        card = model_card(r["model"])
        assert r["top1"] == card.get("top1")
        assert r["paper"] == card.get("paper", "")
    v3 = next(r for r in rows if r["model"] == "inception_v3")
    assert v3["params"] == 23_834_568 and v3["input_size"] == 299 and round(v3["gmacs"], 3) == 5.713


def test_explain_factorization_reports_the_papers_savings():
    ex = explain_factorization("inception_v3_paper")
    by_switch = {}
    for f in ex.found:
        by_switch.setdefault(f.switch, []).append(f)
        if f.block == "mixed_6a":  # a stride-2 stack: its first 3x3 runs on the full grid, so it costs more
            assert f.factorized == "3x3 64->96 + 3x3 96->96" and f.macs > f.macs_unfactorized
            continue
        assert f.macs < f.macs_unfactorized
        assert f.block_macs < f.block_macs_unfactorized
    assert {f.unfactorized.split()[0] for f in by_switch["factorize_5x5"]} == {"5x5"}
    assert all(f.paper_saving == pytest.approx(0.28) for f in by_switch["factorize_5x5"])
    assert all(f.paper_saving == pytest.approx(1 - 2 / 7) for f in by_switch["factorize_nxn"])
    assert {f.block for f in by_switch["factorize_nxn"]} >= {"mixed_6b", "mixed_6e", "mixed_7a"}
    assert ex.unfactorized_macs["factorize_nxn=False"] > ex.macs
    # the reference's widening 5x5 48->64 splits at its narrower end (64 -> 64 -> 64 is 28%)
    ex = explain_factorization("inception_v3", factorize_5x5=True)
    f = next(f for f in ex.found if f.factorized == "3x3 48->48 + 3x3 48->64")
    assert f.saving == pytest.approx(1 - (9 * 48 * 48 + 9 * 48 * 64) / (25 * 48 * 64))


def test_explain_factorization_of_3x3_gives_33_percent():
    ex = explain_factorization("inception_v3", 150, depth_multiplier=0.5, factorize_nxn=True)
    threes = [f for f in ex.found if f.unfactorized.startswith("3x3")]
    assert threes and all(f.paper_saving == pytest.approx(1 / 3) for f in threes)


def test_explain_factorization_of_an_unfactorized_model_finds_nothing():
    assert explain_factorization("googlenet").found == []


def test_parse_model_kwargs():
    got = parse_model_kwargs(["depth_multiplier=0.5", "aux_logits=true", "stem=low_res", "num_classes=10",
                              "residual_scale=0.17,0.1,0.2", "factorize_5x5=None"])
    assert got == dict(depth_multiplier=0.5, aux_logits=True, stem="low_res", num_classes=10,
                       residual_scale=[0.17, 0.1, 0.2], factorize_5x5=None)
    with pytest.raises(ValueError, match="key=value"):
        parse_model_kwargs(["depth_multiplier"])


def test_cli_summary(capsys):
    assert main(["summary", "inception_v3"]) == 0
    out = capsys.readouterr().out
    assert "mixed_7c" in out and "23,834,568" in out and "5.713 GMACs" in out
    assert main(["summary", "googlenet", "--size", "160", "--model-kwargs", "num_classes=10"]) == 0
    assert "googlenet at 160x160" in capsys.readouterr().out


def test_cli_summary_of_a_saved_folder_is_quiet(tmp_path, capsys):
    # its weights loaded into meta tensors with one UserWarning per tensor (287 for a GoogLeNet)
    from inceptionlab import create_model

    create_model("googlenet", stem="low_res", depth_multiplier=0.125, num_classes=3).save_pretrained(tmp_path / "m")
    assert main(["summary", str(tmp_path / "m")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and f"{tmp_path / 'm'} (googlenet) at 32x32" in out


def test_cli_summary_all_and_explain(capsys, monkeypatch, zoo_rows):
    from inceptionlab.tools import summary as summary_module

    monkeypatch.setattr(summary_module, "zoo_summary", lambda names=None: zoo_rows)  # computed above, once
    assert main(["summary", "--all"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in list_models())
    assert "77.29" in out and "5.713" in out
    assert main(["summary", "--all", "--markdown"]) == 0
    assert capsys.readouterr().out.startswith("| model |")
    assert main(["summary", "inception_v3", "--explain-factorization"]) == 0
    out = capsys.readouterr().out
    assert "5x5 64->96" in out and "28%" in out and "71%" in out


@pytest.mark.parametrize("argv,message", [
    (["summary", "inception_v3", "--size", "32"], "--size 32 is below inception_v3's smallest input, 75x75: pass "
                                                  "--size 75 or more, or --model-kwargs stem=low_res for small images"),
    (["summary", "googlenet", "--model-kwargs", "features_only=true"], "summary counts the whole network, whose "
                                                                       "block rows are the feature maps"),
    (["summary", "inception_v9"], "unknown model"),
    (["summary", "inception_v3", "--model-kwargs", "depth_multiplir=0.5"], "depth_multiplier"),
    (["summary"], "name a model"),
])
def test_cli_summary_bad_input_is_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_summary_with_aux_heads_counts_them_where_they_run(capsys):
    # at 75 px (v3's inference minimum) the aux heads' 5x5 pool had a 3x3 map: summary ended in a traceback,
    # then refused the whole table; the inference rows stand, and a line says why the aux rows are missing
    from inceptionlab.cli import main

    assert main(["summary", "inception_v3", "--size", "75", "--model-kwargs", "aux_logits=true"]) == 0
    out = capsys.readouterr().out
    assert "aux:" not in out and "23,834,568" in out
    assert out.endswith("(aux heads not counted: they run in training from 299x299)\n")
    assert main(["summary", "inception_v3", "--model-kwargs", "aux_logits=true"]) == 0
    assert "aux:mixed_6e" in capsys.readouterr().out
    # num_classes=0: the heads give no output, so "training, with aux heads" counted what never runs
    rows = model_summary(build_on_meta("inception_v3", aux_logits=True, num_classes=0))
    assert all(r.inference for r in rows) and totals(rows)["params"] == totals(rows)["params_with_aux"]


def test_summary_json_holds_the_table(capsys):
    import json

    assert main(["summary", "inception_resnet_v1", "--size", "160", "--json", "--model-kwargs",
                 "embedding_dim=512"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = model_summary(build_on_meta("inception_resnet_v1", embedding_dim=512), 160)
    assert doc["rows"][-1]["name"] == "head" and [r["macs"] for r in doc["rows"]] == [r.macs for r in rows]
    assert doc["rows"][-1]["kind"] == "avg pool + embedding 1792->512 + fc 512->1000"  # it said fc 1792->1000
    assert doc["totals"] == totals(rows) and doc["size"] == 160 and doc["switches"] == {"embedding_dim": 512}
    assert main(["summary", "inception_v3", "--explain-factorization", "--json", "--model-kwargs",
                 "depth_multiplier=0.5"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["unfactorized_macs"]["factorize_nxn=False"] > 1.4e9 and doc["switches"] == {"depth_multiplier": 0.5}
    # the savings the text table shows (properties, which the JSON had left out)
    assert all(f["saving"] == 1 - f["macs"] / f["macs_unfactorized"]
               and f["block_saving"] == 1 - f["block_macs"] / f["block_macs_unfactorized"] for f in doc["found"])
    assert len(doc["found"]) > 5
    assert main(["summary", "--all", "--json", "--markdown"]) == 2


def test_explain_factorization_undoes_one_switch_at_a_time_and_reads_saved_folders(tmp_path):
    # with both on, "factorize_5x5=False" alone was a 1x5 + 5x1 model, and the 5x5 rows were lost; then each
    # 5x5 had two rows, "3x3 + 3x3 instead of 5x5" of 3x3s the model no longer has, and the split 3x3s
    both = explain_factorization("inception_v3", factorize_5x5=True, factorize_nxn=True)
    assert [(f.switch, f.factorized, f.unfactorized) for f in both.found if f.block == "mixed_5b"] == [
        ("factorize_5x5+factorize_nxn", "1x3 48->48 + 3x1 48->48 + 1x3 48->48 + 3x1 48->64", "5x5 48->64"),
        ("factorize_5x5+factorize_nxn", "1x3 64->64 + 3x1 64->96 + 1x3 96->96 + 3x1 96->96", "5x5 64->96")]
    # a stride-2 3x3 is not split: the 5x5 of mixed_6a became 1x3 + 3x1 and a 3x3/2
    assert [(f.factorized, f.unfactorized) for f in both.found if f.block == "mixed_6a"] == [
        ("1x3 64->64 + 3x1 64->96 + 3x3 96->96", "5x5 64->96")]
    plain = count_macs(build_on_meta("inception_v3", factorize_5x5=False, factorize_nxn=False))
    assert both.unfactorized_macs["factorize_nxn=False, factorize_5x5=False"] == plain == 9_712_155_232
    # the entries are the whole difference between the two models (it counted 3x3s that were split)
    assert (sum(f.macs for f in both.found), sum(f.macs_unfactorized for f in both.found)) == \
        (2_101_986_048, 6_570_617_856)
    assert plain - 6_570_617_856 + 2_101_986_048 == both.macs
    # a model where one switch changes nothing gets no line for it
    assert list(explain_factorization("googlenet_paper", factorize_5x5=True).unfactorized_macs) == \
        ["factorize_5x5=False"]
    # a saved folder: "does not exist" (it looked the folder up as a model name)
    create_model("inception_v3", num_classes=7, depth_multiplier=0.25, stem="low_res").save_pretrained(tmp_path / "v3")
    folder = explain_factorization(str(tmp_path / "v3"))
    assert folder.found and folder.size == 32


def test_explain_factorization_with_both_switches_counts_each_convolution_once():
    # googlenet_paper's 5x5 16->32 had two rows, "3x3 16->16 + 3x3 16->32 5.4 instead of 5x5 16->32 10.0" (two
    # 3x3 the built model does not have) and "1x3+3x1+1x3+3x1 3.0 instead of 3x3 16->16 + 3x3 16->32 5.4", and
    # the total said 420.8 MMACs instead of 811.7 (48% saved)
    from inceptionlab.tools.summary import format_factorization

    ex = explain_factorization("googlenet_paper", factorize_5x5=True, factorize_nxn=True)
    mixed_3b = [f for f in ex.found if f.block == "mixed_3b"]
    assert [(f.switch, f.factorized, f.macs, f.unfactorized, f.macs_unfactorized) for f in mixed_3b] == [
        ("factorize_nxn", "1x3 96->96 + 3x1 96->128", 50_577_408, "3x3 96->128", 86_704_128),
        ("factorize_5x5+factorize_nxn", "1x3 16->16 + 3x1 16->16 + 1x3 16->16 + 3x1 16->32", 3_010_560,
         "5x5 16->32", 10_035_200)]
    assert mixed_3b[1].paper_saving == pytest.approx(1 - 12 / 25)
    # the block saving is against the unfactorized block, once per block
    assert all((f.block_macs, f.block_macs_unfactorized) == (84_897_792, 128_049_152) for f in mixed_3b)
    assert len(ex.found) == 18 and {f.unfactorized.split()[0] for f in ex.found} == {"3x3", "5x5"}
    unfactorized = ex.unfactorized_macs["factorize_nxn=False, factorize_5x5=False"]
    assert unfactorized - 747_672_576 + 356_788_992 == ex.macs == 1_191_788_288
    text = format_factorization(ex)
    assert "3x3 16->16 + 3x3 16->32" not in text
    assert "both, 52% for a 5x5 as two 3x3 split in turn (1 - 12/25)." in text
    assert "all factorized convolutions: 356.8 MMACs instead of 747.7 (52% saved)\n" in text
    assert text.endswith("whole model: 1.192 GMACs; with factorize_nxn=False, factorize_5x5=False 1.583 GMACs "
                         "(25% saved)")
    rows = [line.split() for line in text.splitlines() if line.startswith("mixed_3b")]
    assert [row[-1] for row in rows] == ["34%", "52%"]  # (a block saving on its first row only)


def test_explain_factorization_of_a_model_with_its_switches_off_suggests_turning_them_on():
    from inceptionlab.tools.summary import format_factorization

    off = dict(factorize_5x5=False, factorize_nxn=False)
    # it said "try inception_v3, inception_v3_paper or ..." of inception_v3 itself
    assert format_factorization(explain_factorization("inception_v3", 75, **off)) == (
        "inception_v3 has no factorized convolutions at these switches (factorize_5x5 / factorize_nxn change "
        "nothing); try inception_v3_paper or --model-kwargs factorize_5x5=true or factorize_nxn=true")
    assert format_factorization(explain_factorization("inception_v3_paper", 75, **off)).endswith(
        "; try inception_v3 or --model-kwargs factorize_5x5=true or factorize_nxn=true")
    assert format_factorization(explain_factorization("inception_v4", 75, **off)).endswith(
        "; try inception_v3, inception_v3_paper or --model-kwargs factorize_5x5=true or factorize_nxn=true")


def test_sizes_may_be_numpy_integers():
    # "size must be a positive whole number of pixels, got np.int64(96)"
    np = pytest.importorskip("numpy")
    model = build_on_meta("inception_v3", depth_multiplier=0.125)
    assert count_macs(model, np.int64(96)) == count_macs(model, 96) > 0
    assert [r.macs for r in model_summary(model, np.int32(96))] == [r.macs for r in model_summary(model, 96)]
    ex = explain_factorization("inception_v3", np.int64(96), depth_multiplier=0.125)
    assert ex.size == 96 and type(ex.size) is int  # (the JSON of --explain-factorization holds it)
    for wrong in (True, np.float64(96.0)):
        with pytest.raises(UserError, match="size must be a positive whole number of pixels"):
            count_macs(model, wrong)


def test_model_summary_checks_what_it_is_given():
    with pytest.raises(UserError, match=r"^size must be a positive whole number of pixels, got -5$"):
        model_summary(build_on_meta("inception_v3"), -5)
    with pytest.raises(UserError, match=r"got 299\.5$"):
        model_summary(build_on_meta("inception_v3"), 299.5)
    with pytest.raises(UserError, match=r"model_summary takes a model of the zoo .* got FeatureExtractor; count_macs"):
        model_summary(create_model("googlenet", features_only=True), 224)


def test_summary_refuses_options_it_would_ignore(capsys):
    from inceptionlab.cli import main

    for argv, expected in [(["--all", "googlenet"], "--all summarizes every model at its own size"),
                           (["--all", "--explain-factorization"], "drop the model name, --size"),
                           (["googlenet", "--markdown"], "--markdown makes the --all table; pass --all too")]:
        assert main(["summary"] + argv) == 2
        err = capsys.readouterr().err.strip()
        assert expected in err and len(err.splitlines()) == 1, err
