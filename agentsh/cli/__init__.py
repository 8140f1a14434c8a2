"""One thin module per `ab-*` command: parse, call the core, print, exit."""
