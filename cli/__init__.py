"""agriseg command-line front end (installed as ``agriseg_cli``)."""
