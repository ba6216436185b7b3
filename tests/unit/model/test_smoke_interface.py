"""The model's public names exist with the agreed signatures and basic behaviour."""

from keeldb.model import capacity, keys, limits, numbers, values


def test_agreed_names_are_importable_and_work_together() -> None:
    item = values.validate_item({"pk": {"S": "a"}, "n": {"N": "1.50"}})
    assert item["n"] == {"N": "1.5"}
    assert values.item_size(item) == 2 + 1 + 1 + 3
    assert numbers.add_numbers("1", "2") == "3"
    assert keys.item_key("t", 0, item["pk"], None).startswith(keys.table_prefix("t"))
    assert capacity.read_units(1, consistent=False) == 0.5
    assert limits.ITEM_BYTES_MAX == 400 * 1024
