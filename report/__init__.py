"""syschangemon's reporting side: report model, templates, rendering and mail."""
