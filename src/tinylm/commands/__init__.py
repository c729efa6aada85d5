"""One module per `tinylm` subcommand (discovered by `tinylm.cli`)."""
