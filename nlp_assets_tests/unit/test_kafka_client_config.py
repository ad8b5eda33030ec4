"""`kafka_from_env().client_config()` used outside Dagster (the API's Kafka sink and readiness
check) hands librdkafka the password itself, never the `EnvVar` naming it."""

from __future__ import annotations

import dagster as dg
import pytest

from nlp_assets.kafka.resource import kafka_from_env


def test_client_config_outside_dagster_resolves_the_password_env_var(
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "b1:9093")
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "pipeline")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cret")
    resource = kafka_from_env()
    assert isinstance(resource.sasl_password, dg.EnvVar)  # the config still names the variable
    config = resource.client_config()
    assert config["sasl.password"] == "s3cret"
    assert type(config["sasl.password"]) is str
    assert config["sasl.username"] == "pipeline"
