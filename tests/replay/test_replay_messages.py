"""ReplayLog: the compact store of replay messages (no database involved)."""
import uuid

import pytest

from syncrouter.replay.messages import ReplayLog, ReplayMessage


def tx(n: int) -> uuid.UUID:
    return uuid.UUID(int=n)


def record(log: ReplayLog, n: int, outcome: str = "inserted", text: str = "",
           key: object = None, producer: str = "laptop-3") -> ReplayMessage:
    """Record transaction ``n`` and return the message it should read back as."""
    key = [f"S{n:07d}", "1000"] if key is None else key
    log.record(tx(n), producer, n, "app.crf", key, "insert", outcome, text)
    return ReplayMessage(str(tx(n)), producer, n, "app.crf", key, "insert", outcome, text)


def test_messages_keep_the_order_they_were_recorded_in():
    log = ReplayLog()
    expected = [record(log, n) for n in (3, 1, 2)]
    assert len(log) == 3
    assert list(log) == expected
    assert [log[i] for i in range(3)] == expected
    assert log[0].tx_id == "00000000-0000-0000-0000-000000000003"


def test_deferred_message_is_replaced_in_place():
    log = ReplayLog()
    first = record(log, 1)
    record(log, 2, "deferred", "waits for laptop-3#1 (same key, earlier)")
    third = record(log, 3)
    second = record(log, 2, "updated")
    assert list(log) == [first, second, third]
    assert not log._deferred  # forgotten once no longer deferred


def test_deferred_again_stays_replaceable():
    log = ReplayLog()
    record(log, 1, "deferred", "waits for laptop-3#0")
    record(log, 2)
    record(log, 1, "deferred", "waits for laptop-3#7")
    assert log[0].text == "waits for laptop-3#7"
    last = record(log, 1, "inserted")
    assert len(log) == 2
    assert log[0] == last


def test_rerecord_after_other_outcome_is_appended():
    log = ReplayLog()
    first = record(log, 1, "error", "corrupt payload")
    second = record(log, 2)
    again = record(log, 1, "skipped", "already consumed by another replay")
    assert list(log) == [first, second, again]
    assert log.counts == {"error": 1, "inserted": 1, "skipped": 1}


def test_counts_follow_replacement():
    log = ReplayLog()
    assert log.counts == {}
    record(log, 1, "deferred")
    record(log, 2, "deferred")
    record(log, 3)
    assert log.counts == {"deferred": 2, "inserted": 1}
    record(log, 1, "inserted")
    assert log.counts == {"deferred": 1, "inserted": 2}
    record(log, 2, "conflict", "conflict #4 village differs")
    assert log.counts == {"inserted": 2, "conflict": 1}
    counts = log.counts
    counts["inserted"] = 99
    assert log.counts["inserted"] == 2


@pytest.mark.parametrize("key", [
    ["S0000123", "1000"],
    ["S0000123", 1000, -7, 2.5, True],
    "S0000123",
    42,
    [],
    [["A000", "Mochudi"], "visit-1", [1, [2, None]]],
    {"household": "A000"},
], ids=["strings", "numbers", "scalar", "int", "empty", "nested", "object"])
def test_keys_read_back_as_recorded(key):
    log = ReplayLog()
    expected = record(log, 1, key=key)
    assert log[0].key == key
    assert log[0] == expected


def test_none_key():
    """A corrupt payload has no natural key."""
    log = ReplayLog()
    log.record(tx(1), "laptop-3", 1, "app.crf", None, "insert", "error", "corrupt payload")
    assert log[0].key is None


def test_tuple_key_reads_back_as_list():
    log = ReplayLog()
    log.record(tx(1), "laptop-3", 1, "app.crf", ("S1", "1000"), "insert", "inserted")
    assert log[0].key == ["S1", "1000"]


def test_replacement_with_another_key():
    log = ReplayLog()
    record(log, 1, "deferred", key=["short"])
    record(log, 2, key=["neighbour"])
    replaced = record(log, 1, key=["a much longer key than before", 1])
    assert log[0] == replaced
    assert log[1].key == ["neighbour"]


def test_unicode_text_producer_and_key():
    log = ReplayLog()
    expected = record(log, 1, "error", "ValidationError: «Gaborone» n'est pas un village ✗",
                      key=["Sélébi-Phikwe", "Ω"], producer="portátil-ß")
    assert log[0] == expected
    assert str(log[0]).endswith(": ValidationError: «Gaborone» n'est pas un village ✗")


def test_negative_index_and_slices():
    log = ReplayLog()
    expected = [record(log, n) for n in range(5)]
    assert log[-1] == expected[-1]
    assert log[-5] == expected[0]
    assert log[1:3] == expected[1:3]
    assert log[::-2] == expected[::-2]
    assert log[-2:] == expected[-2:]
    assert log[10:] == []
    assert isinstance(log[:], list)
    assert list(reversed(log)) == expected[::-1]
    for index in (5, -6):
        with pytest.raises(IndexError):
            log[index]
    with pytest.raises(TypeError):
        log["0"]


def test_equality_with_a_list():
    log = ReplayLog()
    expected = [record(log, n) for n in range(3)]
    assert log == expected
    assert expected == log
    assert log != expected[:2]
    assert log != expected[::-1]
    assert log != tuple(expected)
    other = ReplayLog()
    for n in range(3):
        record(other, n)
    assert log == other
    assert ReplayLog() == []


def test_contains():
    log = ReplayLog()
    deferred = record(log, 1, "deferred")
    inserted = record(log, 2)
    assert inserted in log
    assert deferred in log
    final = record(log, 1, "inserted")
    assert final in log
    assert deferred not in log
    assert record(ReplayLog(), 3) not in log
    assert "00000000-0000-0000-0000-000000000002" not in log
    assert ReplayMessage("not a uuid", "p", 1, "m", None, "insert", "error") not in log


def test_index_and_count_from_sequence():
    log = ReplayLog()
    messages = [record(log, n) for n in range(3)]
    assert log.index(messages[2]) == 2
    assert log.count(messages[1]) == 1


def test_typical_messages_use_one_byte_columns():
    """Structure behind the memory target: ids as raw bytes, one-byte string indexes,
    each distinct string stored once."""
    log = ReplayLog()
    for n in range(1000):
        record(log, n, producer=f"laptop-{n % 5}")
    assert len(log._ids) == 16 * 1000
    assert log._sequences.typecode == "q"
    for strings in log._string_columns():
        assert strings.column.itemsize == 1
    assert log._producers.values == [f"laptop-{n}" for n in range(5)]
    assert log._texts.values == [""]
    assert len(log._keys) == sum(len(f'["S{n:07d}","1000"]') for n in range(1000))


def test_columns_widen_past_one_byte():
    log = ReplayLog()
    expected = [record(log, n, producer=f"laptop-{n}", text=f"text {n}",
                       key=["x" * 70_000, n] if n == 299 else None) for n in range(600)]
    assert log._producers.column.itemsize == 2
    assert log._texts.column.itemsize == 2
    assert log._key_lengths.itemsize == 4
    assert log._key_starts.itemsize == 4
    assert log == expected
    assert log[255:258] == expected[255:258]
