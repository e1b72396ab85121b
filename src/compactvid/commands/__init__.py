"""The subcommands of `compactvid`, one module each, registered in `compactvid.cli`."""
