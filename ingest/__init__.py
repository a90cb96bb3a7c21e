"""From the broker to the database: schema, validation, exactly-once writes, dead letters."""
