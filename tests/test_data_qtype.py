"""Question-type classifier and answer normalisation, on hand-written CLEVR-style questions of every type."""
import pytest

from tamrin.data.cleaning import classify, qtype_from_program, qtype_from_wording
from tamrin.contract.facts import ANSWERS, QTYPES, normalize_answer

# (question, answer, type) — written after CLEVR's own template families, including the tricky ones:
# exist questions that say "same", query questions whose relative clause names another attribute.
HAND_WRITTEN = [
    ("Are there any other things that are the same shape as the big metallic object?", "yes", "exist"),
    ("Is there a big brown object of the same shape as the green thing?", "no", "exist"),
    ("Is there anything else that has the same size as the red sphere?", "no", "exist"),
    ("There is a small rubber cube; are there any cylinders of the same color as it?", "yes", "exist"),
    ("Are there any tiny cyan cylinders?", "no", "exist"),
    ("How many objects are either small cylinders or metal things?", "3", "count"),
    ("What number of large red things are there?", "0", "count"),
    ("How many other things are the same material as the cube?", "10", "count"),
    ("Are there an equal number of large things and metal spheres?", "no", "compare_integer"),
    ("Are there more big green things than large purple shiny cubes?", "yes", "compare_integer"),
    ("Are there fewer yellow balls than gray blocks?", "no", "compare_integer"),
    ("Is the number of cyan things less than the number of red rubber cylinders?", "yes", "compare_integer"),
    ("Is the number of small cubes the same as the number of matte spheres?", "no", "compare_integer"),
    ("Are there the same number of brown objects and purple objects?", "yes", "compare_integer"),
    ("What color is the large shiny sphere?", "gray", "query_color"),
    ("The small cylinder that is in front of the cube is what color?", "cyan", "query_color"),
    ("What is the color of the thing that is the same size as the purple ball?", "brown", "query_color"),
    ("What shape is the tiny red rubber thing?", "cube", "query_shape"),
    ("There is a thing that is the same color as the big block; what is its shape?", "sphere", "query_shape"),
    ("The big yellow metallic object has what shape?", "cylinder", "query_shape"),
    ("What material is the big object that is behind the cyan sphere?", "metal", "query_material"),
    ("What is the small blue cylinder made of?", "rubber", "query_material"),
    ("What size is the cylinder that is left of the brown metal thing that is left of the big sphere?", "small",
     "query_size"),
    ("How big is the green thing?", "large", "query_size"),
    ("What is the size of the cube that is the same material as the red ball?", "large", "query_size"),
    ("Is the small red ball the same color as the large metal cube?", "no", "compare_attribute"),
    ("There is a sphere with the same size as the metal cube; is it made of the same material as the small red "
     "sphere?", "yes", "compare_attribute"),
    ("Does the yellow cylinder have the same size as the brown cube?", "yes", "compare_attribute"),
    ("Do the purple thing and the green object have the same shape?", "no", "compare_attribute"),
    ("Are the matte sphere and the blue block made of the same material?", "yes", "compare_attribute"),
]


def test_hand_written_cover_every_type():
    assert {t for _, _, t in HAND_WRITTEN} == set(QTYPES)


@pytest.mark.parametrize("question,answer,expected", HAND_WRITTEN)
def test_wording_and_answer_classify_every_type(question, answer, expected):
    assert classify(question, answer) == expected


@pytest.mark.parametrize("question,answer,expected", [h for h in HAND_WRITTEN if not h[2].startswith("query_")
                                                      and h[2] != "count"])
def test_yes_no_types_from_wording_alone(question, answer, expected):
    """Without the answer, yes/no questions are still told apart by their wording."""
    assert qtype_from_wording(question) == expected


@pytest.mark.parametrize("question,expected", [
    ("What size is the cylinder that is the same color as the cube?", "query_size"),
    ("What is the color of the large thing that is made of the same material as the cube?", "query_color"),
    ("What is the thing that is the same size as the cube made of?", "query_material"),
    ("What shape is the small metal thing?", "query_shape"),
    ("How many spheres are there?", "count"),
    ("What number of cylinders are behind the red cube?", "count"),
    ("Are there more spheres than cubes?", "compare_integer"),
    ("There is a thing that is the same color as the big block; what is its shape?", "query_shape"),
    ("There is a large ball; how many cubes are left of it?", "count"),
    ("There is a small rubber cube; are there any cylinders of the same color as it?", "exist"),
])
def test_query_head_wins_without_answer(question, expected):
    assert qtype_from_wording(question) == expected


def test_program_decides_when_present():
    # CLEVR v1.0 program: a list of {inputs, function, value_inputs}; the last function names the type.
    prog = [{"inputs": [], "function": "scene", "value_inputs": []},
            {"inputs": [0], "function": "filter_color", "value_inputs": ["red"]},
            {"inputs": [1], "function": "unique", "value_inputs": []},
            {"inputs": [2], "function": "query_shape", "value_inputs": []}]
    # The program wins even over a misleading wording.
    assert classify("How many things are there?", "cube", prog) == "query_shape"
    table = {"exist": "exist", "count": "count", "equal_integer": "compare_integer", "less_than": "compare_integer",
             "greater_than": "compare_integer", "query_color": "query_color", "query_material": "query_material",
             "query_size": "query_size", "equal_color": "compare_attribute", "equal_shape": "compare_attribute",
             "equal_material": "compare_attribute", "equal_size": "compare_attribute"}
    for last, expected in table.items():
        assert qtype_from_program(prog[:3] + [{"function": last, "inputs": [2]}]) == expected
        assert qtype_from_program([{"type": last}]) == expected  # older dumps name it `type`
    assert qtype_from_program([]) is None and qtype_from_program(None) is None
    assert qtype_from_program([{"function": "relate"}]) is None


@pytest.mark.parametrize("raw,expected", [("Yes.", "yes"), (" NO ", "no"), ("Grey", "gray"), ("two", "2"),
                                          ("10.", "10"), ("Metallic", "metal"), ("matte", "rubber"),
                                          ("Big!", "large"), ("ball", "sphere")])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected
    assert expected in ANSWERS
