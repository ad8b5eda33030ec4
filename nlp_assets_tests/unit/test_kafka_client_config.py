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


def test_every_connection_variable_set_is_an_env_var_field_naming_it(
    monkeypatch: pytest.MonkeyPatch,
):
    """The UI and run config show which variable configures each field, never its value."""
    variables = {
        "bootstrap_servers": "KAFKA_BOOTSTRAP_SERVERS",
        "security_protocol": "KAFKA_SECURITY_PROTOCOL",
        "sasl_mechanism": "KAFKA_SASL_MECHANISM",
        "sasl_username": "KAFKA_SASL_USERNAME",
        "sasl_password": "KAFKA_SASL_PASSWORD",
        "ssl_ca_location": "KAFKA_SSL_CA_LOCATION",
        "ssl_certificate_location": "KAFKA_SSL_CERTIFICATE_LOCATION",
        "ssl_key_location": "KAFKA_SSL_KEY_LOCATION",
        "max_message_bytes": "NLP_KAFKA_MAX_MESSAGE_BYTES",
    }
    for name in variables.values():
        monkeypatch.setenv(name, "4096" if name.startswith("NLP_") else "value")
    resource = kafka_from_env()
    for field, name in variables.items():
        assert getattr(getattr(resource, field), "env_var_name", None) == name, field
    assert resource.process_config_and_initialize().max_message_bytes == 4096


def test_unset_connection_variables_leave_the_defaults(monkeypatch: pytest.MonkeyPatch):
    for name in ("KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    config = kafka_from_env().client_config()
    assert config == {"bootstrap.servers": "localhost:9092", "security.protocol": "PLAINTEXT"}
