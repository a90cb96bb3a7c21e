"""Edge agents: device drivers over serial, read smoothing, a durable outbox, MQTT."""
