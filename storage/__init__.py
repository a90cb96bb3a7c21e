"""The one owner of the schema (every migration) and of reference data (one upsert
rule per entity), used by the loader, the admin API and the demo alike."""
