"""The Celery app carries the settings production depends on, on both kinds of broker."""

from __future__ import annotations

import pytest

from relay.cli import build_parser
from relay.config import Settings
from relay.county.jobs import ASSIGN_TASK, DELIVER_TASK, INDEX_TASK, RENDER_TASK, make_celery, queue_name
from relay.county.worker import worker_argv

KINDS = ("ingest", "render", "assign", "deliver")


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
    assert {q.name for q in conf.task_queues} == {queue_name(settings, k) for k in KINDS}
    assert all(q.durable for q in conf.task_queues)


def test_each_task_is_routed_to_its_own_queue(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672/%2F")
    routes = make_celery(settings).conf.task_routes
    assert {task: routes[task]["queue"] for task in (INDEX_TASK, RENDER_TASK, ASSIGN_TASK, DELIVER_TASK)} == {
        INDEX_TASK: queue_name(settings, "ingest"), RENDER_TASK: queue_name(settings, "render"),
        ASSIGN_TASK: queue_name(settings, "assign"), DELIVER_TASK: queue_name(settings, "deliver")}


def test_relay_worker_serves_all_four_queues_by_default(tmp_path):
    settings = Settings(data_dir=tmp_path, queue_prefix="p")
    assert build_parser().parse_args(["worker"]).queues is None  # cmd_worker: None means every queue
    argv = worker_argv(settings, concurrency=1, loglevel="INFO")
    assert argv[argv.index("-Q") + 1].split(",") == [f"p.{k}" for k in KINDS]


def test_a_worker_can_serve_one_queue_and_refuses_unknown_ones(tmp_path):
    settings = Settings(data_dir=tmp_path, queue_prefix="p")
    argv = worker_argv(settings, concurrency=1, loglevel="INFO", queues=("deliver",))
    assert argv[argv.index("-Q") + 1] == "p.deliver"
    with pytest.raises(ValueError):
        worker_argv(settings, concurrency=1, loglevel="INFO", queues=("email",))


def test_two_workers_on_one_host_get_distinct_node_names(tmp_path):
    """Per-queue workers on one host (`relay worker --queues ingest,render` beside
    `--queues assign,deliver`): with one node name the second died at start, RabbitMQ refusing
    it the first one's exclusive pidbox queue (RESOURCE_LOCKED)."""
    import subprocess
    import sys

    settings = Settings(data_dir=tmp_path, queue_prefix="p")
    here = worker_argv(settings, concurrency=1, loglevel="INFO", queues=("ingest", "render"))
    code = ("from relay.config import Settings; from relay.county.worker import worker_argv; "
            f"argv = worker_argv(Settings(data_dir={str(tmp_path)!r}, queue_prefix='p'), concurrency=1, "
            "loglevel='INFO', queues=('assign', 'deliver')); print(argv[argv.index('-n') + 1])")
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           timeout=60).stdout.strip()
    assert here[here.index("-n") + 1] != there
    assert there.startswith("relay-p") and there.endswith("@%h")
