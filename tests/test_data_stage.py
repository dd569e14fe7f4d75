"""The data stage end to end through the runner, for each source: synthetic, a local dataset in the_cauldron's
schema loaded by the same `load_dataset(..., streaming=True)` call as the hub, and a small folder in the official
CLEVR v1.0 layout. Also: split by image, skipped images, and one-line errors."""
import io
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from tamrin.atomic import read_json, read_jsonl
from tamrin.config import load_config
from tamrin.errors import TamrinError
from tamrin.runner import Paths, read_manifest, run_stage
from tamrin.contract.facts import ANSWERS, QTYPES

ROOT = Path(__file__).resolve().parents[1]
FIELDS = {"id", "image", "question", "answer", "qtype", "image_id", "source"}


@pytest.fixture(autouse=True)
def no_shutdown_sleep(monkeypatch):
    """`datasets` sleeps 5 s whenever a streamed shard runs out (to let remote-read threads wind down); the local
    copies here have one shard, so every test would wait for it. Only that pause is removed."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)


def make_root(tmp_path: Path) -> Path:
    root = tmp_path / "checkout"
    shutil.copytree(ROOT / "configs", root / "configs", ignore=shutil.ignore_patterns("student.toml"))
    return root


def run_data(root: Path, overrides: list[str]):
    cfg = load_config("demo", overrides=overrides, root=root)
    return run_stage("data", cfg, Paths(root))


def load_outputs(root: Path):
    out = root / "results" / "data"
    return out, read_jsonl(out / "train.jsonl"), read_jsonl(out / "test.jsonl"), read_json(out / "stats.json")


def check_contract(out: Path, train: list, test: list, stats: dict) -> None:
    """DESIGN.md's results contract for data/, whatever the source."""
    for r in train + test:
        assert set(r) == FIELDS, r
        assert r["image"] == f"images/{r['image_id']}.png" and (out / r["image"]).is_file()
        assert r["answer"] in ANSWERS and r["qtype"] in QTYPES and r["question"]
    assert len({r["id"] for r in train + test}) == len(train) + len(test)
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in test}, "an image is in both splits"
    for split, rows in (("train", train), ("test", test)):
        assert stats[split]["questions"] == len(rows)
        assert stats[split]["images"] == len({r["image_id"] for r in rows})
        assert sum(stats[split]["by_qtype"].values()) == len(rows) and set(stats[split]["by_qtype"]) == set(QTYPES)
    saved = {p.stem for p in (out / "images").glob("*.png")}
    assert saved == {r["image_id"] for r in train + test}  # every image once, none orphaned
    for p in list((out / "images").glob("*.png"))[:3]:
        Image.open(p).verify()


# --- synthetic ---------------------------------------------------------------------------------------------------
SYNTH = ["data.n_scenes=24", "data.questions_per_scene=4", "data.image_size=48", "data.test_fraction=0.25",
         "data.max_test=20"]


def test_synthetic_stage_writes_the_contract_caches_and_reseeds(tmp_path, caplog):
    root = make_root(tmp_path)
    assert run_data(root, SYNTH).status == "ran"
    out, train, test, stats = load_outputs(root)
    check_contract(out, train, test, stats)
    assert len(train) + len(test) == 96 and len(test) == 20  # 25% of 96 = 24, capped at 20
    assert stats["source"]["kind"] == "synthetic" and all(r["source"] == "synthetic" for r in train)
    assert {r["qtype"] for r in train + test} == set(QTYPES)
    manifest = read_manifest(Paths(root), "data")
    assert manifest["profile"] == "demo" and manifest["config"]["data"]["n_scenes"] == 24
    assert "train.jsonl" in manifest["files"] and any(f.startswith("images/") for f in manifest["files"])

    assert run_data(root, SYNTH).status == "cached"
    assert run_data(root, SYNTH + ["data.seed=1"]).status == "ran"
    _, train1, test1, _ = load_outputs(root)
    assert [r["question"] for r in train1] != [r["question"] for r in train]
    assert all(r["image_id"].startswith("synth_s1_") for r in train1 + test1)


def test_split_is_by_image_and_seeded():
    from tamrin.data.subset import split_by_image

    records = [{"image_id": f"im{i // 3}", "q": i} for i in range(300)]  # 100 images × 3 questions
    train, test = split_by_image(records, 0.1, 1000, seed=0)
    assert len(test) == 30 and len(train) == 270
    assert not {r["image_id"] for r in train} & {r["image_id"] for r in test}
    again, _ = split_by_image(records, 0.1, 1000, seed=0)
    other, _ = split_by_image(records, 0.1, 1000, seed=1)
    assert again == train and other != train
    assert len(split_by_image(records, 0.5, 12, seed=0)[1]) == 12  # capped


# --- hub path on a local dataset in the_cauldron's schema -------------------------------------------------------
def png(colour=(120, 120, 120)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, format="PNG")
    return buf.getvalue()


def jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


SUFFIX = "\nAnswer the question using a single word or phrase."


def turn(q: str, a: str) -> dict:
    return {"user": q + SUFFIX, "assistant": a, "source": "clevr"}


CAULDRON_ROWS = [
    ([png((200, 0, 0))], [turn("Are there any red cubes?", "Yes."), turn("How many spheres are there?", "2."),
                          turn("What color is the large sphere?", "Cyan."),
                          turn("Describe this image.", "A room with some objects.")]),  # off-vocabulary
    ([png((0, 0, 200))], [turn("What is the small cylinder made of?", "Metal."),
                          turn("Are there more cubes than spheres?", "No.")]),
    ([b"\x89PNG\r\n\x1a\nthis is not a png"], [turn("What shape is the red thing?", "Cube.")]),  # corrupt
    ([], [turn("Is there a big ball?", "Yes.")]),  # no image at all
    ([jpeg()], [turn("Is the cube the same size as the ball?", "No."), turn("How big is the cube?", "Large.")]),
    ([png((0, 200, 0))], [turn("What shape is the green thing?", "Sphere."),
                          turn("Do the cube and the sphere have the same color?", "Yes.")]),
    ([png((90, 90, 90))], [turn("What number of cylinders are there?", "Zero.")]),
    ([png((200, 200, 0))], [turn("Are there an equal number of cubes and cylinders?", "Yes.")]),
]


def write_cauldron_copy(folder: Path, rows=CAULDRON_ROWS, declare_size: bool = True, shards: int = 1,
                        row_group: int | None = None) -> Path:
    """A dataset folder laid out like the hub repo: README.md with the config YAML + clevr/train-*.parquet
    (`shards` files; `row_group` rows per parquet row group, the library's default when None)."""
    from datasets import Dataset, Features, Image as HFImage, List, Value

    features = Features({"images": List(HFImage()),
                         "texts": List({"user": Value("string"), "assistant": Value("string"),
                                        "source": Value("string")})})
    (folder / "clevr").mkdir(parents=True)
    per = -(-len(rows) // shards)
    for k in range(shards):
        part = rows[k * per:(k + 1) * per]
        data = {"images": [[{"bytes": b, "path": None} for b in imgs] for imgs, _ in part],
                "texts": [texts for _, texts in part]}
        name = f"train-{k:05d}-of-{shards:05d}.parquet"
        Dataset.from_dict(data, features=features).to_parquet(str(folder / "clevr" / name), batch_size=row_group)
    splits = (f"  splits:\n  - name: train\n    num_bytes: 1000\n    num_examples: {len(rows)}\n"
              if declare_size else "")
    (folder / "README.md").write_text(
        "---\ndataset_info:\n  config_name: clevr\n  features:\n  - name: images\n    list: image\n"
        "  - name: texts\n    list:\n    - name: user\n      dtype: string\n    - name: assistant\n      dtype: string\n"
        "    - name: source\n      dtype: string\n" + splits +
        "configs:\n- config_name: clevr\n  data_files:\n  - split: train\n    path: clevr/train-*\n---\n")
    return folder


def hub_overrides(folder: Path, *extra: str) -> list[str]:
    return ["data.source=hub", f"data.hub_id={folder}", "data.hub_config=clevr", "data.hub_split=train",
            "data.test_fraction=0.3", "data.max_test=100", *extra]


def test_hub_path_end_to_end_on_a_local_cauldron_copy(tmp_path):
    copy = write_cauldron_copy(tmp_path / "the_cauldron")
    root = make_root(tmp_path)
    assert run_data(root, hub_overrides(copy, "data.fraction=1.0")).status == "ran"
    out, train, test, stats = load_outputs(root)
    check_contract(out, train, test, stats)
    rows = {r["question"]: r for r in train + test}
    # boilerplate stripped, answers normalised, types from wording + answer
    assert rows["Are there any red cubes?"]["answer"] == "yes"
    assert rows["How many spheres are there?"] == {**rows["How many spheres are there?"], "answer": "2",
                                                   "qtype": "count"}
    assert rows["What color is the large sphere?"]["answer"] == "cyan"
    assert rows["What number of cylinders are there?"]["answer"] == "0"
    assert rows["Are there more cubes than spheres?"]["qtype"] == "compare_integer"
    assert rows["Is the cube the same size as the ball?"]["qtype"] == "compare_attribute"
    assert rows["How big is the cube?"]["qtype"] == "query_size"
    assert len(rows) == 11 and all(r["source"] == f"{copy}:clevr" for r in rows.values())
    # the JPEG was re-encoded as PNG; corrupt and missing images were skipped and counted, never fatal
    assert all(Image.open(out / r["image"]).format == "PNG" for r in rows.values())
    assert stats["skipped"]["corrupt_image"] == 1 and stats["skipped"]["missing_image"] == 1
    assert stats["skipped"]["questions_of_skipped_images"] == 2 and stats["skipped"]["off_vocabulary"] == 1
    assert stats["source"]["rows_in_split"] == 8 and stats["source"]["rows_read"] == 8
    # questions about one picture share its content-addressed id and its split
    by_image = {}
    for r in train + test:
        by_image.setdefault(r["image_id"], set()).add(r["question"])
    assert len(by_image) == 6 and max(map(len, by_image.values())) == 3


def test_question_target_has_a_margin_over_one_percent_of_clevr():
    from tamrin.data.subset import CLEVR_TRAIN_QUESTIONS, question_target

    assert CLEVR_TRAIN_QUESTIONS == 699_989
    assert question_target(0.01, CLEVR_TRAIN_QUESTIONS, 0.02) == 7140  # ceil(6999.89) = 7000, × 1.02
    assert question_target(0.01, CLEVR_TRAIN_QUESTIONS, 0.0) == 7000 > 0.01 * CLEVR_TRAIN_QUESTIONS
    assert question_target(0.01, CLEVR_TRAIN_QUESTIONS, 0.02, cap=500) == 500


def test_hub_keeps_a_count_of_questions_after_skips(tmp_path):
    """The target counts kept questions: the off-vocabulary pair, the corrupt and the missing image do not use it up."""
    copy = write_cauldron_copy(tmp_path / "the_cauldron")
    root = make_root(tmp_path)
    run_data(root, hub_overrides(copy, "data.fraction=0.5", "data.source_questions=16"))
    _, train, test, stats = load_outputs(root)
    # ceil(0.5 × 16) = 8, × 1.02 → 9 questions, whatever the shuffled order skipped on the way
    assert len(train) + len(test) == 9 == stats["total"]["questions"]
    assert stats["subset"] == {"fraction": 0.5, "margin": 0.02, "max_questions": None, "source_questions": 16,
                               "source_questions_counted": False, "target_questions": 9, "questions": 9,
                               "share": round(9 / 16, 6)}
    run_data(root, hub_overrides(copy, "data.fraction=1.0", "data.max_questions=3"))
    _, train, test, stats = load_outputs(root)
    assert len(train) + len(test) == 3 and stats["subset"]["target_questions"] == 3


def test_hub_stream_shorter_than_the_target_keeps_everything(tmp_path, caplog):
    copy = write_cauldron_copy(tmp_path / "the_cauldron", declare_size=False)  # no split size on the card: fine
    root = make_root(tmp_path)
    run_data(root, hub_overrides(copy))  # 1% of CLEVR's 699,989 questions: far more than the 11 usable here
    _, train, test, stats = load_outputs(root)
    assert len(train) + len(test) == 11 and stats["subset"]["target_questions"] == 7140
    assert stats["subset"]["share"] == round(11 / 699_989, 6) and stats["source"]["rows_in_split"] is None
    assert "ran out after 8 rows" in caplog.text


def test_hub_wrong_columns_list_the_columns_found(tmp_path):
    copy = write_cauldron_copy(tmp_path / "the_cauldron")
    root = make_root(tmp_path)
    with pytest.raises(TamrinError) as err:
        run_data(root, hub_overrides(copy, "data.texts_column=conversations"))
    msg = str(err.value)
    assert "'conversations'" in msg and "columns found: images, texts" in msg and "\n" not in msg


def test_hub_flat_layout_by_config_alone(tmp_path):
    """Another CLEVR copy (one question per row, its own column names) works by configuration."""
    from datasets import Dataset, Features, Image as HFImage, Value

    folder = tmp_path / "flat_clevr"
    (folder / "data").mkdir(parents=True)
    feats = Features({"image": HFImage(), "q": Value("string"), "a": Value("string")})
    Dataset.from_dict({"image": [{"bytes": png(), "path": None}] * 3,
                       "q": ["Are there any cubes?", "How many balls are there?", "What color is the cube?"],
                       "a": ["yes", "3", "gray"]}, features=feats).to_parquet(str(folder / "data" / "train.parquet"))
    root = make_root(tmp_path)
    run_data(root, ["data.source=hub", f"data.hub_id={folder}", "data.hub_config=", "data.hub_layout=flat",
                    "data.image_column=image", "data.question_column=q", "data.answer_column=a",
                    "data.max_questions=10", "data.test_fraction=0"])
    _, train, test, _ = load_outputs(root)
    assert sorted(r["qtype"] for r in train) == ["count", "exist", "query_color"] and not test  # order: shuffled
    assert len({r["image_id"] for r in train}) == 1  # the same picture three times is one image


def test_hub_errors_are_one_line(tmp_path, monkeypatch):
    root = make_root(tmp_path)
    with pytest.raises(TamrinError, match="loading script") as err:
        run_data(root, ["data.source=hub", "data.hub_id=HuggingFaceM4/clevr"])
    assert "HuggingFaceM4/the_cauldron" in str(err.value)
    # the test environment is offline (conftest): the hub is unreachable → one line naming the fix
    with pytest.raises(TamrinError, match="offline mode is on") as err:
        run_data(root, ["data.source=hub"])
    assert "data.source=synthetic" in str(err.value) and "\n" not in str(err.value)


# --- official CLEVR v1.0 layout -----------------------------------------------------------------------------------
def program(last: str) -> list:
    return [{"inputs": [], "function": "scene", "value_inputs": []},
            {"inputs": [0], "function": "filter_shape", "value_inputs": ["cube"]},
            {"inputs": [1], "function": last, "value_inputs": []}]


def write_clevr_dir(root: Path, n_images: int = 12) -> Path:
    """CLEVR_v1.0/{questions/CLEVR_train_questions.json, images/train/CLEVR_train_%06d.png}."""
    (root / "questions").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    kinds = [("exist", "yes"), ("count", "3"), ("query_color", "cyan"), ("equal_shape", "no"),
             ("greater_than", "yes"), ("query_material", "rubber")]
    questions = []
    for i in range(n_images):
        name = f"CLEVR_train_{i:06d}.png"
        if i == 3:
            pass  # missing image file
        elif i == 4:
            (root / "images" / "train" / name).write_bytes(b"\x89PNG\r\n\x1a\ntruncated")
        else:
            (root / "images" / "train" / name).write_bytes(png((i * 20, 100, 100)))
        for k, (last, answer) in enumerate(kinds):
            # The wording is deliberately unhelpful: the program alone must decide the type.
            questions.append({"image_index": i, "image_filename": name, "split": "train", "question_index": len(questions),
                              "question": f"Question {k} about image {i}?", "answer": answer,
                              "question_family_index": k, "program": program(last)})
    (root / "questions" / "CLEVR_train_questions.json").write_text(
        json.dumps({"info": {"split": "train", "version": "1.0"}, "questions": questions}, indent=1))
    return root


def test_clevr_dir_official_layout(tmp_path):
    clevr = write_clevr_dir(tmp_path / "CLEVR_v1.0")
    root = make_root(tmp_path)
    run_data(root, ["data.source=clevr_dir", f"data.path={clevr}", "data.fraction=1.0", "data.test_fraction=0.2"])
    out, train, test, stats = load_outputs(root)
    check_contract(out, train, test, stats)
    rows = train + test
    assert len(rows) == 10 * 6  # 12 images, one missing and one corrupt
    assert stats["skipped"]["missing_image"] == 1 and stats["skipped"]["corrupt_image"] == 1
    assert stats["skipped"]["questions_of_skipped_images"] == 12
    types = {r["question"].split(" about")[0]: r["qtype"] for r in rows}
    assert types == {"Question 0": "exist", "Question 1": "count", "Question 2": "query_color",
                     "Question 3": "compare_attribute", "Question 4": "compare_integer", "Question 5": "query_material"}
    assert {r["image_id"] for r in rows} == {f"CLEVR_train_{i:06d}" for i in range(12) if i not in (3, 4)}
    assert all(r["source"] == "CLEVR_v1.0:train" for r in rows)


def test_clevr_dir_subset_is_an_exact_count_in_seeded_image_order(tmp_path):
    from tamrin.data.clevr_dir import iter_questions, select
    from tamrin.data.subset import question_target

    clevr = write_clevr_dir(tmp_path / "CLEVR_v1.0", n_images=60)
    assert sum(1 for _ in iter_questions(clevr / "questions" / "CLEVR_train_questions.json")) == 360
    target = lambda n: question_target(0.3, n, 0.02)  # noqa: E731 - ceil(108 × 1.02) = 111
    a = select(clevr, ["train"], 0, target)
    b = select(clevr, ["train"], 0, target)
    c = select(clevr, ["train"], 1, target)
    ids = [im.image_id for im in a.images]
    assert ids == [im.image_id for im in b.images] and ids != [im.image_id for im in c.images]
    assert a.questions_read == 360 and a.target == 111
    assert 111 <= 6 * len(ids) <= 111 * 1.25 + 6 and all(len(im.qas) == 6 for im in a.images)  # target + reserve
    root = make_root(tmp_path)
    run_data(root, ["data.source=clevr_dir", f"data.path={clevr}", "data.fraction=0.3", "data.test_fraction=0"])
    _, train, _, stats = load_outputs(root)
    assert len(train) == 111  # exact, with the missing (3) and corrupt (4) images skipped if they were drawn
    assert stats["subset"]["source_questions"] == 360 and stats["subset"]["source_questions_counted"] is True
    assert stats["subset"]["share"] == round(111 / 360, 6) >= 0.3
    # the cap counts questions actually kept (the missing and the corrupt image do not use it up)
    run_data(root, ["data.source=clevr_dir", f"data.path={clevr}", "data.fraction=1.0", "data.max_questions=40",
                    "data.test_fraction=0"])
    _, train, _, _ = load_outputs(root)
    assert len(train) == 40


def test_clevr_dir_truncated_question_file_is_one_line(tmp_path):
    clevr = write_clevr_dir(tmp_path / "CLEVR_v1.0", n_images=4)
    qfile = clevr / "questions" / "CLEVR_train_questions.json"
    qfile.write_bytes(qfile.read_bytes()[:-300])
    root = make_root(tmp_path)
    with pytest.raises(TamrinError, match="truncated or not valid JSON") as err:
        run_data(root, ["data.source=clevr_dir", f"data.path={clevr}"])
    assert "\n" not in str(err.value)


def test_clevr_dir_errors_are_one_line(tmp_path):
    root = make_root(tmp_path)
    empty = tmp_path / "not_clevr"
    empty.mkdir()
    with pytest.raises(TamrinError, match="missing .*CLEVR_train_questions.json"):
        run_data(root, ["data.source=clevr_dir", f"data.path={empty}"])
    from tamrin.errors import ConfigError

    with pytest.raises(ConfigError, match="needs data.path"):
        load_config("demo", overrides=["data.source=clevr_dir"], root=root)


def test_a_source_that_yields_nothing_is_a_clear_error(tmp_path):
    copy = write_cauldron_copy(tmp_path / "junk", rows=[([png()], [turn("Describe the scene.", "Lovely.")])])
    root = make_root(tmp_path)
    with pytest.raises(TamrinError, match="yielded no usable question") as err:
        run_data(root, hub_overrides(copy, "data.fraction=1.0"))
    assert "off_vocabulary: 1" in str(err.value)
    assert read_manifest(Paths(root), "data") is None  # nothing half-written was kept


# --- a row format the cleaning does not read stops the stage early ------------------------------------------------
def not_clevr(i: int) -> dict:
    return {"user": f"Describe picture {i} in detail.", "assistant": f"A calm room with {i % 7} objects in it.",
            "source": "other"}


@pytest.fixture
def parquet_rows(monkeypatch):
    """Rows the parquet reader handed to `datasets` (what was actually read from the files), counted where
    datasets' parquet builder yields its tables."""
    from datasets.packaged_modules.parquet.parquet import Parquet

    seen = {"rows": 0}
    real = Parquet._generate_tables

    def counting(self, *args, **kwargs):
        for key, table in real(self, *args, **kwargs):
            seen["rows"] += table.num_rows
            yield key, table

    monkeypatch.setattr(Parquet, "_generate_tables", counting)
    return seen


def test_rows_in_a_format_the_cleaning_does_not_read_stop_the_stage_early(tmp_path, parquet_rows):
    from tamrin.data.hub import EARLY_ROWS

    image = [png()]
    rows = [(image, [not_clevr(i), not_clevr(i + 1)]) for i in range(6000)]
    copy = write_cauldron_copy(tmp_path / "elsewhere", rows=rows, shards=3, row_group=100)
    root = make_root(tmp_path)
    with pytest.raises(TamrinError) as err:
        run_data(root, hub_overrides(copy))  # the default shuffle buffer: 1000 rows
    msg = str(err.value)
    assert "\n" not in msg and "kept 0 of the 600 QA pairs in the first 300 rows" in msg and EARLY_ROWS == 300
    assert "raw row 1: 'Describe picture" in msg and "raw row 2: 'Describe picture" in msg
    assert "python build.py doctor" in msg
    # read: the 300 rows judged (3 row groups of 100), not the shuffle buffer's 1000 nor the 6000 of the folder
    assert parquet_rows["rows"] == 300, parquet_rows
    assert read_manifest(Paths(root), "data") is None


@pytest.mark.parametrize("clevr_share,fails", [(0.4, True), (0.6, False)])
def test_the_early_check_needs_half_of_the_pairs_kept(tmp_path, clevr_share, fails):
    rows = []
    for i in range(1500):  # in each block of 10 rows, the first `clevr_share` × 10 carry CLEVR pairs
        ok = i % 10 < clevr_share * 10
        rows.append(([png((i % 250, 0, 0))], [turn("How many spheres are there?", "2.") if ok else not_clevr(i)]))
    copy = write_cauldron_copy(tmp_path / "mixed", rows=rows, row_group=100)
    root = make_root(tmp_path)
    overrides = hub_overrides(copy, "data.max_questions=40")
    if fails:
        with pytest.raises(TamrinError, match=r"kept 120 of the 300 QA pairs in the first 300 rows \(40%"):
            run_data(root, overrides)
    else:
        assert run_data(root, overrides).status == "ran"
        _, train, test, _ = load_outputs(root)
        assert len(train) + len(test) == 40


def test_the_early_check_judges_once_on_the_rows_it_was_given():
    from tamrin.config import DataConfig
    from tamrin.data.hub import RowFormatCheck

    check = RowFormatCheck(DataConfig(), after_rows=4)
    good = {"images": [], "texts": [turn("How many cubes are there?", "3")]}
    bad = {"images": [], "texts": [not_clevr(1)]}
    for row in (good, good, bad, bad):  # the 4th row: 2 of 4 pairs kept = 50%, not below half, so no error
        check.observe(row)
    assert (check.rows, check.pairs, check.kept) == (4, 4, 2)
    check.observe(bad)  # rows after the judged ones are not counted again
    assert check.rows == 4
    empty = RowFormatCheck(DataConfig(), after_rows=2)
    empty.observe({"images": [], "texts": []})
    with pytest.raises(TamrinError, match="no QA pairs at all"):
        empty.observe({"images": [], "texts": []})
