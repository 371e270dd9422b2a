#!/usr/bin/env python3
"""Reads a topic with Confluent's Avro deserializer and the schema registry, printing one JSON
object per message. Used by the integration tests to prove that ordinary Confluent clients read
Bazaar's topics; also handy for analysts."""

import argparse
import json
import sys
import time
import uuid

from confluent_kafka import DeserializingConsumer
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer
from confluent_kafka.serialization import StringDeserializer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--registry", default="http://127.0.0.1:8088")
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, default=1, help="stop after this many messages")
    parser.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    parser.add_argument(
        "-X",
        dest="properties",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a librdkafka property, e.g. sasl.username=tests (repeatable)",
    )
    args = parser.parse_args()

    registry = SchemaRegistryClient({"url": args.registry})
    consumer = DeserializingConsumer(
        {
            "bootstrap.servers": args.bootstrap_servers,
            # The tests' Kafka principal may use groups named test-… only.
            "group.id": f"test-avro-tap-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "key.deserializer": StringDeserializer("utf_8"),
            "value.deserializer": AvroDeserializer(registry, return_record_name=True),
            **dict(p.split("=", 1) for p in args.properties),
        }
    )
    consumer.subscribe([args.topic])
    seen = 0
    deadline = time.monotonic() + args.timeout
    try:
        while seen < args.count:
            if time.monotonic() > deadline:
                print(f"timed out after {seen} of {args.count} messages", file=sys.stderr)
                return 1
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                print(f"error: {message.error()}", file=sys.stderr)
                return 1
            record_name, value = message.value()
            headers = {k: v.decode() for k, v in (message.headers() or [])}
            print(json.dumps({"key": message.key(), "type": record_name, "value": value, "headers": headers}))
            seen += 1
    finally:
        consumer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
