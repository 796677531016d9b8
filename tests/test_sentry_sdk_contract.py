"""What wsgi_observe's Sentry reporter relies on inside sentry-sdk, one test per internal.

``wsgi_observe/integrations/sentry_reporter.py`` (and ``sentry.py``) use a few parts of
sentry-sdk that are not its documented API, to keep an unsampled request cheap (see the
reporter's module docstring). setup.cfg pins ``sentry-sdk>=2.0,<3``; when a new release
inside that range moves one of them, the test for it fails with a message naming the
internal and the installed version, instead of Sentry silently going quiet in production.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest
import sentry_sdk
from wsgi_client import environ_for

from wsgi_observe.integrations import sentry as sentry_module
from wsgi_observe.integrations import sentry_reporter

if TYPE_CHECKING:
    from sentry_receiver import SentryReceiver

pytest_plugins = ("sentry_receiver",)  # its fixtures: sentry_receiver, sentry_init

TRACEPARENT_UNSAMPLED = re.compile(r"^[0-9a-f]{32}-[0-9a-f]{16}-0$")


@contextmanager
def relied_on(internal: str) -> Iterator[None]:
    """Turn any failure inside into one that names ``internal`` and the installed sentry-sdk."""
    try:
        yield
    except Exception as error:
        failure = f"{type(error).__name__}: {error}"
    else:
        return
    pytest.fail(
        f"sentry-sdk {sentry_sdk.VERSION} changed {internal}, which wsgi_observe's Sentry "
        f"integration relies on: {failure}. Adapt wsgi_observe/integrations/, or narrow "
        "the supported sentry-sdk range in setup.cfg.",
        pytrace=False,
    )


@pytest.fixture
def sdk(sentry_receiver: SentryReceiver) -> Iterator[Callable[..., None]]:
    """``sdk(**options)`` starts plain sentry-sdk (not init_sentry) sending to the receiver."""
    from sentry_receiver import close_sentry

    def init(**options: Any) -> None:
        close_sentry()
        sentry_sdk.init(dsn=sentry_receiver.dsn, **options)

    try:
        yield init
    finally:
        close_sentry()


def unsampled_context(rand: float = 0.5, rate: float = 0.1) -> Any:
    """The reporter's "not sampled" propagation context, as ``_not_sampled`` builds it."""
    context = sentry_reporter._unsampled_context_class()()
    context._wo_rand = rand
    context._wo_rate = rate
    return context


# PropagationContext and Baggage (sentry_sdk.tracing_utils) -------------------------------


def test_propagation_context_subclass_says_not_sampled_in_sentry_trace(
    sdk: Callable[..., None],
) -> None:
    """Our PropagationContext subclass gives ``<trace>-<span>-0``, a valid unsampled header."""
    sdk(traces_sample_rate=0.1)
    with relied_on("sentry_sdk.tracing_utils.PropagationContext (subclass, to_traceparent)"):
        context = unsampled_context()
        traceparent = context.to_traceparent()
        assert TRACEPARENT_UNSAMPLED.match(traceparent), traceparent
        assert traceparent.startswith(f"{context.trace_id}-{context.span_id}-")


def test_unsampled_context_baggage_carries_our_decision(sdk: Callable[..., None]) -> None:
    """Baggage built from the context carries trace id, sampled=false, our rand and rate."""
    sdk(traces_sample_rate=0.1, environment="staging", release="1.2.3")
    with relied_on(
        "sentry_sdk.tracing_utils.Baggage (populate_from_propagation_context, sentry_items, "
        "serialize) or PropagationContext.baggage"
    ):
        context = unsampled_context(rand=0.734512, rate=0.1)
        items = dict(part.split("=", 1) for part in context.get_baggage().serialize().split(","))
        assert items["sentry-trace_id"] == context.trace_id
        assert items["sentry-sampled"] == "false"
        assert items["sentry-sample_rand"] == "0.734512"
        assert items["sentry-sample_rate"] == "0.1"
        assert items["sentry-environment"] == "staging"
        assert context.get_baggage() is context.get_baggage(), "baggage is rebuilt per call"


def test_baggage_takes_sentry_items_and_a_mutable_flag() -> None:
    """``Baggage({"sample_rand": ...}, mutable=True)`` builds, and its sentry items are a dict."""
    with relied_on("sentry_sdk.tracing_utils.Baggage(sentry_items, mutable=True)"):
        from sentry_sdk.tracing_utils import Baggage

        baggage = Baggage({"sample_rand": "0.250000"}, mutable=True)
        baggage.sentry_items["sample_rate"] = "0.1"
        assert baggage.mutable is True
        assert baggage.sentry_items == {"sample_rand": "0.250000", "sample_rate": "0.1"}


# Scope._propagation_context and the scope's propagation methods --------------------------


def test_writing_the_scope_propagation_context_changes_the_trace_headers(
    sdk: Callable[..., None],
) -> None:
    """Assigning ``scope._propagation_context`` changes the trace headers sentry-sdk hands out."""
    sdk(traces_sample_rate=0.1)
    with relied_on("sentry_sdk.Scope._propagation_context (written by the reporter)"):
        with sentry_sdk.isolation_scope() as scope:
            context = unsampled_context(rand=0.5, rate=0.1)
            scope._propagation_context = context
            traceparent = sentry_sdk.get_traceparent()
            baggage = sentry_sdk.get_baggage() or ""
            headers = dict(sentry_sdk.get_current_scope().iter_trace_propagation_headers())
        assert traceparent == context.to_traceparent()
        assert headers["sentry-trace"] == traceparent
        for item in ("sentry-sampled=false", "sentry-sample_rand=0.500000"):
            assert item in baggage and item in headers["baggage"], (baggage, headers)


def test_errors_join_the_trace_of_the_written_propagation_context(
    sentry_receiver: SentryReceiver, sdk: Callable[..., None]
) -> None:
    """An error captured under the written context is sent with that context's trace id."""
    sdk(traces_sample_rate=0.1)
    with relied_on("sentry_sdk.Scope._propagation_context (trace context of error events)"):
        with sentry_sdk.isolation_scope() as scope:
            context = unsampled_context()
            scope._propagation_context = context
            try:
                raise RuntimeError("contract")
            except RuntimeError as error:
                sentry_sdk.capture_exception(error)
        (event,) = sentry_receiver.wait_for("event")
        assert event["contexts"]["trace"]["trace_id"] == context.trace_id
        assert event["contexts"]["trace"]["span_id"] == context.span_id


def test_scope_propagation_methods_start_and_continue_traces(sdk: Callable[..., None]) -> None:
    """set_new_propagation_context starts a trace; generate_propagation_context continues one."""
    sdk(traces_sample_rate=0.1)
    with relied_on(
        "sentry_sdk.Scope.set_new_propagation_context / generate_propagation_context / "
        "get_active_propagation_context"
    ):
        with sentry_sdk.isolation_scope() as scope:
            scope.set_new_propagation_context()
            first = scope.get_active_propagation_context().trace_id
            scope.set_new_propagation_context()
            assert scope.get_active_propagation_context().trace_id != first
            trace_id, parent = "771a43a4192642f0b136d5159a501700", "1234567890abcdef"
            scope.generate_propagation_context({"sentry-trace": f"{trace_id}-{parent}-1"})
            assert scope.get_active_propagation_context().trace_id == trace_id
            assert sentry_sdk.get_traceparent().startswith(f"{trace_id}-")  # type: ignore[union-attr]


# Starting a head transaction with the decision already made -------------------------------


def test_a_transaction_built_sampled_is_sent_with_our_sample_rand(
    sentry_receiver: SentryReceiver, sdk: Callable[..., None]
) -> None:
    """``Transaction(sampled=True, baggage=...)`` started by the SDK is sent, with our DSC."""
    sdk(traces_sample_rate=0.000001)  # the SDK alone would (almost) never sample
    reporter = sentry_reporter.SentryReporter()
    with relied_on(
        "sentry_sdk.tracing.Transaction(..., sampled=True, baggage=Baggage(sample_rand)) "
        "with sentry_sdk.start_transaction(transaction)"
    ):
        with sentry_sdk.isolation_scope() as scope:
            built, baggage = reporter._head_transaction(scope, 0.031415)
            transaction = sentry_sdk.start_transaction(
                built, custom_sampling_context={"wsgi_environ": {}}
            )
            assert transaction is built
            assert transaction.sampled is True
            assert transaction.trace_id == scope.get_active_propagation_context().trace_id
            transaction.sample_rate = 0.1  # what the reporter does next
            baggage.sentry_items["sample_rate"] = "0.1"
            scope.span = transaction
            transaction.name = "/contract"
            transaction.finish()
        (payload,) = sentry_receiver.wait_for("transaction")
        assert payload["transaction"] == "/contract"
        assert payload["contexts"]["trace"]["op"] == "http.server"
        assert payload["contexts"]["trace"]["origin"] == "auto.http.wsgi_observe"
        [envelope] = [e for e in sentry_receiver.envelopes if e.items[0].type == "transaction"]
        dsc = envelope.headers["trace"]
        assert dsc["trace_id"] == payload["contexts"]["trace"]["trace_id"]
        assert (dsc["sample_rand"], dsc["sample_rate"], dsc["sampled"]) == (
            "0.031415",
            "0.1",
            "true",
        )


def test_transaction_accepts_the_keywords_the_reporter_passes() -> None:
    """The Transaction (and Span) constructor takes every keyword the reporter passes."""
    with relied_on("sentry_sdk.tracing.Transaction / Span constructor keywords"):
        from sentry_sdk.tracing import Span, Transaction

        accepted = set(inspect.signature(Transaction.__init__).parameters)
        accepted |= set(inspect.signature(Span.__init__).parameters)
        passed = {
            "op",
            "name",
            "source",
            "origin",
            "trace_id",
            "same_process_as_parent",
            "sampled",
            "baggage",
        }
        assert passed <= accepted, f"not accepted: {sorted(passed - accepted)}"
        start = inspect.signature(sentry_sdk.start_transaction).parameters
        assert {"transaction", "custom_sampling_context"} <= set(start)


# Backpressure: client.monitor ------------------------------------------------------------


def test_client_monitor_reports_a_downsample_factor(sdk: Callable[..., None]) -> None:
    """The client's ``monitor`` has an integer ``downsample_factor`` (0 while healthy)."""
    sdk(traces_sample_rate=0.1, enable_backpressure_handling=True)
    with relied_on("sentry_sdk.client._Client.monitor / Monitor.downsample_factor"):
        monitor = sentry_sdk.get_client().monitor
        assert monitor is not None, "no monitor with enable_backpressure_handling=True"
        assert monitor.downsample_factor == 0


# Helpers sentry.py and the reporter import ------------------------------------------------


def test_get_request_url_gives_the_url_without_the_query() -> None:
    """``sentry_sdk.integrations.wsgi.get_request_url`` builds scheme, host and path only."""
    with relied_on("sentry_sdk.integrations.wsgi.get_request_url"):
        from sentry_sdk.integrations.wsgi import get_request_url

        environ = environ_for("/api/leads/7", query="a=1")
        assert get_request_url(environ) == "http://127.0.0.1/api/leads/7"


def test_event_from_exception_takes_our_mechanism(sdk: Callable[..., None]) -> None:
    """``sentry_sdk.utils.event_from_exception`` accepts client options and our mechanism."""
    sdk()
    with relied_on("sentry_sdk.utils.event_from_exception(exc_info, client_options, mechanism)"):
        from sentry_sdk.utils import event_from_exception

        error = ValueError("contract")
        event, hint = event_from_exception(
            (ValueError, error, None),
            client_options=sentry_sdk.get_client().options,
            mechanism={"type": "wsgi_observe", "handled": False},
        )
        value = event["exception"]["values"][-1]
        assert value["type"] == "ValueError"
        assert value["mechanism"] == {"type": "wsgi_observe", "handled": False}
        assert hint["exc_info"][1] is error


def test_global_event_processor_drops_an_error_we_reported_already(
    sentry_receiver: SentryReceiver, sdk: Callable[..., None]
) -> None:
    """A processor added with ``sentry_sdk.scope.add_global_event_processor`` can drop events."""
    sdk()
    with relied_on("sentry_sdk.scope.add_global_event_processor"):
        sentry_module._install_dedupe()
        reported = RuntimeError("reported already")
        sentry_module._mark_reported(reported)
        sentry_sdk.capture_exception(reported)
        sentry_sdk.capture_exception(RuntimeError("new"))
        (event,) = sentry_receiver.wait_for("event")
        sentry_sdk.flush(timeout=10)
        assert [e["exception"]["values"][-1]["value"] for e in sentry_receiver.events] == ["new"]
        assert event["exception"]["values"][-1]["value"] == "new"
