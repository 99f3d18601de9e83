"""Domain events (study arrived, escalated, ...): a transactional outbox, published to a
RabbitMQ topic exchange with publisher confirms, for live pages and integrations."""
