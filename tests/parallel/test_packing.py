import pytest
import torch

from longrl.parallel.packing import cu_seqlens_of, pack_sequences, unpack, unpack_to_padded


def test_pack_lays_sequences_end_to_end_with_positions_restarting_per_sequence():
    packed = pack_sequences([[5, 6, 7], [8, 9]])
    assert packed.input_ids.tolist() == [[5, 6, 7, 8, 9]]
    assert packed.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    # lengths 3, 2 -> cumulative [0, 3, 3+2]
    assert packed.cu_seqlens.tolist() == [0, 3, 5]
    assert packed.cu_seqlens.dtype == torch.int32
    assert packed.max_seqlen == 3
    assert packed.lengths == [3, 2]


def test_pack_joins_mrope_position_ids_into_three_rows():
    a = torch.tensor([[0, 1], [0, 1], [0, 1]])
    b = torch.tensor([[0, 1, 1], [0, 0, 1], [0, 1, 2]])
    packed = pack_sequences([[1, 2], [3, 4, 5]], position_ids=[a, b])
    assert packed.position_ids.shape == (3, 1, 5)
    assert packed.position_ids[:, 0].tolist() == [[0, 1, 0, 1, 1], [0, 1, 0, 0, 1], [0, 1, 0, 1, 2]]


def test_pack_refuses_position_ids_of_another_length():
    with pytest.raises(ValueError, match=r"position_ids\[1\] has 2 positions for a sequence of 3 tokens"):
        pack_sequences([[1], [2, 3, 4]], position_ids=[torch.tensor([0]), torch.tensor([0, 1])])


def test_empty_sequence_is_refused():
    with pytest.raises(ValueError, match=r"non-empty; got lengths \[2, 0\]"):
        cu_seqlens_of([2, 0])


def test_unpack_returns_each_sequences_rows():
    x = torch.arange(10.0).reshape(1, 5, 2)
    first, second = unpack(x, torch.tensor([0, 3, 5]))
    assert first.tolist() == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert second.tolist() == [[6.0, 7.0], [8.0, 9.0]]


def test_unpack_to_padded_right_pads_and_keeps_gradients():
    x = torch.arange(5.0).reshape(1, 5).requires_grad_(True)
    padded = unpack_to_padded(x, torch.tensor([0, 3, 5]), pad_value=-1)
    assert padded.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, -1.0]]
    padded.sum().backward()
    assert x.grad.tolist() == [[1.0] * 5]


def test_unpack_refuses_a_batch_of_several_rows():
    with pytest.raises(ValueError, match=r"batch size 1; got shape \(2, 3\)"):
        unpack(torch.zeros(2, 3), torch.tensor([0, 3]))
