"""export --int8 (quantize.py, int8_gate.py): the int8 graph, its gate record, and which precision predict runs."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from helpers import run_cli  # noqa: E402
from pokemon_classifier import int8_gate, openset, pokedex, quantize  # noqa: E402
from pokemon_classifier.models import build_model, preprocessing  # noqa: E402
from pokemon_classifier.predict import Classifier  # noqa: E402


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A calibrated checkpoint with an open-set score, and its int8 export (gate run on synthetic data)."""
    import pandas as pd

    from pokemon_classifier.synthetic import make_dataset

    root = tmp_path_factory.mktemp("q")
    data = make_dataset(root / "data", per_class=10)
    assert run_cli("split", data)[0] == 0
    images, kinds = openset.degenerate_set(4, seed=7, size=64)
    (root / "neg" / "images").mkdir(parents=True)
    for i, im in enumerate(images):
        im.save(root / "neg" / "images" / f"neg{i:03d}.png")
    pd.DataFrame([(f"neg{i:03d}.png", "photo" if i % 2 else k) for i, k in enumerate(kinds)],
                 columns=["img_name", "kind"]).to_csv(root / "neg" / "manifest.csv", index=False)
    # EfficientNet-Lite0 with its ImageNet trunk (offline weights) and a random head: outputs that
    # differ between pictures (a randomly initialised trunk gives near-constant logits), and the
    # "same" padding whose shape arithmetic must stay out of quantisation
    torch.manual_seed(0)
    ck = root / "m.pt"
    torch.save({"model": build_model("efficientnet_lite0", pretrained=True).state_dict(), "arch": "efficientnet_lite0",
                "class_ids": list(pokedex.IDS), "preprocessing": preprocessing("efficientnet_lite0", 64)}, ck)
    code, _, err = run_cli("calibrate", "--weights", ck, "--data", data, "--negatives", root / "neg", "--device", "cpu")
    assert code == 0, err
    code, out, err = run_cli("export", "--int8", "--weights", ck, "--data", data, "--negatives", root / "neg",
                             "--out", root / "m8.pt", "--onnx", root / "m8.onnx", "--runs", "2")
    # the speed gate is the machine's to decide (never asserted); the figures must be there either way
    assert code in (0, 1), err
    assert "top1" in out and "rejected" in out and "ECE" in out and "size: fp32" in out
    return data, root / "neg", ck, root / "m8.pt", root / "m8.onnx"


def _with_record(src, dst, **changes):
    ck = torch.load(src, weights_only=True)
    ck["int8"].update(changes)
    torch.save(ck, dst)
    return dst


def test_int8_graph_is_quantised_but_the_open_set_score_stays_fp32(made):
    *_, onnx_path = made
    m = onnx.load(str(onnx_path))
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    int8_weights = {i.name for i in m.graph.initializer if i.data_type == onnx.TensorProto.INT8}
    assert int8_weights  # the convolutions' weights are int8 (per channel)
    dq_of_int8 = {n.output[0] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in int8_weights}
    head = [n for n in m.graph.node if n.name.startswith("/head/")]
    assert head and not any(i in dq_of_int8 for n in head for i in n.input)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") and "/head/" in n.name for n in m.graph.node)
    meta = json.loads({p.key: p.value for p in m.metadata_props}["pokemon_classifier"])
    assert meta["precision"] == "int8" and meta["quantization"]["format"] == "qdq" and meta["openset"]


def test_int8_agrees_with_fp32(made, tmp_path):
    data, _, ck, _, onnx_path = made
    code, _, err = run_cli("export", "--weights", ck, "--onnx", tmp_path / "fp32.onnx")
    assert code == 0, err
    paths = sorted((data / "images").glob("*"))[:40]
    fp32 = Classifier.load(tmp_path / "fp32.onnx").outputs_paths(paths)
    int8 = Classifier.load(onnx_path).outputs_paths(paths)
    agree = (fp32[0].argmax(1) == int8[0].argmax(1)).mean()
    assert agree >= 0.8, agree  # 0 when the padding arithmetic was quantised too
    assert np.corrcoef(fp32[1], int8[1])[0, 1] > 0.9  # the open-set score barely moves


def test_shape_arithmetic_is_never_quantised(tmp_path):
    """A graph with TensorFlow "same" padding computed at run time (what export wrote before static
    padding, and what a hand-made .onnx may hold): its shape arithmetic stays out of quantisation."""
    from onnxruntime.quantization import QuantFormat, quantize_static
    from timm.layers import Conv2dSame

    torch.manual_seed(0)
    conv = torch.nn.Sequential(Conv2dSame(3, 8, 3, stride=2), torch.nn.ReLU(), Conv2dSame(8, 8, 3, stride=2)).eval()
    torch.onnx.export(conv, (torch.randn(1, 3, 32, 32),), str(tmp_path / "same.onnx"), input_names=["image"],
                      dynamic_axes={"image": {0: "batch", 2: "h", 3: "w"}}, opset_version=17, dynamo=False)
    m = onnx.load(str(tmp_path / "same.onnx"))
    pads = [n for n in m.graph.node if n.op_type == "Pad"]
    assert pads  # computed from the input's shape
    shape = set(quantize.shape_nodes(m))
    producer = {o: n for n in m.graph.node for o in n.output}
    assert all(producer[p.input[1]].name in shape for p in pads if p.input[1] in producer)

    class Reader:
        def __init__(self):
            self.left = [{"image": np.random.default_rng(i).standard_normal((1, 3, 32, 32)).astype(np.float32)}
                         for i in range(2)]

        def get_next(self):
            return self.left.pop() if self.left else None

    quantize_static(str(tmp_path / "same.onnx"), str(tmp_path / "q.onnx"), Reader(), quant_format=QuantFormat.QDQ,
                    nodes_to_exclude=quantize.keep_fp32(m))
    q = onnx.load(str(tmp_path / "q.onnx"))
    producer = {o: n for n in q.graph.node for o in n.output}
    arithmetic = {n.name for n in m.graph.node if n.name in shape and n.op_type != "Constant"}  # constants: the pad value 0
    assert {"Shape", "Ceil", "Sub"} <= {n.op_type for n in m.graph.node if n.name in arithmetic}
    assert not any(n.op_type == "QuantizeLinear" and n.input[0] in producer and producer[n.input[0]].name in arithmetic
                   for n in q.graph.node)


def test_export_pads_statically_with_the_same_outputs(made, tmp_path):
    """At the checkpoint's one input size every "same" padding is a constant: the exported graph
    has no Shape or Pad node (asymmetric pads are folded into the Conv), and its outputs are the
    torch model's, whose padding is computed at run time."""
    from timm.layers import Conv2dSame

    from pokemon_classifier.models import load_checkpoint
    from pokemon_classifier.onnx_graph import export_onnx
    from pokemon_classifier.openset.scoring import OpenSetHead, Scored

    _, _, ck, _, onnx_path = made
    model, meta = load_checkpoint(ck)
    assert any(isinstance(m, Conv2dSame) for m in model.modules())
    export_onnx(ck, tmp_path / "fp32.onnx", check=False)  # compared below, tighter
    for path in (tmp_path / "fp32.onnx", onnx_path):  # fp32, and the int8 graph export --int8 made from it
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert not ops & {"Pad", "Shape", "Ceil"}, (path.name, ops & {"Pad", "Shape", "Ceil"})
    convs = [n for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node if n.op_type == "Conv"]
    pads = [list(a.ints) for n in convs for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in pads  # stride 2 on an even size pads the right and bottom only
    net = Scored(model, OpenSetHead(meta["openset"])).eval()
    size = meta["preprocessing"]["size"]
    x = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        logits, score = net(x)
    import onnxruntime as ort

    got = ort.InferenceSession(str(tmp_path / "fp32.onnx"), providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})
    assert np.abs(got[0] - logits.numpy()).max() < 1e-5
    assert np.abs(got[1] - score.numpy()).max() < 1e-5 * max(1.0, float(score.abs().max()))


@pytest.mark.parametrize("size", [31, 32])
def test_static_padding_matches_timm_same_padding(size):
    from timm.layers import Conv2dSame

    from pokemon_classifier.onnx_graph import StaticSame, static_padding

    torch.manual_seed(0)
    net = torch.nn.Sequential(Conv2dSame(3, 4, 3, stride=2), Conv2dSame(4, 4, 5, stride=1), Conv2dSame(4, 4, 3, stride=2))
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        ref = net(x)
        static = static_padding(net, size)
        assert all(isinstance(m, StaticSame) for m in static)
        assert torch.allclose(static(x), ref, atol=1e-6)


def test_gate_is_recorded_in_a_checkpoint_that_loads_weights_only(made):
    _, _, ck, ck8, onnx_path = made
    rec = torch.load(ck8, weights_only=True)["int8"]
    gate = rec["gate"]
    assert rec["source"] == quantize.fingerprint(torch.load(ck, weights_only=True))
    assert rec["onnx"].numpy().tobytes() == onnx_path.read_bytes()
    assert rec["passed"] == gate["passed"] == all(c["ok"] for c in gate["checks"].values())
    assert {"top1", "top5", "open_set_accepted", "speedup p50_ms", "speedup batch32_img_s"} <= set(gate["checks"])
    assert any(k.startswith("rejected ") for k in gate["checks"])
    assert gate["recipe"]["calibration"]["split"] == "val" and set(gate["ece"]) == {"fp32", "int8"}
    assert gate["size_bytes"]["int8"] < gate["size_bytes"]["fp32"]


def test_judge_applies_each_limit():
    fp32 = {"top1": 0.9, "top5": 0.99, "ece": 0.02, "accepted": 0.95, "rejected": {"photo": {"rate": 0.9}}}
    ok = {"top1": 0.898, "top5": 0.989, "ece": 0.03, "accepted": 0.945, "rejected": {"photo": {"rate": 0.905}}}
    fast = {"fp32": {"p50_ms": 10.0, "batch32_img_s": 100.0}, "int8": {"p50_ms": 5.0, "batch32_img_s": 200.0}}
    assert int8_gate.judge(fp32, ok, fast)["passed"]
    for change, name in (({"top1": 0.896}, "top1"), ({"top5": 0.987}, "top5"), ({"accepted": 0.935}, "open_set_accepted"),
                         ({"rejected": {"photo": {"rate": 0.88}}}, "rejected photo")):
        assert quantize.failed(int8_gate.judge(fp32, {**ok, **change}, fast)) == [name]
    slow = {"fp32": fast["fp32"], "int8": {"p50_ms": 6.0, "batch32_img_s": 200.0}}
    assert quantize.failed(int8_gate.judge(fp32, ok, slow)) == ["speedup p50_ms"]


def test_predict_runs_int8_by_default_only_when_the_gate_passed(made, tmp_path, capsys):
    data, _, ck, ck8, _ = made
    passed = _with_record(ck8, tmp_path / "pass.pt", passed=True)
    failed = _with_record(ck8, tmp_path / "fail.pt", passed=False)
    auto = Classifier.load(passed, precision="auto")
    assert auto.backend == "onnx" and auto.meta["precision"] == "int8"
    assert Classifier.load(passed, precision="fp32").backend == "torch"
    assert Classifier.load(passed).backend == "torch"  # the Python API stays fp32 unless asked
    assert Classifier.load(failed, precision="auto").backend == "torch"
    forced = Classifier.load(failed, precision="int8")  # asked for: it runs, with a warning
    assert forced.meta["precision"] == "int8" and "did not pass its gates" in capsys.readouterr().err
    assert quantize.int8_model(passed, "auto", device="cuda") is None  # int8 is for the CPU
    img = sorted((data / "images").glob("*"))[0]
    for weights, precision in ((passed, None), (passed, "fp32"), (failed, None)):
        extra = ["--precision", precision] if precision else []
        code, out, err = run_cli("predict", "--weights", weights, *extra, "--json", img)
        assert code == 0, err
        assert json.loads(out)["topk"]
    # what the CLI ran: the int8 file sits in the cache only once a run used it
    assert list((tmp_path / "cache" / "onnx").glob("int8-*.onnx"))


def test_a_stale_or_missing_int8_model_is_never_used_silently(made, tmp_path, capsys):
    _, _, ck, ck8, _ = made
    stale = torch.load(ck8, weights_only=True)
    stale["int8"]["passed"] = True
    stale["temperature"] = stale["temperature"] * 2  # recalibrated after quantising
    torch.save(stale, tmp_path / "stale.pt")
    assert Classifier.load(tmp_path / "stale.pt", precision="auto").backend == "torch"
    assert "stale" in capsys.readouterr().err
    code, _, err = run_cli("predict", "--weights", tmp_path / "stale.pt", "--precision", "int8", ck)
    assert code == 2 and err.count("\n") == 1 and "other weights or calibration" in err
    code, _, err = run_cli("predict", "--weights", ck, "--precision", "int8", ck)
    assert code == 2 and err.count("\n") == 1 and "has no int8 model" in err and "export --int8" in err


def test_fingerprint_follows_what_the_graph_is_made_of(made, tmp_path):
    _, _, ck, _, _ = made
    a = torch.load(ck, weights_only=True)
    torch.save(a, tmp_path / "copy.pt")
    assert quantize.fingerprint(torch.load(tmp_path / "copy.pt", weights_only=True)) == quantize.fingerprint(a)
    assert quantize.fingerprint({**a, "history": []}) == quantize.fingerprint(a)  # not part of the graph
    moved = {**a, "model": {k: v + 1 if v.is_floating_point() else v for k, v in a["model"].items()}}
    for other in ({**a, "temperature": 1.5}, {**a, "openset": {**a["openset"], "threshold": 0.0}}, moved):
        assert quantize.fingerprint(other) != quantize.fingerprint(a)


def test_bad_inputs_are_one_line_errors(made, tmp_path):
    data, _, ck, ck8, onnx_path = made
    cases = [
        (("export", "--weights", ck), "needs --onnx"),
        (("export", "--int8", "--weights", ck), "--int8 needs --data"),
        (("export", "--int8", "--weights", ck, "--data", data, "--exclude", "middle"), "--exclude middle"),
        (("export", "--int8", "--weights", ck, "--data", tmp_path / "none"), "none"),
        (("predict", "--weights", onnx_path, "--precision", "int8", ck), "not an .onnx file"),
        (("predict", "--weights", ck8, "--precision", "half", ck), "--precision"),
    ]
    corrupt = torch.load(ck8, weights_only=True)
    corrupt["int8"].update(onnx=corrupt["int8"]["onnx"][:100].clone(), passed=True)
    torch.save(corrupt, tmp_path / "corrupt.pt")
    cases.append((("predict", "--weights", tmp_path / "corrupt.pt", "--precision", "int8", ck), "corrupt"))
    junk = torch.load(ck, weights_only=True)
    junk["int8"] = "yes"
    torch.save(junk, tmp_path / "junk.pt")
    cases.append((("predict", "--weights", tmp_path / "junk.pt", "--precision", "int8", ck), "not an int8 model record"))
    for args, words in cases:
        code, _, err = run_cli(*args)
        assert code == 2 and err.count("\n") == 1 and words in err, (args, err)


def test_serve_precision_option(made, monkeypatch):
    """serve --precision: as predict's (auto runs a passed int8 record), handed to Classifier.load."""
    from pokemon_classifier.errors import UserError

    _, _, ck, _, _ = made
    code, _, err = run_cli("serve", "--port", "0", "--weights", ck, "--precision", "int8")
    assert code == 2 and err.count("\n") == 1 and "has no int8 model" in err
    code, _, err = run_cli("serve", "--port", "0", "--precision", "half")
    assert code == 2 and "--precision" in err
    seen = []

    def fake_load(weights=None, **kw):
        seen.append(kw.get("precision"))
        raise UserError("stop here")

    monkeypatch.setattr(Classifier, "load", staticmethod(fake_load))
    for extra in ([], ["--precision", "fp32"]):
        assert run_cli("serve", "--port", "0", *extra)[0] == 2
    assert seen == ["auto", "fp32"]


def test_fold_pads_folds_only_zero_constant_pads_into_convs():
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from pokemon_classifier.onnx_graph import fold_pads

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    zero_pads = numpy_helper.from_array(np.array([0, 0, 0, 0, 0, 0, 1, 1], dtype=np.int64), "p")
    nodes = [helper.make_node("Pad", ["x", "p"], ["xa"], name="zero"),
             helper.make_node("Conv", ["xa", "w"], ["a"], strides=[2, 2], pads=[1, 1, 0, 0]),
             helper.make_node("Pad", ["x", "p"], ["xb"], name="reflect", mode="reflect"),
             helper.make_node("Conv", ["xb", "w"], ["b"], strides=[2, 2])]
    io = lambda n, s: helper.make_tensor_value_info(n, TensorProto.FLOAT, s)  # noqa: E731
    model = helper.make_model(helper.make_graph(nodes, "g", [io("x", [1, 3, 8, 8])], [io("a", None), io("b", None)],
                                                [w, zero_pads]), opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    run = lambda m: ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})  # noqa: E731
    before = run(model)
    folded = fold_pads(onnx.load_from_string(model.SerializeToString()))
    assert [n.name for n in folded.graph.node if n.op_type == "Pad"] == ["reflect"]
    conv = next(n for n in folded.graph.node if n.output[0] == "a")
    assert conv.input[0] == "x" and [list(a.ints) for a in conv.attribute if a.name == "pads"] == [[1, 1, 1, 1]]
    for got, ref in zip(run(folded), before):
        assert np.allclose(got, ref, atol=1e-6)


def test_a_part_of_the_network_can_be_kept_fp32_by_name(made, tmp_path):
    """keep_fp32's '/...' excludes (the sensitivity scan's parts): that block's nodes stay fp32; unknown names are errors."""
    import importlib.util
    from pathlib import Path

    _, _, ck, _, _ = made
    assert run_cli("export", "--weights", ck, "--onnx", tmp_path / "fp32.onnx")[0] == 0
    m = onnx.load(str(tmp_path / "fp32.onnx"))
    spec = importlib.util.spec_from_file_location("int8_select", Path(__file__).parents[1] / "tools" / "int8_select.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    parts = tool.parts(m)
    assert parts[0] == "/net/conv_stem/" and parts[-1] == "last" and any(p.startswith("/net/blocks.") for p in parts)
    block = next(p for p in parts if p.startswith("/net/blocks.1/"))
    keep = quantize.keep_fp32(m, [block])
    convs = [n.name for n in m.graph.node if n.op_type == "Conv" and n.name.startswith(block)]
    assert convs and set(convs) <= set(keep) and not set(convs) & set(quantize.keep_fp32(m))
    with pytest.raises(quantize.UserError, match="no node"):
        quantize.keep_fp32(m, ["/net/nowhere/"])


def test_a_calibration_cache_is_written_once_and_reused(made, tmp_path):
    """quantize(calibration_cache=...): the sensitivity scan calibrates once; a second graph from the cache is the same."""
    data, _, ck, _, _ = made
    assert run_cli("export", "--weights", ck, "--onnx", tmp_path / "fp32.onnx")[0] == 0
    pre = Classifier.load(tmp_path / "fp32.onnx").meta["preprocessing"]
    cache = tmp_path / "ranges.json"
    pictures = sorted((data / "images").glob("*"))[:8]
    quantize.quantize(tmp_path / "fp32.onnx", tmp_path / "a.onnx", quantize.Batches(pictures, pre), calibration_cache=cache)
    assert cache.is_file()
    quantize.quantize(tmp_path / "fp32.onnx", tmp_path / "b.onnx", quantize.Batches([], pre), calibration_cache=cache)
    assert (tmp_path / "a.onnx").read_bytes() == (tmp_path / "b.onnx").read_bytes()
