"""Per-sample exits in a batch: masking/compaction, stop vs release, criteria."""

import pytest
import torch

from mixfleet.earlyexit.criteria import CRITERIA, get_criterion
from mixfleet.errors import InputError


def _rows_seen(model):
    seen = [0] * len(model.stages)
    hooks = [s.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, seen[i] + a[0].shape[0]))
             for i, s in enumerate(model.stages)]
    return seen, hooks


def test_threshold_one_is_the_plain_backbone(digits_model, digits):
    x = torch.as_tensor(digits.test.x)
    r = digits_model.predict(x, thresholds=[1.0, 1.0])
    assert r.exit_counts() == [0, 0, len(x)]
    assert torch.allclose(r.logits, digits_model(x), atol=1e-5)


def test_threshold_zero_answers_everything_at_the_first_exit(digits_model, digits):
    x = torch.as_tensor(digits.test.x[:50])
    seen, hooks = _rows_seen(digits_model)
    r = digits_model.predict(x, thresholds=[0.0, 0.0])
    [h.remove() for h in hooks]
    assert r.exit_counts() == [50, 0, 0]
    assert seen == [50, 0, 0]  # nothing runs past the first exit


def test_exited_samples_are_compacted_out_of_later_stages(digits_model, digits, mixed_thresholds):
    x = torch.as_tensor(digits.test.x)
    seen, hooks = _rows_seen(digits_model)
    r = digits_model.predict(x, thresholds=mixed_thresholds)
    [h.remove() for h in hooks]
    n0, n1, nf = r.exit_counts()
    assert n0 > 0 and n1 > 0 and nf > 0
    assert seen == [len(x), len(x) - n0, nf]


def test_each_answer_comes_from_its_own_exit_and_is_batch_independent(digits_model, digits, mixed_thresholds):
    x = torch.as_tensor(digits.test.x[:64])
    r = digits_model.predict(x, thresholds=mixed_thresholds)
    every = digits_model.forward_all(x)
    for i in range(len(x)):
        assert torch.allclose(r.logits[i], every[r.exit_index[i]][i], atol=1e-4)
    one_by_one = [digits_model.predict(x[i:i + 1], thresholds=mixed_thresholds) for i in range(len(x))]
    assert [int(o.exit_index) for o in one_by_one] == r.exit_index.tolist()
    assert [int(o.labels) for o in one_by_one] == r.labels.tolist()


def test_release_mode_answers_as_early_and_still_runs_the_full_pass(digits_model, digits, mixed_thresholds):
    x = torch.as_tensor(digits.test.x[:80])
    calls = []
    stop = digits_model.predict(x, thresholds=mixed_thresholds)
    rel = digits_model.predict(x, thresholds=mixed_thresholds, mode="release",
                               on_exit=lambda rows, logits, k: calls.append((rows.tolist(), k)))
    assert torch.equal(rel.exit_index, stop.exit_index)
    assert torch.allclose(rel.logits, stop.logits, atol=1e-5)
    assert torch.allclose(rel.final_logits, digits_model(x), atol=1e-5)
    answered = sorted(r for rows, _ in calls for r in rows)
    assert answered == list(range(80))  # every sample released exactly once
    assert [k for _, k in calls] == sorted(k for _, k in calls)  # in exit order
    assert 0.0 <= rel.agreement() <= 1.0


def test_forced_exit_answers_everyone_at_that_exit(digits_model, digits):
    x = torch.as_tensor(digits.test.x[:20])
    r = digits_model.predict(x, thresholds=[1.0, 1.0], force_exit=lambda k: k == 1)
    assert r.exit_counts() == [0, 20, 0]


def test_unknown_mode_lists_valid_modes(digits_model, digits):
    with pytest.raises(InputError, match="release"):
        digits_model.predict(digits.test.x[:2], mode="fast")


def test_criteria_registry_and_semantics():
    assert set(CRITERIA) == {"max_softmax", "entropy", "patience"}
    with pytest.raises(InputError, match="valid exit criterions: entropy, max_softmax, patience"):
        get_criterion("margin")
    sure, unsure = torch.tensor([[9.0, 0, 0]]), torch.tensor([[1.0, 0.9, 0.8]])
    for name in ("max_softmax", "entropy"):
        c = get_criterion(name)
        s_sure, _ = c.score(sure, {})
        s_unsure, _ = c.score(unsure, {})
        assert 0 <= float(s_unsure) < float(s_sure) <= 1
    pat = get_criterion({"name": "patience", "patience": 2})
    s, state = pat.score(sure, {})
    assert float(s) < 0  # cannot leave at the first exit seen, whatever the threshold
    s, state = pat.score(sure, state)
    assert float(s) > 0.99  # two agreeing confident exits
    s, _ = pat.score(torch.tensor([[0, 9.0, 0]]), state)
    assert float(s) < 0  # disagreement resets the run


def test_patience_criterion_runs_in_a_batch(digits_model, digits):
    r = digits_model.predict(digits.test.x[:100], thresholds=[0.0, 0.0], criterion="patience")
    assert r.exit_counts()[0] == 0  # patience 2 needs two exits
    assert r.exit_counts()[1] > 0
