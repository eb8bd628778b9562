"""The command-line interface: parser.py (stdlib only), commands.py, main.py."""
