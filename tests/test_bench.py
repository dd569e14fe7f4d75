"""bench/: the random 3B checkpoint's tokenizer layout, and the benchmark's code path on a tiny model (CPU)."""
from __future__ import annotations

import json
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

import bench_vlm  # noqa: E402
import make_random_3b  # noqa: E402


def test_tokenizer_has_paligemma_id_layout():
    from PIL import Image

    from tamrin.vlm.footprint import load_config

    config = load_config()
    proc = make_random_3b.build_processor(["answer en how many red cubes are there?", "3", "yes"], config)
    tok = proc.tokenizer
    assert proc.image_token_id == config.image_token_id == 257152
    assert len(tok) == 257153 <= config.text_config.vocab_size  # the processor added no tokens past <image>
    assert tok.convert_tokens_to_ids("<loc0000>") == 256000 and tok.convert_tokens_to_ids("<seg127>") == 257151
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (2, 1, 0)
    out = proc(text=["<image>answer en how many red cubes are there?"], images=[Image.new("RGB", (50, 40))],
               suffix=["3"], return_tensors="pt")
    ids, labels, tt = out["input_ids"][0], out["labels"][0], out["token_type_ids"][0]
    assert (ids[:256] == 257152).all() and ids[256] == 2 and out["pixel_values"].shape == (1, 3, 224, 224)
    suffix = labels != -100
    assert suffix.sum() >= 2 and labels[-1] == 1 and (tt == suffix.long()).all()  # answer + <eos>, causal part
    assert int(ids.max()) < config.text_config.vocab_size


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random PaliGemma with processor (the demo's builder) and a 3-question test split."""
    from PIL import Image

    from tamrin.vlm.tiny import save_tiny_base

    root = tmp_path_factory.mktemp("bench")
    rows = [{"id": f"q{i}", "image": f"images/{i}.png", "question": q, "answer": a, "qtype": "exist"}
            for i, (q, a) in enumerate([("is there a red cube?", "yes"), ("how many spheres?", "2"),
                                        ("what color is the cylinder?", "blue")])]
    data = root / "data"
    (data / "images").mkdir(parents=True)
    for i, _ in enumerate(rows):
        Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(data / "images" / f"{i}.png")
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = ["answer en "] + [r["question"] for r in rows] + [r["answer"] for r in rows]
    ckpt = save_tiny_base(root / "ckpt", texts, width=128, layers=1, image_size=32)
    return ckpt, data


@pytest.mark.slow
def test_bench_code_path_on_cpu(tiny, tmp_path, one_torch_thread):
    ckpt, data = tiny
    cpu = torch.device("cpu")
    rows = bench_vlm.bench_training(ckpt, [2], ["suffix", "full"], seq_len=12, suffix_len=3, steps=1, warmup=1,
                                    rank=4, device=cpu, quantization="none", settings=("on", "off", "2"))
    assert [(r["setting"], r["grad_ckpt_layers"], r["batch"], r["loss"], r["ok"]) for r in rows] == [
        ("on", 1, 2, "suffix", True), ("on", 1, 2, "full", True), ("off", 0, 2, "suffix", True),
        ("off", 0, 2, "full", True), ("2", 0, 2, "suffix", True), ("2", 0, 2, "full", True)]
    assert all(r["samples_per_s"] > 0 and all(map(torch.isfinite, map(torch.tensor, r["losses"]))) for r in rows)
    assert all(r["estimate_peak_gib"] > 0 for r in rows)  # the memory estimate beside each measured row

    loop = bench_vlm.bench_loop(ckpt, batch=2, accum=2, steps=2, warmup=1, seq_len=14, suffix_len=2, rank=4,
                                device=cpu, quantization="none", num_workers=0, work=tmp_path / "loop")
    assert loop["seq_len"] == 14 and loop["grad_ckpt"] is False  # auto on a CPU: off
    assert loop["loop"]["samples_per_s"] > 0 and loop["bench"]["samples_per_s"] > 0 and loop["loop_vs_bench"] > 0
    train_rows = [json.loads(x) for x in (tmp_path / "loop" / "data" / "train.jsonl").read_text().splitlines()]
    assert len(train_rows) == 2 * 2 * 3 and len({r["question"] for r in train_rows}) == 1

    gen = bench_vlm.bench_generation(ckpt, n_batched=6, n_single=2, batch_size=3, max_new_tokens=2, data_dir=data,
                                     device=cpu, quantization="none", num_workers=0)
    assert gen["batched"]["n"] == 6 and gen["one_by_one"]["batch_size"] == 1 and gen["speedup"] > 0
    assert gen["plain_generate"]["n"] == 6 and gen["plain_generate"]["new_tokens_per_call"] <= 2
    assert gen["vs_plain_generate"] > 0
    fast = {**rows[0], "batch": 32, "peak_allocated_gib": 9.5, "samples_per_s": 41.0}
    auto = {**rows[4], "setting": "auto@14.5 → 6 of 18 decoder layers", "batch": 8, "samples_per_s": 12.0,
            "peak_allocated_gib": 12.0}
    v = bench_vlm.verdict([fast, {**rows[0], "batch": 8, "samples_per_s": 10.0},
                           {**rows[2], "batch": 8, "samples_per_s": 13.0, "peak_allocated_gib": 15.0}, auto], gen, loop)
    assert v["qlora_b32_peak_ok"] and v["qlora_b32_speed_ok"] and not v["b32_speed_ok"]
    assert v["no_ckpt_b8_speedup"] == 1.3 and v["no_ckpt_b8_peak_gib"] == 15.0
    assert v["auto_b8_speedup"] == 1.2 and not v["auto_b8_speedup_ok"] and v["auto_b8_peak_ok"]
    assert v["eval_speedup_ok"] == (gen["speedup"] >= 10)
    assert v["loop_vs_bench_ok"] == (loop["loop_vs_bench"] >= 0.95)


def test_synthetic_folder_reaches_the_bench_shape(tmp_path):
    from tamrin.vlm import batches
    from tamrin.vlm.footprint import load_config

    proc = make_random_3b.build_processor(["answer en is there a red cube or the large sphere?", "yes", "red cube"],
                                          load_config())
    shape = bench_vlm.synthetic_folder(tmp_path, proc, 3, seq_len=280, suffix_len=3, prefix="answer en ",
                                       image_size=32)
    rows = batches.read_split(tmp_path, "train")
    ex = batches.tokenize(proc, rows, "answer en ", with_answers=True)
    assert shape == {"seq_len": 280, "suffix_len": 3}
    assert {len(e) for e in ex} == {280} and {sum(e.token_type_ids) for e in ex} == {3}


def test_device_slug():
    assert bench_vlm.device_slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
