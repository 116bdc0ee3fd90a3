"""grain prompt pipeline: seeded shuffling, process sharding, formatting, checkpoint/resume."""

import json

import grain
import orbax.checkpoint as ocp
import pytest

from r1jax.data.pipeline import PromptIterator
from r1jax.data.sources import load_source

SOURCE = [{"id": f"r{i}", "prompt": f"question {i}", "answer": str(i)} for i in range(10)]


def ids(batches):
    return [[r["id"] for r in b] for b in batches]


def take(it, n):
    return [next(it) for _ in range(n)]


def test_shuffle_is_seeded_and_reshuffles_each_epoch():
    run = lambda seed: ids(PromptIterator(SOURCE, batch_size=5, seed=seed, num_epochs=2))
    a = run(0)
    assert a == run(0)
    assert a != run(1)
    epoch1, epoch2 = a[0] + a[1], a[2] + a[3]
    everything = sorted(r["id"] for r in SOURCE)
    assert sorted(epoch1) == everything and sorted(epoch2) == everything
    assert epoch1 != epoch2 and epoch1 != everything
    in_order = ids(PromptIterator(SOURCE, batch_size=5, shuffle=False, num_epochs=1))
    assert in_order == [["r0", "r1", "r2", "r3", "r4"], ["r5", "r6", "r7", "r8", "r9"]]


def test_process_shards_partition_each_global_batch():
    source = [{"id": f"r{i}", "prompt": str(i), "answer": "0"} for i in range(23)]
    # reference: one process reading the whole global batch of 3 * 2 = 6
    global_batches = ids(PromptIterator(source, batch_size=6, seed=4, num_epochs=1))
    assert len(global_batches) == 3  # 23 // 6; the 5-record tail is dropped on every process
    shards = [
        ids(
            PromptIterator(
                source, batch_size=2, seed=4, num_epochs=1, process_index=p, process_count=3
            )
        )
        for p in range(3)
    ]
    assert [len(s) for s in shards] == [3, 3, 3]  # equal step counts: no multi-host hang
    for step, global_batch in enumerate(global_batches):
        parts = [shards[p][step] for p in range(3)]
        assert sorted(sum(parts, [])) == sorted(global_batch)  # disjoint and complete
    assert len({r for s in shards for b in s for r in b}) == 18


def test_format_prompt_adds_text_field():
    template = lambda r: f"User: {r['prompt']}. Assistant:"
    batch = next(PromptIterator(SOURCE, batch_size=3, shuffle=False, format_prompt=template))
    assert batch == [
        {
            "id": f"r{i}",
            "prompt": f"question {i}",
            "answer": str(i),
            "text": f"User: question {i}. Assistant:",
        }
        for i in range(3)
    ]
    assert next(PromptIterator(SOURCE, batch_size=1, shuffle=False))[0]["text"] == "question 0"
    with pytest.raises(TypeError, match="format_prompt must return str, got int for record 'r0'"):
        next(PromptIterator(SOURCE, batch_size=1, shuffle=False, format_prompt=lambda r: 3))


@pytest.mark.parametrize("k, m", [(2, 3), (5, 4)])
def test_resume_from_json_state(k, m):
    it = PromptIterator(SOURCE, batch_size=4, seed=9)  # forever; batches cross epoch ends
    take(it, k)
    state = json.loads(json.dumps(it.get_state()))
    expected = take(it, m)
    fresh = PromptIterator(SOURCE, batch_size=4, seed=9)
    fresh.set_state(state)
    assert take(fresh, m) == expected
    assert take(PromptIterator(SOURCE, batch_size=4, seed=9), k + m)[k:] == expected


def test_resume_through_orbax(tmp_path):
    it = PromptIterator(SOURCE, batch_size=3, seed=2, process_index=0, process_count=1)
    take(it, 3)
    mngr = ocp.CheckpointManager(str(tmp_path))
    mngr.save(3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointSave(it)))
    mngr.wait_until_finished()
    expected = take(it, 4)
    fresh = PromptIterator(SOURCE, batch_size=3, seed=2)
    restored = ocp.CheckpointManager(str(tmp_path)).restore(
        3, args=ocp.args.Composite(data=grain.checkpoint.CheckpointRestore(fresh))
    )
    assert restored["data"] is fresh
    assert take(fresh, 4) == expected


def test_state_from_other_pipeline_is_refused():
    state = PromptIterator(SOURCE, batch_size=2, seed=1).get_state()
    with pytest.raises(ValueError, match=r"different pipeline.*'seed': \(1, 2\)"):
        PromptIterator(SOURCE, batch_size=2, seed=2).set_state(state)


def test_bad_arguments():
    with pytest.raises(ValueError, match="do not fill one global batch of 12"):
        PromptIterator(SOURCE, batch_size=6, num_epochs=1, process_count=2)
    with pytest.raises(ValueError, match="process_index"):
        PromptIterator(SOURCE, batch_size=1, process_index=2, process_count=2)
    with pytest.raises(ValueError, match="empty"):
        PromptIterator([], batch_size=1)


def test_tfds_source_through_pipeline(tmp_path):
    src = load_source(
        {
            "name": "countdown",
            "data_dir": str(tmp_path),
            "countdown": {"train_size": 8, "test_size": 2},
        }
    )
    it = PromptIterator(src, batch_size=4, seed=0, num_epochs=1)
    batches = list(it)
    assert it.num_batches == 2 and len(batches) == 2
    records = sum(batches, [])
    assert sorted(r["id"] for r in records) == sorted(src[i]["id"] for i in range(8))
    assert all(isinstance(r["numbers"], list) and isinstance(r["target"], int) for r in records)
    assert all(r["text"] == r["prompt"] for r in records)


def test_split_long_prompts_keeps_order_and_names_the_long_ones():
    from r1jax.data.lengths import SubsetSource, split_long_prompts

    records = [{"id": f"r{i}", "prompt": "x" * n} for i, n in enumerate([3, 9, 4, 12, 5])]
    fitting, long = split_long_prompts(records, lambda r: len(r["prompt"]), 8)
    assert isinstance(fitting, SubsetSource) and len(fitting) == 3
    assert [r["id"] for r in fitting] == ["r0", "r2", "r4"]
    assert [r["id"] for r in fitting[1:]] == ["r2", "r4"]
    assert long == [{"index": 1, "id": "r1", "tokens": 9}, {"index": 3, "id": "r3", "tokens": 12}]
    same, none = split_long_prompts(records, lambda r: len(r["prompt"]), 12)
    assert same is records and none == []
