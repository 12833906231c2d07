"""The test prompts are made by their documented rule and never overlap the tuning prompts."""
from core import prompt_splits
from core.scenes import COLOURS, SHAPES


def test_test_file_is_what_the_rule_makes():
    file = prompt_splits.PROMPTS_DIR / prompt_splits.TEST_FILE
    assert file.read_text(encoding="utf-8") == prompt_splits.held_out_file_text()


def test_test_prompts_are_disjoint_from_tuning_and_of_every_form():
    prompts = prompt_splits.held_out_prompts()
    tuning = prompt_splits.tuning_prompts()
    assert len(prompts) == len(set(prompts)) == 3 * prompt_splits.PER_FORM >= 40
    assert not set(prompts) & tuning
    forms = prompt_splits.prompt_forms()
    for name, every in forms.items():
        assert sum(prompt in every for prompt in prompts) == prompt_splits.PER_FORM, name
    # every tuning prompt is of one of the forms, so "minus the tuning prompts" removes them all
    assert tuning <= {prompt for every in forms.values() for prompt in every}


def test_tuning_on_one_more_prompt_swaps_only_that_prompt(tmp_path):
    """The rule is stable: moving one test prompt into the tuning files replaces it by the next prompt of
    its form in hash order and leaves the other test prompts where they were."""
    for name in prompt_splits.TUNING_FILES:
        (tmp_path / name).write_text((prompt_splits.PROMPTS_DIR / name).read_text(encoding="utf-8"), encoding="utf-8")
    before = prompt_splits.held_out_prompts(tmp_path)
    moved = before[4]
    with open(tmp_path / prompt_splits.TUNING_FILES[0], "a", encoding="utf-8") as handle:
        handle.write(moved + "\n")
    after = prompt_splits.held_out_prompts(tmp_path)
    assert moved not in after and len(after) == len(before)
    assert set(before) - set(after) == {moved}
    (new,) = set(after) - set(before)
    form = next(every for every in prompt_splits.prompt_forms().values() if moved in every)
    assert new in form
    assert [p for p in after if p in form and p != new] == [p for p in before if p in form and p != moved]
    assert [p for p in after if p not in form] == [p for p in before if p not in form]
    assert all(any(f" {colour} " in f" {p} " for colour in COLOURS) and any(s in p for s in SHAPES)
               for p in after)


def test_the_split_command_takes_no_arguments(capsys):
    from core.prompt_splits import main

    assert main(["--help"]) == 0 and "usage: python -m core.prompt_splits" in capsys.readouterr().out
    assert main(["prompts.txt"]) == 2 and "unexpected argument prompts.txt" in capsys.readouterr().err
