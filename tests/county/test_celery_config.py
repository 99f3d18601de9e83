"""The Celery app carries the settings production depends on, on both kinds of broker."""

from __future__ import annotations

from relay.config import Settings
from relay.county.worker import make_celery, queue_name, worker_argv


def test_embedded_broker_app_is_built_with_a_fast_poll(tmp_path):
    settings = Settings(data_dir=tmp_path)
    app = make_celery(settings)
    assert app.conf.broker_url.startswith("filesystem")
    assert app.conf.broker_transport_options["polling_interval"] <= 0.1
    assert (settings.broker_folder / "queue").is_dir()


def test_rabbitmq_app_acks_late_with_confirms_and_durable_queues(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672/%2F")
    conf = make_celery(settings).conf
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost, conf.worker_prefetch_multiplier) == (True, True, 1)
    assert conf.broker_transport_options == {"confirm_publish": True}
    assert {q.name for q in conf.task_queues} == {queue_name(settings, k) for k in ("ingest", "render")}
    assert all(q.durable for q in conf.task_queues)


def test_a_worker_can_serve_one_queue_and_refuses_unknown_ones(tmp_path):
    import pytest

    settings = Settings(data_dir=tmp_path, queue_prefix="p")
    argv = worker_argv(settings, concurrency=1, loglevel="INFO", queues=("render",))
    assert argv[argv.index("-Q") + 1] == "p.render"
    with pytest.raises(ValueError):
        worker_argv(settings, concurrency=1, loglevel="INFO", queues=("deliver",))
