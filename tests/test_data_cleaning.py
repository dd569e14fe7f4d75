"""Cleaning rules for instruction-formatted CLEVR copies (the_cauldron): bare question, bare vocabulary answer."""
import pytest

from tamrin.data.cleaning import clean_answer, clean_question

Q = "Are there more big green things than large purple shiny cubes?"


@pytest.mark.parametrize("user", [
    Q,
    f"{Q}\nAnswer the question using a single word or phrase.",                 # LLaVA-style instruction line
    f"{Q}\nGive a very brief answer.",                                          # Idefics2-style
    f"{Q}\nAnswer briefly.",
    f"Answer the following question briefly with a word or phrase.\n{Q}",     # instruction before
    f"<image>\n{Q}\nShort answer required.",                                    # placeholder + instruction
    f"Question: {Q}\nAnswer:",                                                  # label + answer stub
    f"{Q} Answer with a single word.",                                          # instruction tail after "?"
    f"  {Q}  \n\n  Be concise.  ",                                              # whitespace
    f"User: {Q}\nPlease answer yes or no.",
    f"{Q}\nReply in lowercase, one token.",                                    # an unknown instruction line
    f"Look at the image carefully.\n{Q}",
])
def test_question_boilerplate_is_stripped(user):
    assert clean_question(user) == Q


@pytest.mark.parametrize("user", [
    f"{Q} Answer the question using a single word or phrase.",                  # the LLaVA suffix, same line
    f"{Q} Give a very brief answer.",
    f"{Q} Be concise. Give a short answer.",                                    # two instruction sentences
    f"{Q}  Answer briefly!  Answer:",
    f"Look at the image carefully.\n{Q} Answer briefly.",                       # a preamble line, then a tail
    f"Question: {Q} Short answer required.\nAnswer:",
])
def test_instruction_sentences_after_the_question_mark_on_its_line_are_stripped(user):
    assert clean_question(user) == Q


def test_a_tail_that_is_not_all_instruction_is_kept():
    # "…? Answer briefly. What about cubes?" is two questions: nothing is cut from the first one's line
    assert clean_question(f"{Q} Answer with one word: yes, no, or a number.") == Q
    assert clean_question("Is it red? Or is it blue.") == "Is it red? Or is it blue."


def test_question_text_itself_is_kept_intact():
    # Words like "answer" inside a real question, and ";" clauses, are not instructions.
    q = "There is a small rubber cube; are there any cylinders of the same color as it?"
    assert clean_question(q + "\nAnswer the question using a single word or phrase.") == q
    assert clean_question("What number of tiny things are there?") == "What number of tiny things are there?"


def test_only_instructions_leave_no_question():
    assert clean_question("Answer the question using a single word or phrase.") == ""
    assert clean_question("<image>") == ""


@pytest.mark.parametrize("assistant,expected", [
    ("Yes.", "yes"), ("no", "no"), ("2.", "2"), ("Answer: 3", "3"), ("The answer is cyan.", "cyan"),
    ("Grey.", "gray"), ("Metallic.", "metal"), ("Cylinder", "cylinder"), ("Ten.", "10"), ("large", "large"),
])
def test_answers_are_normalised_to_the_vocabulary(assistant, expected):
    assert clean_answer(assistant) == expected


@pytest.mark.parametrize("assistant", ["A scene with several objects.", "11", "maybe", "", "blue cube"])
def test_non_vocabulary_answers_are_rejected(assistant):
    assert clean_answer(assistant) is None


# Both forms the_cauldron may use (cleaning.py says what is confirmed and what is not).
@pytest.mark.parametrize("assistant", ["2", "2.", "Answer: 2.", "Answer: 2", "answer: two.", "The answer is 2."])
def test_both_answer_forms_give_the_bare_answer(assistant):
    assert clean_answer(assistant) == "2"


@pytest.mark.parametrize("user", [
    "How many cylinders are there?",                                                    # the question alone
    "How many cylinders are there?\nAnswer the question using a single word or phrase.",  # + instruction line
    "How many cylinders are there?\r\nGive a very brief answer.",                          # Windows line end
    "<image>How many cylinders are there?\nAnswer briefly.",                               # placeholder glued on
])
def test_both_question_forms_give_the_bare_question(user):
    assert clean_question(user) == "How many cylinders are there?"


def test_both_forms_through_the_real_datasets_loader(tmp_path, monkeypatch):
    """A parquet folder in the_cauldron's layout (images = list of image dicts with bytes, texts = list of
    {user, assistant}) read by datasets.load_dataset(streaming=True), the hub path's own call."""
    import datasets.config

    from tamrin.config import DataConfig
    from tamrin.data.hub import preview

    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)  # see test_data_stage.py
    from test_data_stage import png, write_cauldron_copy

    rows = [([png()], [{"user": "How many cubes are there?", "assistant": "2", "source": "clevr"},
                       {"user": "Is there a red ball?\nAnswer the question using a single word or phrase.",
                        "assistant": "Answer: Yes.", "source": "clevr"},
                       {"user": "Describe the scene.", "assistant": "Lovely.", "source": "clevr"}])]
    copy = write_cauldron_copy(tmp_path / "the_cauldron", rows=rows)
    p = preview(DataConfig(hub_id=str(copy)), n_rows=20)
    assert p.rows == 1 and p.pairs == 3 and p.unparsed + p.off_vocabulary == 1
    assert [(t.question, t.answer, t.qtype) for t in p.cleaned] == [
        ("How many cubes are there?", "2", "count"), ("Is there a red ball?", "yes", "exist")]
    assert p.raw[1] == ("Is there a red ball?\nAnswer the question using a single word or phrase.", "Answer: Yes.")
    assert p.unparsed_share == pytest.approx(1 / 3) and len(p.images) == 1 and {t.image for t in p.cleaned} == {0}
