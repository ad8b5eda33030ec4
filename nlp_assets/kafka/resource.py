"""Kafka as a Dagster resource: watermarks for the sensor, exact ranges and dead letters for
the raw stage. No consumer group and no committed offsets: the sensor cursor is the only
position, and a run reads its range with assign + seek.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, cast

import dagster as dg
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicCollection,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient
from pydantic import Field

from nlp_assets.kafka.messages import (
    DEFAULT_DLQ_MAX_BYTES,
    DEFAULT_MAX_MESSAGE_BYTES,
    KafkaRecord,
    OffsetRange,
    dead_letter_message,
)


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached or did not answer in time."""


@dataclass(frozen=True)
class DeadLetterDelivery:
    sent: int  # delivery confirmed by the broker
    unsent: int  # refused, undeliverable or not confirmed in time
    errors: list[str]  # the first few, for the run's warning


class KafkaResource(dg.ConfigurableResource):
    """Connection settings come from the environment (see docs/kafka.md); the SASL password
    is a Dagster `EnvVar`, never a literal."""

    bootstrap_servers: str = Field(description="host:port[,host:port...]")
    security_protocol: str = Field(
        default="PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."
    )
    sasl_mechanism: str | None = Field(default=None, description="PLAIN, SCRAM-SHA-512, ...")
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    extra_config: dict[str, str] = Field(
        default_factory=dict, description="Any other librdkafka setting, passed as is."
    )
    timeout_s: float = Field(default=10.0, description="Broker requests and range reads.")
    max_message_bytes: int = Field(
        default=DEFAULT_MAX_MESSAGE_BYTES, description="Larger messages are dead letters."
    )
    dead_letter_suffix: str = Field(
        default=".dlq", description="Dead letters of topic T go to T + this suffix."
    )
    dlq_max_bytes: int = Field(
        default=DEFAULT_DLQ_MAX_BYTES,
        description="A dead letter's DLQ copy (value, key, headers) stays under this: larger "
        "values are cut and marked (the lake quarantine keeps them whole). Keep it under the "
        "producer's and the topic's message.max.bytes (1,000,000 by default).",
    )
    dlq_delivery_timeout_s: float = Field(
        default=120.0,
        description="How long the raw stage waits for the broker to take its dead letters: a "
        "broker outage shorter than this loses no DLQ copy; past it the copies not taken are "
        "reported (`dlq_unsent`) and the range still succeeds (the lake quarantine has them).",
    )

    def client_config(self) -> dict[str, Any]:
        """librdkafka's settings. Outside Dagster (the API's sink) a field may still hold the
        `EnvVar` naming its variable: its value is read here."""

        def value(field: str | None) -> str | None:
            return field.get_value() if isinstance(field, dg.EnvVar) else field

        config: dict[str, Any] = {
            "bootstrap.servers": value(self.bootstrap_servers),
            "security.protocol": value(self.security_protocol),
        }
        optional = {
            "sasl.mechanism": value(self.sasl_mechanism),
            "sasl.username": value(self.sasl_username),
            "sasl.password": value(self.sasl_password),
            "ssl.ca.location": value(self.ssl_ca_location),
            "ssl.certificate.location": value(self.ssl_certificate_location),
            "ssl.key.location": value(self.ssl_key_location),
        }
        config |= {k: v for k, v in optional.items() if v}
        return config | dict(self.extra_config)

    def _consumer(self) -> Consumer:
        return Consumer(
            self.client_config()
            | {
                # never used to commit: required by the client, harmless with assign()
                "group.id": "nlp-assets-range-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
            }
        )

    def dead_letter_topic(self, topic: str) -> str:
        return topic + self.dead_letter_suffix

    # the sensor: watermarks only -------------------------------------------------------------
    def watermarks(self, topic: str) -> dict[int, tuple[int, int]] | None:
        """(low, high) per partition; None when the topic does not exist."""
        consumer = self._consumer()
        try:
            metadata = consumer.list_topics(topic, timeout=self.timeout_s)
            described = metadata.topics.get(topic)
            if described is None or (
                described.error is not None
                and described.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART
            ):
                return None
            if described.error is not None:
                raise KafkaUnavailable(f"metadata of {topic}: {described.error}")
            return {
                p: cast(
                    "tuple[int, int]",
                    tuple(
                        consumer.get_watermark_offsets(
                            TopicPartition(topic, p), timeout=self.timeout_s, cached=False
                        )
                    ),
                )
                for p in sorted(described.partitions)
            }
        except KafkaException as error:
            raise KafkaUnavailable(f"{self.bootstrap_servers}: {error.args[0]}") from None
        finally:
            consumer.close()

    def topic_id(self, topic: str) -> str | None:
        """The topic's Kafka id (Metadata v10+, Kafka 2.8 and later): a deleted and recreated
        topic gets a new one. None when the topic does not exist or the broker tells no id
        (older brokers: the sensor then falls back to watermark checks). Read it before the
        watermarks (see `plan_ranges`)."""
        admin = AdminClient(self.client_config())
        try:
            futures = admin.describe_topics(
                TopicCollection([topic]), request_timeout=self.timeout_s
            )
            described = futures[topic].result(timeout=self.timeout_s + 1)
        except KafkaException as exception:
            error = exception.args[0] if exception.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                return None
            if code in (KafkaError._UNSUPPORTED_FEATURE, KafkaError.UNSUPPORTED_VERSION):
                return None
            raise KafkaUnavailable(f"{self.bootstrap_servers}: {error}") from None
        except TimeoutError:
            raise KafkaUnavailable(
                f"{self.bootstrap_servers}: no topic description of {topic} within "
                f"{self.timeout_s} s"
            ) from None
        uuid = described.topic_id
        if uuid is None or (
            uuid.get_most_significant_bits() == 0 and uuid.get_least_significant_bits() == 0
        ):
            return None
        return str(uuid)

    # the raw stage: one exact range ----------------------------------------------------------
    def read_range(self, offsets: OffsetRange) -> list[KafkaRecord]:
        """Every message of [start, end) of one partition, in offset order.

        Raises when the range cannot be read completely in time (the run fails and its retry
        reads the same range again), never returns part of it.
        """
        consumer = self._consumer()
        records: list[KafkaRecord] = []
        next_offset = offsets.start
        deadline = time.monotonic() + max(self.timeout_s, offsets.size / 2000)
        try:
            consumer.assign([TopicPartition(offsets.topic, offsets.partition, offsets.start)])
            while next_offset < offsets.end:
                if time.monotonic() > deadline:
                    raise KafkaUnavailable(
                        f"read {offsets.run_key}: stopped at offset {next_offset} after "
                        f"{self.timeout_s}s without the rest of the range"
                    )
                for message in consumer.consume(num_messages=1000, timeout=1.0):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            # a gap (compaction, transaction markers) up to the end: done
                            if cast(int, message.offset()) >= offsets.end:
                                next_offset = offsets.end
                            continue
                        raise KafkaUnavailable(f"read {offsets.run_key}: {error}")
                    # the stubs allow None (a Message built by hand); a consumed one has it
                    offset = cast(int, message.offset())
                    if offset >= offsets.end:
                        next_offset = offsets.end
                        break
                    if offset < next_offset:
                        continue
                    timestamp_type, timestamp = message.timestamp()
                    # a consumer's message has its headers as a list of (str, bytes | None)
                    headers = cast("list[tuple[str, bytes | None]]", message.headers() or [])
                    records.append(
                        KafkaRecord(
                            topic=offsets.topic,
                            partition=offsets.partition,
                            offset=offset,
                            value=message.value(),
                            key=message.key(),
                            timestamp_ms=timestamp if timestamp_type else None,
                            headers=tuple((k, v or b"") for k, v in headers),
                        )
                    )
                    next_offset = offset + 1
        except KafkaException as error:
            raise KafkaUnavailable(f"read {offsets.run_key}: {error.args[0]}") from None
        finally:
            consumer.close()
        return records

    def send_dead_letters(
        self, dead_letters: list[tuple[KafkaRecord, str]], *, quarantine: str | None = None
    ) -> DeadLetterDelivery:
        """Produce a copy of each (message, reason) to its topic's dead-letter topic; waits for
        delivery up to `dlq_delivery_timeout_s`.

        Never raises: the caller keeps the full payloads in the lake quarantine first (named by
        `quarantine`), so a DLQ the broker refuses or cannot be reached is reported (`unsent`,
        `errors`), not a failed range. Each copy fits `dlq_max_bytes` (`dead_letter_message`).
        Keyed by the source coordinates, so a retried raw stage re-sends the same keys and a
        reader de-duplicates on them (a compacted DLQ keeps one per key).
        """
        if not dead_letters:
            return DeadLetterDelivery(sent=0, unsent=0, errors=[])
        delivered: list[int] = []
        errors: list[str] = []

        def on_delivery(error: KafkaError | None, _message: Any) -> None:
            if error is None:
                delivered.append(1)
            else:
                errors.append(str(error))

        try:
            producer = Producer(self.client_config() | {"enable.idempotence": True})
            deadline = time.monotonic() + self.dlq_delivery_timeout_s
            for message, reason in dead_letters:
                copy = dead_letter_message(
                    message, reason, max_bytes=self.dlq_max_bytes, quarantine=quarantine
                )
                while True:
                    try:
                        producer.produce(
                            self.dead_letter_topic(message.topic),
                            value=copy.value,
                            key=copy.key,
                            # the stubs want a list of the wider (str, str | bytes | None)
                            headers=cast("list[tuple[str, str | bytes | None]]", copy.headers),
                            on_delivery=on_delivery,
                        )
                        break
                    except BufferError:  # the local queue is full: let it drain, in time
                        if time.monotonic() > deadline:
                            raise
                        producer.poll(0.1)
                    except KafkaException as error:  # this message only (e.g. too large)
                        errors.append(str(error.args[0]))
                        break
                producer.poll(0)
            left = producer.flush(max(0.0, deadline - time.monotonic()))
            if left:
                errors.append(f"{left} not delivered within {self.dlq_delivery_timeout_s} s")
                producer.purge()
                producer.flush(0)
        except Exception as error:  # a config the client refuses, a queue that never drained
            errors.append(f"{type(error).__name__}: {error}")
        return DeadLetterDelivery(
            sent=len(delivered), unsent=len(dead_letters) - len(delivered), errors=errors[:5]
        )


def kafka_from_env() -> KafkaResource:
    """The resource from the `KAFKA_*` variables (docs/kafka.md) and
    `NLP_KAFKA_MAX_MESSAGE_BYTES`: each field is `dg.EnvVar(<variable>)` where the variable is
    set, so the UI and run config show the variable's name and Dagster reads its value when a
    sensor or run starts (the SASL password included: never a literal in config); unset, the
    field's default. `KAFKA_EXTRA_CONFIG` is a JSON object, read here."""
    from nlp_assets import settings

    def env(name: str) -> Any:
        return settings.configured(name, "") or None

    fields = {
        "bootstrap_servers": env("KAFKA_BOOTSTRAP_SERVERS") or "localhost:9092",
        "security_protocol": env("KAFKA_SECURITY_PROTOCOL"),
        "sasl_mechanism": env("KAFKA_SASL_MECHANISM"),
        "sasl_username": env("KAFKA_SASL_USERNAME"),
        "sasl_password": env("KAFKA_SASL_PASSWORD"),
        "ssl_ca_location": env("KAFKA_SSL_CA_LOCATION"),
        "ssl_certificate_location": env("KAFKA_SSL_CERTIFICATE_LOCATION"),
        "ssl_key_location": env("KAFKA_SSL_KEY_LOCATION"),
        "max_message_bytes": (
            dg.EnvVar.int("NLP_KAFKA_MAX_MESSAGE_BYTES")
            if env("NLP_KAFKA_MAX_MESSAGE_BYTES")
            else None
        ),
    }
    return KafkaResource(
        **{name: value for name, value in fields.items() if value is not None},
        extra_config=settings.kafka_extra_config(),
    )
