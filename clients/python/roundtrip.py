"""A round trip through the Python client generated from Cairn's OpenAPI
document (openapi-python-client), using the generated code only: append
with If-Match (and a 412 checked), read a stream, a category, /all, one
event by id, a snapshot and a trace. CI generates the client from the
served /openapi.json into `cairn_client` beside this file and runs:

    CAIRN_URL=http://127.0.0.1:8080 CAIRN_KEY=cairn_… python roundtrip.py

Exits non-zero, saying what differed, on the first surprise."""

import os
import sys
import uuid

from cairn_client import AuthenticatedClient
from cairn_client.api.events import event_by_id
from cairn_client.api.global_ import read_all, read_category
from cairn_client.api.snapshots import get_snapshot, post_snapshot
from cairn_client.api.streams import append, read_stream
from cairn_client.api.tracing import trace
from cairn_client.models import (
    AppendResponse,
    Event,
    EventWrite,
    GlobalPageBody,
    Problem,
    Snapshot,
    SnapshotWrite,
    StreamPageBody,
    TraceBody,
)


def check(condition, what):
    if not condition:
        sys.exit(f"roundtrip.py: {what}")


client = AuthenticatedClient(
    base_url=os.environ["CAIRN_URL"], token=os.environ.get("CAIRN_KEY", "none")
)
run = uuid.uuid4().hex[:8]
stream = f"pyorder{run}-1"

opened = EventWrite(type_="Opened", data={"total": 0, "big": 2**60})
first = append.sync_detailed(stream, client=client, body=opened, if_match='"-1"')
check(first.status_code == 201, f"first append: {first.status_code} {first.content!r}")
check(isinstance(first.parsed, AppendResponse), "the append answer is typed")
check(first.parsed.version == 0, f"version {first.parsed.version}")
opened_id = first.parsed.events[0].id

cause = EventWrite(type_="Added", data={"item": "tea"}, causation_id=opened_id)
batch = [cause, EventWrite(type_="Added", data={"item": "cake"})]
second = append.sync_detailed(stream, client=client, body=batch, if_match='"0"')
check(second.status_code == 201, f"batch append: {second.status_code} {second.content!r}")
check(second.parsed.version == 2, f"version {second.parsed.version}")

stale = append.sync_detailed(stream, client=client, body=opened, if_match='"0"')
check(stale.status_code == 412, f"stale append: {stale.status_code}")
check(isinstance(stale.parsed, Problem), "the 412 is a problem")
check(stale.parsed.additional_properties.get("actual_version") == 2, f"412 body {stale.content!r}")

page = read_stream.sync_detailed(stream, client=client)
check(page.status_code == 200 and isinstance(page.parsed, StreamPageBody), f"read: {page.status_code}")
check([e.type_ for e in page.parsed.events] == ["Opened", "Added", "Added"], "the stream's events")
check(page.parsed.events[0].data["big"] == 2**60, "a large integer reads back exactly")

category = read_category.sync_detailed(f"pyorder{run}", client=client)
check(isinstance(category.parsed, GlobalPageBody), f"category: {category.status_code}")
check(len(category.parsed.events) == 3, "the category's events")

everything = read_all.sync_detailed(client=client, position=str(category.parsed.events[0].global_position))
check(isinstance(everything.parsed, GlobalPageBody), f"/all: {everything.status_code}")
check(everything.parsed.events[0].id == opened_id, "/all from a position")

one = event_by_id.sync_detailed(opened_id, client=client)
check(isinstance(one.parsed, Event) and one.parsed.stream == stream, f"event by id: {one.status_code}")

stored = post_snapshot.sync_detailed(
    stream, client=client, body=SnapshotWrite(version=2, state={"items": 2}, type_="Order")
)
check(stored.status_code == 201, f"snapshot: {stored.status_code} {stored.content!r}")
snapshot = get_snapshot.sync_detailed(stream, client=client)
check(isinstance(snapshot.parsed, Snapshot) and snapshot.parsed.version == 2, "snapshot read back")

tree = trace.sync_detailed(opened_id, client=client)
check(isinstance(tree.parsed, TraceBody), f"trace: {tree.status_code}")
check(len(tree.parsed.effects) == 1, "the trace's effects")

print("roundtrip.py: every call went through the generated client")
