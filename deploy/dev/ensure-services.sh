#!/usr/bin/env bash
# Make sure the PostgreSQL and RabbitMQ the tests use (127.0.0.1:5432, :5672) answer;
# start them the way this kind of machine does if they have stopped. It never installs
# or reconfigures them: a test whose server is unreachable must fail, not skip.
set -u
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if ! port_open 5432 && command -v pg_ctlcluster >/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
fi
if ! port_open 5672 && command -v rabbitmq-server >/dev/null; then
  echo "starting RabbitMQ"
  rabbitmq-server -detached || true
fi
for _ in $(seq 1 60); do
  port_open 5432 && port_open 5672 && exit 0
  sleep 1
done
port_open 5432 || echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2
port_open 5672 || echo "RabbitMQ is not answering on 127.0.0.1:5672" >&2
exit 0
