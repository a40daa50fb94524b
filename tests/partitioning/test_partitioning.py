import pytest

from lensfree.partitioning import assign, frame_shards


@pytest.mark.parametrize("n,chunk", [(1, 1), (1000, 64), (20000, 64), (130, 32), (7, 100)])
def test_shards_cover_frames_once_on_chunk_boundaries(n, chunk):
    shards = frame_shards(n, chunk)
    covered = [i for s in shards for i in range(s.start, s.stop)]
    assert covered == list(range(n))
    assert all(s.start % chunk == 0 for s in shards)
    assert [s.index for s in shards] == list(range(len(shards)))


@pytest.mark.parametrize("n_tasks,n_workers", [(10, 3), (3, 5), (64, 2), (0, 2)])
def test_assign_is_contiguous_balanced_and_complete(n_tasks, n_workers):
    blocks = [assign(n_tasks, n_workers, w) for w in range(n_workers)]
    assert [i for b in blocks for i in b] == list(range(n_tasks))
    lengths = [len(b) for b in blocks]
    assert max(lengths) - min(lengths) <= 1


def test_assign_rejects_bad_worker():
    with pytest.raises(ValueError, match="worker 2"):
        assign(10, 2, 2)


@pytest.mark.parametrize("n_tasks,n_workers", [(23, 2), (10, 3), (3, 5), (9, 4)])
def test_assign_keeps_the_root_shortest_and_first(n_tasks, n_workers):
    # the root also combines and updates: it gets a longer block last, and always task 0
    blocks = [assign(n_tasks, n_workers, w) for w in range(n_workers)]
    assert 0 in blocks[0]
    assert len(blocks[0]) == min(len(b) for b in blocks[:n_tasks])
    assert [i for b in blocks for i in b] == list(range(n_tasks))
