"""The SDK runtime, the data converter and ``connect``: where every Temporal client of the project comes from."""

from __future__ import annotations

import dataclasses

from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import LoggingConfig, PrometheusConfig, Runtime, TelemetryConfig, TelemetryFilter

from orderflow.activities import QuietFailureConverter
from orderflow.codec import EncryptionCodec
from orderflow.config import ConfigError, Settings, core_log_level

_runtimes: dict[str | None, Runtime] = {}


def runtime(metrics_address: str | None = None) -> Runtime:
    """The SDK runtime of this process (one per metrics address), its core's log lines limited to errors.

    At WARN the core prints a line for every local-activity attempt it timed out ("Tried to
    complete untracked local activity"): noise under a fault injector that hangs a third of
    all attempts. The workflows log each timeout as a structured event instead.

    With ``metrics_address`` the core serves the SDK's own metrics (workflow task latency,
    activity and local-activity results, sticky cache, poller and request counts) in Prometheus
    format on that host:port, named as Temporal's Grafana SDK dashboard expects
    (``temporal_workflow_completed_total``, ``temporal_workflow_task_execution_latency_seconds``).
    The port is bound when the runtime is built, so there is one runtime per address.
    """
    if metrics_address not in _runtimes:
        metrics = None
        if metrics_address:
            metrics = PrometheusConfig(
                bind_address=metrics_address, counters_total_suffix=True, unit_suffix=True, durations_as_seconds=True
            )
        try:
            _runtimes[metrics_address] = Runtime(
                telemetry=TelemetryConfig(
                    logging=LoggingConfig(filter=TelemetryFilter(core_log_level(), "ERROR")), metrics=metrics
                )
            )
        except Exception as err:  # the port is taken or not ours to bind
            raise ConfigError(f"cannot serve Temporal SDK metrics on {metrics_address}: {err}") from err
    return _runtimes[metrics_address]


# The SDK's converter, except that expected faults cross without a stack trace (activities.py).
DATA_CONVERTER = dataclasses.replace(DataConverter.default, failure_converter_class=QuietFailureConverter)


class EncodedQuietFailureConverter(QuietFailureConverter):
    """With encryption on, a failure's message and stack trace go through the codec as well.

    By default Temporal keeps them as plain text in the history (the service and the Web UI show
    them); ``encode_common_attributes`` moves both into the failure's ``encoded_attributes``
    payload, which the codec encrypts, and leaves the message "Encoded failure" in their place.
    """

    def __init__(self) -> None:
        super().__init__(encode_common_attributes=True)


def data_converter(settings: Settings) -> DataConverter:
    """DATA_CONVERTER, plus the encryption codec when ``settings`` has keys (ORDERFLOW_CODEC_KEYS).

    A DataConverter has three stages: the payload converter (objects <-> JSON payloads), the
    failure converter (exceptions <-> failures) and the optional payload codec (payloads <->
    payloads, here encrypted). Clients, workers and Replayers must agree on the codec and its
    keys, or what one wrote the other cannot read.
    """
    if not settings.codec_keys:
        return DATA_CONVERTER
    return dataclasses.replace(
        DATA_CONVERTER,
        payload_codec=EncryptionCodec(settings.codec_keys),
        failure_converter_class=EncodedQuietFailureConverter,
    )


async def connect(settings: Settings | None = None) -> Client:
    """A Temporal client for ``settings`` (default: from the environment and the profile file).

    The one place every client of the project comes from: workers, the API, the benchmark,
    notebooks and tests. Address, namespace, TLS, API key and gRPC metadata come from
    ``temporalio.envconfig`` (see orderflow/config.py), so the same worker reaches the embedded
    dev server, a self-hosted cluster or a managed service by configuration alone. Its data
    converter (``data_converter``) encrypts payloads when ORDERFLOW_CODEC_KEYS is set; a worker
    built on this client uses the client's converter.
    """
    settings = settings or Settings.from_env()
    return await Client.connect(
        **settings.client_connect_config(),
        runtime=runtime(settings.metrics_address),
        data_converter=data_converter(settings),
    )
