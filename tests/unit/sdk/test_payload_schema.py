"""Typed payloads: the schema a dataclass or pydantic parameter gives, the coordinator's check, the conversion."""

from __future__ import annotations

import dataclasses
from typing import Literal, Optional

import pydantic
import pytest

from torpor import ConfigError
from torpor.coordinator._payload_check import check_payload
from torpor.sdk._payload import PayloadError, convert, payload_type, schema_of


@dataclasses.dataclass
class Line:
    sku: str
    qty: int = 1


@dataclasses.dataclass
class Order:
    customer: str
    lines: list[Line]
    priority: Literal["low", "high"] = "low"
    note: Optional[str] = None
    weights: dict[str, float] = dataclasses.field(default_factory=dict)


class Signup(pydantic.BaseModel):
    email: str
    age: int = pydantic.Field(ge=18)


def handle(order: Order) -> None: ...
def untyped(payload) -> None: ...  # noqa: ANN001
def plain(payload: dict) -> None: ...


def _schema(tp: type) -> str:
    import json

    return json.dumps(schema_of(tp))


def test_only_dataclasses_and_models_are_typed_parameters():
    assert payload_type(handle) is Order
    assert payload_type(untyped) is None and payload_type(plain) is None
    assert payload_type(lambda s: s) is None

    def model(s: Signup) -> None: ...
    assert payload_type(model) is Signup


def test_a_good_payload_passes_the_check_and_converts_to_nested_dataclasses():
    payload = {"customer": "ada", "lines": [{"sku": "a-1"}, {"sku": "b-2", "qty": 3}], "priority": "high",
               "weights": {"a-1": 0.5}}
    check_payload("orders", _schema(Order), __import__("json").dumps(payload))
    order = convert(Order, payload)
    assert order == Order("ada", [Line("a-1"), Line("b-2", 3)], "high", None, {"a-1": 0.5})


@pytest.mark.parametrize("payload,fragment", [
    ({"customer": "ada"}, "'lines' is a required property"),
    ({"customer": "ada", "lines": [{"sku": "a", "qty": "two"}]}, "payload.lines[0].qty: 'two' is not of type 'integer'"),
    ({"customer": "ada", "lines": [], "priority": "urgent"}, "payload.priority: 'urgent' is not one of"),
    ({"customer": "ada", "lines": [], "colour": "red"}, "Additional properties are not allowed ('colour'"),
    ([1, 2], "is not of type 'object'"),
])
def test_a_bad_payload_fails_the_check_with_where_and_why(payload, fragment):
    import json

    with pytest.raises(ConfigError, match="does not fit task 'orders'.s parameter type Order") as err:
        check_payload("orders", _schema(Order), json.dumps(payload))
    assert fragment in str(err.value), str(err.value)


def test_conversion_says_what_does_not_fit():
    with pytest.raises(PayloadError, match="Order has no field 'colour'"):
        convert(Order, {"customer": "ada", "lines": [], "colour": "red"})
    with pytest.raises(PayloadError, match="expected an object for Line"):
        convert(Order, {"customer": "ada", "lines": ["a-1"]})


def test_pydantic_models_bring_their_own_schema_and_validation():
    import json

    check_payload("signup", _schema(Signup), json.dumps({"email": "a@b", "age": 30}))
    with pytest.raises(ConfigError, match=r"payload.age: 12 is less than the minimum of 18"):
        check_payload("signup", _schema(Signup), json.dumps({"email": "a@b", "age": 12}))
    assert convert(Signup, {"email": "a@b", "age": 30}) == Signup(email="a@b", age=30)
    with pytest.raises(PayloadError, match="does not fit Signup"):
        convert(Signup, {"email": "a@b", "age": 3})


def test_the_schema_reaches_the_deployed_settings_and_instances_encode_as_payloads():
    import json

    from torpor.sdk._task import _encode_payload, task

    t = task(id="typed-orders")(handle)
    assert json.loads(t.definition.to_dict()["payload_schema"])["title"] == "Order"
    assert task(id="untyped-x")(untyped).definition.to_dict()["payload_schema"] == ""
    assert json.loads(_encode_payload(Line("a"))) == {"sku": "a", "qty": 1}
    assert json.loads(_encode_payload(Signup(email="a@b", age=20))) == {"email": "a@b", "age": 20}
