"""An outside consumer of Threadline's topics, written from the published contract alone
(schemas/contract/asyncapi.json and schema-ids.json), with libraries that share no code
with Threadline: confluent-kafka and fastavro. Reads every channel's topic from the
beginning until it has seen --expect distinct events and the topics are quiet (or
--seconds pass), decodes every
record with the writer's schema named by its Confluent schema id, checks the headers the
contract requires, and de-duplicates by the event_id header. Prints a JSON report.

Usage: outside-consumer.py --brokers H:P --prefix P --contract DIR --expect N [--seconds S]
"""

import argparse
import io
import json
import struct
import sys
import time

import fastavro
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--prefix", required=True)
    ap.add_argument("--contract", required=True)
    ap.add_argument("--expect", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=60)
    args = ap.parse_args()

    with open(f"{args.contract}/asyncapi.json", encoding="utf-8") as f:
        doc = json.load(f)
    with open(f"{args.contract}/schema-ids.json", encoding="utf-8") as f:
        table = json.load(f)
    schemas = {row["id"]: fastavro.parse_schema(row["schema"]) for row in table["schemas"]}
    event_type_of = {row["id"]: row["event_type"] for row in table["schemas"]}
    required = doc["components"]["schemas"]["EventHeaders"]["required"]
    topics = [
        ch["address"].replace("{prefix}", args.prefix) for ch in doc["channels"].values()
    ]

    consumer = Consumer({
        "bootstrap.servers": args.brokers,
        "group.id": "outside-consumer",
        "enable.auto.commit": False,
    })
    partitions = []
    metadata = consumer.list_topics(timeout=10)
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            continue  # a topic nothing was published to yet
        partitions += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions]
    consumer.assign(partitions)
    # What the broker says the topics hold, for the report.
    available = 0
    for tp in partitions:
        low, high = consumer.get_watermark_offsets(tp, timeout=10)
        available += max(high - low, 0)

    seen = {}
    records = 0
    problems = []
    last_sequence = {}
    deadline = time.monotonic() + args.seconds
    idle = 0
    # Until every expected event is in, then on until the topics stay quiet for 2 s
    # (so the re-deliveries behind the first copies are read and counted too).
    while time.monotonic() < deadline and (len(seen) < args.expect or idle < 4):
        msg = consumer.poll(0.5)
        if msg is None:
            idle += 1
            continue
        idle = 0
        if msg.error():
            problems.append(str(msg.error()))
            continue
        records += 1
        headers = {k: v.decode("utf-8") for k, v in (msg.headers() or [])}
        missing = [h for h in required if h not in headers]
        if missing:
            problems.append(f"missing headers {missing}")
        value = msg.value()
        magic, schema_id = struct.unpack(">bI", value[:5])
        if magic != 0 or schema_id not in schemas:
            problems.append(f"unknown framing {magic}/{schema_id}")
            continue
        datum = fastavro.schemaless_reader(io.BytesIO(value[5:]), schemas[schema_id])
        if event_type_of[schema_id] != headers.get("event_type"):
            problems.append(f"schema {schema_id} is not {headers.get('event_type')}")
        key = msg.key().decode("utf-8")
        stream = (headers.get("aggregate_type"), key)
        sequence = int(headers.get("sequence", "0"))
        # Per aggregate, a first delivery comes in order; a re-delivery may go back.
        event_id = headers.get("event_id")
        if event_id in seen:
            continue
        if sequence != last_sequence.get(stream, 0) + 1:
            problems.append(f"{stream} jumped from {last_sequence.get(stream, 0)} to {sequence}")
        last_sequence[stream] = sequence
        seen[event_id] = (event_type_of[schema_id], datum)
    consumer.close()

    by_type = {}
    for event_type, _ in seen.values():
        by_type[event_type] = by_type.get(event_type, 0) + 1
    json.dump({"distinct": len(seen), "records": records, "available": available,
               "partitions": len(partitions), "by_type": by_type,
               "problems": problems[:20]}, sys.stdout)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
